"""Trains a model: ``python train.py --workdir=DIR --config=configs/<recipe>.py --config.<key>=...``.

With no flags it trains the quickstart recipe (``configs/default.py``, a MobileNet on the bundled
digits) into ``runs/<date-time>-<model>-<data>``. Running the same command with the same
``--workdir`` again resumes from the latest checkpoint.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from deploy import console  # noqa: E402  (imports no TensorFlow)

console.quiet_native_logs()  # before TensorFlow loads: its C++ start-up chatter is filtered out

import datetime  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py")

_TF_DIR = f"{os.sep}tensorflow{os.sep}"

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory; default runs/<date-time>-<model>-<data>. Reused: resumes."
)
_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Recipe file (configs/<recipe>.py); override keys with --config.*"
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
    import trainer
    from trainer import NonFiniteLossError

    absl_logging.get_absl_handler().addFilter(_QuietTensorFlow())
    config = _CONFIG.value
    workdir = _WORKDIR.value or default_workdir(config)
    try:
        trainer.run(config, workdir)
    except (ValueError, NonFiniteLossError) as error:
        # A bad config or a diverged run: the message says what to change; the traceback is
        # there with --verbosity=1.
        absl_logging.debug("Traceback:", exc_info=True)
        sys.exit(f"train.py: {error}")


if __name__ == "__main__":
    app.run(main)
