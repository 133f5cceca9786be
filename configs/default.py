"""The quickstart: MobileNet v1 (width 0.5) on the bundled digits at 32x32, a few minutes on CPU."""

from configs import digits


def get_config():
    return digits.get_config(digits.DEFAULT_MODEL)
