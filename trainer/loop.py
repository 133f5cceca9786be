"""``run(config, workdir)``: the whole training job, resumable at any step.

    validate config -> runtime (strategy, precision, seeds) -> datasets -> model (warm start,
    pruning) -> optimizer, weight decay, compile -> restore latest checkpoint -> fit (the rest
    of an interrupted epoch first) -> evaluate -> metrics.json, curves, export

The run directory's layout is ``deploy/workdir.py``'s.
"""

from __future__ import annotations

import os
import time

import tensorflow as tf
import tf_keras as keras
from absl import logging

import architectures
from compression import pruning, quantization
from deploy import console, export, quantized
from deploy.fileio import read_json, write_atomic, write_json
from deploy.workdir import Workdir
from trainer import callbacks as cbs
from trainer import checkpoints, config_validation, data, model_data, optim, runtime, summary

# Images handed to the int8 TFLite converter to calibrate activation ranges.
_REPRESENTATIVE_IMAGES = 256


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss and was stopped."""


def image_size_of(config, spec) -> int:
    """``data.image_size``, else ``model.input_size``, else the variant's default size."""
    return int(config.data.image_size or config.model.input_size or spec.input_size)


def run(config, workdir: str) -> dict:
    """Trains ``config`` in ``workdir`` (resuming what is there) and returns metrics.json's dict.

    Raises:
      ValueError: a bad config key or value (before any work), naming the key.
      NonFiniteLossError: the loss became NaN or infinite; the last good checkpoint is kept.
    """
    config_validation.validate(config)
    rt = runtime.setup(config.runtime)
    try:
        return _run(config, workdir, rt)
    finally:
        rt.cleanup()


def _one_hot(num_classes: int):
    def encode(images, labels):
        return images, tf.one_hot(labels, num_classes)

    return encode


