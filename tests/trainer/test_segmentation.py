"""Segmentation: joint augmentation keeps masks aligned, the ignore label, mIoU against numpy,
the shapes scenes, and a ``segfolder:`` fixture that trains, resumes and evaluates."""

import os

import numpy as np
import pytest
import tensorflow as tf

import trainer
from configs.common import get_base_config
from deploy.segmentation_metrics import IGNORE_LABEL, SegmentationAccumulator
from trainer import model_data, tasks
from trainer.callbacks import read_metrics_csv
from trainer.data import build_datasets
from trainer.data import segmentation as seg

# A fixed confusion matrix (rows: label, columns: prediction) with a class that never occurs.
CONFUSION = np.array([[50, 2, 3, 0], [4, 30, 1, 0], [6, 0, 20, 0], [0, 0, 0, 0]])


def _numpy_miou(confusion):
    ious = []
    for k in range(len(confusion)):
        tp = confusion[k, k]
        union = confusion[k, :].sum() + confusion[:, k].sum() - tp
        if union:
            ious.append(tp / union)
    return float(np.mean(ious))


def _pixels_of(confusion):
    """Labels and one-hot logits realising ``confusion`` exactly, plus ignored pixels."""
    labels, predictions = [], []
    for (true, predicted), count in np.ndenumerate(confusion):
        labels += [true] * count
        predictions += [predicted] * count
    labels += [IGNORE_LABEL] * 7
    predictions += [1] * 7
    logits = np.eye(len(confusion), dtype=np.float32)[predictions] * 5.0
    return np.array(labels)[None, None], logits[None, None]


def test_miou_and_pixel_accuracy_match_numpy_on_a_fixed_confusion_matrix():
    labels, logits = _pixels_of(CONFUSION)
    want_miou = _numpy_miou(CONFUSION)
    want_accuracy = np.trace(CONFUSION) / CONFUSION.sum()
    accumulator = SegmentationAccumulator(4)
    accumulator.update(logits, labels)
    result = accumulator.result(["bg", "a", "b", "c"])
    np.testing.assert_array_equal(accumulator.confusion, CONFUSION)  # 255 left out
    assert result["miou"] == pytest.approx(want_miou)
    assert result["pixel_accuracy"] == pytest.approx(want_accuracy)
    assert result["per_class_iou"]["c"] is None
    assert result["per_class_iou"]["a"] == pytest.approx(30 / (35 + 32 - 30))
    # The Keras metrics, streamed in two batches, agree.
    half = labels.shape[-1] // 2
    for reduce, want in (("miou", want_miou), ("pixel_accuracy", want_accuracy)):
        metric = tasks.ConfusionMatrixMetric(4, reduce)
        metric.update_state(labels[..., :half], logits[..., :half, :])
        metric.update_state(labels[..., half:], logits[..., half:, :])
        assert float(metric.result()) == pytest.approx(want, rel=1e-9)
    iou_1 = tasks.ConfusionMatrixMetric(4, "iou", 1)
    iou_1.update_state(labels, logits)
    assert float(iou_1.result()) == pytest.approx(result["per_class_iou"]["a"])


def test_the_ignore_label_is_excluded_from_the_loss():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(2, 4, 5))
    labels[0, :2] = IGNORE_LABEL
    logits = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    loss = tasks.MaskedSparseCrossEntropy()
    value = float(loss(labels, logits))
    # Changing the logits of ignored pixels changes nothing.
    changed = logits.copy()
    changed[0, :2] += 100.0
    assert float(loss(labels, changed)) == pytest.approx(value, rel=1e-6)
    # numpy: per image, mean cross-entropy over its labelled pixels; then the batch mean.
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    per_image = []
    for image in range(2):
        valid = labels[image] != IGNORE_LABEL
        picked = np.take_along_axis(
            log_softmax[image][valid], labels[image][valid][:, None], axis=-1
        )
        per_image.append(-picked.mean())
    assert value == pytest.approx(np.mean(per_image), rel=1e-5)


def test_augmentation_keeps_image_and_mask_aligned():
    """A known mask painted into the image (grey level 60 per class) stays under its labels
    through random scales, crops and flips; padding is ignored; some draws flip."""
    size = 24
    mask = np.zeros((40, 32), np.uint8)
    mask[5:25, 3:12] = 1
    mask[20:38, 15:30] = 2
    mask[:, 30:] = 3  # an asymmetric stripe: a flip moves it to the left
    image = np.repeat((mask.astype(np.float32) * 60)[..., None], 3, axis=-1)
    flipped = 0
    for draw in range(12):
        out_image, out_mask = seg.train_augment(
            tf.constant(image),
            tf.constant(mask),
            tf.constant([draw, 7]),
            size,
            min_scale=0.5,
            max_scale=2.0,
        )
        out_image, out_mask = out_image.numpy(), out_mask.numpy()
        assert out_image.shape == (size, size, 3) and out_mask.shape == (size, size)
        labelled = out_mask != IGNORE_LABEL
        assert set(np.unique(out_mask[labelled])) <= {0, 1, 2, 3}
        # Bilinear blends the image only along class borders, and nearest neighbour may put a
        # border up to a source pixel away from where bilinear does: away from borders the two
        # agree (a flip, crop or scale applied to one alone would break most of these pixels).
        interior = labelled.copy()
        for axis in (0, 1):
            for shift in (1, -1):
                interior &= np.roll(out_mask, shift, axis=axis) == out_mask
        decoded = np.rint(out_image[..., 0] / 60.0)
        assert interior.sum() >= 40  # even a 0.5 scale with padding leaves plenty
        assert (decoded[interior] == out_mask[interior]).mean() > 0.98, draw
        # Ignored pixels are the grey padding.
        np.testing.assert_allclose(out_image[~labelled], 128.0)
        stripe = out_mask == 3
        flipped += bool(stripe.any() and np.argwhere(stripe)[:, 1].mean() < size / 2)
    assert 0 < flipped < 12


