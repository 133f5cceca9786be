"""MobileNet v2 1.0 on ImageNet, as the paper trains it.

"RMSPropOptimizer with decay and momentum both set to 0.9 ... weight decay 0.00004 ... initial
learning rate of 0.045, and learning rate decay rate of 0.98 per epoch ... batch size of 96";
slim's MobileNet v2 scope does not regularise depthwise kernels. Same optimiser as v1.

The paper does not mention an average of the weights or label smoothing, but the training flags
published with its TF-slim checkpoints (tensorflow/models, research/slim/nets/mobilenet/README.md,
"Training / V2", which reproduce its 72.0 %) set both: ``--moving_average_decay=0.9999`` (as
MobileNet v3's paper states for its own) and ``--label_smoothing=0.1`` (docs/recipes.md).
"""

from configs import recipes


def get_config():
    config = recipes.mobilenet_imagenet("mobilenet_v2_100")
    config.train.ema_decay = 0.9999
    config.train.label_smoothing = 0.1
    return config
