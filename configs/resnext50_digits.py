"""Alias of ``configs/digits.py:resnext50_32x4d``, kept so existing command lines work."""

from configs import digits


def get_config():
    return digits.get_config("resnext50_32x4d")
