"""Quantization-aware training of every lightnets layer, its int8 TFLite file and checkpoints.

``tests/every_layer.py``'s tiny classifier (every lightnets layer) is trained on the digits in
float once, fine-tuned with QAT, converted to full int8, and the file is compared with the Keras
QAT model on the whole digits validation split.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

import architectures  # noqa: E402
from compression import quantization  # noqa: E402
from deploy import tflite  # noqa: E402
from layers.wrappers import unwrap  # noqa: E402
from tests.every_layer import SIZE, SMALL_FAMILY_VARIANTS, every_layer_model  # noqa: E402

QAT = ml_collections.ConfigDict({"aware": True, "int8_io": True})


def _compile(model, learning_rate):
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def digits():
    from configs.common import get_base_config
    from trainer import data

    config = get_base_config().data
    bundle = data.build_datasets(
        config,
        image_size=SIZE,
        preprocessing=architectures.INCEPTION_PREPROCESSING,
        batch_size=64,
        seed=0,
    )
    val = list(bundle.val.as_numpy_iterator())
    images = np.concatenate([b[0] for b in val])
    labels = np.concatenate([b[1] for b in val])
    return bundle, images, labels


@pytest.fixture(scope="module")
def trained(digits):
    """(float model, QAT model fine-tuned from it, its int8 flatbuffer)."""
    bundle, _, _ = digits
    keras.utils.set_random_seed(0)
    model = _compile(every_layer_model(), 3e-3)
    model.fit(bundle.train, steps_per_epoch=200, epochs=1, verbose=0)
    qat = _compile(quantization.apply(model, QAT), 3e-4)
    qat.fit(bundle.train, steps_per_epoch=40, epochs=1, verbose=0)
    representative = next(bundle.train.as_numpy_iterator())[0]
    flatbuffer = tflite.convert(qat, "int8", representative_images=representative)
    return model, qat, flatbuffer


def test_lightnets_layers_get_their_configs(trained):
    _, qat, _ = trained
    configs = {unwrap(layer).name: getattr(layer, "quantize_config", None) for layer in qat.layers}
    # A conv followed by BN has no fake-quant on its output (the converter folds the BN).
    assert configs["group"].kernels == ("kernel",)
    assert not configs["group"].quantize_activation
    assert configs["separable"].kernels == ("depthwise_kernel", "pointwise_kernel")
    assert not configs["separable"].quantize_activation
    assert configs["spatial"].quantize_activation
    # BN then ReLU: the ReLU is quantized (fused in TFLite); a BN with no ReLU after it is.
    assert configs["group_bn"].get_output_quantizers(None) == []
    assert len(configs["separable_bn"].get_output_quantizers(None)) == 1
    for name in ("hswish", "se_gate", "se_scale"):
        assert len(configs[name].get_output_quantizers(None)) == 1
    for name in ("shuffle", "split"):
        assert configs[name].get_output_quantizers(None) == []


def test_int8_file_matches_the_qat_model(trained, digits):
    _, qat, flatbuffer = trained
    _, images, labels = digits
    assert tflite.float_ops(flatbuffer) == []
    assert not {op for op in tflite.op_names(flatbuffer) if op.startswith("Flex")}
    keras_top = qat.predict(images, verbose=0).argmax(-1)
    int8_top = tflite.Runner(flatbuffer)(images).argmax(-1)
    # Measured 98.3 % (oneDNN kernels) and 97.5 % (Eigen) on this model, under the 99 % wanted
    # (docs/deploy.md, known limits); MobileNet v2 and ShuffleNet v1 digits runs reach 99.7 % and
    # 100 %.
    agreement = np.mean(int8_top == keras_top)
    assert agreement >= 0.97, agreement
    accuracy = np.mean(keras_top == labels)
    assert accuracy > 0.8, accuracy  # a trained model: the agreement means something


def test_checkpoint_restores_mid_qat(trained, tmp_path):
    model, qat, _ = trained
    prefix = tf.train.Checkpoint(model=qat).save(str(tmp_path / "ckpt"))
    # A fresh process would rebuild the float model, wrap it the same way, then restore.
    rebuilt = quantization.apply(every_layer_model(), QAT)
    tf.train.Checkpoint(model=rebuilt).restore(prefix).assert_existing_objects_matched()
    # Inference reads every kernel and every trained range (min/max) of the QAT model.
    images = np.random.default_rng(0).standard_normal((4, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_array_equal(qat(images, training=False), rebuilt(images, training=False))


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL_FAMILY_VARIANTS)
def test_every_family_wraps_and_trains(name):
    keras.utils.set_random_seed(0)
    model = architectures.create_model(name, input_shape=(32, 32, 3), num_classes=4)
    qat = _compile(quantization.apply(model, QAT), 1e-3)
    # Every layer kept (wrapped or not), plus tfmot's QuantizeLayer on the input.
    inner = {unwrap(layer).name for layer in qat.layers}
    assert {layer.name for layer in model.layers} <= inner
    assert len(qat.layers) == len(model.layers) + 1
    images = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype("float32")
    history = qat.fit(images, np.arange(4) % 4, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
