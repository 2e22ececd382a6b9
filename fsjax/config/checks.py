"""Validation helpers shared by every config section: errors name the option, the value and what
is allowed."""

from __future__ import annotations


class ConfigError(ValueError):
    """An option has a value fsjax cannot use."""


def _check_range(option: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{option}={value!r} is out of range: allowed {low}..{high}")


def _check_choice(option: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{option}={value!r} is not allowed: choose one of "
                          f"{', '.join(map(str, allowed))}")