def set_bn_momentum(model: keras.Model, momentum: float) -> None:
    """Overrides every batch-norm layer's moving-average momentum (read at call time)."""
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _tensorboard(log_dir: str) -> list[keras.callbacks.Callback]:
    """TensorBoard logging, or none (with a warning) where the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401  tf.summary needs it to write anything
    except ImportError:
        logging.warning("tensorboard is not installed; no TensorBoard logs in %s.", log_dir)
        return []
    return [keras.callbacks.TensorBoard(log_dir, profile_batch=0)]


def _build_model(config, spec, image_size, num_classes, *, resuming, steps_per_epoch, total):
    model = architectures.create_model(
        config.model.name,
        # A resumed run's checkpoint overwrites the weights: needing the file (or the network)
        # again would only fail a resume that has what it needs.
        pretrained=None if resuming else config.model.pretrained,
        input_shape=(image_size, image_size, 3),
        num_classes=num_classes,
        dropout=config.model.dropout,
        **config.model.kwargs,
    )
    if config.model.bn_momentum is not None:
        set_bn_momentum(model, config.model.bn_momentum)
    # QAT picks its scheme from the init weights (prune-preserving when they are pruned), so a
    # resumed QAT run loads them again to build the same model before restoring.
    if config.init_checkpoint and (not resuming or quantization.is_enabled(config.quantization)):
        checkpoints.warm_start(model, config.init_checkpoint)
    model = pruning.apply(model, config.pruning, steps_per_epoch=steps_per_epoch, total_steps=total)
    return quantization.apply(model, config.quantization)


def _run(config, workdir: str, rt: runtime.Runtime) -> dict:
    spec = architectures.get_model_spec(config.model.name)
    image_size = image_size_of(config, spec)
    batch_size = config.train.batch_size
    bundle = data.build_datasets(
        config.data,
        image_size=image_size,
        preprocessing=spec.preprocessing,
        batch_size=batch_size,
        seed=config.runtime.seed,
    )
    steps_per_epoch = config.train.steps_per_epoch or max(1, bundle.train_examples // batch_size)
    epochs = config.train.epochs
    total_steps = epochs * steps_per_epoch

    resolved = config.copy_and_resolve_references()
    resolved.data.image_size, resolved.data.num_classes = image_size, bundle.num_classes
    run, out = Workdir(workdir), Workdir(rt.write_dir(workdir))
    write_atomic(out.config_json, resolved.to_json_best_effort(indent=2) + "\n")

    encode = _one_hot(bundle.num_classes)
    train, val = bundle.train.map(encode), bundle.val.map(encode)
    resuming = tf.train.latest_checkpoint(run.checkpoints) is not None
    schedule = optim.build_schedule(
        config.optim,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        batch_size=batch_size,
    )
    with rt.strategy.scope():
        model = _build_model(
            config,
            spec,
            image_size,
            bundle.num_classes,
            resuming=resuming,
            steps_per_epoch=steps_per_epoch,
            total=total_steps,
        )
        optim.add_weight_decay(model, config.optim)
        optimizer = optim.build_optimizer(config.optim, schedule)
        optim.exclude_from_decay(optimizer, model, config.optim)
        optimizer = runtime.wrap_optimizer(optimizer, config.runtime.precision)
        model.compile(
            optimizer=optimizer,
            loss=optim.build_loss(config.train.label_smoothing),
            metrics=optim.build_metrics(bundle.num_classes),
            jit_compile=rt.jit_compile,
        )
        # Slots exist before restoring, so the checkpoint fills them instead of deferring.
        optimizer.build(model.trainable_variables)
        state = checkpoints.CheckpointState(
            model,
            optimizer,
            run.checkpoints,
            write_directory=out.checkpoints,
            max_to_keep=config.train.keep_checkpoints,
        )
    restored = state.restore_latest()
    if restored:
        logging.info("Resuming from %s at step %d.", restored, state.step)

    guard = cbs.NanGuard()
    logger = cbs.MetricsLogger(out.metrics_csv, lambda: schedule(optimizer.iterations), guard)
    # The guard first (nothing is written after a NaN step); the checkpoint last, so a kill
    # between them leaves an epoch that is redone and its rows rewritten, never one that is
    # restored as finished but missing from metrics.csv or best/.
    callbacks = [
        guard,
        *pruning.callbacks(config.pruning, out.logs),
        logger,
        cbs.BestModel(model, out, config.train.best_metric, guard),
        *_tensorboard(out.logs),
        cbs.CheckpointSaver(state, config.train.checkpoint_every_steps, guard),
    ]
    fit = dict(
        x=train,
        validation_data=val,
        validation_steps=config.train.eval_steps,
        callbacks=callbacks,
        verbose=console.progress_verbosity(config.train.verbose),
    )
    epoch, offset = divmod(state.step, steps_per_epoch)
    if offset and epoch < epochs:
        # The rest of the epoch a kill interrupted, so the step count matches an unbroken run.
        model.fit(
            epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=steps_per_epoch - offset, **fit
        )
        epoch += 1
    if epoch < epochs and not guard.tripped:
        model.fit(epochs=epochs, initial_epoch=epoch, steps_per_epoch=steps_per_epoch, **fit)
    if guard.tripped:
        bad_epoch, bad_step = guard.tripped_at
        raise NonFiniteLossError(
            f"The loss became NaN or infinite in epoch {bad_epoch + 1} (step {bad_step}); "
            f"training stopped. The last good checkpoint is kept in {run.checkpoints} (resume "
            f"with the same command after fixing the cause, e.g. a lower "
            f"config.optim.learning_rate, config.optim.clipnorm or float32 precision)."
        )
    return _finish(
        config,
        run,
        out,
        model,
        bundle,
        val,
        state,
        logger.rows,
        image_size=image_size,
        spec=spec,
    )


def _finish(config, run, out, model, bundle, val, state, rows, *, image_size, spec):
    """Final evaluation, metrics.json, curves and export."""
    started = time.perf_counter()
    scores = model.evaluate(val, steps=config.train.eval_steps, return_dict=True, verbose=0)
    metrics = {
        "final": {
            "val_top1": float(scores["top1"]),
            "val_top5": float(scores["top5"]),
            "val_loss": float(scores["loss"]),
            "epochs": int(state.epoch.numpy()),
            "steps": state.step,
            "train_seconds": float(sum(row.get("epoch_seconds", 0.0) for row in rows)),
        },
        "model": config.model.name,
        "num_classes": bundle.num_classes,
        "image_size": image_size,
        "corrupt_images": bundle.corrupt_report(),
    }
    formats = export.parse_formats(config.export.formats)
    representative = None
    if "tflite_int8" in formats:
        representative = model_data.calibration_images(
            config.data,
            image_size=image_size,
            preprocessing=spec.preprocessing,
            count=_REPRESENTATIVE_IMAGES,
        )
    paths = export.export_model(
        model,
        out.export,
        formats=formats,
        serving_preprocess=data.serving_preprocess(image_size, spec.preprocessing),
        representative_images=representative,
        int8_io=config.quantization.int8_io,
    )
    if quantization.is_enabled(config.quantization) and "tflite_int8" in paths:
        metrics["quantization"] = quantized.report_on_dataset(
            model, paths["tflite_int8"], bundle.val, config.init_checkpoint, representative
        )
    if pruning.is_enabled(config.pruning):
        init = config.init_checkpoint
        dense = config.pruning.dense_reference or (
            init if init and (os.path.isdir(init) or init.endswith(".keras")) else None
        )
        metrics["pruning"] = export.pruning_report(pruning.strip(model), dense, config.pruning)
    metrics["export"] = {name: os.path.relpath(p, out.root) for name, p in paths.items()}
    metrics["summary"] = summary.build(model, paths, out.root, image_size=image_size)
    if tf.io.gfile.exists(out.best_json):
        metrics["best"] = read_json(out.best_json)
    write_json(out.metrics_json, metrics)
    if rows:
        cbs.plot_curves(rows, out.curves_png)
    logging.info("Evaluation and export took %.1f s.", time.perf_counter() - started)
    if out.root == run.root:  # a non-chief worker's files were scratch: it says nothing
        print(summary.format_summary(metrics, run.root), flush=True)
    return metrics
