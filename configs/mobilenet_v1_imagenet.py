"""MobileNet v1 1.0 on ImageNet, as the paper trains it (TF-slim recipe).

RMSprop with decay 0.9 and momentum 0.9 (epsilon 1.0, as slim's train_image_classifier), L2
weight decay 4e-5 and none on the depthwise kernels ("very little or no weight decay ... on the
depthwise filters since there are so few parameters in them"), learning rate 0.045 at batch 96
decayed by 0.98 per epoch. Set the data with --config.data.source=folder:<dir> or tfrecord:<glob>.
"""

from configs import recipes


def get_config():
    return recipes.mobilenet_imagenet("mobilenet_v1_100")
