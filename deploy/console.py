"""What the command lines print: TensorFlow's native start-up chatter filtered out, and Keras
progress that suits the terminal (or log file) it goes to. Imports no TensorFlow.

TensorFlow's C++ libraries log through absl before anything can configure them, so
``TF_CPP_MIN_LOG_LEVEL`` does not silence them: on a machine without a GPU every process prints
``Could not find cuda drivers``, ``failed call to cuInit ... (303)`` and ``WARNING: All log
messages before absl::InitializeLog() is called are written to STDERR``, twice (two shared
libraries). ``quiet_native_logs`` routes the process's file descriptor 2 through a filter that
drops exactly those known lines and passes everything else (Python tracebacks, warnings, the
trainer's logs, any other TensorFlow message) unchanged. ``--verbosity=1`` (absl's flag, or
``LIGHTNETS_NATIVE_LOGS=1``) keeps them all.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

# Start-up lines of TensorFlow's C++ side that say nothing actionable on a CPU-only machine.
NATIVE_NOISE = re.compile(
    r"|".join(
        (
            r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
            r"STDERR",
            r".*cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
            r".*cuda_platform\.cc:\d+\] failed call to cuInit",
            r".*cuda_(fft|dnn|blas)\.cc:\d+\] Unable to register cu\w+ factory",
            r".*port\.cc:\d+\] oneDNN custom operations are on",
            r".*cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
            r"To enable the following instructions: .* rebuild TensorFlow",
            r".*computation_placer\.cc:\d+\] computation placer already registered",
            # The TFLite converter's calibration and LiteRT's interpreter, on every file.
            r"fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, "
            r"output_inference_type: \w+",
            r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
        )
    )
)
_ENV_KEEP = "LIGHTNETS_NATIVE_LOGS"


def _wants_native_logs(argv) -> bool:
    """``--verbosity=N`` / ``-v N`` with N >= 1 on the command line, or LIGHTNETS_NATIVE_LOGS=1."""
    if os.environ.get(_ENV_KEEP, "") not in ("", "0"):
        return True
    for i, arg in enumerate(argv):
        for flag in ("--verbosity", "-v"):
            if arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            elif arg == flag and i + 1 < len(argv):
                value = argv[i + 1]
            else:
                continue
            try:
                return int(value) >= 1
            except ValueError:
                return False
    return False


def quiet_native_logs(argv=None) -> bool:
    """Filters TensorFlow's native start-up chatter out of stderr for the rest of the process.

    Call it before TensorFlow is imported. Sets ``TF_CPP_MIN_LOG_LEVEL=2`` as a default (a
    user's own value wins). Does nothing when the user asked for the chatter (see the module
    docstring) or when stderr is not a file descriptor.

    Returns:
      Whether the filter was installed.
    """
    argv = sys.argv if argv is None else argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _wants_native_logs(argv):
        return False
    try:
        target = os.dup(2)
    except OSError:
        return False
    read_end, write_end = os.pipe()
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    out = os.fdopen(target, "wb", buffering=0)

    def forward():
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not NATIVE_NOISE.match(line.decode("utf-8", "replace").rstrip("\n")):
                    out.write(line)

    thread = threading.Thread(target=forward, name="native-log-filter", daemon=True)
    thread.start()

    def drain():
        # Hand fd 2 back and let the filter pass the last lines before the process exits.
        sys.stderr.flush()
        os.dup2(target, 2)
        thread.join(timeout=2)

    atexit.register(drain)
    return True


def progress_verbosity(verbose: int | None, stream=None) -> int:
    """Keras' ``verbose``: the given value, else the progress bar (1) on a terminal and one line
    per epoch (2) otherwise (a bar redrawn into a log file becomes one huge line)."""
    if verbose is not None:
        return int(verbose)
    stream = sys.stdout if stream is None else stream
    return 1 if getattr(stream, "isatty", lambda: False)() else 2
