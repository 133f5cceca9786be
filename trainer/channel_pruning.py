"""Channel pruning inside a training run: prune once before training, fine-tune, resume.

``python train.py --config=... --config.init_checkpoint=<dense run>
--config.channel_pruning.target_macs=0.5`` starts from the dense run's model (classifier
included, when the classes and input size match), makes it thinner
(``compression.channel_pruning``) and trains the result with the usual loop. The thinner model
is written to the workdir (``Workdir.architecture``) before the first step, so a resumed run,
``evaluate.py``, ``export.py`` and warm starts from this run rebuild it without the registry
name (which names the dense model). ``Workdir.channel_pruning_json`` records what was removed;
``report`` turns it into ``metrics.json["channel_pruning"]``.

With ``config.channel_pruning.steps=N`` the pruning is gradual: N steps along a geometric schedule
of budgets, each but the last followed by ``fine_tune_steps`` training steps (default
``FINE_TUNE_EPOCHS`` epochs;
the run's loss, optimizer kind and peak learning rate, no schedule, no distillation), so each
step scores channels on weights that recovered from the one before. Each fine-tuned step is
saved (``Workdir.channel_pruning_step``): a run stopped during the pruning resumes after the last
saved step, not from the dense model.
"""

from __future__ import annotations

import os
import shutil

import tf_keras as keras
from absl import logging

from architectures.cost import model_cost
from compression import channel_pruning, pruning
from deploy import loading
from deploy.fileio import read_json, write_json
from deploy.workdir import Workdir, is_workdir, owning_workdir
from trainer import optim, tasks

# Training batches the taylor importance averages its gradients over.
TAYLOR_BATCHES = 8
# Default training between gradual pruning steps, in epochs: on digits, one epoch left MobileNet
# v2 near chance before the next step (96.1 % at the end vs 98.2 % one-shot), five recovered it
# (99.2 % over three seeds; docs/compression.md).
FINE_TUNE_EPOCHS = 5


def _dense_model(model: keras.Model, init_checkpoint: str) -> keras.Model:
    """The init checkpoint's whole model when it fits this run's input and classes, else
    ``model`` (already warm-started, without the classifier)."""
    if not init_checkpoint:
        return model
    source = loading.load_source_model(init_checkpoint)
    if pruning.has_wrappers(source):
        source = pruning.strip(source)
    if source.input_shape == model.input_shape and source.output_shape == model.output_shape:
        return source
    return model


def _dense_top1(init_checkpoint: str) -> float | None:
    """The validation top-1 the init checkpoint's run reported, if it is a finished run."""
    workdir = init_checkpoint if is_workdir(init_checkpoint) else None
    workdir = workdir or (owning_workdir(init_checkpoint, levels=3) if init_checkpoint else None)
    path = Workdir(workdir).metrics_json if workdir else None
    if not path or not os.path.isfile(path):
        return None
    return read_json(path).get("final", {}).get("val_top1")


