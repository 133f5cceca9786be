"""Training recipes against independent references: weight EMA, mixup/CutMix, distillation.

The EMA is checked against a numpy average of the recorded weight history (and across a
checkpoint restore), mixing against the pixels it produced, the distillation loss against the
formula written out in numpy; one small end-to-end run combines everything with a resume.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import architectures
import trainer
from configs.common import get_base_config
from deploy.workdir import Workdir
from trainer import checkpoints, config_validation, distill, ema
from trainer.callbacks import BestModel, NanGuard, read_metrics_csv
from trainer.data import mixing


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.5, name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(3, name="classifier")(x)
    outputs = keras.layers.Activation("softmax", name="predictions")(logits)
    model = keras.Model(inputs, outputs)
    optimizer = keras.optimizers.SGD(0.5, momentum=0.9)
    model.compile(optimizer, keras.losses.CategoricalCrossentropy())
    optimizer.build(model.trainable_variables)
    return model, optimizer


def _step(model, optimizer, images, labels):
    """One eager SGD step (batch norm in training mode, so its moving statistics move too)."""
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(labels, model(images, True)))
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))


def _batches(count):
    rng = np.random.default_rng(1)
    return [
        (
            rng.normal(size=(4, 4, 4, 2)).astype(np.float32),
            np.eye(3, dtype=np.float32)[rng.integers(0, 3, 4)],
        )
        for _ in range(count)
    ]


def _numpy_ema(history, decay):
    """timm's EMA with decay warm-up over a list of weight snapshots (history[0] at step 0)."""
    shadow = [w.copy() for w in history[0]]
    for t, weights in enumerate(history[1:], start=1):
        d = min(decay, (1 + t) / (10 + t))
        shadow = [d * s + (1 - d) * w for s, w in zip(shadow, weights, strict=True)]
    return shadow


def _snapshot(model):
    return [v.numpy().copy() for v in ema.averaged_variables(model)]


def test_ema_equals_a_numpy_average_of_the_weight_history():
    model, optimizer = _tiny_model()
    average = ema.WeightEma(model, 0.5, optimizer.iterations)
    names = [v.name for v in ema.averaged_variables(model)]
    assert any("moving_mean" in n for n in names) and any("moving_variance" in n for n in names)
    history = [_snapshot(model)]
    for images, labels in _batches(12):
        _step(model, optimizer, images, labels)
        average.update()
        history.append(_snapshot(model))
    expected = _numpy_ema(history, 0.5)
    for shadow, reference in zip(average.shadows, expected, strict=True):
        np.testing.assert_allclose(shadow.numpy(), reference, rtol=1e-5, atol=1e-6)
    # Warm-up first ((1 + t) / (10 + t) < 0.5 up to t = 8), the configured decay after.
    assert float(average.decay_at(1)) == pytest.approx(2 / 11)
    assert float(average.decay_at(12)) == pytest.approx(0.5)

    raw = [v.numpy().copy() for v in ema.averaged_variables(model)]
    images = _batches(1)[0][0]
    with average.applied():
        for v, reference in zip(ema.averaged_variables(model), expected, strict=True):
            np.testing.assert_allclose(v.numpy(), reference, rtol=1e-5, atol=1e-6)
        averaged_out = model(images, training=False).numpy()
    for v, before in zip(ema.averaged_variables(model), raw, strict=True):
        np.testing.assert_array_equal(v.numpy(), before)  # the raw weights come back
    average.copy_to_model()
    np.testing.assert_allclose(model(images, training=False).numpy(), averaged_out, rtol=1e-6)


