"""Quantization-aware training of every lightnets layer, its int8 TFLite file and checkpoints.

``tests/every_layer.py``'s tiny classifier (every lightnets layer) is trained on the digits in
float once, fine-tuned with QAT, converted to full int8, and the file is compared with the Keras
QAT model on the whole digits validation split.
"""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

import architectures  # noqa: E402
from compression import quantization  # noqa: E402
from deploy import tflite  # noqa: E402
from layers import conv_ops  # noqa: E402
from layers.wrappers import unwrap  # noqa: E402
from tests.every_layer import SIZE, SMALL_FAMILY_VARIANTS, every_layer_model  # noqa: E402

QAT = ml_collections.ConfigDict({"aware": True, "int8_io": True})
SPARSITY = 0.6
REPO_ROOT = Path(__file__).resolve().parents[2]


def tflite_weights(flatbuffer: bytes) -> dict[str, np.ndarray]:
    """The int8 weight tensors (constants of rank >= 2) of a TFLite file, by tensor name."""
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    produced = {i for op in interpreter._get_ops_details() for i in op["outputs"]}  # noqa: SLF001
    return {
        detail["name"]: interpreter.get_tensor(detail["index"])
        for detail in interpreter.get_tensor_details()
        if detail["dtype"] == np.int8
        and len(detail["shape"]) >= 2
        and detail["index"] not in produced
        and detail["index"] != interpreter.get_input_details()[0]["index"]
    }


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
    qat = quantization.apply(model, QAT)
    representative = next(bundle.train.as_numpy_iterator())[0]
    quantization.calibrate(qat, representative)
    qat = _compile(qat, 3e-4)
    qat.fit(bundle.train, steps_per_epoch=40, epochs=1, verbose=0)
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
    # Tensors inside a layer that int8 TFLite quantizes get their own fake-quant (taps).
    assert configs["separable"].taps == ("depthwise_tap",)
    assert configs["spatial"].taps == ("intermediate_tap",)
    assert configs["se_gate"].taps == ("hidden_tap",)
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
    # Each tensor the file quantizes has the QAT model's fake-quant (taps inside the separable,
    # spatially separable, hard-sigmoid and split layers; per-channel depthwise kernels), so
    # the two differ only by integer rounding: measured 99.7 % agreement here.
    agreement = np.mean(int8_top == keras_top)
    assert agreement >= 0.99, agreement
    accuracy = np.mean(keras_top == labels)
    assert accuracy > 0.8, accuracy  # a trained model: the agreement means something


def _convert_uncalibrated(qat, tmp_path) -> bytes:
    """The QAT model as int8 TFLite with no calibration data. The converter can then quantize
    only tensors whose range the QAT model trained: a tensor without a fake-quant stays float
    (tfmot issue #368's mismatch: the file would calibrate what QAT never simulated)."""
    converter = tflite._converter(qat, str(tmp_path / "saved_model"))  # noqa: SLF001
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True  # noqa: SLF001
    with conv_ops.tracing_for("tflite"):
        return converter.convert()


def test_every_quantized_tensor_has_a_fake_quant(trained, tmp_path):
    _, qat, _ = trained
    assert tflite.float_ops(_convert_uncalibrated(qat, tmp_path)) == []


def test_qat_keras_file_reloads_in_a_fresh_process(trained, tmp_path):
    _, qat, _ = trained
    path = tmp_path / "qat.keras"
    qat.save(path)
    images = np.random.default_rng(1).standard_normal((4, SIZE, SIZE, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np\n"
        "from compression import quantization\n"
        "from deploy import loading\n"
        "model = loading.load_keras_file(sys.argv[1])\n"
        "assert quantization.has_wrappers(model)\n"
        "np.save(sys.argv[3], model(np.load(sys.argv[2]), training=False).numpy())\n"
    )
    out = tmp_path / "out.npy"
    result = subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "images.npy"), str(out)],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Same kernels, ranges and batch-norm statistics: bit-identical outputs.
    np.testing.assert_array_equal(np.load(out), qat(images, training=False).numpy())


def test_pruned_kernels_stay_zero_in_the_int8_file(digits):
    """A pruned model fine-tuned with QAT keeps its zeros, down to the int8 file's weights."""
    bundle, _, _ = digits
    keras.utils.set_random_seed(0)
    model = every_layer_model()
    for weight in model.trainable_weights:
        if "kernel" in weight.name:  # zero the 60 % smallest of every kernel
            values = weight.numpy()
            values[np.abs(values) < np.quantile(np.abs(values), SPARSITY)] = 0
            weight.assign(values)
    assert quantization.is_sparse(model)
    qat = _compile(quantization.apply(model, QAT), 1e-2)  # a large step: zeros would move
    qat.fit(bundle.train, steps_per_epoch=3, epochs=1, verbose=0)
    representative = next(bundle.train.as_numpy_iterator())[0]
    flatbuffer = tflite.convert(qat, "int8", representative_images=representative)
    kernels = tflite_weights(flatbuffer)
    # Every conv (the lightnets ones, Keras' Conv2D and DepthwiseConv2D) and the classifier.
    assert len(kernels) >= 8, sorted(kernels)
    for name, values in kernels.items():
        assert np.mean(values == 0) >= SPARSITY - 0.02, name


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
def test_every_family_has_a_fake_quant_on_every_int8_tensor(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = architectures.create_model(name, input_shape=(32, 32, 3), num_classes=4)
    qat = quantization.apply(model, QAT)
    # Every layer kept (wrapped or not), plus tfmot's QuantizeLayer on the input.
    inner = {unwrap(layer).name for layer in qat.layers}
    assert {layer.name for layer in model.layers} <= inner
    assert len(qat.layers) == len(model.layers) + 1
    images = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype("float32")
    quantization.calibrate(qat, images)  # a training-mode pass through every fake-quant
    assert np.isfinite(qat(images, training=False)).all()
    assert tflite.float_ops(_convert_uncalibrated(qat, tmp_path)) == []
