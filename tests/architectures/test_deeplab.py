"""DeepLab v3/v3+: every variant at 513 (build, cost and output stride, no forward pass) and at
32×32 (forward, gradients), the atrous backbones, structured channel pruning, and one small model
through tfmot pruning, clean TFLite and a fresh-process .keras round trip."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from architectures import create_model, get_model_spec, list_models
from architectures.common import output_stride_plan
from architectures.cost import model_cost
from architectures.deeplab import BACKBONES
from compression import pruning
from configs.common import get_base_config
from deploy import tflite
from layers import AtrousDepthwiseConv2D, DepthwiseSeparableConv2D
from tests.compression.test_channel_pruning import (
    _check_equivalence as check_channel_pruning_equivalence,
)
from tests.model_checks import predict_in_fresh_process
from trainer import tasks

VARIANTS = list_models("deeplab*")
CLASSES = 5
SIZE = 32


def _small_deeplab(seed: int, **overrides) -> keras.Model:
    """deeplabv3plus_mobilenet_v2_100 at 32×32, α = 0.35, weights seeded with ``seed``."""
    keras.utils.set_random_seed(seed)
    return create_model(
        "deeplabv3plus_mobilenet_v2_100",
        input_shape=(SIZE, SIZE, 3),
        num_classes=CLASSES,
        alpha=0.35,
        **overrides,
    )


@pytest.fixture(scope="module")
def small():
    """The small DeepLab v3+, shared by the module."""
    return _small_deeplab(seed=0)


def _batch(seed=0, batch=2):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(batch, SIZE, SIZE, 3)).astype("float32")
    masks = rng.integers(0, CLASSES, size=(batch, SIZE, SIZE)).astype("int32")
    return images, masks


def test_variants_are_registered_as_segmentation_models():
    assert VARIANTS == [
        "deeplabv3_mobilenet_v2_100",
        "deeplabv3plus_mobilenet_v2_100",
        "deeplabv3plus_xception",
    ]
    for name in VARIANTS:
        spec = get_model_spec(name)
        assert (spec.task, spec.input_size, spec.num_classes) == ("segmentation", 513, 21)


def test_output_stride_plan_follows_deeplab():
    # MobileNet v2's stem and block strides: the last stride-2 block (13) becomes stride 1 at
    # output stride 16 and later blocks are dilated by 2; at 8, block 6 too, then 2 and 4.
    strides = [2, 1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    assert output_stride_plan(strides, 32, model_name="m") == [(s, 1) for s in strides]
    plan16 = output_stride_plan(strides, 16, model_name="m")
    assert (
        plan16[14] == (1, 1)
        and plan16[15:] == [(1, 2)] * 3
        and plan16[:14] == [(s, 1) for s in strides[:14]]
    )
    plan8 = output_stride_plan(strides, 8, model_name="m")
    assert plan8[7] == (1, 1) and plan8[8:14] == [(1, 2)] * 6
    assert plan8[14] == (1, 2) and plan8[15:] == [(1, 4)] * 3
    with pytest.raises(ValueError, match="output_stride must be one of"):
        output_stride_plan(strides, 4, model_name="m")


def test_backbone_features_end_at_the_output_stride():
    """The classification builders' ``output_stride``: features 32 / 8 times larger than at 32,
    and the last stages dilated by as much. (Xception's plan is checked at 513 below.)"""

    def features(stride):
        return create_model(
            "mobilenet_v2_100",
            input_shape=(SIZE, SIZE, 3),
            include_top=False,
            output_stride=stride,
            alpha=0.35,
        )

    model = features(8)
    plain = tuple(features(32).output_shape[1:3])
    assert tuple(model.output_shape[1:3]) == tuple(d * 4 for d in plain)
    assert _max_dilation(model.layers) == 4
    keras.backend.clear_session()


def _max_dilation(layers):
    return max(
        layer.dilation_rate[0]
        for layer in layers
        if isinstance(layer, (AtrousDepthwiseConv2D, DepthwiseSeparableConv2D))
    )


@pytest.mark.slow
def test_every_variant_builds_at_513_with_its_cost():
    """Build only (no forward pass). The MobileNet v2 DeepLab v3 matches the DeepLab model zoo's
    2.75B multiply-adds and the MobileNet v2 paper's 2.11M parameters (Table 7)."""
    for name in VARIANTS:
        model = create_model(name)
        assert tuple(model.output_shape) == (None, 513, 513, 21), name
        assert model.get_layer("predictions").dtype == "float32"
        assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
        # Output stride 16 (the variants' default): ASPP reads features 4× coarser than the
        # stride-4 ones the decoder reads, and the backbone's last stages are dilated by 2 (ASPP's
        # own rates are larger).
        backbone_spec = BACKBONES["xception" if "xception" in name else "mobilenet_v2"]
        low_level = model.get_layer(backbone_spec.low_level).output_shape[1:3]
        assert model.get_layer("aspp_pool").input_shape[1:3] == tuple(
            -(-d // 4) for d in low_level
        ), name
        backbone = [layer for layer in model.layers if not layer.name.startswith("aspp")]
        assert _max_dilation(backbone) == 2, name
        report = model_cost(model)
        trainable = sum(int(w.shape.num_elements()) for w in model.trainable_weights)
        assert report.total_params == trainable, name
        spec = get_model_spec(name)
        if spec.paper_macs:
            assert report.total_macs == pytest.approx(spec.paper_macs, rel=0.01), name
        if name == "deeplabv3_mobilenet_v2_100":
            assert trainable == pytest.approx(2.11e6, rel=0.005)
        keras.backend.clear_session()


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_runs_at_a_small_size_and_every_weight_gets_a_gradient(name, request):
    if name == "deeplabv3plus_mobilenet_v2_100":
        model = request.getfixturevalue("small")
    else:
        keras.utils.set_random_seed(0)
        overrides = {"alpha": 0.35} if "mobilenet" in name else {}
        model = create_model(name, input_shape=(SIZE, SIZE, 3), num_classes=CLASSES, **overrides)
    images, masks = _batch()
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tasks.MaskedSparseCrossEntropy()(masks, logits)
    assert logits.shape == (2, SIZE, SIZE, CLASSES)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads), name


@pytest.mark.slow
def test_structured_channel_pruning_is_exact_and_the_thin_model_converts_cleanly():
    """DeepLab v3+ through structured channel pruning's channel graph: ASPP's concatenation of
    five branches, the decoder's of upsampled ASPP and low-level features, atrous depthwise
    stages and ``Resize2D``. The exact-equivalence check of the channel-pruning tests (zero what
    reads about a third of every group's channels, remove them: the same logits, fewer
    parameters); the thin model converts to a clean TFLite file with its logits."""
    thin = check_channel_pruning_equivalence(_small_deeplab(seed=0, dropout=0.0))
    images, _ = _batch(seed=2)
    flatbuffer = tflite.convert(thin)
    ops = tflite.op_names(flatbuffer)
    assert not ops & {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}, ops
    assert not any(op.startswith("Flex") for op in ops), ops
    expected = thin(images, training=False).numpy()
    np.testing.assert_allclose(tflite.Runner(flatbuffer)(images), expected, atol=1e-4)


@pytest.mark.slow
def test_quantization_aware_training_converts_to_a_full_int8_file(tmp_path):
    """QAT wraps every DeepLab layer (atrous depthwise, Resize2D included), trains a step, and
    every tensor of the int8 file has a fake-quant in the QAT model (no float op left when the
    converter gets no calibration data); the QAT report scores masks by mIoU.

    A fresh model, not the module's ``small``: the channel-pruning test zeroes whole filters of
    that one, and a QAT file whose per-channel kernel ranges are all zero is refused by XNNPACK
    (a known limit, docs/deploy.md)."""
    import ml_collections

    from compression import quantization
    from deploy import quantized
    from tests.compression.test_quantization import _convert_uncalibrated

    model = _small_deeplab(seed=1)
    qat = quantization.apply(model, ml_collections.ConfigDict({"aware": True, "int8_io": True}))
    images, masks = _batch(batch=4)
    quantization.calibrate(qat, images)
    qat.compile(optimizer="sgd", loss=tasks.MaskedSparseCrossEntropy(), run_eagerly=True)
    qat.fit(images, masks, epochs=1, verbose=0)
    assert tflite.float_ops(_convert_uncalibrated(qat, tmp_path)) == []

    path = str(tmp_path / "model_int8.tflite")
    with open(path, "wb") as f:
        f.write(tflite.convert(qat, "int8", representative_images=images))
    report = quantized.quantization_report(
        qat,
        path,
        images,
        masks,
        float_model=None,
        representative_images=images,
        latency_iterations=2,
    )
    assert set(report["qat_int8_tflite"]) >= {"miou", "pixel_accuracy", "bytes"}
    assert 0.0 <= report["qat_int8_tflite"]["miou"] <= 1.0
    assert 0.0 <= report["qat_keras_tflite_agreement"] <= 1.0


@pytest.mark.slow
def test_pruned_model_strips_to_clean_tflite_and_reloads_in_a_fresh_process(small, tmp_path):
    """One small DeepLab v3+ (atrous ASPP, decoder) through what follows training: tfmot pruning
    (wrap, one step, strip), float TFLite (no SPACE_TO_BATCH_ND, builtin ops only, the same
    logits) and a .keras reload in a fresh process. The other variants share these layers; int8
    files are checked end to end in docs/segmentation.md's evaluation. Runs last: the pruning
    wrappers wrap (and sparsify) the shared model's layers."""
    config = get_base_config().pruning
    config.final_sparsity = 0.5
    config.schedule = "constant"
    config.frequency = 1
    pruned = pruning.apply(small, config, steps_per_epoch=1, total_steps=1)
    assert pruning.has_wrappers(pruned)
    images, masks = _batch()
    # One eager step: the wrappers' masks and step counter update the same way, without tracing
    # a training graph of the whole model (most of this test's time otherwise).
    pruned.compile(optimizer="sgd", loss=tasks.MaskedSparseCrossEntropy(), run_eagerly=True)
    pruned.fit(images, masks, epochs=1, verbose=0, callbacks=pruning.callbacks(config, ""))
    stripped = pruning.strip(pruned)
    report = pruning.sparsity_report(stripped)
    assert report["overall"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert stripped.get_layer("classifier").kernel.numpy().size  # the head is present

    images, _ = _batch(seed=1)
    expected = stripped(images, training=False).numpy()
    flatbuffer = tflite.convert(stripped)
    ops = tflite.op_names(flatbuffer)
    assert not ops & {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}, ops
    assert {"RESIZE_BILINEAR", "DEPTHWISE_CONV_2D", "CONV_2D"} <= ops
    assert not any(op.startswith("Flex") for op in ops), ops
    np.testing.assert_allclose(tflite.Runner(flatbuffer)(images), expected, atol=1e-4)

    (reloaded,) = predict_in_fresh_process(
        [(stripped, images)], tmp_path, fmt="keras", loader="lightnets"
    )
    np.testing.assert_allclose(reloaded, expected, rtol=1e-4, atol=1e-4)
