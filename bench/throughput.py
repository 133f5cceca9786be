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

import tf_keras as keras  # noqa: E402
from absl import flags, logging  # noqa: E402

from bench import common, report, timing  # noqa: E402

FLAGS = flags.FLAGS
common.define_model_flags()
common.define_timing_flags()
flags.DEFINE_bool("train", True, "Also measure training steps (not only inference).")
flags.DEFINE_integer("steps", 3, "Steps averaged inside one repeat.")
common.define_output_flags("docs/benchmarks.md ('throughput')")


def measure(name: str) -> dict:
    """Throughput of our ``name`` (and keras.applications', if asked) in one interleaved run."""
    input_shape = common.input_shape_of(name, FLAGS.image_size)
    images, labels = common.synthetic_batch(FLAGS.batch_size, input_shape, FLAGS.num_classes)
    models = common.models_to_compare(name, input_shape, FLAGS.num_classes, FLAGS.compare_keras)
    if FLAGS.compare_keras and "keras" not in models:
        logging.info("keras.applications has no counterpart of %s; timing ours only.", name)
    steps = {
        who: timing.keras_steps(m, images, labels, jit_compile=FLAGS.jit_compile)
        for who, m in models.items()
    }
    row: dict = {
        "model": name,
        "image_size": input_shape[0],
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
    common.check_models("throughput", FLAGS.model)  # unknown names fail before any timing
    common.set_precision(FLAGS.precision)
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
