"""ResNeXt-50 (32x4d) on ImageNet with the ResNet-50 recipe, as the ResNeXt paper trains both
(SGD momentum 0.9, learning rate 0.1 per 256 images, weight decay 1e-4, step decay)."""

from configs import recipes


def get_config():
    return recipes.resnet_imagenet("resnext50_32x4d")