def test_a_resumed_run_continues_the_same_ema(tmp_path):
    batches = _batches(8)

    def train(model, optimizer, average, part):
        for images, labels in part:
            _step(model, optimizer, images, labels)
            average.update()

    model, optimizer = _tiny_model()
    straight = ema.WeightEma(model, 0.9, optimizer.iterations)
    train(model, optimizer, straight, batches)

    model, optimizer = _tiny_model()
    average = ema.WeightEma(model, 0.9, optimizer.iterations)
    train(model, optimizer, average, batches[:5])
    state = checkpoints.CheckpointState(
        model, optimizer, str(tmp_path), extra={"ema": average.checkpointable}
    )
    state.save(epoch=1)

    fresh, fresh_optimizer = _tiny_model(seed=7)  # other initial weights: all must be restored
    resumed = ema.WeightEma(fresh, 0.9, fresh_optimizer.iterations)
    restored = checkpoints.CheckpointState(
        fresh, fresh_optimizer, str(tmp_path), extra={"ema": resumed.checkpointable}
    )
    assert restored.restore_latest() and restored.step == 5
    train(fresh, fresh_optimizer, resumed, batches[5:])
    for a, b in zip(resumed.shadows, straight.shadows, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_a_best_metric_of_the_average_saves_the_averaged_weights(tmp_path):
    model, optimizer = _tiny_model()
    average = ema.WeightEma(model, 0.9, optimizer.iterations)
    for images, labels in _batches(3):
        _step(model, optimizer, images, labels)
        average.update()
    raw = [v.numpy().copy() for v in ema.averaged_variables(model)]
    run = Workdir(str(tmp_path))
    best = BestModel(model, run, "val_ema_top1", NanGuard(3), weights=average.applied)
    best.set_model(model)
    best.on_epoch_end(0, {"val_top1": 0.9, "val_ema_top1": 0.5})

    for live, kept in zip(ema.averaged_variables(model), raw, strict=True):
        np.testing.assert_array_equal(live.numpy(), kept)  # the raw weights are back
    fresh, _ = _tiny_model(seed=5)
    tf.train.Checkpoint(model=fresh).restore(tf.train.latest_checkpoint(run.best)).expect_partial()
    for restored, shadow in zip(ema.averaged_variables(fresh), average.shadows, strict=True):
        np.testing.assert_allclose(restored.numpy(), shadow.numpy(), rtol=1e-6)
    assert any(not np.allclose(s.numpy(), w) for s, w in zip(average.shadows, raw, strict=True))


def test_quantization_aware_training_refuses_mixed_precision():
    config = get_base_config()
    config.quantization.aware = True
    config.runtime.precision = "float16"
    with pytest.raises(ValueError, match="precision='float16' cannot train quantization-aware"):
        config_validation.validate(config)


def test_a_best_metric_of_the_average_needs_the_average():
    config = get_base_config()
    config.train.best_metric = "val_ema_top1"
    with pytest.raises(ValueError, match="best_metric='val_ema_top1' is a score of the weight"):
        config_validation.validate(config)
    config.train.ema_decay = 0.999
    config_validation.validate(config)


def _every_recipe_config(tmp_path):
    """mobilenet_v1_025 at 32 px with RandAugment, erasing, mixup + CutMix and a saved teacher
    of the same shape (``config.train`` is left to the test)."""
    teacher_path = str(tmp_path / "teacher.keras")
    architectures.create_model("mobilenet_v1_025", input_shape=(32, 32, 3), num_classes=10).save(
        teacher_path
    )
    config = get_base_config()
    config.model.name = "mobilenet_v1_025"
    config.data.image_size = 32
    config.data.augment = "randaugment"
    config.data.random_erasing = 0.5
    config.data.mixup_alpha, config.data.cutmix_alpha = 0.2, 1.0
    config.distill.teacher = teacher_path
    return config


@pytest.mark.slow
def test_recipes_compose_with_quantization_aware_training(tmp_path):
    """EMA, mixup/CutMix, RandAugment, erasing and distillation on a QAT-wrapped student."""
    config = _every_recipe_config(tmp_path)
    config.train.update(
        dict(epochs=1, batch_size=4, steps_per_epoch=2, eval_steps=1, verbose=0, ema_decay=0.9)
    )
    config.train.best_metric = "val_ema_top1"
    config.quantization.aware = True
    config.export.formats = "keras"
    workdir = str(tmp_path / "run")
    metrics = trainer.run(config, workdir)

    assert metrics["final"]["weights"] == "ema" and metrics["final"]["steps"] == 2
    assert metrics["best"]["metric"] == "val_ema_top1"
    row = read_metrics_csv(os.path.join(workdir, "metrics.csv"))[-1]
    assert row["distill_kl"] > 0 and {"val_top1", "val_ema_top1"} <= set(row)
    # The student trained quantization-aware: its checkpoint holds the fake-quant ranges.
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(workdir, "best")))
    assert any("output_max" in key for key in reader.get_variable_to_shape_map())


