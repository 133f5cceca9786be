"""ONNX export: standard operators only, parity with Keras, loading and evaluation by PATH."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tf_keras as keras  # noqa: E402

import architectures  # noqa: E402
from deploy import export, loading  # noqa: E402
from tests.every_layer import SIZE, SMALL_FAMILY_VARIANTS, every_layer_model  # noqa: E402

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

from deploy import onnx  # noqa: E402

MAX_DIFF = export.MAX_DIFF["onnx"]


def _images(size, count=4, seed=0):
    return np.random.default_rng(seed).standard_normal((count, size, size, 3)).astype("float32")


def _check(model, size):
    serialized = onnx.convert(model)
    ops = onnx.op_types(serialized)
    assert not any(":" in op for op in ops), ops  # no custom domain
    images = _images(size)
    got = onnx.Runner(serialized)(images)
    np.testing.assert_allclose(got, model(images, training=False), atol=MAX_DIFF, rtol=0)
    return ops


def test_every_lightnets_layer_exports_with_standard_ops(tmp_path):
    keras.utils.set_random_seed(0)
    model = every_layer_model()
    ops = _check(model, SIZE)
    # GroupConv2D is one grouped Conv; the dilated separable conv needs no SpaceToBatch.
    assert "SpaceToDepth" not in ops and "DepthToSpace" not in ops
    paths = export.export_model(model, str(tmp_path), formats="keras,onnx")
    assert paths["onnx"].endswith("model.onnx")
    loaded = loading.load_model(paths["onnx"])
    assert (loaded.kind, loaded.input_shape, loaded.num_classes) == ("onnx", (SIZE, SIZE, 3), 10)
    images = _images(SIZE, count=7, seed=1)  # another batch size than the conversion saw
    rows = export.check_parity(model, paths, images, np.zeros(7, int))
    assert [row.format for row in rows] == ["reference", "keras", "onnx"]
    assert all(row.ok for row in rows), rows


def test_onnx_is_not_in_all_but_can_be_named():
    assert "onnx" not in export.parse_formats("all")
    assert export.parse_formats("tflite,onnx") == ("tflite", "onnx")


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL_FAMILY_VARIANTS)
def test_every_family_matches_keras(name):
    keras.utils.set_random_seed(0)
    model = architectures.create_model(name, input_shape=(32, 32, 3), num_classes=4)
    _check(model, 32)
