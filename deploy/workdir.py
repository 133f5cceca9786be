"""The run directory (workdir) layout: the one module that spells its file names.

A training run owns one directory::

    DIR/LIGHTNETS_RUN        marker: this directory is a lightnets run (see ``check_trainable``)
    DIR/config.json          the resolved config of the run
    DIR/classes.json         the class names, index = label (also beside every export)
    DIR/architecture.keras   a channel-pruned run's thinner model (its architecture, for resume)
    DIR/channel_pruning.json what channel pruning removed (dense and pruned cost, channels)
    DIR/channel_pruning_steps/step_<k>.keras  a gradual pruning's fine-tuned step k, kept until
                             architecture.keras is written (a run stopped between steps resumes
                             from the last one)
    DIR/checkpoints/         resumable state (model, optimizer, epoch, step), written atomically
    DIR/best/                the best epoch's weights and best.json (metric, value, epoch)
    DIR/export/              model.keras, saved_model/, *.tflite, model.onnx (EXPORT_FILES)
    DIR/logs/                TensorBoard
    DIR/metrics.csv          one row per finished epoch
    DIR/metrics.json         final metrics, export paths, reports
    DIR/plots/curves.png     loss and accuracy per epoch

Everything else asks this module for paths (``Workdir(path).checkpoints``), never joins names of
its own, so the layout can change in one place. Needs no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os

CONFIG_JSON = "config.json"
MARKER = "LIGHTNETS_RUN"
MARKER_TEXT = "This directory is a lightnets training run (written by train.py).\n"
CLASSES_JSON = "classes.json"
# What must match for a run to be resumed with another config (config.json keys; ``task`` is
# compared only where a config has it). Anything else (epochs, learning rate...) may change.
IDENTITY_KEYS = ("model.name", "model.kwargs", "data.num_classes", "data.image_size", "task")
ARCHITECTURE = "architecture.keras"
CHANNEL_PRUNING_JSON = "channel_pruning.json"
CHANNEL_PRUNING_STEPS = "channel_pruning_steps"

# Export format -> file or directory name inside an export directory.
EXPORT_FILES = {
    "keras": "model.keras",
    "saved_model": "saved_model",
    "tflite": "model.tflite",
    "tflite_float16": "model_float16.tflite",
    "tflite_dynamic_range": "model_dynamic_range.tflite",
    "tflite_int8": "model_int8.tflite",
    "onnx": "model.onnx",
}


@dataclasses.dataclass(frozen=True)
class Workdir:
    """Paths inside one run directory ``root``."""

    root: str

    def _join(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def config_json(self) -> str:
        return self._join(CONFIG_JSON)

    @property
    def marker(self) -> str:
        return self._join(MARKER)

    @property
    def classes_json(self) -> str:
        return self._join(CLASSES_JSON)

    @property
    def architecture(self) -> str:
        """A model whose architecture the registry does not describe (a channel-pruned one)."""
        return self._join(ARCHITECTURE)

    @property
    def channel_pruning_json(self) -> str:
        return self._join(CHANNEL_PRUNING_JSON)

    @property
    def channel_pruning_steps(self) -> str:
        return self._join(CHANNEL_PRUNING_STEPS)

    def channel_pruning_step(self, step: int) -> str:
        """Gradual channel pruning's model after step ``step`` and its fine-tuning."""
        return os.path.join(self.channel_pruning_steps, f"step_{step}.keras")

    @property
    def checkpoints(self) -> str:
        return self._join("checkpoints")

    @property
    def best(self) -> str:
        return self._join("best")

    @property
    def best_json(self) -> str:
        return self._join("best", "best.json")

    @property
    def export(self) -> str:
        return self._join("export")

    @property
    def logs(self) -> str:
        return self._join("logs")

    @property
    def metrics_csv(self) -> str:
        return self._join("metrics.csv")

    @property
    def metrics_json(self) -> str:
        return self._join("metrics.json")

    @property
    def curves_png(self) -> str:
        return self._join("plots", "curves.png")

    def exported(self, fmt: str = "keras") -> str:
        """The path of export format ``fmt`` (``keras``, ``tflite``, ...) in ``DIR/export``."""
        return export_path(self.export, fmt)

    def read_config(self) -> dict:
        """``config.json`` as a dict.

        Raises:
          ValueError: the file is truncated or not JSON (the message names it).
        """
        return read_json_file(self.config_json)

    def read_class_names(self) -> list[str] | None:
        """The run's class names (``classes.json``), or None for a run that predates them."""
        return read_class_names(self.root)


def read_json_file(path: str):
    """The JSON in ``path``.

    Raises:
      ValueError: the file is truncated or not JSON, naming it.
    """
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is truncated or not JSON ({error}); restore it from a copy, or delete the "
            f"run directory to start over."
        ) from None


def classes_file(directory: str) -> str:
    """Where the class names of the models in ``directory`` (a workdir or export dir) live."""
    return os.path.join(directory, CLASSES_JSON)


def read_class_names(directory: str) -> list[str] | None:
    """Class names saved in ``directory`` (``classes.json``), or None where there are none."""
    path = classes_file(directory)
    if not os.path.isfile(path):
        return None
    return [str(name) for name in read_json_file(path)["class_names"]]


def classes_payload(class_names) -> dict:
    """What ``classes.json`` holds: ``{"class_names": [...]}`` (index = label)."""
    return {"class_names": [str(name) for name in class_names]}


