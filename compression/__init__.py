"""Making models smaller: tfmot magnitude pruning (``pruning.py``) and quantization-aware
training with tfmot's 8-bit scheme (``quantization.py``).

Structured channel pruning arrives here too. This room may import ``layers`` and
``architectures``; what a compressed model costs to ship is ``deploy.export``'s and
``deploy.quantized``'s.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
