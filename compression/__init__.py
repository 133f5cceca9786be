"""Making models smaller: tfmot magnitude pruning (``pruning.py``).

Structured channel pruning and quantization-aware training arrive here too. This room may
import ``layers`` and ``architectures``; what a compressed model costs to ship is
``deploy.export``'s.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
