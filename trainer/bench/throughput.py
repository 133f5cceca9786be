"""``benchmark.py throughput``: training and inference images/s, optionally vs keras.applications.

    python benchmark.py throughput --model=mobilenet_v2_100 --train --compare_keras --json

Each model trains through Keras' own compiled train function (exactly what ``fit`` runs) on one
fixed synthetic batch, so the input pipeline is out of the measurement. With ``--compare_keras``
keras.applications' same model is built in the same process under the same settings and timed
interleaved with ours, and the ratio ours/theirs is reported (above 1: ours is faster).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import flags, logging  # noqa: E402

import architectures  # noqa: E402
from trainer.bench import report, timing  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("model", ["mobilenet_v1_100"], "Registered model name(s), comma-separated.")
flags.DEFINE_integer("batch_size", 32, "Images per step.")
flags.DEFINE_integer("image_size", None, "Square input size; default: each variant's own.")
flags.DEFINE_integer("num_classes", 1000, "Classifier width.")
flags.DEFINE_bool("train", True, "Also measure training steps (not only inference).")
flags.DEFINE_enum("precision", "float32", ["float32", "float16", "bfloat16"], "Compute dtype.")
flags.DEFINE_bool("jit_compile", False, "Compile the steps with XLA.")
flags.DEFINE_bool("compare_keras", False, "Also time keras.applications' same model, interleaved.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per model (min/median/max are over these).")
flags.DEFINE_integer("steps", 3, "Steps averaged inside one repeat.")
flags.DEFINE_integer("warmup", 2, "Untimed steps first.")
flags.DEFINE_bool("json", False, "Print one JSON object per model instead of a table.")
flags.DEFINE_bool("write_docs", False, "Write the table into docs/benchmarks.md ('throughput').")

# keras.applications' builder and keyword arguments for each of our variants that it also has.
_KERAS_APPLICATIONS = {
    **{
        f"mobilenet_v1_{tag}": ("MobileNet", {"alpha": alpha})
        for tag, alpha in (("100", 1.0), ("075", 0.75), ("050", 0.5), ("025", 0.25))
    },
    **{
        f"mobilenet_v2_{tag}": ("MobileNetV2", {"alpha": alpha})
        for tag, alpha in (
            ("035", 0.35),
            ("050", 0.5),
            ("075", 0.75),
            ("100", 1.0),
            ("130", 1.3),
            ("140", 1.4),
        )
    },
    "xception": ("Xception", {}),
    "resnet50": ("ResNet50", {}),
}


def keras_application(name: str, input_shape, num_classes: int) -> keras.Model | None:
    """keras.applications' model matching our variant ``name``, or None if it has none."""
    if name not in _KERAS_APPLICATIONS:
        return None
    builder, kwargs = _KERAS_APPLICATIONS[name]
    return getattr(keras.applications, builder)(
        input_shape=input_shape, weights=None, classes=num_classes, **kwargs
    )


