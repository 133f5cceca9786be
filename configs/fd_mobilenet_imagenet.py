"""FD-MobileNet 1.0 on ImageNet, with MobileNet v1's recipe (RMSprop, weight decay 4e-5, none on
depthwise kernels, 0.98 decay per epoch), which the FD-MobileNet paper follows."""

from configs import recipes


def get_config():
    return recipes.mobilenet_imagenet("fd_mobilenet_100")
