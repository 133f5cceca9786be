"""``benchmark.py sparse``: dense vs sparse TFLite latency of a pruned model, in one run.

    python benchmark.py sparse --model=mobilenet_v2_100 --sparsity=0.75 --num_threads=1

Prunes the model's 1×1 convs by magnitude to ``--sparsity`` (tfmot's XNNPACK latency policy, one
mask update; or loads ``--pruned_model``), strips it, converts the *same* weights twice (plain
float32, and with ``Optimize.EXPERIMENTAL_SPARSITY``) and times both with ai-edge-litert's
interpreter (XNNPACK delegate) interleaved, so machine load hits both alike; the ratio is what to
read. Sizes of both flatbuffers and whether their outputs differ at all are reported too:
bit-identical outputs mean XNNPACK ran the sparse model with its dense kernels. That is what
XNNPACK does on x86 CPUs with AVX: its sparse (NCHW) kernels are SSE-only there and it disables
them as slower than dense AVX; they run on ARM, the target of "Fast Sparse ConvNets".
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import flags, logging  # noqa: E402

import architectures  # noqa: E402
from bench import common, report, timing  # noqa: E402
from compression import pruning  # noqa: E402
from configs.common import get_base_config  # noqa: E402
from deploy import tflite  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "mobilenet_v2_100", "Registered model name.")
flags.DEFINE_integer("image_size", None, "Square input size; default: the variant's own.")
flags.DEFINE_integer("num_classes", 1000, "Classifier width.")
flags.DEFINE_float("sparsity", 0.75, "Target sparsity of the pruned 1x1 convs.")
flags.DEFINE_string("pruned_model", "", "A stripped pruned .keras file to use instead.")
flags.DEFINE_integer("num_threads", 1, "Interpreter threads.")
flags.DEFINE_integer("batch_size", 1, "Images per invoke.")
common.define_timing_flags(repeats=7, warmup=3)
flags.DEFINE_integer("calls", 5, "Invokes averaged inside one repeat.")
common.define_output_flags("docs/pruning.md ('sparse_latency')")


def magnitude_pruned(name: str, image_size: int, num_classes: int, sparsity: float):
    """The variant with its 1×1 convs pruned by magnitude (one mask update), stripped."""
    model = architectures.create_model(
        name, input_shape=(image_size, image_size, 3), num_classes=num_classes
    )
    cfg = get_base_config().pruning
    cfg.update(final_sparsity=sparsity, schedule="constant", frequency=1, policy="xnnpack_latency")
    pruned = pruning.apply(model, cfg, steps_per_epoch=1, total_steps=1)
    # A zero learning rate: one step only runs the mask update, the weights stay the init's.
    pruned.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy())
    images = np.random.default_rng(0).random((1, image_size, image_size, 3), dtype=np.float32)
    pruned.fit(images, np.zeros(1), verbose=0, callbacks=pruning.callbacks(cfg, None))
    return pruning.strip(pruned)


def _avx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx" in line for line in f)
    except OSError:
        return False


def main(argv) -> None:
    del argv
    if FLAGS.pruned_model:
        model = keras.models.load_model(FLAGS.pruned_model, compile=False)
        name = os.path.basename(FLAGS.pruned_model)
    else:
        spec = architectures.get_model_spec(FLAGS.model)
        model = magnitude_pruned(
            FLAGS.model, FLAGS.image_size or spec.input_size, FLAGS.num_classes, FLAGS.sparsity
        )
        name = FLAGS.model
    image_size = int(model.inputs[0].shape[1])
    sparsity = pruning.sparsity_report(model)
    dense_bytes = tflite.convert(model, "float32")
    sparse_bytes = tflite.convert(model, "sparse")
    images = np.random.default_rng(1).random(
        (FLAGS.batch_size, image_size, image_size, 3), dtype=np.float32
    )
    runs = {}
    for label, flatbuffer in (("dense", dense_bytes), ("sparse", sparse_bytes)):
        runs[label] = tflite.Runner(flatbuffer, num_threads=FLAGS.num_threads)
        runs[label].resize(FLAGS.batch_size)
    outputs = {label: run(images) for label, run in runs.items()}
    timings = timing.time_interleaved(
        {label: (lambda run=run: run(images)) for label, run in runs.items()},
        repeats=FLAGS.repeats,
        calls_per_repeat=FLAGS.calls,
        warmup=FLAGS.warmup,
    )
    result = {
        "model": name,
        "image_size": image_size,
        "batch_size": FLAGS.batch_size,
        "num_threads": FLAGS.num_threads,
        "pointwise_sparsity": sparsity["by_kind"].get("pointwise", {}).get("sparsity", 0.0),
        "dense_ms": timings["dense"].median_ms,
        "sparse_ms": timings["sparse"].median_ms,
        "ratio": timings["sparse"].median_s / timings["dense"].median_s,
        "dense_bytes": len(dense_bytes),
        "sparse_bytes": len(sparse_bytes),
        "max_abs_diff": float(np.max(np.abs(outputs["dense"] - outputs["sparse"]))),
        "x86_avx": _avx(),
    }
    # Identical outputs: the sparse flatbuffer ran through the same dense kernels.
    result["sparse_kernels_used"] = result["max_abs_diff"] > 0
    if FLAGS.json:
        print(json.dumps(result))
        return
    table = (
        "| model | input | threads | 1×1 sparsity | dense ms | sparse ms | sparse/dense | "
        "dense MB | sparse MB | sparse kernels used |\n|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {name} | {image_size} | {FLAGS.num_threads} | {result['pointwise_sparsity']:.2f} | "
        f"{result['dense_ms']:.2f} | {result['sparse_ms']:.2f} | {result['ratio']:.2f} | "
        f"{len(dense_bytes) / 2**20:.1f} | {len(sparse_bytes) / 2**20:.1f} | "
        f"{'yes' if result['sparse_kernels_used'] else 'no'} |\n\n"
        f"Median of {FLAGS.repeats} interleaved repeats of {FLAGS.calls} invokes, batch "
        f"{FLAGS.batch_size}. {report.machine_description()}."
    )
    print(table)
    if result["x86_avx"] and not result["sparse_kernels_used"]:
        logging.warning(
            "XNNPACK disables its sparse kernels on x86 CPUs with AVX (dense AVX is faster there); "
            "measure on an ARM CPU to see the sparse speed-up."
        )
    if FLAGS.write_docs:
        report.update_section(os.path.join(report.DOCS_DIR, "pruning.md"), "sparse_latency", table)
