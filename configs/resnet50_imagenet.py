"""ResNet-50 on ImageNet: SGD with Nesterov momentum 0.9, learning rate 0.1 per 256 images with 5
warmup epochs, weight decay 1e-4, divided by 10 every 30 epochs for 90 epochs (the ResNet/ResNeXt
papers' step schedule; use --config.optim.schedule=cosine for the cosine variant)."""

from configs import recipes


def get_config():
    return recipes.resnet_imagenet("resnet50")
