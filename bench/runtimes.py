"""``benchmark.py runtimes``: one model's batch-1 latency on every runtime, side by side.

    python benchmark.py runtimes --model=mobilenet_v1_100,mobilenet_v2_100,mobilenet_v3_large_100

For each model (random weights: latency does not depend on them): TensorFlow (the Keras model as
a ``tf.function``), LiteRT with XNNPACK on the float32 file and on the full-int8 file
(calibrated on random images: the speed of int8 kernels, not an accuracy figure), and
onnxruntime on ``model.onnx`` (when the ``onnx`` extra is installed). All four are timed
interleaved, so machine load hits them alike, with the same thread count.
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
from bench import common, report, timing  # noqa: E402
from deploy import loading, tflite  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("model", ["mobilenet_v2_100"], "Registered model names, comma-separated.")
flags.DEFINE_integer("image_size", None, "Square input size; default: each variant's own.")
flags.DEFINE_integer("num_classes", 1000, "Classifier width.")
flags.DEFINE_integer("num_threads", 2, "Threads for every runtime (TF intra-op, LiteRT, ORT).")
flags.DEFINE_integer("calibration_images", 8, "Random images calibrating the int8 file.")
common.define_timing_flags(repeats=7, warmup=3)
flags.DEFINE_integer("calls", 10, "Batch-1 calls averaged inside one repeat.")
common.define_output_flags("docs/deploy.md ('runtimes')")

RUNTIMES = ("tf", "tflite_float32", "tflite_int8", "onnxruntime")


def runners(model: keras.Model, threads: int, calibration: np.ndarray) -> dict:
    """Runtime name -> a function of a float32 batch, for the runtimes available here."""
    found = {"tf": loading.wrap_keras_model(model).predict}
    found["tflite_float32"] = tflite.Runner(tflite.convert(model, "float32"), num_threads=threads)
    found["tflite_int8"] = tflite.Runner(
        tflite.convert(model, "int8", representative_images=calibration), num_threads=threads
    )
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("tf2onnx"):
        from deploy import onnx

        found["onnxruntime"] = onnx.Runner(onnx.convert(model), num_threads=threads)
    return found


def measure(name: str) -> dict:
    size = common.input_shape_of(name, FLAGS.image_size)
    model = architectures.create_model(name, input_shape=size, num_classes=FLAGS.num_classes)
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((FLAGS.calibration_images, *size)).astype(np.float32)
    image = rng.standard_normal((1, *size)).astype(np.float32)
    found = runners(model, FLAGS.num_threads, calibration)
    results = timing.time_interleaved(
        {who: (lambda run=run: run(image)) for who, run in found.items()},
        repeats=FLAGS.repeats,
        calls_per_repeat=FLAGS.calls,
        warmup=FLAGS.warmup,
    )
    row = {"model": name, "image_size": size[0], "threads": FLAGS.num_threads}
    row.update({f"{who}_ms": results[who].median_ms for who in found})
    return row


def format_table(rows: list[dict]) -> str:
    header = "| model | input | " + " | ".join(f"{who} ms" for who in RUNTIMES) + " | int8/float |"
    lines = [header, "|" + "---|" * (len(RUNTIMES) + 3)]
    for r in rows:
        cells = [f"{r[f'{who}_ms']:.2f}" if f"{who}_ms" in r else "–" for who in RUNTIMES]
        ratio = r["tflite_int8_ms"] / r["tflite_float32_ms"]
        lines.append(
            f"| {r['model']} | {r['image_size']} | " + " | ".join(cells) + f" | {ratio:.2f} |"
        )
    return "\n".join(lines)


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"benchmark.py runtimes: unexpected arguments {argv[1:]}.")
    common.check_models("runtimes", FLAGS.model)
    common.check_positive("runtimes", "num_threads", "calibration_images", "calls")
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.num_threads)
    rows = []
    for name in FLAGS.model:
        rows.append(measure(name))
        if FLAGS.json:
            print(json.dumps(rows[-1]), flush=True)
        keras.backend.clear_session()
    table = (
        f"{format_table(rows)}\n\nMedian batch-1 latency of {FLAGS.repeats} interleaved repeats "
        f"of {FLAGS.calls} calls, {FLAGS.num_threads} threads each, XNNPACK for LiteRT. "
        f"{report.machine_description()}."
    )
    if not FLAGS.json:
        print(table)
    if FLAGS.write_docs:
        report.update_section(os.path.join(report.DOCS_DIR, "deploy.md"), "runtimes", table)