def export_path(export_dir: str, fmt: str) -> str:
    """Where format ``fmt`` lives in ``export_dir``.

    Raises:
      ValueError: unknown format; the message lists the valid ones.
    """
    if fmt not in EXPORT_FILES:
        raise ValueError(f"Unknown export format {fmt!r}; choose from {', '.join(EXPORT_FILES)}.")
    return os.path.join(export_dir, EXPORT_FILES[fmt])


def is_workdir(path: str) -> bool:
    """Whether ``path`` is a run directory (it holds ``config.json``)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_JSON))


def owning_workdir(path: str, levels: int = 2) -> str | None:
    """The run directory a file lives in (``DIR/export/model.tflite`` -> ``DIR``), if any.

    Looks in the file's directory and up to ``levels`` directories in all, so files the trainer
    or ``export.py`` wrote are evaluated with their run's data and preprocessing even when
    passed on their own.
    """
    directory = os.path.dirname(os.path.abspath(path.rstrip("/")))
    for _ in range(levels):
        if is_workdir(directory):
            return directory
        directory = os.path.dirname(directory)
    return None


def dense_model_file(path: str) -> str:
    """A ``.keras`` file: ``path`` itself, or the ``model.keras`` of an export dir or a workdir.

    Raises:
      ValueError: none of them exists.
    """
    model_name = EXPORT_FILES["keras"]
    for candidate in (path, os.path.join(path, model_name), Workdir(path).exported("keras")):
        if os.path.isfile(candidate):
            return candidate
    raise ValueError(
        f"{path!r} is neither a .keras file nor a directory holding {model_name} or "
        f"export/{model_name}; pass a finished run's workdir or its export/{model_name}."
    )


def _get(config: dict, dotted: str):
    """``config``'s value at ``dotted``; for a section, only its keys that are set (a knob a
    later version added, unset, does not make an older run look different)."""
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, dict):
        return {key: item for key, item in value.items() if item is not None}
    return value


def check_trainable(path: str, config: dict, class_names=None) -> bool:
    """Refuses a ``--workdir`` that training would damage; writes nothing.

    * a new or empty directory: fine (``train.py`` marks it with ``LIGHTNETS_RUN``);
    * a lightnets run (the marker, or, for runs written before the marker existed,
      ``config.json`` beside ``checkpoints/``): fine when ``config`` matches it on
      ``IDENTITY_KEYS`` (and on the class names, where both are known): it resumes;
    * anything else: refused, so a user's own files are never overwritten.

    Args:
      path: the ``--workdir``.
      config: the new run's resolved config as a dict (``data.num_classes`` and
        ``data.image_size`` filled in).
      class_names: the new run's class names, or None.

    Returns:
      Whether ``path`` already is a run (training resumes in it).

    Raises:
      ValueError: one line naming the path and the problem (both values for a mismatch).
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"--workdir='{path}' is a file, not a directory; pass a new or empty directory."
        )
    if not os.path.isdir(path) or not os.listdir(path):
        check_writable(path)
        return False
    run = Workdir(path)
    legacy = os.path.isfile(run.config_json) and os.path.isdir(run.checkpoints)
    if not os.path.isfile(run.marker) and not legacy:
        raise ValueError(
            f"--workdir='{path}' is not empty and is not a lightnets run (no {MARKER} file); "
            f"pass a new or empty directory, so nothing of yours is overwritten."
        )
    if os.path.isfile(run.config_json):
        stored = run.read_config()
        for key in IDENTITY_KEYS:
            old, new = _get(stored, key), _get(config, key)
            if key == "task" and (old is None or new is None):
                continue
            if old != new:
                raise ValueError(
                    f"--workdir='{path}' holds a run with config.{key}={old!r}, but this config "
                    f"has {new!r}; resume it with the same value or pass another --workdir."
                )
    old_names = run.read_class_names()
    if old_names is not None and class_names is not None and old_names != list(class_names):
        raise ValueError(
            f"--workdir='{path}' holds a run with classes {old_names}, but the data has "
            f"{list(class_names)}; pass another --workdir."
        )
    check_writable(path)
    return True


def check_writable(path: str) -> None:
    """Raises ValueError when ``path`` (or, if missing, the directory it would be made in) is
    read-only."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"--workdir='{path}': '{existing}' is a file, not a directory.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--workdir='{path}' is not writable ('{existing}' is read-only).")


# errno -> what to tell the user, for writes into the run directory.
_WRITE_PROBLEMS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a path component is a file, not a directory",
}
# The same problems as TensorFlow's file system layer words them (its errors carry no errno).
_WRITE_PROBLEM_TEXT = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
    "Permission denied": errno.EACCES,
    "Not a directory": errno.ENOTDIR,
}


def write_problem(error: BaseException, path: str) -> str | None:
    """One line for a failed write into run directory ``path`` (full disk, read-only...), or
    None when ``error`` is not such a failure."""
    text, root = str(error), os.path.abspath(path)
    filename = getattr(error, "filename", None)
    inside = (
        (filename and os.path.abspath(filename).startswith(root)) or root in text or (path in text)
    )
    code = getattr(error, "errno", None)
    if code not in _WRITE_PROBLEMS:
        code = next((c for words, c in _WRITE_PROBLEM_TEXT.items() if words in text), None)
    if code is None or not inside:  # e.g. an unreadable data file: not the run directory's
        return None
    return (
        f"Cannot write to the run directory '{path}': {_WRITE_PROBLEMS[code]}. Checkpoints "
        f"written before are intact; fix it and run the same command again to resume."
    )
