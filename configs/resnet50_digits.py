"""Alias of ``configs/digits.py:resnet50``, kept so existing command lines work."""

from configs import digits


def get_config():
    return digits.get_config("resnet50")
