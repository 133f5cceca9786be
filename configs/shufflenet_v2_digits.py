"""Alias of ``configs/digits.py:shufflenet_v2_050``, kept so existing command lines work."""

from configs import digits


def get_config():
    return digits.get_config("shufflenet_v2_050")
