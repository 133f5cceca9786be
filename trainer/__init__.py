"""The training job: ``trainer.run(config, workdir)`` is what ``train.py`` starts.

    validate config -> runtime -> data (trainer/data/) -> model -> optimizer -> restore
    -> fit (callbacks, checkpoints) -> evaluate -> export (deploy/)

``trainer.model_data`` joins a saved model with its run's data for ``evaluate.py`` and
``export.py``.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from trainer.loop import NonFiniteLossError, TrainingInterrupted, run  # noqa: E402

__all__ = ["NonFiniteLossError", "TrainingInterrupted", "run"]
