"""``benchmark.py latency``: TensorFlow vs float32 TFLite latency of several models.

    python benchmark.py latency --models=mobilenet_v2_100,mobilenet_v3_large_100 --num_threads=2

``benchmark.py runtimes`` (bench/runtimes.py, which measures) restricted to two runtimes: the
Keras forward pass as a ``tf.function`` and the float32 TFLite file (LiteRT with XNNPACK), both
with ``--num_threads`` threads and timed interleaved. Kept as its own command for its flags
(``--models``), JSON keys (``tf_ms``, ``tflite_ms``, ``num_threads``) and docs/benchmarks.md
section, which scripts and the docs rely on.
"""

from __future__ import annotations

import json
import os

from absl import flags

from bench import common, report, runtimes

FLAGS = flags.FLAGS
flags.DEFINE_alias("models", "model")


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"benchmark.py latency: unexpected arguments {argv[1:]}.")
    common.check_positive("latency", "batch_size", "num_threads", "repeats", "calls")
    common.check_models("latency", FLAGS.model)
    runtimes.set_threads(FLAGS.num_threads)
    rows = []
    for name in FLAGS.model:
        row = runtimes.measure(name, wanted=("tf", "tflite_float32"))
        rows.append(
            {
                "model": name,
                "image_size": row["image_size"],
                "macs": row["macs"],
                "batch_size": row["batch_size"],
                "num_threads": row["threads"],
                "tf_ms": row["tf_ms"],
                "tflite_ms": row["tflite_float32_ms"],
            }
        )
        if FLAGS.json:
            print(json.dumps(rows[-1]), flush=True)
    if FLAGS.json:
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
    note = runtimes.timing_note()
    print(f"{table}\n\n{note}")
    if FLAGS.write_docs:
        command = (
            f"python benchmark.py latency --models={','.join(FLAGS.model)} "
            f"--batch_size={FLAGS.batch_size} --num_threads={FLAGS.num_threads} "
            f"--repeats={FLAGS.repeats} --calls={FLAGS.calls}"
        )
        report.update_section(
            os.path.join(report.DOCS_DIR, "benchmarks.md"),
            "latency",
            f"## Latency: TensorFlow and TFLite\n\nMachine: {report.machine_description()}\n\n"
            f"`{command}`\n\n{table}\n\n{note}",
        )