def measure(name: str) -> dict:
    """Throughput of our ``name`` (and keras.applications', if asked) in one interleaved run."""
    spec = architectures.get_model_spec(name)
    size = FLAGS.image_size or spec.input_size
    input_shape = (size, size, 3)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(-1, 1, (FLAGS.batch_size, *input_shape)), tf.float32)
    labels = tf.constant(rng.integers(0, FLAGS.num_classes, FLAGS.batch_size), tf.int32)

    models = {
        "ours": architectures.create_model(
            name, input_shape=input_shape, num_classes=FLAGS.num_classes
        )
    }
    theirs = (
        keras_application(name, input_shape, FLAGS.num_classes) if FLAGS.compare_keras else None
    )
    if theirs is not None:
        models["keras"] = theirs
    elif FLAGS.compare_keras:
        logging.info("keras.applications has no counterpart of %s; timing ours only.", name)

    steps = {
        who: timing.keras_steps(m, images, labels, jit_compile=FLAGS.jit_compile)
        for who, m in models.items()
    }
    row: dict = {
        "model": name,
        "image_size": size,
        "batch_size": FLAGS.batch_size,
        "precision": FLAGS.precision,
        "jit_compile": FLAGS.jit_compile,
    }
    kinds = (("infer", 1), ("train", 0)) if FLAGS.train else (("infer", 1),)
    for kind, index in kinds:
        timing.reset_device_peak()
        results = timing.time_interleaved(
            {who: fns[index] for who, fns in steps.items()},
            repeats=FLAGS.repeats,
            calls_per_repeat=FLAGS.steps,
            warmup=FLAGS.warmup,
        )
        for who, t in results.items():
            prefix = "" if who == "ours" else "keras_"
            row[f"{prefix}{kind}_img_s"] = FLAGS.batch_size / t.median_s
            row[f"{prefix}{kind}_ms_step"] = {
                "min": t.min_s * 1e3,
                "median": t.median_ms,
                "max": t.max_s * 1e3,
            }
        row[f"{kind}_peak_memory_mb"] = timing.peak_memory_mb()
        if "keras" in results:
            row[f"ratio_{kind}"] = results["keras"].median_s / results["ours"].median_s
    return row


def format_table(rows: list[dict]) -> str:
    """Markdown table: images/s and median ms/step, ours and keras.applications', and ratios."""
    header = (
        "| model | size | batch | infer img/s | keras infer img/s | ratio infer | "
        "train img/s | keras train img/s | ratio train | train ms/step (min/med/max) |"
    )
    lines = [header, "|" + "---|" * 10]

    def fmt(value, spec=".1f"):
        return "–" if value is None else format(value, spec)

    for r in rows:
        ms = r.get("train_ms_step")
        ms_text = f"{ms['min']:.0f}/{ms['median']:.0f}/{ms['max']:.0f}" if ms else "–"
        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['batch_size']} | {fmt(r.get('infer_img_s'))} "
            f"| {fmt(r.get('keras_infer_img_s'))} | {fmt(r.get('ratio_infer'), '.2f')} "
            f"| {fmt(r.get('train_img_s'))} | {fmt(r.get('keras_train_img_s'))} "
            f"| {fmt(r.get('ratio_train'), '.2f')} | {ms_text} |"
        )
    return "\n".join(lines)


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"benchmark.py throughput: unexpected arguments {argv[1:]}.")
    for name in FLAGS.model:  # unknown names fail before any timing
        try:
            architectures.get_model_spec(name)
        except ValueError as error:
            raise SystemExit(f"benchmark.py throughput: {error}") from None
    if FLAGS.precision != "float32":
        keras.mixed_precision.set_global_policy(f"mixed_{FLAGS.precision}")
    rows = []
    for name in FLAGS.model:
        row = measure(name)
        rows.append(row)
        if FLAGS.json:
            print(json.dumps(row), flush=True)
        keras.backend.clear_session()
    if not FLAGS.json:
        print(format_table(rows))
    if FLAGS.write_docs:
        command = (
            f"python benchmark.py throughput --model={','.join(FLAGS.model)} "
            f"--batch_size={FLAGS.batch_size} --precision={FLAGS.precision} "
            f"--jit_compile={FLAGS.jit_compile} --compare_keras={FLAGS.compare_keras}"
            + (f" --image_size={FLAGS.image_size}" if FLAGS.image_size else "")
        )
        section = (
            f"## Throughput{' (XLA)' if FLAGS.jit_compile else ''}\n\n"
            f"Machine: {report.machine_description()}\n\n`{command}`\n\n"
            f"{format_table(rows)}\n\nRatio = keras.applications' median time / ours "
            f"(above 1: lightnets is faster)."
        )
        report.update_section(
            os.path.join(report.DOCS_DIR, "benchmarks.md"),
            "throughput" + ("_xla" if FLAGS.jit_compile else ""),
            section,
        )