def _numbered_batch(batch=6, size=8, classes=6):
    """Image i is the constant i + 1 and has label i, so each pixel tells its source."""
    values = np.arange(1, batch + 1, dtype=np.float32)
    images = np.broadcast_to(values[:, None, None, None], (batch, size, size, 3)).copy()
    return tf.constant(images), tf.one_hot(np.arange(batch), classes)


@pytest.mark.parametrize("kind", ["mixup", "cutmix", "both"])
def test_mixed_labels_sum_to_one_and_match_the_mixed_area(kind):
    images, labels = _numbered_batch()
    alphas = {"mixup": (0.4, 0.0), "cutmix": (0.0, 1.0), "both": (0.4, 1.0)}[kind]
    batch = images.shape[0]
    kinds_seen = set()
    for seed in range(12):
        mixed, soft = mix_out = mixing.mix_batch(
            images,
            labels,
            tf.constant([seed, 3]),
            mixup_alpha=alphas[0],
            cutmix_alpha=alphas[1],
        )
        mixed, soft = (t.numpy() for t in mix_out)
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
        for i in range(batch):
            own, partner = i + 1.0, batch - i  # the partner is the reversed batch
            if own == partner:
                continue
            pixels = mixed[i]
            from_partner = np.isclose(pixels, partner)
            if np.isin(pixels, [own, partner]).all():  # CutMix: pasted pixels are the partner's
                kinds_seen.add("cutmix" if from_partner.any() else "none")
                share = from_partner.mean()
            else:  # mixup: every pixel is lam * own + (1 - lam) * partner
                kinds_seen.add("mixup")
                lam = (pixels - partner) / (own - partner)
                np.testing.assert_allclose(lam, lam.flat[0], atol=1e-5)
                share = 1.0 - lam.flat[0]
            assert soft[i, batch - 1 - i] == pytest.approx(share, abs=1e-5)
            assert soft[i, i] == pytest.approx(1.0 - share, abs=1e-5)
    expected = {"mixup": {"mixup"}, "cutmix": {"cutmix"}, "both": {"mixup", "cutmix"}}[kind]
    assert expected <= kinds_seen


