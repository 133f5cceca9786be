"""``create_model(name, pretrained=...)`` with keras.applications' weight files, offline.

A keras.applications model with random weights (``tests/architectures/keras_reference.py``),
saved under its published file name into a temporary Keras cache, stands in for the download;
the network is cut off (``offline_keras_cache``). MobileNet v3's variants are checked the same
way in ``test_mobilenet_v3.py``.
"""

import logging

import numpy as np
import pytest
import tf_keras as keras

from architectures import create_model, get_model_spec, list_models
from architectures.pretrained import PretrainedWeightsError
from tests.architectures.keras_reference import keras_application, publish_stand_in, randomize

WITH_WEIGHTS = [name for name in list_models() if get_model_spec(name).weights is not None]
# The smallest published size of each family (Xception publishes 299 only and is checked at
# keras.applications' minimum, 71, which loads the 299-pixel file); one variant per family at 224.
SMALL_SIZE = {"mobilenet_v1": 128, "mobilenet_v2": 96, "xception": 71}
FULL_SIZE = {"mobilenet_v1_025": 224, "mobilenet_v2_035": 224}
CASES = [
    (name, FULL_SIZE.get(name, SMALL_SIZE[get_model_spec(name).family]))
    for name in WITH_WEIGHTS
    if get_model_spec(name).family != "mobilenet_v3"
]


def _images(size: int, count: int = 4) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (count, size, size, 3)).astype("float32")


def _stand_in(name, size, monkeypatch, *, include_top=True, num_classes=1000):
    images = _images(size)
    reference = keras_application(
        name, input_size=size, include_top=include_top, num_classes=num_classes
    )
    randomize(reference, images)
    path = publish_stand_in(
        name, reference, input_size=size, include_top=include_top, monkeypatch=monkeypatch
    )
    return reference, images, path


