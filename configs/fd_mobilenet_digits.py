"""Alias of ``configs/digits.py:fd_mobilenet_050``, kept so existing command lines work."""

from configs import digits


def get_config():
    return digits.get_config("fd_mobilenet_050")
