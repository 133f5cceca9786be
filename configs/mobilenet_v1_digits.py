"""Alias of ``configs/digits.py:mobilenet_v1_050``, kept so existing command lines work."""

from configs import digits


def get_config():
    return digits.get_config("mobilenet_v1_050")
