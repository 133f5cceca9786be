"""``benchmark.py latency``: inference latency of several models in TensorFlow and TFLite, one run.

    python benchmark.py latency --models=mobilenet_v2_100,mobilenet_v3_large_100 --num_threads=2

Each model is timed twice: its Keras forward pass in a ``tf.function`` and its float32 TFLite file
(``deploy/tflite.py``, LiteRT's interpreter with XNNPACK) with ``--num_threads`` threads. Every
candidate is timed in one interleaved loop (``bench/timing.py``), so machine load hits all of
them alike; the ratios between rows are what a busy machine measures best.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

import architectures  # noqa: E402
from architectures.cost import model_cost  # noqa: E402
from bench import common, report, timing  # noqa: E402
from deploy import tflite  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["mobilenet_v2_100"], "Registered model names, comma-separated.")
flags.DEFINE_integer("image_size", None, "Square input size; default: each variant's own.")
flags.DEFINE_integer("batch_size", 1, "Images per call.")
flags.DEFINE_integer("num_threads", 2, "TensorFlow intra-op and TFLite interpreter threads.")
common.define_timing_flags(repeats=7, warmup=3)
flags.DEFINE_integer("calls", 10, "Calls averaged inside one repeat.")
common.define_output_flags("docs/benchmarks.md ('latency')")


def candidates(name: str, images: np.ndarray) -> tuple[dict, int]:
    """``{"<name> TF": fn, "<name> TFLite": fn}`` for one model, and its MACs."""
    size = images.shape[1]
    model = architectures.create_model(name, input_shape=(size, size, 3))
    inputs = tf.constant(images)
    runner = tflite.Runner(tflite.convert(model, "float32"), num_threads=FLAGS.num_threads)
    runner.resize(len(images))
    forward = tf.function(lambda: model(inputs, training=False))
    return {f"{name} TF": forward, f"{name} TFLite": lambda: runner(images)}, model_cost(
        model
    ).total.macs


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"benchmark.py latency: unexpected arguments {argv[1:]}.")
    common.check_positive("latency", "batch_size", "num_threads", "repeats", "calls")
    common.check_models("latency", FLAGS.models)
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.num_threads)
    runs, macs, sizes = {}, {}, {}
    for name in FLAGS.models:
        size = FLAGS.image_size or architectures.get_model_spec(name).input_size
        images = np.random.default_rng(0).uniform(-1, 1, (FLAGS.batch_size, size, size, 3))
        found, macs[name] = candidates(name, images.astype(np.float32))
        runs.update(found)
        sizes[name] = size
    timings = timing.time_interleaved(
        runs, repeats=FLAGS.repeats, calls_per_repeat=FLAGS.calls, warmup=FLAGS.warmup
    )
    rows = [
        {
            "model": name,
            "image_size": sizes[name],
            "macs": macs[name],
            "batch_size": FLAGS.batch_size,
            "num_threads": FLAGS.num_threads,
            "tf_ms": timings[f"{name} TF"].median_ms,
            "tflite_ms": timings[f"{name} TFLite"].median_ms,
        }
        for name in FLAGS.models
    ]
    if FLAGS.json:
        for row in rows:
            print(json.dumps(row), flush=True)
        return
    table = "\n".join(
        [
            "| model | input | MMACs | TF ms | TFLite ms | TF / TFLite |",
            "|---|---|---|---|---|---|",
            *(
                f"| {r['model']} | {r['image_size']} | {r['macs'] / 1e6:.0f} | {r['tf_ms']:.2f} | "
                f"{r['tflite_ms']:.2f} | {r['tf_ms'] / r['tflite_ms']:.1f} |"
                for r in rows
            ),
        ]
    )
    note = (
        f"Median of {FLAGS.repeats} interleaved repeats of {FLAGS.calls} calls, batch "
        f"{FLAGS.batch_size}, {FLAGS.num_threads} threads (TensorFlow intra-op and TFLite)."
    )
    print(f"{table}\n\n{note}")
    if FLAGS.write_docs:
        command = (
            f"python benchmark.py latency --models={','.join(FLAGS.models)} "
            f"--batch_size={FLAGS.batch_size} --num_threads={FLAGS.num_threads} "
            f"--repeats={FLAGS.repeats} --calls={FLAGS.calls}"
        )
        report.update_section(
            os.path.join(report.DOCS_DIR, "benchmarks.md"),
            "latency",
            f"## Latency: TensorFlow and TFLite\n\nMachine: {report.machine_description()}\n\n"
            f"`{command}`\n\n{table}\n\n{note}",
        )
