"""``run(config, workdir)``: the whole training job, resumable at any step.

    validate config -> runtime (strategy, precision, seeds) -> datasets -> model (warm start,
    pruning) -> optimizer, weight decay, compile -> restore latest checkpoint -> fit (the rest
    of an interrupted epoch first; a frozen-backbone phase first when fine-tuning) -> evaluate
    -> metrics.json, curves, export

The run directory's layout is ``deploy/workdir.py``'s.
"""

from __future__ import annotations

import json
import os
import time

import tensorflow as tf
import tf_keras as keras
from absl import logging

import architectures
from compression import pruning, quantization
from deploy import console, export, quantized
from deploy import workdir as workdir_lib
from deploy.fileio import read_json, write_atomic, write_json
from deploy.workdir import Workdir
from trainer import callbacks as cbs
from trainer import channel_pruning as channels
from trainer import (
    checkpoints,
    config_validation,
    data,
    distill,
    ema,
    finetune,
    model_data,
    optim,
    runtime,
    summary,
    tasks,
)

# Images handed to the int8 TFLite converter to calibrate activation ranges.
_REPRESENTATIVE_IMAGES = 256


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN, infinite or exploding loss (or non-finite weights) and was
    stopped."""


class TrainingInterrupted(Exception):
    """Ctrl-C (SIGINT) stopped training; the state was checkpointed first.

    Attributes:
      step: the global step saved.
      workdir: the run directory.
      resume: the command that resumes (``train.py`` fills it in; a library caller runs
        ``trainer.run`` again with the same workdir).
      exit_code: 130, the shell's status for a process stopped by SIGINT.
    """

    exit_code = 130

    def __init__(self, step: int | None, workdir: str):
        super().__init__(step, workdir)
        self.step, self.workdir, self.resume = step, workdir, ""

    def __str__(self) -> str:
        how = self.resume or f"trainer.run with workdir={self.workdir!r}"
        if self.step is None:
            return (
                f"Interrupted outside the training steps; checkpoints already in "
                f"{Workdir(self.workdir).checkpoints} (if any) are intact. Resume with: {how}"
            )
        return (
            f"Interrupted: step {self.step} saved in {Workdir(self.workdir).checkpoints}. "
            f"Resume with: {how}"
        )


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
    except (OSError, tf.errors.OpError) as error:
        # A full disk or a read-only run directory: one line, not a traceback; what was
        # written before stays (every file is written atomically).
        problem = workdir_lib.write_problem(error, workdir)
        if problem is None:
            raise
        raise ValueError(problem) from error
    finally:
        rt.cleanup()


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


def _build_model(
    config, spec, image_size, num_classes, *, resuming, steps_per_epoch, total, run, out, train
):
    # A channel-pruned init run's thinner model, when this run fine-tunes it as it is (QAT).
    model = channels.init_architecture(config, (image_size, image_size, 3), num_classes)
    model = model or architectures.create_model(
        config.model.name,
        # A resumed run's checkpoint overwrites the weights: needing the file (or the network)
        # again would only fail a resume that has what it needs.
        pretrained=None if resuming else config.model.pretrained,
        input_shape=(image_size, image_size, 3),
        num_classes=num_classes,
        dropout=config.model.dropout,
        **config.model.kwargs,
    )
    # QAT picks its scheme from the init weights (prune-preserving when they are pruned), so a
    # resumed QAT run loads them again to build the same model before restoring. QAT fine-tunes
    # the init model itself, classifier included (when its classes match: shapes are checked).
    qat = quantization.is_enabled(config.quantization)
    if config.init_checkpoint and (not resuming or qat):
        checkpoints.warm_start(
            model,
            config.init_checkpoint,
            exclude=() if qat else checkpoints.CLASSIFIER_LAYERS,
        )
    model = channels.prepare(model, config, run, out, train=train, steps_per_epoch=steps_per_epoch)
    if config.model.bn_momentum is not None:
        set_bn_momentum(model, config.model.bn_momentum)
    model = pruning.apply(model, config.pruning, steps_per_epoch=steps_per_epoch, total_steps=total)
    model = quantization.apply(model, config.quantization)
    # Ranges calibrated on a float run's weights; a resumed run's checkpoint holds its trained
    # ones, and a model trained from scratch has no ranges worth measuring yet (its random
    # weights give degenerate ones that turn the first step's loss to NaN): tfmot's start.
    if qat and not resuming and config.init_checkpoint:
        quantization.calibrate(model, next(iter(train))[0])
    return model


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
    if config.model.pretrained and spec.weights is not None:
        # The layout the weights need (MobileNet v1/v2: "same" stride-2 padding), recorded so a
        # resumed run (built without them) and every loader of this run build the same model.
        for knob, value in spec.weights.builder_kwargs.items():
            if resolved.model.kwargs[knob] is None:
                resolved.model.kwargs[knob] = value
    run, out = Workdir(workdir), Workdir(rt.write_dir(workdir))
    config_text = resolved.to_json_best_effort(indent=2) + "\n"
    # Nothing is written before the directory is known to be new, empty or this very run.
    workdir_lib.check_trainable(run.root, json.loads(config_text), bundle.class_names)
    if not tf.io.gfile.exists(out.marker):
        # Written in place, not through a temporary file: a kill must not leave a directory
        # holding only a temporary file, which the next start would refuse as not a run.
        tf.io.gfile.makedirs(out.root)
        with tf.io.gfile.GFile(out.marker, "w") as f:
            f.write(workdir_lib.MARKER_TEXT)
    write_atomic(out.config_json, config_text)
    write_json(out.classes_json, workdir_lib.classes_payload(bundle.class_names))

    train = tasks.training_batches(config, bundle.train, num_classes=bundle.num_classes)
    val = bundle.val.map(tasks.encode(config.task, bundle.num_classes))
    resuming = tf.train.latest_checkpoint(run.checkpoints) is not None
    schedule = optim.build_schedule(
        config.optim,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        batch_size=batch_size,
    )
    with rt.strategy.scope():
        model = _build_model(
            resolved,
            spec,
            image_size,
            bundle.num_classes,
            resuming=resuming,
            steps_per_epoch=steps_per_epoch,
            total=total_steps,
            run=run,
            out=out,
            train=train,
        )
        optim.add_weight_decay(model, config.optim)
        optimizer = optim.build_optimizer(config.optim, schedule)
        optimizer = finetune.with_learning_rate_scales(optimizer, model, config.optim)
        optim.exclude_from_decay(optimizer, model, config.optim)
        optimizer = runtime.wrap_optimizer(optimizer, config.runtime.precision)
        # What fit and evaluate run: the model, or the model taught by a teacher.
        distiller = None
        if distill.is_enabled(config.distill):
            distiller = distill.Distiller(
                model,
                distill.load_teacher(
                    config.distill.teacher, image_size=image_size, num_classes=bundle.num_classes
                ),
                alpha=config.distill.alpha,
                temperature=config.distill.temperature,
                label_smoothing=config.train.label_smoothing,
            )
        trained = distiller or model

        def compile_model():  # again whenever a fine-tuning phase changes the trainable set
            with rt.strategy.scope():
                for compiled in (model, distiller) if distiller else (model,):
                    compiled.compile(
                        optimizer=optimizer,
                        loss=tasks.loss(config.task, config.train),
                        metrics=tasks.metrics(config.task, bundle.num_classes),
                        jit_compile=rt.jit_compile,
                    )

        compile_model()
        # Slots exist before restoring, so the checkpoint fills them instead of deferring.
        optimizer.build(model.trainable_variables)
        average = None
        if ema.is_enabled(config.train):
            average = ema.WeightEma(model, config.train.ema_decay, optimizer.iterations)
        state = checkpoints.CheckpointState(
            model,
            optimizer,
            run.checkpoints,
            write_directory=out.checkpoints,
            max_to_keep=config.train.keep_checkpoints,
            extra={"ema": average.checkpointable} if average else None,
        )
    restored = state.restore_latest()
    if restored:
        logging.info("Resuming from %s at step %d.", restored, state.step)

    guard = cbs.NanGuard(num_classes=bundle.num_classes)
    logger = cbs.MetricsLogger(out.metrics_csv, lambda: schedule(optimizer.iterations), guard)
    # The guard first (nothing is written after a NaN step); the checkpoint last, so a kill
    # between them leaves an epoch that is redone and its rows rewritten, never one that is
    # restored as finished but missing from metrics.csv or best/.
    # A val_ema_* best metric saves the average that scored it.
    best_weights = {"weights": average.applied} if ema.scores_average(config.train) else {}
    interrupt = cbs.InterruptAtStepEnd()
    callbacks = [
        guard,
        *([ema.EmaCallback(average, val, config.train.eval_steps, guard)] if average else []),
        *pruning.callbacks(config.pruning, out.logs),
        logger,
        cbs.BestModel(model, out, config.train.best_metric, guard, **best_weights),
        *_tensorboard(out.logs),
        cbs.CheckpointSaver(state, config.train.checkpoint_every_steps, guard),
        interrupt,  # last: Ctrl-C stops after the step's or epoch's other callbacks
    ]
    fit = dict(
        x=train,
        validation_data=val,
        validation_steps=config.train.eval_steps,
        callbacks=callbacks,
        verbose=console.progress_verbosity(config.train.verbose),
    )
    try:
        with bundle.reporting_failures(), interrupt:
            # The rest of an interrupted epoch first, then the fine-tuning phases (one unless
            # train.freeze_backbone_epochs), each from the restored step alone.
            for segment in finetune.segments(
                state.step,
                steps_per_epoch=steps_per_epoch,
                epochs=epochs,
                freeze_epochs=config.train.freeze_backbone_epochs,
            ):
                if guard.tripped:
                    break
                finetune.enter_phase(model, segment, compile_model)
                trained.fit(
                    epochs=segment.end_epoch,
                    initial_epoch=segment.initial_epoch,
                    steps_per_epoch=segment.steps,
                    **fit,
                )
    except KeyboardInterrupt:
        # Ctrl-C lands between steps (InterruptAtStepEnd): the state is consistent.
        if not guard.tripped and guard.check_weights():
            state.save()
        saved = state.last_saved_step
        raise TrainingInterrupted(saved if saved >= 0 else None, run.root) from None
    finetune.set_backbone_trainable(model, True)  # the saved model trains whole if reloaded
    _report_corrupt(bundle)
    if guard.tripped:
        bad_epoch, bad_step = guard.tripped_at
        raise NonFiniteLossError(
            f"Training stopped in epoch {bad_epoch + 1} (step {bad_step}): {guard.reason}; "
            f"nothing was exported. The last good checkpoint is kept in {run.checkpoints} "
            f"(resume with the same command after fixing the cause, e.g. a lower "
            f"config.optim.learning_rate, config.optim.clipnorm or float32 precision)."
        )
    if average and config.train.export_ema:
        average.copy_to_model()
    return _finish(
        config,
        run,
        out,
        trained,
        bundle,
        val,
        state,
        logger.rows,
        image_size=image_size,
        spec=spec,
    )


def _report_corrupt(bundle) -> None:
    """The console line for skipped corrupt images (metrics.json lists them all)."""
    line = bundle.corrupt_summary()
    if line:
        logging.warning("%s", line)


def _finish(config, run, out, trained, bundle, val, state, rows, *, image_size, spec):
    """Final evaluation, metrics.json, curves and export (of the student, when distilled)."""
    started = time.perf_counter()
    with bundle.reporting_failures():
        scores = trained.evaluate(val, steps=config.train.eval_steps, return_dict=True, verbose=0)
    model = getattr(trained, "student", trained)
    metrics = {
        "final": {
            **tasks.final_scores(config.task, scores, bundle.class_names),
            "epochs": int(state.epoch.numpy()),
            "steps": state.step,
            "train_seconds": float(sum(row.get("epoch_seconds", 0.0) for row in rows)),
            "weights": ema.exported_weights(config.train),
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
        class_names=bundle.class_names,
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
    if tf.io.gfile.exists(run.channel_pruning_json):
        metrics["channel_pruning"] = channels.report(run, model)
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
