"""The training application: data, optimisation, pruning, checkpoints, runtime and export.

``trainer.run(config, workdir)`` is the whole job that ``train.py`` starts.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
