"""MobileNet v1 1.0 on ImageNet, as the paper trains it (TF-slim recipe).

RMSprop with decay 0.9 and momentum 0.9 (epsilon 1.0, as slim's train_image_classifier), L2
weight decay 4e-5 and none on the depthwise kernels ("very little or no weight decay ... on the
depthwise filters since there are so few parameters in them"), learning rate 0.045 at batch 96
decayed by 0.98 per epoch. Set the data with --config.data.source=folder:<dir> or tfrecord:<glob>.
"""

from configs import _recipes


def mobilenet_recipe(model_name: str):
    """The MobileNet v1/v2 and FD-MobileNet optimiser on top of the ImageNet defaults."""
    config = _recipes.imagenet(model_name, epochs=200, batch_size=96)
    config.optim.name = "rmsprop"
    config.optim.rho = 0.9
    config.optim.momentum = 0.9
    config.optim.epsilon = 1.0
    config.optim.learning_rate = 0.045
    config.optim.base_batch_size = 96
    config.optim.schedule = "exponential"
    config.optim.decay_rate = 0.98
    config.optim.decay_epochs = 1.0
    config.optim.weight_decay = 4e-5
    config.optim.depthwise_weight_decay = 0.0
    return config


def get_config():
    return mobilenet_recipe("mobilenet_v1_100")
