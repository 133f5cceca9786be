"""``benchmark.py runtimes``: one model's latency on every runtime, side by side.

    python benchmark.py runtimes --model=mobilenet_v1_100,mobilenet_v2_100,mobilenet_v3_large_100

For each model (random weights: latency does not depend on them): TensorFlow (the Keras model as
a ``tf.function``), LiteRT with XNNPACK on the float32 file and on the full-int8 file
(calibrated on random images: the speed of int8 kernels, not an accuracy figure), and
onnxruntime on ``model.onnx`` (when the ``onnx`` extra is installed); ``--runtimes`` picks some.
All are timed interleaved (``bench/timing.py``), so machine load hits them alike, with the same
thread count and batch (``--batch_size``, 1 by default: what a phone app runs).
``benchmark.py latency`` (bench/latency.py) is this command restricted to TF and float TFLite.
"""

from __future__ import annotations

import importlib.util
import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import flags  # noqa: E402

import architectures  # noqa: E402
from architectures.cost import model_cost  # noqa: E402
from bench import common, report, timing  # noqa: E402
from deploy import loading, tflite  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("model", ["mobilenet_v2_100"], "Registered model names, comma-separated.")
flags.DEFINE_integer("image_size", None, "Square input size; default: each variant's own.")
flags.DEFINE_integer("num_classes", 1000, "Classifier width.")
flags.DEFINE_integer("num_threads", 2, "Threads for every runtime (TF intra-op, LiteRT, ORT).")
flags.DEFINE_integer("batch_size", 1, "Images per call.")
flags.DEFINE_integer("calibration_images", 8, "Random images calibrating the int8 file.")
RUNTIMES = ("tf", "tflite_float32", "tflite_int8", "onnxruntime")
flags.DEFINE_multi_enum(
    "runtimes", list(RUNTIMES), list(RUNTIMES), "Runtimes to time (onnxruntime if installed)."
)
common.define_timing_flags(repeats=7, warmup=3)
flags.DEFINE_integer("calls", 10, "Calls averaged inside one repeat.")
common.define_output_flags("docs/deploy.md ('runtimes')")


def runners(
    model: keras.Model, threads: int, calibration: np.ndarray, wanted=RUNTIMES, batch_size=1
) -> dict:
    """Runtime name -> a function of a float32 batch, for the ``wanted`` runtimes found here."""
    found = {}
    if "tf" in wanted:
        found["tf"] = loading.wrap_keras_model(model).predict
    if "tflite_float32" in wanted:
        found["tflite_float32"] = tflite.Runner(
            tflite.convert(model, "float32"), num_threads=threads
        )
    if "tflite_int8" in wanted:
        found["tflite_int8"] = tflite.Runner(
            tflite.convert(model, "int8", representative_images=calibration), num_threads=threads
        )
    if (
        "onnxruntime" in wanted
        and importlib.util.find_spec("onnxruntime")
        and importlib.util.find_spec("tf2onnx")
    ):
        from deploy import onnx

        found["onnxruntime"] = onnx.Runner(onnx.convert(model), num_threads=threads)
    for runner in found.values():
        if isinstance(runner, tflite.Runner):
            runner.resize(batch_size)  # allocated once, outside the timed calls
    return found


def measure(name: str, wanted=None) -> dict:
    """One model's row: ``model``, ``image_size``, ``batch_size``, ``threads``, ``macs`` and
    ``<runtime>_ms`` (median latency of one call) for each runtime timed."""
    size = common.input_shape_of(name, FLAGS.image_size)
    model = architectures.create_model(name, input_shape=size, num_classes=FLAGS.num_classes)
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((FLAGS.calibration_images, *size)).astype(np.float32)
    images = rng.standard_normal((FLAGS.batch_size, *size)).astype(np.float32)
    found = runners(
        model,
        FLAGS.num_threads,
        calibration,
        wanted=tuple(wanted or FLAGS.runtimes),
        batch_size=FLAGS.batch_size,
    )
    results = timing.time_interleaved(
        {who: (lambda run=run: run(images)) for who, run in found.items()},
        repeats=FLAGS.repeats,
        calls_per_repeat=FLAGS.calls,
        warmup=FLAGS.warmup,
    )
    row = {
        "model": name,
        "image_size": size[0],
        "batch_size": FLAGS.batch_size,
        "threads": FLAGS.num_threads,
        "macs": model_cost(model).total.macs,
    }
    row.update({f"{who}_ms": results[who].median_ms for who in found})
    return row


def format_table(rows: list[dict]) -> str:
    header = "| model | input | " + " | ".join(f"{who} ms" for who in RUNTIMES) + " | int8/float |"
    lines = [header, "|" + "---|" * (len(RUNTIMES) + 3)]
    for r in rows:
        cells = [f"{r[f'{who}_ms']:.2f}" if f"{who}_ms" in r else "–" for who in RUNTIMES]
        ratio = (
            f"{r['tflite_int8_ms'] / r['tflite_float32_ms']:.2f}"
            if {"tflite_int8_ms", "tflite_float32_ms"} <= set(r)
            else "–"
        )
        lines.append(f"| {r['model']} | {r['image_size']} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def set_threads(threads: int) -> None:
    """TensorFlow's intra-op threads (the other runtimes take theirs per runner)."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)


def timing_note() -> str:
    return (
        f"Median batch-{FLAGS.batch_size} latency of {FLAGS.repeats} interleaved repeats of "
        f"{FLAGS.calls} calls, {FLAGS.num_threads} threads each (TensorFlow intra-op, LiteRT "
        f"with XNNPACK, onnxruntime)."
    )


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"benchmark.py runtimes: unexpected arguments {argv[1:]}.")
    common.check_models("runtimes", FLAGS.model)
    common.check_positive(
        "runtimes", "num_threads", "batch_size", "calibration_images", "repeats", "calls"
    )
    set_threads(FLAGS.num_threads)
    rows = []
    for name in FLAGS.model:
        rows.append(measure(name))
        if FLAGS.json:
            print(json.dumps(rows[-1]), flush=True)
        keras.backend.clear_session()
    table = f"{format_table(rows)}\n\n{timing_note()} {report.machine_description()}."
    if not FLAGS.json:
        print(table)
    if FLAGS.write_docs:
        report.update_section(os.path.join(report.DOCS_DIR, "deploy.md"), "runtimes", table)
