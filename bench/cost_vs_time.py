"""``benchmark.py cost_vs_time``: multiply-adds against measured latency, with the machine's limit.

    python benchmark.py cost_vs_time --models='*' --write_docs

One point per variant: its MACs (the papers' convention) and its measured inference latency. The
physical limit is the machine's peak, measured in the same run with a large float32 matmul: a model
doing 2·MACs FLOPs can take no less than 2·MACs / peak seconds. Each model's achieved fraction of
peak shows how far FLOPs are from time (depthwise and grouped convolutions and shuffles reach a
much smaller fraction than dense convolutions).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import flags  # noqa: E402

import architectures  # noqa: E402
from architectures.cost import model_cost  # noqa: E402
from bench import report, timing  # noqa: E402
from deploy.plotting import pyplot  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "models", ["*"], "Model names or wildcards, comma-separated ('*': every variant)."
)
flags.DEFINE_integer("batch_size", 1, "Images per inference call (latency at batch 1 by default).")
flags.DEFINE_integer("image_size", None, "Square input size; default: each variant's own.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per model.")
flags.DEFINE_integer("steps", 5, "Calls averaged inside one repeat.")
flags.DEFINE_integer("matmul_size", 2048, "Side of the square matmul that measures peak GFLOP/s.")
flags.DEFINE_bool("json", False, "Print one JSON object per model.")
flags.DEFINE_bool(
    "write_docs", False, "Write docs/benchmarks.md ('cost_vs_time') and docs/cost_vs_time.png."
)


def peak_gflops(size: int) -> float:
    """Float32 GFLOP/s of a ``size``×``size`` matmul: what this machine's math units sustain."""
    a = tf.random.uniform((size, size))
    b = tf.random.uniform((size, size))
    matmul = tf.function(lambda: tf.matmul(a, b))
    t = timing.time_interleaved({"matmul": matmul}, repeats=5, calls_per_repeat=3)["matmul"]
    return 2 * size**3 / t.min_s / 1e9


def resolve_models(patterns: list[str]) -> list[str]:
    """Expands wildcards against the registry, keeping order and dropping repeats."""
    names: list[str] = []
    for pattern in patterns:
        matches = (
            architectures.list_models(pattern)
            if any(c in pattern for c in "*?[")
            else [architectures.get_model_spec(pattern).name]
        )
        if not matches:
            raise SystemExit(
                f"benchmark.py cost_vs_time: no model matches '{pattern}'; "
                f"see architectures.list_models()."
            )
        names.extend(m for m in matches if m not in names)
    return names


def measure(name: str) -> dict:
    """MACs, latency and achieved GFLOP/s of one variant."""
    spec = architectures.get_model_spec(name)
    size = FLAGS.image_size or spec.input_size
    model = architectures.create_model(name, input_shape=(size, size, 3))
    macs = model_cost(model).total.macs
    images = tf.constant(
        np.random.default_rng(0).uniform(-1, 1, (FLAGS.batch_size, size, size, 3)), tf.float32
    )
    infer = tf.function(lambda: model(images, training=False))
    t = timing.time_interleaved({name: infer}, repeats=FLAGS.repeats, calls_per_repeat=FLAGS.steps)[
        name
    ]
    achieved = 2 * macs * FLAGS.batch_size / t.median_s / 1e9
    return {
        "model": name,
        "family": spec.family,
        "image_size": size,
        "macs": macs,
        "latency_ms": t.median_ms,
        "latency_ms_min": t.min_s * 1e3,
        "achieved_gflops": achieved,
        "ms_per_gmac": t.median_ms / (macs * FLAGS.batch_size / 1e9),
    }


def format_table(rows: list[dict], peak: float) -> str:
    lines = [
        f"Peak (float32 {FLAGS.matmul_size}² matmul): {peak:.1f} GFLOP/s\n",
        "| model | size | MMACs | latency ms (median) | ms per GMAC | achieved GFLOP/s | "
        "fraction of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['macs'] / 1e6:.0f} | "
            f"{r['latency_ms']:.1f} | {r['ms_per_gmac']:.1f} | "
            f"{r['achieved_gflops']:.1f} | {r['fraction_of_peak']:.1%} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], peak: float, path: str) -> None:
    """Log-log MACs vs latency, one colour per family, with the peak-throughput line."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for family in sorted({r["family"] for r in rows}):
        points = [r for r in rows if r["family"] == family]
        ax.scatter(
            [r["macs"] / 1e6 for r in points], [r["latency_ms"] for r in points], label=family, s=28
        )
    macs = np.geomspace(min(r["macs"] for r in rows) / 2, max(r["macs"] for r in rows) * 2, 50)
    ax.plot(
        macs / 1e6,
        2 * macs * FLAGS.batch_size / (peak * 1e9) * 1e3,
        "k--",
        label=f"peak {peak:.0f} GFLOP/s (physical limit)",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("multiply-adds (millions)")
    ax.set_ylabel(f"latency, batch {FLAGS.batch_size} (ms)")
    ax.set_title("FLOPs are not time: cost vs measured latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"benchmark.py cost_vs_time: unexpected arguments {argv[1:]}.")
    try:
        names = resolve_models(FLAGS.models)
    except ValueError as error:  # unknown model name: the registry's message lists close matches
        raise SystemExit(f"benchmark.py cost_vs_time: {error}") from None
    peak = peak_gflops(FLAGS.matmul_size)
    rows = []
    for name in names:
        rows.append(measure(name))
        keras.backend.clear_session()
    # Measured before and after the models: the best of both is the least disturbed by load.
    peak = max(peak, peak_gflops(FLAGS.matmul_size))
    for row in rows:
        row["fraction_of_peak"] = row["achieved_gflops"] / peak
        if FLAGS.json:
            print(json.dumps(row), flush=True)
    table = format_table(rows, peak)
    if not FLAGS.json:
        print(table)
    if FLAGS.write_docs:
        plot(rows, peak, os.path.join(report.DOCS_DIR, "cost_vs_time.png"))
        command = (
            f"python benchmark.py cost_vs_time --models={','.join(FLAGS.models)} "
            f"--batch_size={FLAGS.batch_size}"
        )
        report.update_section(
            os.path.join(report.DOCS_DIR, "benchmarks.md"),
            "cost_vs_time",
            f"## Cost vs time\n\nMachine: {report.machine_description()}\n\n`{command}`\n\n{table}"
            f"\n\n![cost vs latency](cost_vs_time.png)",
        )
