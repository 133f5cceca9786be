"""trainer.optim: schedules against a plain-Python reference, optimizers, weight-decay rules."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from ml_collections import ConfigDict

import layers
from configs.common import get_base_config
from trainer import optim


def reference_lr(kind, step, *, peak, total, warmup, decay_steps, rate, floor):
    """The schedules written out independently, one step at a time."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(max((step - warmup) / max(total - warmup, 1), 0.0), 1.0)
    if kind == "constant":
        return peak
    if kind == "cosine":
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "linear":
        return peak - (peak - floor) * progress
    if kind == "step":
        return max(peak * rate ** (step // decay_steps), floor)
    return max(peak * rate ** (step / decay_steps), floor)


@pytest.mark.parametrize("kind", optim.SCHEDULES)
@pytest.mark.parametrize("warmup", [0, 5])
def test_schedule_matches_reference_and_round_trips(kind, warmup):
    params = dict(total=100, warmup=warmup, decay_steps=30, rate=0.5, floor=0.01, peak=0.4)
    schedule = optim.WarmupSchedule(
        kind,
        peak=params["peak"],
        total_steps=params["total"],
        warmup_steps=warmup,
        decay_steps=params["decay_steps"],
        decay_rate=params["rate"],
        floor=params["floor"],
    )
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    for step in (0, 1, 4, 5, 6, 29, 30, 31, 60, 99, 100, 150):
        expected = reference_lr(kind, step, **params)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-7), step
        assert float(restored(step)) == pytest.approx(expected, rel=1e-5, abs=1e-7), step


def test_build_schedule_scales_with_batch_and_converts_epochs():
    cfg = get_base_config().optim
    cfg.learning_rate, cfg.base_batch_size, cfg.warmup_epochs, cfg.decay_epochs = 0.1, 256, 2, 3
    schedule = optim.build_schedule(cfg, steps_per_epoch=10, total_steps=100, batch_size=1024)
    assert schedule.peak == pytest.approx(0.4)
    assert (schedule.warmup_steps, schedule.decay_steps) == (20, 30)


def test_bad_schedule_is_rejected():
    with pytest.raises(ValueError, match="Unknown schedule 'poly'"):
        optim.WarmupSchedule("poly", peak=0.1, total_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        optim.WarmupSchedule("cosine", peak=0.1, total_steps=0)


@pytest.mark.parametrize(
    "name, cls, attrs",
    [
        ("sgd", keras.optimizers.SGD, {"momentum": 0.8, "nesterov": True}),
        ("rmsprop", keras.optimizers.RMSprop, {"rho": 0.9, "momentum": 0.8, "epsilon": 1.0}),
        ("adam", keras.optimizers.Adam, {"epsilon": 1.0}),
        ("adamw", keras.optimizers.AdamW, {"weight_decay": 0.05}),
    ],
)
def test_build_optimizer(name, cls, attrs):
    cfg = get_base_config().optim
    cfg.name, cfg.momentum, cfg.nesterov, cfg.epsilon, cfg.weight_decay = name, 0.8, True, 1.0, 0.05
    optimizer = optim.build_optimizer(cfg, 0.01)
    assert type(optimizer) is cls
    config = optimizer.get_config()
    for key, value in attrs.items():
        assert config[key] == pytest.approx(value), key


def test_unknown_optimizer_names_the_key():
    cfg = get_base_config().optim
    cfg.name = "lamb"
    with pytest.raises(ValueError, match="config.optim.name 'lamb'"):
        optim.build_optimizer(cfg, 0.01)


def _mixed_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=True, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.SeparableConv2D(6, 1, name="sep")(x)
    x = layers.DepthwiseSeparableConv2D(5, 3, name="lightnets_sep")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="fc")(x)
    return keras.Model(inputs, outputs)


def test_weight_decay_rules_and_gradient():
    model = _mixed_model()
    depthwise, kernels = optim.decay_groups(model)
    names = lambda vs: sorted(v.name.split("/")[0] + "/" + v.name.split("/")[-1] for v in vs)  # noqa: E731
    assert names(depthwise) == [
        "dw/depthwise_kernel:0",
        "lightnets_sep/depthwise_kernel:0",
        "sep/depthwise_kernel:0",
    ]
    assert names(kernels) == [
        "conv/kernel:0",
        "fc/kernel:0",
        "lightnets_sep/pointwise_kernel:0",
        "sep/pointwise_kernel:0",
    ]

    cfg = ConfigDict({"name": "sgd", "weight_decay": 4e-5, "depthwise_weight_decay": 1e-3})
    optim.add_weight_decay(model, cfg)
    (penalty,) = model.losses
    expected = 4e-5 * sum(0.5 * np.sum(v.numpy() ** 2) for v in kernels) + 1e-3 * sum(
        0.5 * np.sum(v.numpy() ** 2) for v in depthwise
    )
    assert float(penalty) == pytest.approx(expected, rel=1e-5)

    # The penalty's gradient is rate * w on kernels and zero on BN weights and biases.
    with tf.GradientTape() as tape:
        total = tf.add_n(model.losses)
    grads = tape.gradient(total, model.trainable_weights, unconnected_gradients="zero")
    rates = {v.ref(): 4e-5 for v in kernels} | {v.ref(): 1e-3 for v in depthwise}
    for var, grad in zip(model.trainable_weights, grads, strict=True):
        np.testing.assert_allclose(grad.numpy(), rates.get(var.ref(), 0.0) * var.numpy(), atol=1e-9)


def test_adamw_decays_kernels_only():
    model = _mixed_model()
    cfg = get_base_config().optim
    cfg.name, cfg.weight_decay = "adamw", 0.1
    optim.add_weight_decay(model, cfg)
    assert not model.losses  # decoupled: no L2 term in the loss
    optimizer = optim.build_optimizer(cfg, 0.01)
    optim.exclude_from_decay(optimizer, model, cfg)
    optimizer.build(model.trainable_variables)
    _, kernels = optim.decay_groups(model)
    decayed = {v.ref() for v in kernels}
    for var in model.trainable_variables:
        assert optimizer._use_weight_decay(var) == (var.ref() in decayed), var.name