def test_every_family_keras_applications_publishes_for_has_weights():
    families = {get_model_spec(name).family for name in WITH_WEIGHTS}
    assert families == {"mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "xception"}
    assert len(WITH_WEIGHTS) == 4 + 6 + 6 + 1


@pytest.mark.slow
@pytest.mark.parametrize("name,size", CASES)
def test_loaded_model_computes_what_keras_applications_computes(
    name, size, offline_keras_cache, monkeypatch
):
    reference, images, _ = _stand_in(name, size, monkeypatch)
    model = create_model(
        name, input_shape=(size, size, 3), classifier_activation="linear", pretrained="imagenet"
    )
    want = reference(images, training=False).numpy().reshape(len(images), -1)
    assert np.abs(want[0] - want[1]).max() > 0.1  # the logits depend on the image
    np.testing.assert_allclose(model(images, training=False).numpy(), want, rtol=0, atol=1e-5)
    keras.backend.clear_session()


def test_new_classifier_starts_fresh_and_the_rest_loads(offline_keras_cache, monkeypatch, caplog):
    # 64 pixels: at 32 the last BNs see 4 values per channel, and their statistics amplify
    # float32 rounding beyond 1e-5.
    name, size = "mobilenet_v3_small_075", 64
    reference, images, path = _stand_in(name, size, monkeypatch)
    with caplog.at_level(logging.INFO, logger="absl"):
        model = create_model(
            name, input_shape=(size, size, 3), num_classes=5, pretrained="imagenet"
        )
    assert tuple(model.output_shape) == (None, 5)
    # The wide pre-logits layer is part of keras.applications' top: it loads from the top file.
    want = keras.Model(reference.input, reference.get_layer("Conv_2").output)(images)
    got = keras.Model(model.input, model.get_layer("pre_logits").output)(images)
    np.testing.assert_allclose(got.numpy(), np.reshape(want, got.shape), rtol=1e-5, atol=1e-5)
    summary = [r.getMessage() for r in caplog.records if path in r.getMessage()]
    assert len(summary) == 1 and "left fresh: classifier (" in summary[0], summary
    keras.backend.clear_session()


def test_headless_model_loads_the_file_without_top(offline_keras_cache, monkeypatch):
    name, size = "mobilenet_v2_050", 96
    reference, images, path = _stand_in(name, size, monkeypatch, include_top=False)
    assert path.endswith("_0.5_96_no_top.h5")
    model = create_model(
        name, input_shape=(size, size, 3), include_top=False, pretrained="imagenet"
    )
    np.testing.assert_allclose(model(images).numpy(), reference(images).numpy(), atol=1e-5)
    keras.backend.clear_session()


def test_the_symmetric_layout_is_not_the_published_function(
    offline_keras_cache, monkeypatch, caplog
):
    """Why ``pretrained`` switches MobileNet v1/v2 to ``stride2_padding="same"``."""
    name, size = "mobilenet_v1_025", 128
    reference, images, _ = _stand_in(name, size, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="absl"):
        model = create_model(
            name,
            input_shape=(size, size, 3),
            classifier_activation="linear",
            stride2_padding="symmetric",
            pretrained="imagenet",
        )
    assert any("stride2_padding='symmetric' differs" in r.getMessage() for r in caplog.records)
    difference = np.abs(model(images).numpy() - reference(images).numpy().reshape(4, -1))
    assert difference.max() > 1e-2
    keras.backend.clear_session()


def test_a_lightnets_weight_file_loads_by_its_own_names(tmp_path):
    images = _images(32)
    keras.utils.set_random_seed(3)
    source = create_model("fd_mobilenet_025", input_shape=(32, 32, 3), num_classes=7)
    path = str(tmp_path / "mine.h5")
    source.save_weights(path)
    keras.utils.set_random_seed(4)
    model = create_model(
        "fd_mobilenet_025", input_shape=(32, 32, 3), num_classes=7, pretrained=path
    )
    np.testing.assert_allclose(model(images).numpy(), source(images).numpy(), atol=1e-6)
    keras.backend.clear_session()


def test_no_network_and_no_cache_is_one_line_naming_the_file_and_where_to_put_it(
    offline_keras_cache,
):
    weight_file = get_model_spec("mobilenet_v2_100").weights.file_for(224, True)
    with pytest.raises(PretrainedWeightsError) as error:
        create_model("mobilenet_v2_100", pretrained="imagenet")
    message = str(error.value)
    assert "\n" not in message
    assert "network disabled by the test" in message
    assert (
        f"fetch {weight_file.url} and put it at {offline_keras_cache / weight_file.file_name}"
        in (message)
    )
    assert not (offline_keras_cache / weight_file.file_name).exists()


def test_variants_without_published_weights_say_so():
    with pytest.raises(PretrainedWeightsError, match="shufflenet_v2_100 has no published ImageNet"):
        create_model("shufflenet_v2_100", pretrained="imagenet")


def test_bad_files_are_refused_naming_them(tmp_path, offline_keras_cache, monkeypatch):
    with pytest.raises(PretrainedWeightsError, match="'missing.h5' is neither 'imagenet' nor"):
        create_model("mobilenet_v1_025", pretrained="missing.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not weights")
    with pytest.raises(PretrainedWeightsError, match="notes.h5 is not a Keras HDF5 weight file"):
        create_model("mobilenet_v1_025", input_shape=(32, 32, 3), pretrained=str(text))
    _, _, path = _stand_in("mobilenet_v1_025", 128, monkeypatch)
    with pytest.raises(PretrainedWeightsError, match="'conv1'.*another width"):
        create_model("mobilenet_v1_050", input_shape=(32, 32, 3), pretrained=path)
    keras.backend.clear_session()


def test_the_file_table_is_keras_applications():
    v1 = get_model_spec("mobilenet_v1_075").weights
    assert v1.input_sizes == (128, 160, 192, 224)
    assert v1.file_for(160, True).file_name == "mobilenet_7_5_160_tf.h5"
    assert v1.file_for(100, False).file_name == "mobilenet_7_5_224_tf_no_top.h5"  # fallback
    assert v1.file_for(160, True).url == (
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
        "mobilenet_7_5_160_tf.h5"
    )
    v2 = get_model_spec("mobilenet_v2_130").weights
    assert v2.input_sizes == (96, 128, 160, 192, 224)
    assert (
        v2.file_for(96, False).file_name
        == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.3_96_no_top.h5"
    )
    v3 = get_model_spec("mobilenet_v3_small_minimalistic_100").weights.file_for(224, False)
    assert v3.file_name == "weights_mobilenet_v3_small_minimalistic_224_1.0_float_no_top_v2.h5"
    assert v3.file_hash == "cde8136e733e811080d9fcd8a252f7e4"
    xception = get_model_spec("xception").weights.file_for(299, True)
    assert xception.file_hash == "0a58e3b7378bc2990ea3b43d5981f1f6"
    assert xception.url.endswith("/xception/xception_weights_tf_dim_ordering_tf_kernels.h5")
