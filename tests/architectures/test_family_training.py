"""Every family trains with ``fit`` and serves with ``predict`` and ``evaluate``, in graph mode.

``fit``/``predict`` run ``tf.function`` graphs, where grappler fuses convolutions with the
batch norms and activations after them: the kernels and fusions that differ between TensorFlow's
CPU kernel sets (oneDNN or Eigen) run here, once per family, at 32×32.
``tests/test_kernel_sets.py`` runs this file under the other kernel set too.
"""

import numpy as np
import pytest
import tf_keras as keras

from architectures import create_model, get_model_spec

# The smallest variant of each family; ResNeXt and ShuffleNet v1 carry the grouped convolutions.
FAMILY_VARIANTS = (
    "mobilenet_v1_025",
    "mobilenet_v2_035",
    "mobilenet_v3_small_075",
    "fd_mobilenet_025",
    "shufflenet_v1_g3_050",
    "shufflenet_v2_050",
    "resnet50",
    "resnext50_32x4d",
    "xception",
)
SIZE, CLASSES, BATCH = 32, 4, 4


@pytest.mark.parametrize("name", FAMILY_VARIANTS)
def test_fit_predict_and_evaluate(name):
    assert get_model_spec(name).min_input_size <= SIZE
    keras.utils.set_random_seed(0)
    model = create_model(name, input_shape=(SIZE, SIZE, 3), num_classes=CLASSES, dropout=0.0)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(0)
    images = rng.standard_normal((2 * BATCH, SIZE, SIZE, 3)).astype("float32")
    labels = rng.integers(0, CLASSES, 2 * BATCH).astype("int32")
    kernels = [w for w in model.trainable_weights if "kernel" in w.name]
    before = [w.numpy().copy() for w in kernels]
    history = model.fit(images, labels, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    moved = sum(
        not np.array_equal(old, new.numpy()) for old, new in zip(before, kernels, strict=True)
    )
    assert moved == len(kernels)
    predicted = model.predict(images, batch_size=BATCH, verbose=0)
    np.testing.assert_allclose(predicted, model(images, training=False), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(predicted.sum(axis=1), 1.0, rtol=1e-5)
    loss, _ = model.evaluate(images, labels, batch_size=BATCH, verbose=0)
    assert np.isfinite(loss)
