"""ShuffleNet v1 (g=3, 1x) on ImageNet, as the paper trains it.

"weight decay 4e-5 ... linear-decay learning rate policy (decreased from 0.5 to 0) ... batch size
1024 ... 3 x 10^5 iterations" (about 240 epochs), SGD with momentum 0.9 and "slightly less
aggressive scale augmentation" (random crops of at least 25 % of the area).
"""

from configs import _recipes


def shufflenet_recipe(model_name: str):
    """The ShuffleNet v1/v2 optimiser on top of the ImageNet defaults."""
    config = _recipes.imagenet(model_name, epochs=240, batch_size=1024)
    config.data.min_crop_area = 0.25
    config.optim.name = "sgd"
    config.optim.momentum = 0.9
    config.optim.learning_rate = 0.5
    config.optim.base_batch_size = 1024
    config.optim.schedule = "linear"
    config.optim.min_learning_rate = 0.0
    config.optim.weight_decay = 4e-5
    config.optim.depthwise_weight_decay = 4e-5
    return config


def get_config():
    return shufflenet_recipe("shufflenet_v1_g3_100")
