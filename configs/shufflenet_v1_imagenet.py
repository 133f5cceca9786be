"""ShuffleNet v1 (g=3, 1x) on ImageNet, as the paper trains it.

"weight decay 4e-5 ... linear-decay learning rate policy (decreased from 0.5 to 0) ... batch size
1024 ... 3 x 10^5 iterations" (about 240 epochs), SGD with momentum 0.9 and "slightly less
aggressive scale augmentation" (random crops of at least 25 % of the area).
"""

from configs import recipes


def get_config():
    return recipes.shufflenet_imagenet("shufflenet_v1_g3_100")