def _save(model: keras.Model, path: str) -> None:
    """Saves ``model`` to ``path`` atomically (renamed into place: never half-written)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.partial.keras"
    model.save(partial)
    os.replace(partial, path)


def _saved_steps(run: Workdir, steps: int) -> tuple[int, str | None]:
    """The last gradual-pruning step saved in ``run`` (before the last of ``steps``): (k, path),
    or (0, None)."""
    for step in range(steps - 1, 0, -1):
        if os.path.isfile(run.channel_pruning_step(step)):
            return step, run.channel_pruning_step(step)
    return 0, None


def fine_tune(model: keras.Model, config, train, steps: int) -> float:
    """Trains ``model`` in place for ``steps`` batches of ``train`` between two pruning steps.

    The run's loss and optimizer kind at the peak learning rate of ``config.optim``, no schedule
    (a fresh optimizer each time: the thinner model has other variables).

    Returns:
      The mean training loss over those steps.
    """
    learning_rate = optim.scaled_learning_rate(config.optim, config.train.batch_size)
    model.compile(
        optimizer=optim.build_optimizer(config.optim, learning_rate),
        loss=tasks.loss(config.task, config.train),
    )
    history = model.fit(train.repeat(), steps_per_epoch=steps, epochs=1, verbose=0)
    return float(history.history["loss"][-1])


def prepare(
    model: keras.Model, config, run: Workdir, out: Workdir, *, train, steps_per_epoch: int
) -> keras.Model:
    """The model to train: ``model`` itself, or its channel-pruned version.

    Args:
      model: the freshly built (and warm-started) model.
      config: the run's config.
      run: the run's workdir (read).
      out: where this process writes (the workdir, or a non-chief worker's scratch copy).
      train: the training dataset of ``(images, one-hot labels)`` batches (taylor importance,
        fine-tuning between gradual steps).
      steps_per_epoch: training steps in one epoch (``FINE_TUNE_EPOCHS`` of them between
        gradual steps unless ``fine_tune_steps`` says otherwise).

    Returns:
      ``model`` when channel pruning is off; the workdir's pruned model when it holds one (a
      resumed run: the checkpoint then restores the trained weights); else a new pruned model,
      also written to the workdir.
    """
    section = config.channel_pruning
    if not channel_pruning.is_enabled(section):
        return model
    if os.path.isfile(run.architecture):
        logging.info("Channel pruning: the pruned model of %s is used.", run.architecture)
        return loading.load_keras_file(run.architecture)
    dense = _dense_model(model, config.init_checkpoint)
    dense_cost = model_cost(dense).total
    completed, path = _saved_steps(run, section.steps)
    start = dense
    if path:
        logging.info(
            "Channel pruning: continuing after step %d of %d (%s).", completed, section.steps, path
        )
        start = loading.load_keras_file(path)
    batches = train.take(TAYLOR_BATCHES) if section.importance == "taylor" else None
    tune_steps = section.fine_tune_steps or FINE_TUNE_EPOCHS * steps_per_epoch
    step = completed

    def tune_and_save(step_model: keras.Model) -> None:
        nonlocal step
        step += 1
        macs = model_cost(step_model).total.macs
        loss = fine_tune(step_model, config, train, tune_steps)
        logging.info(
            "Channel pruning step %d of %d: %.2fx the dense MACs; fine-tuned %d steps, loss %.4f.",
            step,
            section.steps,
            macs / max(1, dense_cost.macs),
            tune_steps,
            loss,
        )
        _save(step_model, out.channel_pruning_step(step))

    thin = channel_pruning.prune_from_config(
        start,
        section,
        batches=batches,
        fine_tune=tune_and_save,
        completed=completed,
        dense_cost=(dense_cost.macs, dense_cost.params),
    )
    thin_cost = model_cost(thin).total
    report = {
        "target_macs": section.target_macs,
        "target_params": section.target_params,
        "importance": section.importance,
        "round_to": section.round_to,
        "min_fraction": section.min_fraction,
        "skip": section.skip,
        "steps": section.steps,
        "fine_tune_steps": tune_steps if section.steps > 1 else 0,
        "dense_macs": dense_cost.macs,
        "dense_params": dense_cost.params,
        "pruned_macs": thin_cost.macs,
        "pruned_params": thin_cost.params,
        "channels": {
            name: list(kept) for name, kept in channel_pruning.kept_channels(dense, thin).items()
        },
        "dense_top1": _dense_top1(config.init_checkpoint),
    }
    os.makedirs(out.root, exist_ok=True)
    _save(thin, out.architecture)
    write_json(out.channel_pruning_json, report)
    # The steps only served to reach this model; a resume now starts from architecture.keras.
    shutil.rmtree(out.channel_pruning_steps, ignore_errors=True)
    logging.info(
        "Channel pruning: %d -> %d MACs (%.2fx), %d -> %d parameters.",
        dense_cost.macs,
        thin_cost.macs,
        thin_cost.macs / max(1, dense_cost.macs),
        dense_cost.params,
        thin_cost.params,
    )
    return thin


def init_architecture(config, input_shape, num_classes: int) -> keras.Model | None:
    """The init checkpoint's thinner model when it is a channel-pruned run and this run does not
    prune channels itself (quantization-aware training or fine-tuning of the pruned model), else
    None (the registry builds ``config.model.name``, which names the dense model).

    Its weights are those saved at pruning time; the caller warm-starts it from the run.

    Raises:
      ValueError: the pruned model's input shape or classes differ from this run's.
    """
    path = config.init_checkpoint
    if not path or channel_pruning.is_enabled(config.channel_pruning):
        return None
    workdir = path if is_workdir(path) else owning_workdir(path, levels=3)
    architecture = Workdir(workdir).architecture if workdir else None
    if not architecture or not os.path.isfile(architecture):
        return None
    model = loading.load_keras_file(architecture)
    if tuple(model.input_shape[1:]) != tuple(input_shape) or model.output_shape[-1] != num_classes:
        raise ValueError(
            f"config.init_checkpoint='{path}' is a channel-pruned run whose model takes "
            f"{tuple(model.input_shape[1:])} images and predicts {model.output_shape[-1]} "
            f"classes; this run has {tuple(input_shape)} and {num_classes}: use the pruned "
            f"run's data.image_size and classes."
        )
    logging.info("Init checkpoint is channel-pruned: its model %s is fine-tuned.", architecture)
    return model


def report(run: Workdir, model: keras.Model) -> dict:
    """``metrics.json["channel_pruning"]``: the pruning record, costs measured on ``model``."""
    record = read_json(run.channel_pruning_json)
    cost = model_cost(model).total
    record.update(
        pruned_macs=cost.macs,
        pruned_params=cost.params,
        macs_ratio=cost.macs / max(1, record["dense_macs"]),
        params_ratio=cost.params / max(1, record["dense_params"]),
    )
    return record