def test_shapes_scenes_are_seeded_and_their_masks_exact():
    image, mask = seg.shapes_scene(3, 48)
    again_image, again_mask = seg.shapes_scene(3, 48)
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(mask, again_mask)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1, 2, 3} and len(np.unique(mask)) >= 2
    # A circle's mask is the disc of its pixel centres.
    disc = seg._shape_mask(1, 48, 24.0, 24.0, 10.0, 0.0)
    yy, xx = np.mgrid[0:48, 0:48] + 0.5
    np.testing.assert_array_equal(disc, (yy - 24) ** 2 + (xx - 24) ** 2 <= 100)


def _write_voc_fixture(root, *, train=6, val=2, classes=3, size=(40, 48)):
    """A PASCAL VOC layout with palette PNG masks: a square of class 1 or 2, a 255 border."""
    from PIL import Image

    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [255] * (3 * 253)
    rng = np.random.default_rng(0)
    names = {"train": [f"t{i}" for i in range(train)], "val": [f"v{i}" for i in range(val)]}
    for split, ids in names.items():
        with open(os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
        for i, name in enumerate(ids):
            mask = np.zeros(size, np.uint8)
            top, left = rng.integers(2, 15, 2)
            mask[top : top + 20, left : left + 20] = 1 + i % (classes - 1)
            mask[0, :] = IGNORE_LABEL
            image = rng.integers(0, 60, (*size, 3)).astype(np.uint8)
            image[mask == 1] = (200, 40, 40)
            image[mask == 2] = (40, 200, 40)
            Image.fromarray(image).save(os.path.join(root, "JPEGImages", f"{name}.jpg"))
            png = Image.fromarray(mask, mode="P")
            png.putpalette(palette)
            png.save(os.path.join(root, "SegmentationClass", f"{name}.png"))


def test_segfolder_reads_palette_masks_with_the_ignore_label(tmp_path):
    _write_voc_fixture(str(tmp_path))
    config = get_base_config().data
    config.source = f"segfolder:{tmp_path}"
    config.augment = "none"
    bundle = build_datasets(
        config, image_size=32, preprocessing=_preprocessing(), batch_size=4, seed=0
    )
    assert (bundle.task, bundle.num_classes, bundle.train_examples) == ("segmentation", 3, 6)
    images, masks = next(iter(bundle.val))
    assert images.shape == (2, 32, 32, 3) and masks.shape == (2, 32, 32)
    assert set(np.unique(masks.numpy())) <= {0, 1, 2, IGNORE_LABEL}
    assert IGNORE_LABEL in masks.numpy() and 1 in masks.numpy()


def _preprocessing():
    import architectures

    return architectures.INCEPTION_PREPROCESSING


def _config(source, workdir_epochs):
    config = get_base_config()
    config.task = "segmentation"
    config.model.name = "deeplabv3_mobilenet_v2_100"
    config.model.kwargs.alpha = 0.35
    config.model.bn_momentum = 0.9
    config.data.source = source
    config.data.image_size = 32
    config.train.epochs = workdir_epochs
    config.train.batch_size = 4
    config.train.steps_per_epoch = 1
    config.train.checkpoint_every_steps = 1
    config.train.best_metric = "val_miou"
    config.train.verbose = 0
    config.optim.warmup_epochs = 0.0
    config.export.formats = "keras"
    return config


@pytest.mark.slow
def test_a_segfolder_run_trains_resumes_and_evaluates(tmp_path):
    data_dir, workdir = str(tmp_path / "voc"), str(tmp_path / "run")
    _write_voc_fixture(data_dir)
    source = f"segfolder:{data_dir}"
    first = trainer.run(_config(source, 1), workdir)
    assert 0.0 <= first["final"]["val_miou"] <= 1.0
    assert set(first["final"]["val_per_class_iou"]) == {"0", "1", "2"}
    # The same command with one more epoch resumes at step 1 and finishes at step 2.
    second = trainer.run(_config(source, 2), workdir)
    assert (second["final"]["epochs"], second["final"]["steps"]) == (2, 2)
    rows = read_metrics_csv(os.path.join(workdir, "metrics.csv"))
    assert [row["epoch"] for row in rows] == [1, 2]
    assert {"val_miou", "val_pixel_accuracy", "val_iou_0"} <= set(rows[-1])
    assert os.path.isfile(os.path.join(workdir, "plots", "curves.png"))
    # evaluate.py's path: the workdir's own data; metrics agree with training's last evaluation.
    loaded = model_data.load_with_data(workdir, get_base_config().data, batch_size=4)
    result, confusion = model_data.evaluate(
        loaded, latency_batch_size=2, latency_iterations=1, overlay_dir=str(tmp_path / "png")
    )
    assert result["miou"] == pytest.approx(second["final"]["val_miou"], abs=1e-4)
    assert confusion.shape == (3, 3)
    assert sorted(os.listdir(tmp_path / "png")) == ["overlay_0.png", "overlay_1.png"]


def test_task_mismatches_are_refused_naming_the_fix():
    from trainer import config_validation

    config = _config("shapes", 1)
    config.task = "classification"
    with pytest.raises(ValueError, match="config.task='classification' .*task=segmentation"):
        config_validation.validate(config)
    config = _config("digits", 1)
    with pytest.raises(ValueError, match="config.data.source='digits' is not a segmentation"):
        config_validation.validate(config)
