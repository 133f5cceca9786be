"""Trains a model: ``python train.py --workdir=DIR --config=configs/<recipe>.py --config.<key>=...``.

With no flags it trains the quickstart recipe (``configs/default.py``, a MobileNet on the bundled
digits) into ``runs/<date-time>-<model>-<data>``. Running the same command with the same
``--workdir`` again resumes from the latest checkpoint.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# oneDNN trains faster than TensorFlow's Eigen kernels, also on CPUs where TensorFlow leaves it
# off (without AVX-512/AMX): docs/benchmarks.md ("oneDNN on vs off"). A user's setting wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from deploy import cli, console  # noqa: E402  (import no TensorFlow)

console.quiet_native_logs()  # before TensorFlow loads: its C++ start-up chatter is filtered out

import datetime  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py")

_TF_DIR = f"{os.sep}tensorflow{os.sep}"

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory; default runs/<date-time>-<model>-<data>. Reused: resumes."
)
with cli.one_line_errors("train.py"), cli.config_flag_errors("config"):
    # The default recipe is loaded here, and --config.* overrides applied to it: an unknown key
    # fails now.
    _CONFIG = config_flags.DEFINE_config_file(
        "config",
        _DEFAULT_CONFIG,
        "Recipe file (configs/<recipe>.py); override keys with --config.*",
    )


class _QuietTensorFlow(logging.Filter):
    """Drops TensorFlow's own INFO records (saver timings, tracing notes): they drown the
    progress bar. Its warnings and the trainer's messages pass."""

    def filter(self, record):
        return record.levelno >= logging.WARNING or _TF_DIR not in record.pathname


def default_workdir(config) -> str:
    """``runs/<YYYYmmdd-HHMMSS>-<model>-<data source>`` (the source made filename-safe)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    source = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.data.source).strip("_")
    return os.path.join("runs", f"{stamp}-{config.model.name}-{source}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    with cli.one_line_errors("train.py"):
        config = cli.config_value(_CONFIG)
    import trainer
    from trainer import NonFiniteLossError, TrainingInterrupted

    absl_logging.get_absl_handler().addFilter(_QuietTensorFlow())
    workdir = _WORKDIR.value or default_workdir(config)
    # A bad config, a run directory training would damage, a diverged run, Ctrl-C: one line
    # saying what to do; the traceback is there with --verbosity=1.
    with cli.one_line_errors("train.py", (NonFiniteLossError, TrainingInterrupted)):
        try:
            try:
                trainer.run(config, workdir)
            except KeyboardInterrupt:  # before training started: nothing to save
                raise TrainingInterrupted(None, workdir) from None
        except TrainingInterrupted as interrupted:
            interrupted.resume = cli.resume_command(workdir)
            raise


if __name__ == "__main__":
    app.run(main)
