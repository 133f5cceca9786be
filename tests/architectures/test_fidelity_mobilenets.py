"""MobileNet v1/v2 and FD-MobileNet at 224×224, 1000 classes, against the published numbers.

MACs: within 0.5 % of the papers' printed (rounded) values, ``docs/papers.md``.
Parameters: equal to keras.applications' own MobileNet / MobileNetV2 (an independent build).
"""

import pytest
import tf_keras as keras

from architectures import create_model, get_model_spec, list_models
from architectures.cost import model_cost

pytestmark = pytest.mark.slow

MY_FAMILIES = ("mobilenet_v1_*", "mobilenet_v2_*", "fd_mobilenet_*")
VARIANTS = [name for pattern in MY_FAMILIES for name in list_models(pattern)]


def _alpha(name: str) -> float:
    return int(name.rsplit("_", 1)[1]) / 100


def _keras_reference(name: str):
    alpha = _alpha(name)
    if name.startswith("mobilenet_v1_"):
        return keras.applications.MobileNet(alpha=alpha, weights=None)
    if name.startswith("mobilenet_v2_"):
        return keras.applications.MobileNetV2(alpha=alpha, weights=None)
    return None


def _trainable(model) -> int:
    return sum(int(w.shape.num_elements()) for w in model.trainable_weights)


def test_all_variants_are_registered():
    expected = [
        *(f"mobilenet_v1_{w}" for w in ("025", "050", "075", "100")),
        *(f"mobilenet_v2_{w}" for w in ("035", "050", "075", "100", "130", "140")),
        *(f"fd_mobilenet_{w}" for w in ("025", "050", "075", "100")),
    ]
    assert expected == VARIANTS


@pytest.mark.parametrize("name", VARIANTS)
def test_paper_macs_and_keras_applications_params(name):
    spec = get_model_spec(name)
    assert spec.input_size == 224
    model = create_model(name)
    assert tuple(model.input_shape) == (None, 224, 224, 3)
    assert tuple(model.output_shape) == (None, 1000)
    report = model_cost(model)
    assert report.total_params == _trainable(model)
    if spec.paper_macs is not None:
        assert report.total_macs == pytest.approx(spec.paper_macs, rel=5e-3)
    reference = _keras_reference(name)
    if reference is not None:
        assert _trainable(model) == _trainable(reference)
        assert model.count_params() == reference.count_params()
    keras.backend.clear_session()


def test_paper_numbers_are_declared_where_published():
    published = {
        "mobilenet_v1_100": 569e6,
        "mobilenet_v1_075": 325e6,
        "mobilenet_v1_050": 149e6,
        "mobilenet_v1_025": 41e6,
        "mobilenet_v2_100": 300e6,
        "mobilenet_v2_140": 582e6,
        "mobilenet_v2_035": 59e6,
        "fd_mobilenet_100": 144e6,
        "fd_mobilenet_050": 40e6,
        "fd_mobilenet_025": 12e6,
    }
    for name, macs in published.items():
        assert get_model_spec(name).paper_macs == macs, name
