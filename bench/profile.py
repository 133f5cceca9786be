"""``benchmark.py profile``: where a training step's time goes, per op type, ours vs keras.applications.

    python benchmark.py profile --model=mobilenet_v2_100 --compare_keras --image_size=128 \\
        --batch_size=16

Runs a few of Keras' own compiled train steps (``timing.keras_steps``, as ``throughput`` does)
under ``tf.profiler`` and sums the duration of every executed TensorFlow op from the trace's
``XSpace``, grouped by phase (forward, backward, optimizer) and op type. Takes the same model,
size, batch and precision flags as ``throughput`` (``bench/common.py``), so a profile matches
the throughput row it explains.

The sums are CPU time of the ops on the executor's threads: with ops running concurrently they
add up to more than the step's wall time, but their proportions say where the time goes.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import statistics
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import flags  # noqa: E402

from bench import common, timing  # noqa: E402

FLAGS = flags.FLAGS
common.define_model_flags()
flags.DEFINE_integer("warmup", 2, "Untimed train steps per model first.")
flags.DEFINE_bool("json", False, "Print one JSON object per model instead of a table.")
flags.DEFINE_integer("profile_steps", 3, "Train steps traced (after the warm-up steps).")
flags.DEFINE_integer("profile_rounds", 3, "Alternating traced rounds per model (median).")
flags.DEFINE_enum(
    "group_by", "op_type", ["op_type", "layer"], "Sum op times per op type or per Keras layer."
)
flags.DEFINE_integer("top", 25, "Rows of the per-op-type table (largest first).")

# Executor threads whose events are TensorFlow ops ("name:Type"); other lines are the Python
# caller, tf.data and thread-pool bookkeeping.
_OP_LINE_PREFIX = "tf_Compute"
_BACKWARD_MARK = "gradient_tape/"
_OPTIMIZER_PREFIXES = ("SGD/", "Adam/", "RMSprop/", "AdamW/")


def phase_of(op_name: str) -> str:
    """``"backward"`` for gradient ops, ``"optimizer"`` for weight updates, else ``"forward"``."""
    if _BACKWARD_MARK in op_name:
        return "backward"
    if op_name.startswith(_OPTIMIZER_PREFIXES):
        return "optimizer"
    return "forward"


def layer_of(op_name: str) -> str:
    """The Keras layer an op belongs to: the path component after the model's name.

    ``gradient_tape/resnet/stage3_block1_conv2/Conv2D/Conv2DBackpropFilter`` and
    ``resnet/stage3_block1_conv2/Conv2D`` both give ``stage3_block1_conv2``; ops outside any
    layer (the loss, the optimizer) give their first component.
    """
    parts = op_name.split("/")
    if parts[0] == _BACKWARD_MARK.rstrip("/"):
        parts = parts[1:]
    return parts[1] if len(parts) > 2 else parts[0]


def op_times_us(xspace_path: str, group_by: str = "op_type") -> dict[tuple[str, str], float]:
    """Sums op durations in one ``*.xplane.pb`` trace.

    Args:
      xspace_path: the trace file.
      group_by: ``"op_type"`` (``Conv2DBackpropFilter``, ...) or ``"layer"`` (Keras layer name).

    Returns:
      ``(phase, op type or layer) -> total microseconds`` over the whole trace.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as f:
        space.ParseFromString(f.read())
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith(_OP_LINE_PREFIX):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or name.startswith("ExecutorState"):
                    continue
                op_name, op_type = name.rsplit(":", 1)
                key = op_type if group_by == "op_type" else layer_of(op_name)
                totals[(phase_of(op_name), key)] += event.duration_ps / 1e6
    return dict(totals)


def profile_steps(step, steps: int) -> dict[tuple[str, str], float]:
    """Traces ``steps`` calls of ``step`` and returns ``(phase, op type) -> ms per step``."""
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(steps):
                result = step()
            timing.sync(result)
        finally:
            tf.profiler.experimental.stop()
        paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        if not paths:
            raise RuntimeError(f"tf.profiler wrote no trace under {logdir}.")
        totals = op_times_us(paths[0], FLAGS.group_by)
    return {key: us / 1e3 / steps for key, us in totals.items()}


def profile_model(name: str) -> dict[str, dict[tuple[str, str], float]]:
    """``who -> (phase, op type) -> ms/step`` for our ``name`` and, if asked, keras.applications'."""
    input_shape = common.input_shape_of(name, FLAGS.image_size)
    images, labels = common.synthetic_batch(FLAGS.batch_size, input_shape, FLAGS.num_classes)
    models = common.models_to_compare(name, input_shape, FLAGS.num_classes, FLAGS.compare_keras)
    steps = {}
    for who, model in models.items():
        steps[who], _ = timing.keras_steps(model, images, labels, jit_compile=FLAGS.jit_compile)
        for _ in range(max(FLAGS.warmup, 1)):
            timing.sync(steps[who]())
    # Rounds alternate between the models so that load from other jobs hits both alike; each op
    # type's figure is its median over the rounds.
    rounds: dict[str, list] = {who: [] for who in models}
    for _ in range(FLAGS.profile_rounds):
        for who, step in steps.items():
            rounds[who].append(profile_steps(step, FLAGS.profile_steps))
    profiles = {}
    for who, samples in rounds.items():
        keys = set().union(*samples)
        profiles[who] = {k: statistics.median(s.get(k, 0.0) for s in samples) for k in keys}
    return profiles


def format_profile(name: str, profiles: dict[str, dict[tuple[str, str], float]], top: int) -> str:
    """Markdown: phase totals, then the ``top`` (phase, op type) rows by our time."""
    whos = list(profiles)
    lines = [f"**{name}** (op CPU ms per train step)", ""]
    lines.append(f"| phase | {FLAGS.group_by} | " + " | ".join(whos) + " |")
    lines.append("|---|---|" + "---|" * len(whos))
    for phase in ("forward", "backward", "optimizer"):
        sums = [sum(v for (p, _), v in profiles[w].items() if p == phase) for w in whos]
        lines.append(f"| {phase} | (all) | " + " | ".join(f"{s:.1f}" for s in sums) + " |")
    keys = set().union(*(profiles[w].keys() for w in whos))
    ranked = sorted(keys, key=lambda k: -max(profiles[w].get(k, 0.0) for w in whos))
    for phase, op_type in ranked[:top]:
        values = " | ".join(f"{profiles[w].get((phase, op_type), 0.0):.1f}" for w in whos)
        lines.append(f"| {phase} | {op_type} | {values} |")
    return "\n".join(lines)


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"benchmark.py profile: unexpected arguments {argv[1:]}.")
    for flag in ("profile_steps", "profile_rounds"):
        if FLAGS[flag].value < 1:
            raise SystemExit(
                f"benchmark.py profile: --{flag} must be >= 1, got {FLAGS[flag].value}."
            )
    common.check_models("profile", FLAGS.model)
    common.set_precision(FLAGS.precision)
    for name in FLAGS.model:
        profiles = profile_model(name)
        if FLAGS.json:
            rows = {
                who: {f"{phase}/{op_type}": ms for (phase, op_type), ms in p.items()}
                for who, p in profiles.items()
            }
            print(json.dumps({"model": name, "ms_per_step": rows}), flush=True)
        else:
            print(format_profile(name, profiles, FLAGS.top), flush=True)
        keras.backend.clear_session()
