"""deploy.loading on models saved before every family's input was named ``image``.

ResNet, ShuffleNet and Xception models used to take their input as ``input``. Their exports must
still load and predict: the SavedModel signatures (ours and Keras' default one, which is named
after the input layer) and the ``.keras`` file.
"""

import numpy as np
import pytest
import tf_keras as keras

import layers
from architectures import common
from deploy import export, loading


@pytest.fixture(scope="module")
def old_style_model():
    """A small model through the shared assembler, then given the old input name."""
    keras.utils.set_random_seed(0)

    def backbone(x):
        x = common.conv_bn_act(x, 8, 3, strides=2, name="stem")
        return layers.GroupConv2D(8, 3, groups=2, name="grouped")(x)

    model = common.classifier(
        backbone, name="tiny", min_input_size=8, dropout=0.0, input_shape=(32, 32, 3), num_classes=5
    )
    assert model.layers[0].name == common.INPUT_NAME
    old = keras.models.clone_model(model, input_tensors=keras.Input((32, 32, 3), name="input"))
    old.set_weights(model.get_weights())
    assert old.layers[0].name == "input"
    return old


def test_exports_of_a_model_whose_input_is_named_input_still_load(old_style_model, tmp_path):
    images = np.random.default_rng(0).standard_normal((3, 32, 32, 3)).astype("float32")
    want = old_style_model(images, training=False).numpy()
    paths = export.export_model(
        old_style_model, str(tmp_path / "ours"), formats=("keras", "saved_model")
    )
    keras_default = str(tmp_path / "keras_default_signature")
    old_style_model.save(keras_default, save_format="tf")  # signature argument: "input"
    for path in (paths["keras"], paths["saved_model"], keras_default):
        loaded = loading.load_model(path)
        assert loaded.input_shape == (32, 32, 3) and loaded.num_classes == 5, path
        np.testing.assert_allclose(loaded.predict(images), want, rtol=1e-5, atol=1e-5)
