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
    if not os.path.basename(path).startswith(("_", "common"))
)
FAMILIES = (
    "mobilenet_v1",
    "mobilenet_v2",
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
        ("export.formats", "keras,onnx", "onnx"),
        ("init_checkpoint", "/no/such/run", "config.init_checkpoint='/no/such/run'"),
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
