"""``benchmark.py layers``: what each convolution type costs in MACs and what it costs in time.

    python benchmark.py layers [--tflite] [--jit_compile] [--write_docs] [--quick]

Two tables, each timed in one run with all candidates of a shape interleaved, so their ratios hold
even on a busy machine:

* grouped 1×1 at ShuffleNet v1 stage shapes: ``GroupConv2D`` (``auto`` and every formulation)
  against the dense 1×1 of the same width, Keras ``Conv2D(groups=G)``, and ``ChannelShuffle`` on
  the same tensor;
* the conv-type comparison at equal shapes: standard 3×3 and 1×1, depthwise separable, grouped
  (G = 2, 3, 4, 8; 3×3 and 1×1), spatially separable, shuffle: MACs (``compute_cost``), median
  ms, and both as ratios to the standard 3×3.

``--tflite`` also converts every candidate (builtin ops only) and times it with ai-edge-litert.
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import flags, logging  # noqa: E402

import layers as lightnets  # noqa: E402
from bench import common, report, timing  # noqa: E402
from deploy import tflite  # noqa: E402
from deploy.plotting import pyplot  # noqa: E402
from layers import conv_ops  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 32, "Images per call.")
common.define_timing_flags(repeats=5, warmup=2)
flags.DEFINE_integer("calls", 3, "Calls averaged inside one repeat.")
flags.DEFINE_bool("jit_compile", False, "Compile every candidate with XLA.")
flags.DEFINE_bool("tflite", False, "Also convert each candidate to TFLite and time it.")
flags.DEFINE_integer("tflite_batch", 1, "Batch size of the TFLite runs.")
flags.DEFINE_integer("tflite_threads", None, "TFLite interpreter threads; default: all cores.")
flags.DEFINE_bool("quick", False, "Tiny shapes and one repeat: checks the plumbing only.")
flags.DEFINE_bool("write_docs", False, "Write the tables into benchmarks.md and a PNG plot.")
flags.DEFINE_string("docs_dir", report.DOCS_DIR, "Where --write_docs writes.")

# ShuffleNet v1 (g = 3 and g = 8) group-conv shapes: (H, C_in, C_out, G).
SHUFFLENET_SHAPES = [(28, 240, 240, 3), (28, 384, 384, 8), (14, 480, 480, 3), (7, 960, 960, 3)]
# Channels divisible by 2, 3, 4 and 8, so every group count fits: (H, C_in, C_out).
COMPARISON_SHAPES = [(28, 192, 240), (14, 480, 480)]
QUICK_SHUFFLENET_SHAPES = [(8, 24, 24, 3), (4, 48, 48, 8)]
QUICK_COMPARISON_SHAPES = [(8, 24, 48)]
GROUP_IMPLEMENTATIONS = ("auto", "native", "split", "matmul")


@dataclasses.dataclass
class Row:
    """One timed candidate: which table and shape it belongs to, its cost and its times."""

    table: str
    shape: str
    name: str
    macs: int
    ms: float | None = None
    tflite_ms: float | None = None
    tflite_note: str = ""
    ms_ratio: float | None = None
    macs_ratio: float | None = None
    tflite_ratio: float | None = None


def group_implementations() -> tuple[str, ...]:
    """The GroupConv2D formulations this process can run: ``native`` needs a grouped kernel
    with gradients (oneDNN or a GPU), which the layer refuses to use elsewhere."""
    if conv_ops.supports("grouped_conv"):
        return GROUP_IMPLEMENTATIONS
    return tuple(name for name in GROUP_IMPLEMENTATIONS if name != "native")


def shufflenet_candidates(channels_in, channels_out, groups):
    """Name -> layer for one grouped 1×1 shape; the first is the baseline."""
    candidates = {"dense 1×1 Conv2D": keras.layers.Conv2D(channels_out, 1, use_bias=False)}
    candidates[f"Keras Conv2D(groups={groups})"] = keras.layers.Conv2D(
        channels_out, 1, groups=groups, use_bias=False
    )
    for implementation in group_implementations():
        label = "split-concat" if implementation == "split" else implementation
        candidates[f"GroupConv2D {label}"] = lightnets.GroupConv2D(
            channels_out, 1, groups, use_bias=False, implementation=implementation
        )
    candidates[f"ChannelShuffle({groups})"] = lightnets.ChannelShuffle(groups)
    return candidates


def comparison_candidates(channels_in, channels_out):
    """Name -> layer for the conv-type comparison; the first (standard 3×3) is the baseline."""
    candidates = {
        "standard 3×3": keras.layers.Conv2D(channels_out, 3, padding="same", use_bias=False),
        "standard 1×1": keras.layers.Conv2D(channels_out, 1, use_bias=False),
        "depthwise separable 3×3": lightnets.DepthwiseSeparableConv2D(
            channels_out, 3, use_bias=False
        ),
        "spatially separable 3×1+1×3": lightnets.SpatialSeparableConv2D(
            channels_out, 3, use_bias=False
        ),
    }
    for kernel in (3, 1):
        for groups in (2, 3, 4, 8):
            candidates[f"grouped {kernel}×{kernel} G={groups}"] = lightnets.GroupConv2D(
                channels_out, kernel, groups, use_bias=False
            )
    candidates["ChannelShuffle(3)"] = lightnets.ChannelShuffle(3)
    return candidates


def _tflite_runner(layer, input_shape, batch: int, threads: int) -> tflite.Runner:
    """A one-layer model converted by the one TFLite path, its input set; raises if it fails."""
    inputs = keras.Input(input_shape[1:])
    runner = tflite.Runner(tflite.convert(keras.Model(inputs, layer(inputs))), num_threads=threads)
    runner.resize(batch)
    x = np.random.default_rng(0).standard_normal((batch, *input_shape[1:])).astype(np.float32)
    runner.set_input(x)
    return runner


def measure_shape(table: str, label: str, input_shape, candidates: dict) -> list[Row]:
    """Times every candidate on one input, interleaved; ratios are to the first candidate."""
    x = tf.constant(np.random.default_rng(0).standard_normal(input_shape), tf.float32)
    calls, rows, interpreters = {}, {}, {}
    for name, layer in candidates.items():
        layer.build(input_shape)
        calls[name] = tf.function(lambda layer=layer: layer(x), jit_compile=FLAGS.jit_compile)
        rows[name] = Row(table, label, name, lightnets.layer_cost(layer, input_shape).macs)
        if FLAGS.tflite:
            try:
                interpreters[name] = _tflite_runner(
                    layer, input_shape, FLAGS.tflite_batch, FLAGS.tflite_threads or os.cpu_count()
                )
            except Exception as error:  # a candidate that does not convert is a result too
                rows[name].tflite_note = f"does not convert: {type(error).__name__}"
    kwargs = dict(repeats=FLAGS.repeats, calls_per_repeat=FLAGS.calls, warmup=FLAGS.warmup)
    for name, result in timing.time_interleaved(calls, **kwargs).items():
        rows[name].ms = result.median_ms
    if interpreters:
        invokes = {name: interp.invoke for name, interp in interpreters.items()}
        # Batch-1 TFLite calls take well under a millisecond: average more of them per repeat.
        kwargs["calls_per_repeat"] *= 10
        for name, result in timing.time_interleaved(invokes, **kwargs).items():
            rows[name].tflite_ms = result.median_ms
    base = rows[next(iter(candidates))]
    for row in rows.values():
        row.ms_ratio = row.ms / base.ms
        row.macs_ratio = row.macs / base.macs if base.macs else None
        if row.tflite_ms is not None and base.tflite_ms:
            row.tflite_ratio = row.tflite_ms / base.tflite_ms
    return list(rows.values())


def run_all() -> list[Row]:
    batch = 2 if FLAGS.quick else FLAGS.batch_size
    shuffle_shapes = QUICK_SHUFFLENET_SHAPES if FLAGS.quick else SHUFFLENET_SHAPES
    comparison_shapes = QUICK_COMPARISON_SHAPES if FLAGS.quick else COMPARISON_SHAPES
    rows = []
    for size, channels_in, channels_out, groups in shuffle_shapes:
        label = f"{batch}×{size}×{size}×{channels_in}→{channels_out}, G={groups}"
        candidates = shufflenet_candidates(channels_in, channels_out, groups)
        rows += measure_shape("shufflenet", label, (batch, size, size, channels_in), candidates)
    for size, channels_in, channels_out in comparison_shapes:
        label = f"{batch}×{size}×{size}×{channels_in}→{channels_out}"
        candidates = comparison_candidates(channels_in, channels_out)
        rows += measure_shape("comparison", label, (batch, size, size, channels_in), candidates)
    return rows


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def format_tables(rows: list[Row]) -> str:
    """Both markdown tables; time ratios > 1 mean slower than the baseline."""
    tflite = any(r.tflite_ms is not None or r.tflite_note for r in rows)
    tflite_head = " TFLite ms | TFLite / base |" if tflite else ""
    out = []
    for table, title, base in (
        ("shufflenet", "Grouped 1×1 at ShuffleNet v1 shapes", "dense 1×1"),
        ("comparison", "Conv types at equal shapes", "standard 3×3"),
    ):
        selected = [r for r in rows if r.table == table]
        if not selected:
            continue
        out += [
            f"**{title}** (base: {base})",
            "",
            f"| shape | layer | MMACs/image | MACs / base | ms | time / base | speed-up |{tflite_head}",
            "|---|---|---|---|---|---|---|" + ("---|---|" if tflite else ""),
        ]
        for r in selected:
            line = (
                f"| {r.shape} | {r.name} | {r.macs / 1e6:.3g} | {_fmt(r.macs_ratio, '.3f')} "
                f"| {r.ms:.2f} | {r.ms_ratio:.2f} | {1 / r.ms_ratio:.2f}× |"
            )
            if tflite:
                tflite_ms = r.tflite_note or _fmt(r.tflite_ms, ".3f")
                line += f" {tflite_ms} | {_fmt(r.tflite_ratio, '.2f')} |"
            out.append(line)
        out.append("")
    return "\n".join(out)


def plot(rows: list[Row], path: str) -> None:
    """MACs ratio against time ratio (log-log) for the conv-type comparison."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 6))
    shapes = sorted({r.shape for r in rows if r.table == "comparison"})
    for marker, shape in zip("os^v", shapes, strict=False):
        points = [r for r in rows if r.shape == shape and r.macs_ratio]
        ax.scatter(
            [r.macs_ratio for r in points], [r.ms_ratio for r in points], marker=marker, label=shape
        )
        for r in points:
            ax.annotate(
                r.name,
                (r.macs_ratio, r.ms_ratio),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    limits = [0.01, 2.0]
    ax.plot(limits, limits, "k--", linewidth=0.8, label="time ∝ MACs")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="MACs / standard 3×3",
        ylabel="time / standard 3×3",
        title="Conv types: MACs vs measured time (CPU)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _command() -> str:
    parts = [
        "python benchmark.py layers",
        f"--batch_size={FLAGS.batch_size}",
        f"--repeats={FLAGS.repeats}",
    ]
    parts += [f"--{name}" for name in ("quick", "tflite", "jit_compile") if FLAGS[name].value]
    return " ".join(parts + ["--write_docs"])


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"benchmark.py layers: unexpected arguments {argv[1:]}.")
    for name in ("batch_size", "repeats", "calls", "tflite_batch"):
        if FLAGS[name].value < 1:
            raise SystemExit(f"benchmark.py layers: --{name}={FLAGS[name].value} must be >= 1.")
    logging.set_verbosity(logging.WARNING)  # the TFLite converter logs every conversion at INFO
    if FLAGS.quick:
        FLAGS.repeats, FLAGS.calls, FLAGS.warmup = 1, 1, 1
    rows = run_all()
    tables = format_tables(rows)
    print(tables)
    if FLAGS.write_docs:
        suffix = "_xla" if FLAGS.jit_compile else ""
        png = f"layers_macs_vs_time{suffix}.png"
        os.makedirs(FLAGS.docs_dir, exist_ok=True)
        plot(rows, os.path.join(FLAGS.docs_dir, png))
        section = (
            f"## Layers{' (XLA)' if FLAGS.jit_compile else ''}\n\n"
            f"Machine: {report.machine_description()}\n\n`{_command()}`\n\n"
            "Median of interleaved repeats, forward pass in a `tf.function`. Ratios are "
            "candidate / base (time below 1: faster); speed-up = base time / candidate time. "
            "On a shared machine absolute times drift between runs: compare rows of one shape.\n\n"
            f"{tables}\n![MACs vs time]({png})\n"
        )
        report.update_section(
            os.path.join(FLAGS.docs_dir, "benchmarks.md"), "layers" + suffix, section
        )
