"""Recipes load and validate; every model's recipe exists; bad configs fail naming the key."""

import glob
import importlib.util
import os

import pytest

import architectures
from configs.common import get_base_config
from trainer import config_validation

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
RECIPES = sorted(
    os.path.basename(path)[: -len(".py")]
    for path in glob.glob(os.path.join(CONFIG_DIR, "*.py"))
    if os.path.basename(path)[: -len(".py")] not in ("__init__", "common", "recipes", "validation")
)
FAMILIES = (
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3",
    "shufflenet_v1",
    "shufflenet_v2",
    "fd_mobilenet",
    "resnet50",
    "resnext50",
    "xception",
)


def load(recipe):
    spec = importlib.util.spec_from_file_location(recipe, os.path.join(CONFIG_DIR, f"{recipe}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_validates(recipe):
    config_validation.validate(load(recipe))


def test_every_family_has_digits_and_imagenet_recipes_and_every_model_its_recipe():
    expected = {f"{family}_{data}" for family in FAMILIES for data in ("digits", "imagenet")}
    assert expected <= set(RECIPES)
    for name in architectures.list_models():
        assert architectures.get_model_spec(name).recipe in RECIPES, name
        assert (
            load(architectures.get_model_spec(name).recipe).model.name.split("_")[0]
            == (name.split("_")[0])
        )


def test_paper_hyperparameters():
    for recipe in ("mobilenet_v1_imagenet", "mobilenet_v2_imagenet", "fd_mobilenet_imagenet"):
        optim = load(recipe).optim
        assert (optim.name, optim.rho, optim.momentum) == ("rmsprop", 0.9, 0.9)
        assert (optim.weight_decay, optim.depthwise_weight_decay) == (4e-5, 0.0)
    for recipe in ("shufflenet_v1_imagenet", "shufflenet_v2_imagenet"):
        optim = load(recipe).optim
        assert (optim.schedule, optim.weight_decay) == ("linear", 4e-5)
    for recipe in ("resnet50_imagenet", "resnext50_imagenet"):
        optim = load(recipe).optim
        assert (optim.name, optim.momentum, optim.nesterov) == ("sgd", 0.9, True)
        assert optim.schedule in ("cosine", "step")
    xception = load("xception_imagenet")
    assert (xception.model.dropout, xception.optim.weight_decay) == (0.5, 1e-5)
    assert load("default").data.source == "digits"
    # The weight EMA of MobileNet v3's paper and v2's TF-slim recipe; off where none is used.
    for recipe in ("mobilenet_v2_imagenet", "mobilenet_v3_imagenet"):
        assert load(recipe).train.ema_decay == 0.9999
    assert load("mobilenet_v1_imagenet").train.ema_decay is None


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("optim.name", "lamb", "config.optim.name='lamb'"),
        ("optim.schedule", "poly", "config.optim.schedule='poly'"),
        ("train.epochs", -1, "config.train.epochs=-1"),
        ("train.batch_size", 0, "config.train.batch_size=0"),
        ("train.label_smoothing", 1.5, "config.train.label_smoothing=1.5"),
        ("train.best_metric", "val_acc", "config.train.best_metric='val_acc'"),
        ("model.name", "mobilenet_v9", "Unknown model 'mobilenet_v9'"),
        ("model.bn_momentum", 1.0, "config.model.bn_momentum=1.0"),
        ("runtime.strategy", "horovod", "config.runtime.strategy='horovod'"),
        ("runtime.precision", "int8", "config.runtime.precision='int8'"),
        ("optim.min_learning_rate", 1.0, "config.optim.min_learning_rate=1.0"),
        ("pruning.final_sparsity", 1.5, "final_sparsity"),
        ("export.formats", "keras,onxx", "onxx"),
        ("init_checkpoint", "/no/such/run", "config.init_checkpoint='/no/such/run'"),
        ("pruning.dense_reference", "/no/such/run", "config.pruning.dense_reference"),
    ],
)
def test_bad_values_fail_naming_the_key(key, value, message):
    config = get_base_config()
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        config_validation.validate(config)


def test_unknown_keys_and_adamw_depthwise_rule():
    config = get_base_config()
    with config.unlocked():
        config.train.epoch = 3
    with pytest.raises(ValueError, match="config.train.epoch"):
        config_validation.validate(config)

    config = get_base_config()
    config.model.kwargs.alpha = 0.5  # family knobs are free-form
    config.optim.name, config.optim.weight_decay, config.optim.depthwise_weight_decay = (
        "adamw",
        0.05,
        0.01,
    )
    with pytest.raises(ValueError, match="config.optim.depthwise_weight_decay=0.01"):
        config_validation.validate(config)
    config.optim.depthwise_weight_decay = 0.0
    config_validation.validate(config)


def parse_command_line(*args):
    """``--config`` and its overrides as train.py parses them (absl + config_flags)."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["train.py", *args]
    values = flags.FlagValues()
    # config_flags finds the override flags in the argv it is given when the flag is defined.
    config_flags.DEFINE_config_file("config", None, flag_values=values, sys_argv=argv)
    values(argv)
    return values.config


def test_digits_recipe_takes_the_model_name_and_the_old_files_are_aliases():
    from configs import digits

    for name in ("shufflenet_v2_050", "resnet50"):
        config = parse_command_line(f"--config={CONFIG_DIR}/digits.py:{name}")
        assert config.model.name == name and config.data.source == "digits"
        assert config.to_dict() == digits.get_config(name).to_dict()
    assert parse_command_line(f"--config={CONFIG_DIR}/digits.py").model.name == "mobilenet_v1_050"
    for family in FAMILIES:
        alias = load(f"{family}_digits")
        assert alias.to_dict() == digits.get_config(alias.model.name).to_dict(), family
    assert load("resnet50_digits").train.epochs == 15
    assert load("default").to_dict() == digits.get_config().to_dict()


def test_family_knobs_are_set_from_the_command_line_and_checked_against_the_family():
    config = parse_command_line(
        f"--config={CONFIG_DIR}/digits.py:mobilenet_v2_050", "--config.model.kwargs.alpha=0.35"
    )
    config_validation.validate(config)
    kwargs = {k: v for k, v in config.model.kwargs.items() if v is not None}
    assert kwargs == {"alpha": 0.35}
    thin = architectures.create_model(config.model.name, input_shape=(32, 32, 3), **kwargs)
    default = architectures.create_model("mobilenet_v2_035", input_shape=(32, 32, 3))
    assert thin.count_params() == default.count_params()

    config = parse_command_line(
        f"--config={CONFIG_DIR}/digits.py:resnet50", "--config.model.kwargs.alpha=0.5"
    )
    with pytest.raises(
        ValueError, match=r"alpha=0.5 is not a knob of resnet50 \(resnet\); its knobs"
    ):
        config_validation.validate(config)
    config = parse_command_line(
        f"--config={CONFIG_DIR}/digits.py:shufflenet_v1_g3_050", "--config.model.kwargs.groups=8"
    )
    config_validation.validate(config)
    model = architectures.create_model(config.model.name, input_shape=(32, 32, 3), groups=8)
    assert model.get_layer("stage3_unit1_gconv1").groups == 8
