"""``benchmark.py channel_pruning``: dense vs channel-pruned latency, TFLite and TF, in one run.

    python benchmark.py channel_pruning --model=mobilenet_v2_100,resnet50,shufflenet_v2_100 \\
        --target_macs=0.5 --image_size=224 --num_threads=2
    python benchmark.py channel_pruning --pruned_run=runs/<pruned digits run> --image_size=224

For each registered model: the dense variant (seeded random weights, ``--seed``)
and ``compression.prune_channels`` of it at ``--target_macs``. With ``--pruned_run``: a
channel-pruned training run's model and the dense run it was pruned from
(``config.init_checkpoint``), both rebuilt at ``--image_size`` with their trained weights (every
family ends in global pooling, so the weights fit any input size). Each pair is converted to
float32 TFLite (XNNPACK, ``--num_threads``), run as a TF ``tf.function`` (one op at a time on
``--num_threads`` intra-op threads), and as the same function frozen for inference ("tf_frozen":
variables turned into constants, so TensorFlow's graph optimizer folds each batch norm into its
convolution and drops the variable reads, as a frozen graph deployed with TF does); the six
candidates are timed round-robin in one run (``bench.timing.time_interleaved``), so machine load
hits them alike and the pruned/dense ratios are what to read.

    python benchmark.py channel_pruning --model=mobilenet_v2_100 --reference=mobilenet_v2_050
    python benchmark.py channel_pruning --model=mobilenet_v2_100 --skip='stem,*_project'

``--min_fraction``: the smallest fraction of its channels any group keeps. ``--skip``: channel
groups the plan leaves whole (``compression.prune_channels``), e.g.
MobileNet v2's residual trunks. ``--reference``: registered models timed in the same interleaved run as each pair (fresh
weights, same size), with their ratios to that pair's dense model. A uniformly narrower variant
shows how much of a runtime's time at batch 1 does not shrink with the channel counts at all
(per-operation overhead): no pruning of the same layers can run faster than that floor.

    python benchmark.py channel_pruning --runs=DENSE,PRUNED_A,SPARSE_B,... --plot=out.png

With ``--runs``: train.py workdirs (dense, tfmot-sparse, channel-pruned) are compared as
trained: each run's model is rebuilt at ``--image_size`` with its weights, converted to TFLite
and timed (interleaved, batch 1), and plotted against the run's validation top-1.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import flags  # noqa: E402
from tensorflow.python.framework.convert_to_constants import (  # noqa: E402
    convert_variables_to_constants_v2,  # TF 2's freezing (tf.compat.v1.graph_util is TF 1's)
)

import architectures  # noqa: E402
import compression  # noqa: E402
from architectures.cost import model_cost  # noqa: E402
from bench import common, report, timing  # noqa: E402
from deploy import loading, plotting, tflite  # noqa: E402
from deploy.fileio import read_json  # noqa: E402
from deploy.workdir import Workdir  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "model", ["mobilenet_v2_100", "resnet50", "shufflenet_v2_100"], "Registered model names."
)
flags.DEFINE_integer("image_size", 224, "Square input size of every timed model.")
flags.DEFINE_integer("num_classes", 1000, "Classifier width of the registered models.")
flags.DEFINE_float("target_macs", 0.5, "Fraction of the dense multiply-adds kept.")
flags.DEFINE_string("importance", "l1", "Channel importance: l1 or bn_gamma.")
flags.DEFINE_integer("seed", 0, "Seed of the registered models' random weights (and so the plan).")
flags.DEFINE_float("min_fraction", 0.0, "Smallest fraction of its channels a group keeps.")
flags.DEFINE_list(
    "skip", [], "Channel groups kept whole: names or fnmatch patterns (e.g. stem,*_project)."
)
flags.DEFINE_string("pruned_run", "", "A channel-pruned train.py workdir to time instead.")
flags.DEFINE_list("runs", [], "train.py workdirs to time and plot (top-1 vs TFLite latency).")
flags.DEFINE_string("plot", "", "With --runs: where to write the top-1 vs latency PNG.")
flags.DEFINE_list(
    "reference", [], "Registered models timed alongside each pair (e.g. a narrower variant)."
)
flags.DEFINE_integer("num_threads", 2, "TFLite interpreter threads.")
common.define_timing_flags(repeats=11, warmup=3)
flags.DEFINE_integer("calls", 5, "Calls averaged inside one repeat.")
common.define_output_flags("docs/compression.md ('channel_pruning_latency')")


def at_size(model: keras.Model, image_size: int) -> keras.Model:
    """``model`` rebuilt on a square ``image_size`` input, with its weights."""
    channels = int(model.inputs[0].shape[-1])
    inputs = keras.Input((image_size, image_size, channels))
    resized = keras.models.clone_model(model, input_tensors=inputs)
    resized.set_weights(model.get_weights())
    return resized


def _pairs():
    """(label, dense model, pruned model) at ``--image_size``."""
    size = FLAGS.image_size
    if FLAGS.pruned_run:
        run = loading.load_workdir_config(FLAGS.pruned_run)
        if not run.init_checkpoint:
            raise SystemExit(
                f"benchmark.py channel_pruning: --pruned_run={FLAGS.pruned_run} has no "
                "config.init_checkpoint (the dense run it was pruned from)."
            )
        pruned = loading.load_model(FLAGS.pruned_run).keras_model
        dense = loading.load_model(run.init_checkpoint).keras_model
        yield run.model.name, at_size(dense, size), at_size(pruned, size)
        return
    for name in FLAGS.model:
        # Seeded: l1 importance reads the weights, so the plan (and its latency) is the same
        # in every run; unseeded, random weights gave other plans and ShuffleNet v2 pruned/dense
        # ratios from 0.54 to 0.91 between runs.
        keras.utils.set_random_seed(FLAGS.seed)
        dense = architectures.create_model(
            name, input_shape=(size, size, 3), num_classes=FLAGS.num_classes
        )
        try:
            pruned = compression.prune_channels(
                dense,
                target_macs=FLAGS.target_macs,
                importance=FLAGS.importance,
                min_fraction=FLAGS.min_fraction,
                skip=tuple(FLAGS.skip),
            )
        except ValueError as error:
            raise SystemExit(f"benchmark.py channel_pruning: --model={name}: {error}") from None
        yield name, dense, pruned


RUNTIMES = ("tflite", "tf", "tf_frozen")


def frozen_function(model: keras.Model, images: tf.Tensor):
    """``model``'s inference as a TF function with its variables frozen into constants.

    Raises:
      AssertionError: the frozen function's outputs differ from the model's (beyond 1e-4).
    """
    call = tf.function(lambda x: model(x, training=False))
    frozen = convert_variables_to_constants_v2(
        call.get_concrete_function(tf.TensorSpec(images.shape, images.dtype))
    )
    expected, got = model(images, training=False).numpy(), frozen(images)[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=f"frozen {model.name}")
    return frozen


def _measure(name: str, dense: keras.Model, pruned: keras.Model) -> dict:
    size = FLAGS.image_size
    images = np.random.default_rng(0).random((1, size, size, 3)).astype(np.float32)
    tensor = tf.constant(images)  # made once: the TF candidates time the model call alone
    models = {"dense": dense, "pruned": pruned}
    for reference in FLAGS.reference:
        models[reference] = architectures.create_model(
            reference, input_shape=(size, size, 3), num_classes=FLAGS.num_classes
        )
    candidates, costs = {}, {}
    for label, model in models.items():
        costs[label] = model_cost(model).total
        runner = tflite.Runner(tflite.convert(model, "float32"), num_threads=FLAGS.num_threads)
        candidates[f"{label}_tflite"] = lambda runner=runner: runner(images)
        call = tf.function(lambda x, model=model: model(x, training=False))
        candidates[f"{label}_tf"] = lambda call=call: call(tensor)
        frozen = frozen_function(model, tensor)
        candidates[f"{label}_tf_frozen"] = lambda frozen=frozen: frozen(tensor)
    timings = timing.time_interleaved(
        candidates, repeats=FLAGS.repeats, calls_per_repeat=FLAGS.calls, warmup=FLAGS.warmup
    )
    result = {
        "model": name,
        "image_size": size,
        "num_threads": FLAGS.num_threads,
        "dense_macs": costs["dense"].macs,
        "pruned_macs": costs["pruned"].macs,
        "dense_params": costs["dense"].params,
        "pruned_params": costs["pruned"].params,
    }
    ms = {label: t.median_ms for label, t in timings.items()}
    for runtime in RUNTIMES:
        for label in ("dense", "pruned"):
            result[f"{label}_{runtime}_ms"] = ms[f"{label}_{runtime}"]
        result[f"{runtime}_ratio"] = ms[f"pruned_{runtime}"] / ms[f"dense_{runtime}"]
    result["references"] = [
        {
            "model": reference,
            "macs": costs[reference].macs,
            "params": costs[reference].params,
            **{f"{runtime}_ms": ms[f"{reference}_{runtime}"] for runtime in RUNTIMES},
            **{
                f"{runtime}_ratio": ms[f"{reference}_{runtime}"] / ms[f"dense_{runtime}"]
                for runtime in RUNTIMES
            },
        }
        for reference in FLAGS.reference
    ]
    return result


def _run_label(metrics: dict) -> tuple[str, str]:
    """(kind, label) of a run: dense, tfmot-sparse or channel-pruned, with its budget."""
    if "channel_pruning" in metrics:
        kept = metrics["channel_pruning"]["macs_ratio"]
        return "channel-pruned", f"{kept:.2f}x MACs"
    if "pruning" in metrics:
        sparsity = metrics["pruning"]["sparsity"]["all_kernels"]["sparsity"]
        return "tfmot-sparse", f"{sparsity:.2f} sparse"
    return "dense", "dense"


def _compare_runs() -> list[dict]:
    """Each run's trained model rebuilt at ``--image_size``, converted to TFLite (tfmot-sparse
    runs with the sparse encoding XNNPACK reads) and timed interleaved, with its top-1."""
    candidates, rows = {}, []
    size = FLAGS.image_size
    images = np.random.default_rng(0).random((1, size, size, 3)).astype(np.float32)
    for path in FLAGS.runs:
        metrics = read_json(Workdir(path).metrics_json)
        kind, label = _run_label(metrics)
        model = at_size(loading.load_model(path).keras_model, size)
        mode = "sparse" if kind == "tfmot-sparse" else "float32"
        runner = tflite.Runner(tflite.convert(model, mode), num_threads=FLAGS.num_threads)
        candidates[path] = lambda runner=runner: runner(images)
        rows.append(
            {
                "run": path,
                "kind": kind,
                "label": label,
                "top1": metrics["final"]["val_top1"],
                "macs": model_cost(model).total_macs,
                "image_size": size,
            }
        )
    timings = timing.time_interleaved(
        candidates, repeats=FLAGS.repeats, calls_per_repeat=FLAGS.calls, warmup=FLAGS.warmup
    )
    for row in rows:
        row["tflite_ms"] = timings[row["run"]].median_ms
    return rows


def _plot(rows: list[dict], path: str) -> None:
    plt = plotting.pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    for kind, marker in (("dense", "o"), ("tfmot-sparse", "s"), ("channel-pruned", "^")):
        chosen = [r for r in rows if r["kind"] == kind]
        if not chosen:
            continue
        axes.scatter(
            [r["tflite_ms"] for r in chosen],
            [100 * r["top1"] for r in chosen],
            marker=marker,
            label=kind,
        )
        for r in chosen:
            axes.annotate(r["label"], (r["tflite_ms"], 100 * r["top1"]), fontsize=7)
    axes.set_xlabel(
        f"TFLite latency at {FLAGS.image_size}x{FLAGS.image_size}, batch 1, "
        f"{FLAGS.num_threads} threads (ms)"
    )
    axes.set_ylabel("validation top-1 (%)")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv) -> None:
    del argv
    common.check_positive("channel_pruning", "image_size", "num_threads", "repeats", "calls")
    if not 0 < FLAGS.target_macs <= 1:
        raise SystemExit(
            f"benchmark.py channel_pruning: --target_macs={FLAGS.target_macs} must be in (0, 1]."
        )
    if FLAGS.runs:
        rows = _compare_runs()
        for row in rows:
            print(json.dumps(row))
        if FLAGS.plot:
            _plot(rows, FLAGS.plot)
        return
    if not FLAGS.pruned_run:
        common.check_models("channel_pruning", FLAGS.model)
    common.check_models("channel_pruning", FLAGS.reference)
    # TF on the same threads as the interpreter: one op at a time on --num_threads threads. TF's
    # default pools (every core for each of two concurrent ops) oversubscribe a shared machine,
    # and the stalls scale with the op count, which pruning leaves unchanged.
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.num_threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    results = [_measure(*pair) for pair in _pairs()]
    if FLAGS.json:
        for result in results:
            print(json.dumps(result))
        return
    rows = ""
    for r in results:
        times = "".join(
            f"{r[f'dense_{t}_ms']:.2f} | {r[f'pruned_{t}_ms']:.2f} | {r[f'{t}_ratio']:.2f} | "
            for t in RUNTIMES
        )
        rows += (
            f"| {r['model']} | {r['pruned_macs'] / r['dense_macs']:.2f} | "
            f"{r['dense_params'] / 1e6:.2f} → {r['pruned_params'] / 1e6:.2f} | {times}\n"
        )
        for ref in r["references"]:  # in the pruned columns, against the same dense model
            times = "".join(
                f"{r[f'dense_{t}_ms']:.2f} | {ref[f'{t}_ms']:.2f} | {ref[f'{t}_ratio']:.2f} | "
                for t in RUNTIMES
            )
            rows += (
                f"| ↳ reference `{ref['model']}` | {ref['macs'] / r['dense_macs']:.2f} | "
                f"{r['dense_params'] / 1e6:.2f} → {ref['params'] / 1e6:.2f} | {times}\n"
            )
    table = (
        "| model | MACs kept | params (M) | TFLite dense ms | TFLite pruned ms | ratio | "
        "TF dense ms | TF pruned ms | ratio | TF frozen dense ms | TF frozen pruned ms | ratio |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n"
        f"{FLAGS.image_size}×{FLAGS.image_size}, batch 1, TFLite float32 with XNNPACK on "
        f"{FLAGS.num_threads} threads, TF a `tf.function` on {FLAGS.num_threads} intra-op "
        f"threads, one op at a time (TF frozen: the same with variables frozen into constants); "
        f"medians of {FLAGS.repeats} interleaved repeats of "
        f"{FLAGS.calls} calls. {report.machine_description()}."
    )
    print(table)
    if FLAGS.write_docs:
        report.update_section(
            os.path.join(report.DOCS_DIR, "compression.md"), "channel_pruning_latency", table
        )
