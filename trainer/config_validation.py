"""Checks a whole training config before any work, with errors that name the key.

Keys come from ``configs.common.get_base_config()``: a recipe may change values but not invent
keys. Each module checks its own section with the helpers of ``configs/validation.py``; this
module checks the rest and calls them, so every bad value fails before the first file is
written. Data keys are checked by ``trainer.data`` when the datasets are built, which is still
before any training step.
"""

from __future__ import annotations

import os

from compression import channel_pruning, pruning, quantization
from configs import validation
from configs.common import get_base_config
from deploy import export, workdir
from trainer import distill, ema, finetune, optim, runtime, tasks
from trainer.data import mixing


def _flat_keys(config, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        path = f"{prefix}{key}"
        keys.add(path)
        if hasattr(value, "items"):
            keys |= _flat_keys(value, f"{path}.")
    return keys


def check_keys(config) -> None:
    """Raises ValueError for keys that ``configs/common.py`` does not define."""
    unknown = sorted(_flat_keys(config) - _flat_keys(get_base_config()))
    if unknown:
        raise ValueError(
            f"Unknown config key(s): {', '.join('config.' + k for k in unknown)}. The valid keys "
            f"are those of configs/common.py."
        )


def check_model_knobs(config, spec) -> None:
    """Every ``config.model.kwargs`` knob that is set must be one of the model's builder's."""
    knobs = spec.knobs
    for knob, value in config.model.kwargs.items():
        if value is not None and knob not in knobs:
            raise ValueError(
                f"config.model.kwargs.{knob}={value!r} is not a knob of {spec.name} "
                f"({spec.family}); its knobs are: {', '.join(knobs) or 'none'}."
            )


def validate(config) -> None:
    """Checks every key and value that the trainer reads.

    Raises:
      ValueError: the first bad key, with its value and what is accepted.
    """
    check_keys(config)
    import architectures  # the registry gives the model-name message (with close matches)

    spec = architectures.get_model_spec(config.model.name)
    check_model_knobs(config, spec)
    for key in ("model.input_size", "data.image_size"):
        validation.check_range(config, key, low=spec.min_input_size, optional=True)
    validation.check_range(
        config, "model.dropout", low=0.0, high=1.0, high_open=True, optional=True
    )
    validation.check_range(
        config, "model.bn_momentum", low=0.0, high=1.0, high_open=True, optional=True
    )

    validation.check_range(config, "train.epochs", low=1)
    validation.check_range(config, "train.batch_size", low=1)
    validation.check_range(config, "train.steps_per_epoch", low=1, optional=True)
    validation.check_range(config, "train.eval_steps", low=1, optional=True)
    validation.check_range(config, "train.label_smoothing", low=0.0, high=1.0, high_open=True)
    validation.check_range(config, "train.checkpoint_every_steps", low=0)
    validation.check_range(config, "train.keep_checkpoints", low=1)
    tasks.validate(config, spec)
    validation.check_choice(config, "train.verbose", (None, 0, 1, 2))

    validation.check_choice(config, "optim.name", optim.OPTIMIZERS)
    validation.check_choice(config, "optim.schedule", optim.SCHEDULES)
    validation.check_range(config, "optim.learning_rate", low=0.0, low_open=True)
    validation.check_range(config, "optim.base_batch_size", low=1)
    validation.check_range(config, "optim.momentum", low=0.0, high=1.0, high_open=True)
    validation.check_range(config, "optim.rho", low=0.0, high=1.0, high_open=True)
    validation.check_range(config, "optim.epsilon", low=0.0, low_open=True)
    validation.check_range(config, "optim.weight_decay", low=0.0)
    validation.check_range(config, "optim.depthwise_weight_decay", low=0.0)
    validation.check_range(config, "optim.warmup_epochs", low=0.0, high=config.train.epochs)
    validation.check_range(config, "optim.decay_rate", low=0.0, high=1.0, low_open=True)
    validation.check_range(config, "optim.decay_epochs", low=0.0, low_open=True)
    validation.check_range(
        config, "optim.min_learning_rate", low=0.0, high=config.optim.learning_rate
    )
    validation.check_range(config, "optim.clipnorm", low=0.0, low_open=True, optional=True)
    if config.optim.name == "adamw":
        rate, depthwise = config.optim.weight_decay, config.optim.depthwise_weight_decay
        validation.require(
            depthwise in (0.0, rate),
            "optim.depthwise_weight_decay",
            depthwise,
            f"is invalid: AdamW applies one decoupled rate, so it must be 0 or equal "
            f"config.optim.weight_decay ({rate})",
        )

    ema.validate(config.train)
    mixing.validate(config.data)
    distill.validate(config.distill)
    finetune.validate(config)
    runtime.validate(config.runtime)
    validation.check_range(config, "runtime.seed", low=0)
    pruning.validate(config.pruning)
    channel_pruning.validate(config.channel_pruning)
    quantization.validate(config.quantization)
    validation.require(
        not (quantization.is_enabled(config.quantization) and pruning.is_enabled(config.pruning)),
        "quantization.aware",
        True,
        "cannot prune in the same run: prune first, then run QAT with config.init_checkpoint=<the "
        "pruned run> (its sparsity is kept) and config.pruning.final_sparsity=0",
    )

    # tfmot's fake-quant ops take float32 only (FakeQuantWithMinMaxVars refuses float16).
    validation.require(
        not quantization.is_enabled(config.quantization) or config.runtime.precision == "float32",
        "runtime.precision",
        config.runtime.precision,
        "cannot train quantization-aware (the fake-quant ops are float32-only): set "
        "--config.runtime.precision=float32 with config.quantization.aware=True",
    )

    export.parse_formats(config.export.formats)
    path = config.init_checkpoint
    validation.require(
        not path or os.path.exists(path) or os.path.exists(f"{path}.index"),
        "init_checkpoint",
        path,
        "is invalid: no such file, directory or checkpoint prefix",
    )
    reference = config.pruning.dense_reference
    if reference:  # a missing reference fails now, not after training
        try:
            workdir.dense_model_file(reference)
        except ValueError as error:
            raise ValueError(f"config.pruning.dense_reference: {error}") from None
