"""Measures lightnets: cost tables, layer and model speed, FLOPs vs time, input pipelines.

    python benchmark.py <command> [--flags]

Commands (each lives in ``bench/<command>.py`` and defines its own flags):
  cost           per-layer params and multiply-adds of a model (``--compare`` for several)
  layers         the conv-type comparison: MACs vs time at equal shapes
  throughput     training/inference images/s, optionally against keras.applications
  profile        a training step's op time by phase and op type, optionally vs keras.applications
  cost_vs_time   MACs against measured latency for every family, with the machine's peak
  pipeline       input-pipeline images/s alone
  sparse         dense vs sparse (pruned) TFLite latency on XNNPACK
  latency        TensorFlow vs float TFLite latency of several models (runtimes, two of them)
  channel_pruning  dense vs channel-pruned latency, TFLite (XNNPACK) and TF, side by side
  runtimes       latency on TF, TFLite float32/int8 (XNNPACK) and onnxruntime, side by side

``python benchmark.py <command> --help`` lists a command's flags.
"""

import importlib
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from deploy import console  # noqa: E402  (imports no TensorFlow)

console.quiet_native_logs()  # before TensorFlow loads: its C++ start-up chatter is filtered out

COMMANDS = (
    "cost",
    "layers",
    "throughput",
    "profile",
    "cost_vs_time",
    "pipeline",
    "sparse",
    "latency",
    "channel_pruning",
    "runtimes",
)


def _usage() -> str:
    return __doc__.strip() + "\n"


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    command = sys.argv[1]
    if command not in COMMANDS:
        sys.stderr.write(
            f"benchmark.py: unknown command '{command}'; choose one of {', '.join(COMMANDS)}.\n"
        )
        sys.exit(2)
    # Import only the chosen command, so only its flags exist and unknown flags are errors.
    module = importlib.import_module(f"bench.{command}")
    from absl import app

    app.run(module.main, argv=[f"{sys.argv[0]} {command}", *sys.argv[2:]])


if __name__ == "__main__":
    main()
