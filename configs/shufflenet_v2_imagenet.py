"""ShuffleNet v2 1x on ImageNet: the ShuffleNet v1 recipe (SGD, learning rate 0.5 at batch 1024
decayed linearly to 0, weight decay 4e-5, 3 x 10^5 iterations), which the v2 paper reuses."""

from configs import recipes


def get_config():
    return recipes.shufflenet_imagenet("shufflenet_v2_100")
