"""How the entry points (``train.py``, ``evaluate.py``, ``export.py``) fail: one line, no traceback.

Every error a user can act on (a bad flag or config value, a missing or truncated file, a run
directory that training would damage, a missing optional package, a diverged run) reaches the
command line as ``<program>: <message>`` on stderr and a non-zero exit status; the traceback is
logged at debug level (``--verbosity=1`` shows it). Anything else is a bug and keeps its
traceback. Imports no TensorFlow, so flag errors are reported before it loads.

    with cli.one_line_errors("train.py"):
        _CONFIG = cli.define_config_file(...)   # unknown --config.* keys fail here
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys

from absl import logging

# Errors whose message is the whole story for a user.
USER_ERRORS = (ValueError, OSError, ImportError)
# ml_collections' unknown-key error: "'epochz'\nDid you mean "epochs" instead of "epochz"?".
_SUGGESTION = re.compile(r'Did you mean "([^"]+)" instead of "([^"]+)"')


def one_line(message: str) -> str:
    """``message`` on one line (a multi-line library message joined with spaces)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


@contextlib.contextmanager
def one_line_errors(program: str, extra: tuple[type[BaseException], ...] = ()):
    """Turns ``USER_ERRORS`` (and ``extra``) raised inside into ``program: message`` on stderr
    and ``sys.exit`` with the error's ``exit_code`` attribute (default 1)."""
    try:
        yield
    except USER_ERRORS + extra as error:
        logging.debug("Traceback:", exc_info=True)
        print(f"{program}: {one_line(error)}", file=sys.stderr, flush=True)
        sys.exit(getattr(error, "exit_code", 1))


def config_key_error(error: Exception, flag: str, argv=None) -> ValueError:
    """A one-line ValueError for an unknown ``--<flag>.<key>`` override (ml_collections raises
    AttributeError or KeyError while the flag is defined), naming the flag and the close match."""
    argv = sys.argv if argv is None else argv
    text = str(error).strip("'\"").replace("\\n", "\n").replace("\\'", "'")
    match = _SUGGESTION.search(text)
    unknown = match.group(2) if match else text.splitlines()[0].strip("'\"")
    given = next(
        (
            arg.split("=", 1)[0]
            for arg in argv
            if arg.startswith(f"--{flag}.") and unknown in arg.split("=", 1)[0].split(".")
        ),
        f"--{flag}.{unknown}",
    )
    hint = f"did you mean '{match.group(1)}'? " if match else ""
    return ValueError(
        f"Unknown config key {given[2:]}: {hint}The valid keys are those of configs/common.py."
    )


@contextlib.contextmanager
def config_flag_errors(flag: str):
    """Around ``config_flags.DEFINE_config_*``: an unknown override key becomes one line."""
    try:
        yield
    except (AttributeError, KeyError) as error:
        raise config_key_error(error, flag) from None


def config_value(config_flag, flag_name: str = "config"):
    """The config of a ``DEFINE_config_file`` flag holder.

    Raises:
      ValueError: the file is missing or fails to load, naming it.
    """
    try:
        config = config_flag.value
        config.keys()  # a file that failed to load stands in lazily, raising on first use
        return config
    except (OSError, AttributeError, KeyError) as error:
        from absl import flags  # the flag's own text, as the user typed it
        from ml_collections import config_flags

        if isinstance(error, (AttributeError, KeyError)):
            raise config_key_error(error, flag_name) from None
        filename = config_flags.get_config_filename(flags.FLAGS[flag_name])
        path = filename.split(":", 1)[0]
        if not os.path.isfile(path):
            raise ValueError(
                f"--{flag_name}={filename}: no such file; pass a recipe such as "
                f"configs/digits.py (see configs/)."
            ) from None
        cause = error.__cause__ or error.__context__ or error
        raise ValueError(f"--{flag_name}={filename} failed to load: {one_line(cause)}") from None


def resume_command(workdir: str, argv=None) -> str:
    """The command line that resumes this run: the same one, with ``--workdir`` made explicit."""
    argv = list(sys.argv if argv is None else argv)
    if not any(arg == "--workdir" or arg.startswith("--workdir=") for arg in argv):
        argv.append(f"--workdir={workdir}")
    return " ".join(shlex.quote(arg) for arg in ["python", *argv])
