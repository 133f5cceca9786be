"""Xception on ImageNet at 299x299, as the paper trains it.

"SGD, momentum 0.9, initial learning rate 0.045, learning rate decay of rate 0.94 every 2
epochs", weight decay 1e-5 and dropout 0.5 before the logistic layer.
"""

from configs import recipes


def get_config():
    config = recipes.imagenet("xception", epochs=120, batch_size=256)
    config.model.dropout = 0.5
    config.optim.name = "sgd"
    config.optim.momentum = 0.9
    config.optim.learning_rate = 0.045
    config.optim.base_batch_size = 256
    config.optim.schedule = "step"
    config.optim.decay_rate = 0.94
    config.optim.decay_epochs = 2.0
    config.optim.weight_decay = 1e-5
    config.optim.depthwise_weight_decay = 1e-5
    return config
