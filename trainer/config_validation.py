"""Checks a whole training config before any work, with errors that name the key.

Keys come from ``configs.common.get_base_config()``: a recipe may change values but not invent
keys (``config.model.kwargs`` is the one free-form section: the family's own builder knobs).
Data keys are checked by ``trainer.data`` when the datasets are built, which is still before any
training step, and pruning keys by ``trainer.pruning.validate``.
"""

from __future__ import annotations

import os

from configs.common import get_base_config
from trainer import optim, pruning, runtime

_FREE_FORM = ("model.kwargs",)
BEST_METRICS = ("val_top1", "val_top5", "val_loss", "top1", "top5", "loss")


def _flat_keys(config, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        path = f"{prefix}{key}"
        keys.add(path)
        if hasattr(value, "items") and path not in _FREE_FORM:
            keys |= _flat_keys(value, f"{path}.")
    return keys


def check_keys(config) -> None:
    """Raises ValueError for keys that ``configs/common.py`` does not define."""
    unknown = sorted(_flat_keys(config) - _flat_keys(get_base_config()))
    if unknown:
        raise ValueError(
            f"Unknown config key(s): {', '.join('config.' + k for k in unknown)}. The valid keys "
            f"are those of configs/common.py (family knobs go in config.model.kwargs)."
        )


def _require(ok: bool, key: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"config.{key}={value!r} is invalid: {expected}.")


def _check_choice(config, key: str, choices) -> None:
    value = _get(config, key)
    _require(value in choices, key, value, f"use one of {', '.join(map(str, choices))}")


def _get(config, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def _check_range(
    config, key, *, low=None, high=None, low_open=False, high_open=False, optional=False
) -> None:
    value = _get(config, key)
    if value is None and optional:
        return
    ok = value is not None
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
    _require(ok, key, value, f"it must be {' and '.join(s for s in (lo, hi) if s)}")


def validate(config) -> None:
    """Checks every key and value that the trainer reads.

    Raises:
      ValueError: the first bad key, with its value and what is accepted.
    """
    check_keys(config)
    import architectures  # the registry gives the model-name message (with close matches)

    spec = architectures.get_model_spec(config.model.name)
    for key in ("model.input_size", "data.image_size"):
        _check_range(config, key, low=spec.min_input_size, optional=True)
    _check_range(config, "model.dropout", low=0.0, high=1.0, high_open=True, optional=True)
    _check_range(config, "model.bn_momentum", low=0.0, high=1.0, high_open=True, optional=True)

    _check_range(config, "train.epochs", low=1)
    _check_range(config, "train.batch_size", low=1)
    _check_range(config, "train.steps_per_epoch", low=1, optional=True)
    _check_range(config, "train.eval_steps", low=1, optional=True)
    _check_range(config, "train.label_smoothing", low=0.0, high=1.0, high_open=True)
    _check_range(config, "train.checkpoint_every_steps", low=0)
    _check_range(config, "train.keep_checkpoints", low=1)
    _check_choice(config, "train.best_metric", BEST_METRICS)
    _check_choice(config, "train.verbose", (0, 1, 2))

    _check_choice(config, "optim.name", optim.OPTIMIZERS)
    _check_choice(config, "optim.schedule", optim.SCHEDULES)
    _check_range(config, "optim.learning_rate", low=0.0, low_open=True)
    _check_range(config, "optim.base_batch_size", low=1)
    _check_range(config, "optim.momentum", low=0.0, high=1.0, high_open=True)
    _check_range(config, "optim.rho", low=0.0, high=1.0, high_open=True)
    _check_range(config, "optim.epsilon", low=0.0, low_open=True)
    _check_range(config, "optim.weight_decay", low=0.0)
    _check_range(config, "optim.depthwise_weight_decay", low=0.0)
    _check_range(config, "optim.warmup_epochs", low=0.0, high=config.train.epochs)
    _check_range(config, "optim.decay_rate", low=0.0, high=1.0, low_open=True)
    _check_range(config, "optim.decay_epochs", low=0.0, low_open=True)
    _check_range(config, "optim.min_learning_rate", low=0.0, high=config.optim.learning_rate)
    _check_range(config, "optim.clipnorm", low=0.0, low_open=True, optional=True)
    if config.optim.name == "adamw":
        rate, depthwise = config.optim.weight_decay, config.optim.depthwise_weight_decay
        _require(
            depthwise in (0.0, rate),
            "optim.depthwise_weight_decay",
            depthwise,
            f"AdamW applies one decoupled rate, so it must be 0 or equal config.optim."
            f"weight_decay ({rate})",
        )

    runtime.validate(config.runtime)
    _check_range(config, "runtime.seed", low=0)
    pruning.validate(config.pruning)

    from trainer import export

    export.parse_formats(config.export.formats)
    path = config.init_checkpoint
    _require(
        not path or os.path.exists(path) or os.path.exists(f"{path}.index"),
        "init_checkpoint",
        path,
        "no such file, directory or checkpoint prefix",
    )
