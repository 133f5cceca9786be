"""The quickstart: MobileNet v1 (width 0.5) on the bundled digits at 32x32, a few minutes on CPU."""

from configs import _recipes


def get_config():
    return _recipes.digits("mobilenet_v1_050", image_size=32, epochs=30)
