"""``python benchmark.py pipeline``: images/s of the training input pipeline alone.

    python benchmark.py pipeline --data.source=folder:/data/imagenette [--image_size=224]
    python benchmark.py pipeline --make_fixture=/tmp/pipeline_fixture   # folder and TFRecord

The pipeline is ``trainer.data.build_datasets(config.data, ...).train``: read, decode, augment,
normalise, batch, prefetch, then one-hot labels and mixup/CutMix as the trainer applies them. Batches are pulled after a warm-up (which also fills any cache and the
prefetch buffers). Sources are measured one after the other, never interleaved: a pipeline keeps
producing into its buffers in the background while another is timed, which would credit it with
batches made on the other's time.

``--make_fixture=DIR`` writes (once) ``--fixture_images`` synthetic photo-like JPEGs of about
``--fixture_size`` pixels as ``DIR/folder/{train,val}/<class>/*.jpg`` and the same images as
``DIR/tfrecord/{train,validation}-*`` shards, then measures both with ``cache=none``: the fixture
would fit in memory, ImageNet does not, and decoding is what is being measured.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from bench import report, timing
from bench.pipeline_fixture import make_fixture
from configs.common import get_base_config

FLAGS = flags.FLAGS
config_flags.DEFINE_config_dict("data", get_base_config().data)
flags.DEFINE_integer("image_size", 224, "Square output side of the pipeline.")
flags.DEFINE_integer("batch_size", 64, "Images per batch.")
flags.DEFINE_integer("batches", 20, "Batches per timed repeat.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per source (min/median/max are over these).")
flags.DEFINE_integer("warmup", 10, "Untimed batches first (autotuning, caches, prefetch).")
flags.DEFINE_string(
    "make_fixture",
    None,
    "Write a JPEG folder and TFRecord fixture under this "
    "directory (if absent) and benchmark both instead of --data.source.",
)
flags.DEFINE_integer("fixture_images", 512, "Training JPEGs in the fixture (val gets 1/8 more).")
flags.DEFINE_integer("fixture_size", 256, "Shorter side of the fixture JPEGs.")
flags.DEFINE_integer("fixture_classes", 10, "Classes in the fixture.")
flags.DEFINE_string(
    "model",
    None,
    "Also time this registered model's training steps at the same "
    "batch and size (after the pipelines) and report pipeline / model.",
)
flags.DEFINE_bool("json", False, "Print one JSON object per source instead of a table.")
flags.DEFINE_bool("write_docs", False, "Write the table into docs/benchmarks.md ('pipeline').")


def measure(data_config, source: str) -> dict:
    """Images/s of one source's training pipeline, timed in consecutive repeats."""
    from architectures.registry import Preprocessing
    from trainer.data import build_datasets, mixing

    config = data_config.copy_and_resolve_references()
    config.source = source
    bundle = build_datasets(
        config,
        image_size=FLAGS.image_size,
        preprocessing=Preprocessing(),
        batch_size=FLAGS.batch_size,
    )
    # One-hot labels, mixed when --data.mixup_alpha / --data.cutmix_alpha are set: what fit sees.
    train = mixing.soft_label_batches(bundle.train, config, num_classes=bundle.num_classes, seed=0)
    batches = iter(train)
    t = timing.time_interleaved(
        {source: lambda: next(batches)},
        repeats=FLAGS.repeats,
        calls_per_repeat=FLAGS.batches,
        warmup=FLAGS.warmup,
    )[source]
    return {
        "source": source,
        "augment": bundle.augment,
        "cache": config.cache,
        "cached": bundle.cached,
        "image_size": FLAGS.image_size,
        "batch_size": FLAGS.batch_size,
        "train_examples": bundle.train_examples,
        "num_classes": bundle.num_classes,
        "img_s": FLAGS.batch_size / t.median_s,
        "img_s_min": FLAGS.batch_size / t.max_s,
        "img_s_max": FLAGS.batch_size / t.min_s,
        "ms_batch": t.median_ms,
        "corrupt_skipped": len(bundle.corrupt_report()),
    }


def model_train_img_s(name: str, num_classes: int) -> float:
    """Training images/s of a registered model on a constant batch: the rate to out-run."""
    import tensorflow as tf

    import architectures

    size, batch = FLAGS.image_size, FLAGS.batch_size
    model = architectures.create_model(name, input_shape=(size, size, 3), num_classes=num_classes)
    images, labels = tf.random.uniform((batch, size, size, 3)), tf.zeros([batch], tf.int32)
    train_step, _ = timing.keras_steps(model, images, labels)
    t = timing.time_interleaved({name: train_step}, repeats=3, calls_per_repeat=2, warmup=2)[name]
    return batch / t.median_s


def format_table(rows: list[dict]) -> str:
    """Markdown table, with the model's training rate and the ratio when ``--model`` was given."""
    with_model = "model" in rows[0]
    header = (
        "| source | augment | cached | size | batch | img/s (median) | img/s min-max | ms/batch |"
    )
    if with_model:
        header += " model | model train img/s | pipeline / model |"
    lines = [header, "|---" * header.count(" | ") + "|---|"]
    for r in rows:
        line = (
            f"| `{r['source']}` | {r['augment']} | {r['cached']} | {r['image_size']} | "
            f"{r['batch_size']} | {r['img_s']:.0f} | {r['img_s_min']:.0f}-"
            f"{r['img_s_max']:.0f} | {r['ms_batch']:.1f} |"
        )
        if with_model:
            line += (
                f" {r['model']} | {r['model_train_img_s']:.1f} | {r['pipeline_over_model']:.1f}x |"
            )
        lines.append(line)
    return "\n".join(lines)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments {argv[1:]}; pass options as --flags.")
    for name in ("image_size", "batch_size", "batches", "repeats"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name}={getattr(FLAGS, name)} must be >= 1.")
    data_config = FLAGS.data
    load_average = os.getloadavg()[0]
    try:  # bad data settings are usage errors, not crashes
        if FLAGS.make_fixture:
            sources = make_fixture(
                FLAGS.make_fixture,
                images=FLAGS.fixture_images,
                size=FLAGS.fixture_size,
                classes=FLAGS.fixture_classes,
            )
            data_config.cache = "none"
            data_config.num_classes = FLAGS.fixture_classes
        else:
            sources = (data_config.source,)
        rows = [measure(data_config, source) for source in sources]
        if FLAGS.model:
            model_img_s = model_train_img_s(FLAGS.model, rows[0]["num_classes"])
            for row in rows:
                row.update(
                    model=FLAGS.model,
                    model_train_img_s=model_img_s,
                    pipeline_over_model=row["img_s"] / model_img_s,
                )
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    if FLAGS.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(format_table(rows))
    if FLAGS.write_docs:
        command = " ".join(["python benchmark.py", *sys.argv[1:]])
        markdown = (
            f"## Input pipeline\n\n{report.machine_description()}; load average "
            f"{load_average:.1f} when started (the machine may be shared)\n\n`{command}`\n\n"
            f"{format_table(rows)}\n\nImages/s of the training pipeline alone (read, decode, "
            f"augment, normalise, batch), after {FLAGS.warmup} warm-up batches; the model's "
            f"rate is a training step on a constant batch in the same process.\n"
        )
        report.update_section(os.path.join(report.DOCS_DIR, "benchmarks.md"), "pipeline", markdown)
