"""Checks of config values, shared by every module that reads a section of the config.

One error format everywhere: ``config.<key>=<value> <rule>.`` (e.g. ``config.train.epochs=-1
must be >= 1.``), so a bad value on the command line is reported the same way whichever module
reads it. The helpers take a ``ml_collections.ConfigDict`` or a plain dict, and a dotted key
relative to it; ``prefix`` names the section for the message (``"pruning."`` when the
``config.pruning`` section is passed on its own).
"""

from __future__ import annotations

from collections.abc import Iterable

_MISSING = object()


def get(config, key: str, default=_MISSING):
    """The value at dotted ``key`` (``"optim.learning_rate"``); ``default`` if given and absent."""
    node = config
    for part in key.split("."):
        try:
            node = node[part]
        except (KeyError, AttributeError, TypeError):
            if default is _MISSING:
                raise KeyError(key) from None
            return default
    return node


def fail(key: str, value, rule: str, prefix: str = "") -> None:
    """Raises the one-line error for ``config.<prefix><key>=<value> <rule>``."""
    raise ValueError(f"config.{prefix}{key}={value!r} {rule}.")


def require(ok: bool, key: str, value, rule: str, prefix: str = "") -> None:
    """``fail`` unless ``ok``."""
    if not ok:
        fail(key, value, rule, prefix)


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_range(
    config,
    key: str,
    *,
    low=None,
    high=None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
    integer: bool = False,
    prefix: str = "",
):
    """Checks a number against bounds (closed unless ``*_open``); None passes if ``optional``.

    Returns:
      The value.
    """
    value = get(config, key)
    if value is None and optional:
        return value
    ok = is_int(value) if integer else is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    bounds = [
        f"{'>' if low_open else '>='} {low}" if low is not None else "",
        f"{'<' if high_open else '<='} {high}" if high is not None else "",
    ]
    kind = "an integer" if integer else "a number"
    rule = " and ".join(b for b in bounds if b)
    require(ok, key, value, f"must be {kind}{' ' + rule if rule else ''}", prefix)
    return value


def check_choice(config, key: str, choices: Iterable, prefix: str = ""):
    """Checks that the value is one of ``choices``; returns it."""
    value = get(config, key)
    choices = tuple(choices)
    require(value in choices, key, value, f"must be one of {', '.join(map(str, choices))}", prefix)
    return value


def check_bool(config, key: str, prefix: str = ""):
    """Checks that the value is True or False; returns it."""
    value = get(config, key)
    require(isinstance(value, bool), key, value, "must be True or False", prefix)
    return value


def check_keys(config, allowed: Iterable[str], prefix: str = "") -> None:
    """Rejects keys of the section ``config`` that are not in ``allowed``, naming them."""
    keys = set(config.keys())
    unknown = sorted(keys - set(allowed))
    if unknown:
        names = ", ".join(f"config.{prefix}{k}" for k in unknown)
        raise ValueError(
            f"Unknown config key(s) {names}; valid keys are config.{prefix}"
            f"{{{', '.join(sorted(allowed))}}}."
        )
