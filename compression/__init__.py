"""Making models smaller: tfmot magnitude pruning (``pruning.py``), structured channel
pruning (``channel_graph.py``: which channels go together; ``channel_pruning.py``: importance,
budget and surgery into a thinner dense model) and quantization-aware training with tfmot's
8-bit scheme (``quantization.py``).

    import compression
    compression.channel_groups(model)  # inspect
    thin = compression.prune_channels(model, target_macs=0.5, importance="l1", round_to=8)

This room may import ``layers`` and ``architectures``; what a compressed model costs to ship is
``deploy.export``'s and ``deploy.quantized``'s.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from compression.channel_graph import ChannelGraph, ChannelGroup, channel_groups  # noqa: E402
from compression.channel_pruning import PruningPlan, prune_channels  # noqa: E402

__all__ = ["ChannelGraph", "ChannelGroup", "PruningPlan", "channel_groups", "prune_channels"]
