"""The training application: data, optimisation, pruning, checkpoints, runtime and export.

``trainer.run(config, workdir)`` is the whole job that ``train.py`` starts.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def run(config, workdir: str) -> dict:
    """Trains ``config`` in ``workdir`` (resuming what is there); see ``trainer.loop.run``.

    The loop is imported here, not at package import, so ``import trainer.data`` stays light.
    """
    from trainer import loop

    return loop.run(config, workdir)
