"""Xception at 32x32 on the bundled digits: a quick check that the family trains (minutes on a CPU)."""

from configs import _recipes


def get_config():
    return _recipes.digits("xception", epochs=10)
