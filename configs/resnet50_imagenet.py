"""ResNet-50 on ImageNet: SGD with Nesterov momentum 0.9, learning rate 0.1 per 256 images with 5
warmup epochs, weight decay 1e-4, divided by 10 every 30 epochs for 90 epochs (the ResNet/ResNeXt
papers' step schedule; use --config.optim.schedule=cosine for the cosine variant)."""

from configs import _recipes


def resnet_recipe(model_name: str):
    """The ResNet/ResNeXt optimiser on top of the ImageNet defaults."""
    config = _recipes.imagenet(model_name, epochs=90, batch_size=256)
    config.optim.name = "sgd"
    config.optim.momentum = 0.9
    config.optim.nesterov = True
    config.optim.learning_rate = 0.1
    config.optim.base_batch_size = 256
    config.optim.warmup_epochs = 5.0
    config.optim.schedule = "step"
    config.optim.decay_rate = 0.1
    config.optim.decay_epochs = 30.0
    config.optim.weight_decay = 1e-4
    config.optim.depthwise_weight_decay = 1e-4
    return config


def get_config():
    return resnet_recipe("resnet50")