def test_mixing_is_seeded_and_mix_prob_zero_leaves_batches_alone():
    images, labels = _numbered_batch()
    run = lambda seed, p: mixing.mix_batch(  # noqa: E731
        images, labels, tf.constant(seed), mixup_alpha=1.0, cutmix_alpha=1.0, mix_prob=p
    )
    for a, b in zip(run([4, 2], 1.0), run([4, 2], 1.0), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for seed in range(5):
        mixed, soft = run([seed, 0], 0.0)
        np.testing.assert_array_equal(mixed.numpy(), images.numpy())
        np.testing.assert_array_equal(soft.numpy(), labels.numpy())


def test_label_smoothing_composes_with_soft_labels():
    soft = tf.constant([[0.7, 0.3, 0.0]])
    probabilities = tf.constant([[0.5, 0.25, 0.25]])
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.3)(soft, probabilities)
    smoothed = soft.numpy() * 0.7 + 0.1
    assert float(loss) == pytest.approx(-(smoothed * np.log(probabilities.numpy())).sum(), 1e-5)


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def test_distillation_loss_equals_the_formula_on_fixed_logits():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 5, 7)) * 3
    labels = np.eye(7)[[0, 3, 6, 2, 2]] * 0.6 + np.eye(7)[[1, 1, 5, 2, 4]] * 0.4  # mixed labels
    alpha, t, smoothing = 0.7, 3.0, 0.1
    smooth = labels * (1 - smoothing) + smoothing / 7
    ce = -(smooth * _log_softmax(student)).sum(-1)
    p_teacher = np.exp(_log_softmax(teacher / t))
    kl = (p_teacher * (_log_softmax(teacher / t) - _log_softmax(student / t))).sum(-1)
    expected = (1 - alpha) * ce + alpha * t * t * kl
    got = distill.distillation_loss(
        tf.constant(labels, tf.float32),
        tf.constant(student, tf.float32),
        tf.constant(teacher, tf.float32),
        alpha=alpha,
        temperature=t,
        label_smoothing=smoothing,
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    # Identical logits: no soft-target term is left.
    same = distill.soft_target_loss(student, student, t).numpy()
    np.testing.assert_allclose(same, 0.0, atol=1e-5)


def test_distiller_trains_the_student_only():
    student, optimizer = _tiny_model(seed=0)
    teacher, _ = _tiny_model(seed=3)
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    distiller = distill.Distiller(student, teacher, alpha=0.5, temperature=2.0)
    distiller.compile(optimizer, keras.losses.CategoricalCrossentropy())
    assert {v.ref() for v in distiller.trainable_variables} == {
        v.ref() for v in student.trainable_variables
    }
    images, labels = _batches(1)[0]
    before = [w.copy() for w in student.get_weights()]
    logs = distiller.train_on_batch(images, labels, return_dict=True)
    assert logs["distill_kl"] > 0
    for a, b in zip(teacher.get_weights(), teacher_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(student.get_weights(), before, strict=True))
    assert "distill_kl" not in distiller.evaluate(images, labels, verbose=0, return_dict=True)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.ema_decay", 1.0, "config.train.ema_decay=1.0 must be a number >= 0.0 and < 1.0"),
        ("data.mix_prob", 1.5, "config.data.mix_prob=1.5 must be a number >= 0.0 and <= 1.0"),
        ("distill.temperature", 0.0, "config.distill.temperature=0.0 must be a number > 0.0"),
    ],
)
def test_bad_recipe_values_are_refused_naming_the_key(key, value, message):
    config = get_base_config()
    section, leaf = key.split(".")
    config[section][leaf] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        config_validation.validate(config)


@pytest.mark.slow
def test_ema_mixup_randaugment_and_distillation_train_and_resume(tmp_path):
    config = _every_recipe_config(tmp_path)
    config.train.update(
        dict(
            epochs=2,
            batch_size=4,
            steps_per_epoch=1,
            eval_steps=1,
            verbose=0,
            ema_decay=0.99,
            label_smoothing=0.1,
        )
    )
    config.export.formats = "keras"
    workdir = str(tmp_path / "run")
    metrics = trainer.run(config, workdir)

    assert metrics["final"]["weights"] == "ema" and metrics["final"]["steps"] == 2
    rows = read_metrics_csv(os.path.join(workdir, "metrics.csv"))
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"val_top1", "val_ema_top1", "val_ema_loss", "distill_kl"} <= set(rows[-1])
    # export_ema: the exported student holds the checkpointed average (BN statistics included).
    latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    reader = tf.train.load_checkpoint(latest)
    shadows = sorted(
        (k for k in reader.get_variable_to_shape_map() if k.startswith("ema/shadows/")),
        key=lambda k: int(k.split("/")[2]),
    )
    exported = keras.models.load_model(os.path.join(workdir, "export", "model.keras"))
    averaged = ema.averaged_variables(exported)
    assert len(shadows) == len(averaged)
    for key, variable in zip(shadows, averaged, strict=True):
        np.testing.assert_allclose(reader.get_tensor(key), variable.numpy(), rtol=1e-6)

    # Resume from the epoch-1 checkpoint (the newest made unreadable): epoch 2 is redone.
    for path in tf.io.gfile.glob(f"{latest}.*"):
        tf.io.gfile.remove(path)
    resumed = trainer.run(config, workdir)
    assert resumed["final"]["steps"] == 2
    assert [r["epoch"] for r in read_metrics_csv(os.path.join(workdir, "metrics.csv"))] == [1, 2]
