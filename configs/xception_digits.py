"""Alias of ``configs/digits.py:xception``, kept so existing command lines work."""

from configs import digits


def get_config():
    return digits.get_config("xception")
