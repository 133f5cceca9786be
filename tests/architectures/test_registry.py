"""The registry: lookup errors, None overrides, wildcards, third-party registration."""

import pytest
import tf_keras as keras

from architectures import registry
from architectures.common import classifier


def tiny_net(*, width=4, dropout=0.0, name="tiny_net", **head):
    """A third-party architecture written against the same builder contract."""

    def backbone(inputs):
        return keras.layers.Conv2D(width, 3, name="conv")(inputs)

    head = {"input_shape": (16, 16, 3), "num_classes": 7, **head}
    return classifier(backbone, name=name, min_input_size=8, dropout=dropout, **head)


@pytest.fixture
def clean_registry(monkeypatch):
    """The registry with its real entries, restored after the test whatever it registered."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return registry


@pytest.fixture
def third_party(clean_registry):
    @registry.register_model(input_size=16, min_input_size=8, num_classes=7, recipe="tiny")
    def thirdparty_tiny_004(**kwargs):
        return tiny_net(**{"width": 4, **kwargs})

    @registry.register_model(input_size=16, min_input_size=8, num_classes=7, recipe="tiny")
    def thirdparty_tiny_008(**kwargs):
        return tiny_net(**{"width": 8, **kwargs})

    return clean_registry


def test_third_party_variant_is_listed_and_created_with_its_defaults(third_party):
    assert third_party.list_models("thirdparty_*") == ["thirdparty_tiny_004", "thirdparty_tiny_008"]
    spec = third_party.get_model_spec("thirdparty_tiny_008")
    assert (spec.family, spec.input_size, spec.num_classes, spec.recipe) == (
        "test_registry",
        16,
        7,
        "tiny",
    )
    model = third_party.create_model("thirdparty_tiny_008")
    assert model.name == "thirdparty_tiny_008"
    assert tuple(model.input_shape) == (None, 16, 16, 3)
    assert tuple(model.output_shape) == (None, 7)
    assert model.get_layer("conv").filters == 8


def test_none_overrides_never_override(third_party):
    model = third_party.create_model(
        "thirdparty_tiny_004", input_shape=None, num_classes=None, width=None, dropout=None
    )
    assert tuple(model.input_shape) == (None, 16, 16, 3)
    assert tuple(model.output_shape) == (None, 7)
    assert model.get_layer("conv").filters == 4


def test_given_overrides_reach_the_builder(third_party):
    model = third_party.create_model(
        "thirdparty_tiny_004", input_shape=(12, 12, 3), num_classes=3, width=5, name="renamed"
    )
    assert tuple(model.input_shape) == (None, 12, 12, 3)
    assert tuple(model.output_shape) == (None, 3)
    assert model.get_layer("conv").filters == 5
    assert model.name == "renamed"


def test_list_models_wildcards(third_party):
    assert third_party.list_models("thirdparty_tiny_00?") == [
        "thirdparty_tiny_004",
        "thirdparty_tiny_008",
    ]
    assert third_party.list_models("*_008") == ["thirdparty_tiny_008"]
    assert third_party.list_models("thirdparty_tiny_[0]04") == ["thirdparty_tiny_004"]
    assert third_party.list_models("nothing_like_this*") == []
    everything = third_party.list_models()
    assert everything == sorted(everything)
    assert {"thirdparty_tiny_004", "mobilenet_v2_100", "fd_mobilenet_025"} <= set(everything)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="Unknown model 'mobilenet_v2_10'") as err:
        registry.create_model("mobilenet_v2_10")
    assert "mobilenet_v2_100" in str(err.value)
    assert "list_models" in str(err.value)


def test_duplicate_name_is_refused_unless_overridden(third_party):
    with pytest.raises(ValueError, match="'thirdparty_tiny_004' is already registered"):

        @registry.register_model
        def thirdparty_tiny_004(**kwargs):
            return tiny_net(**kwargs)

    @registry.register_model(override=True, input_size=12)
    def thirdparty_tiny_004(**kwargs):  # noqa: F811  the point of the test
        return tiny_net(**kwargs)

    assert third_party.get_model_spec("thirdparty_tiny_004").input_size == 12


def test_unknown_spec_field_is_refused(clean_registry):
    with pytest.raises(ValueError, match="input_sise"):

        @registry.register_model(input_sise=224)
        def thirdparty_typo(**kwargs):
            return tiny_net(**kwargs)

    assert clean_registry.list_models("thirdparty_typo") == []


def test_builder_rejects_bad_arguments_by_name(third_party):
    with pytest.raises(ValueError, match="at least 8x8"):
        third_party.create_model("thirdparty_tiny_004", input_shape=(4, 4, 3))
    with pytest.raises(ValueError, match="pooling must be one of"):
        third_party.create_model("thirdparty_tiny_004", include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        third_party.create_model("thirdparty_tiny_004", num_classes=0)
