"""Alias of ``configs/digits.py:mobilenet_v3_small_100``, like the other families' digits files."""

from configs import digits


def get_config():
    return digits.get_config("mobilenet_v3_small_100")
