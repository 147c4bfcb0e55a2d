"""Checks of attack parameters: every error names the attack and the parameter, before any work."""

from __future__ import annotations

import math
import numbers
from typing import Any

from advmir.errors import InputError


class AttackParamError(InputError, ValueError):
    """An attack was given a parameter it does not accept, or a value out of range."""


def check_number(
    attack: str,
    param: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    integer: bool = False,
    optional: bool = False,
) -> float | int | None:
    """Return ``value`` as a float (or int) after checking its type and range.

    Raises:
        AttackParamError: naming ``attack`` and ``param``, the value found and the range allowed.
    """
    if value is None:
        if optional:
            return None
        raise AttackParamError(f"{attack}: parameter {param!r} is required (got None)")
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise AttackParamError(f"{attack}: parameter {param!r} must be {kind}, got {value!r}")
    if integer and not float(value).is_integer():
        raise AttackParamError(f"{attack}: parameter {param!r} must be {kind}, got {value!r}")
    if not math.isfinite(float(value)):
        raise AttackParamError(f"{attack}: parameter {param!r} must be finite, got {value!r}")
    if minimum is not None:
        too_small = value <= minimum if exclusive_minimum else value < minimum
        if too_small:
            op = ">" if exclusive_minimum else ">="
            raise AttackParamError(f"{attack}: parameter {param!r} must be {op} {minimum}, got {value!r}")
    if maximum is not None:
        too_large = value >= maximum if exclusive_maximum else value > maximum
        if too_large:
            op = "<" if exclusive_maximum else "<="
            raise AttackParamError(f"{attack}: parameter {param!r} must be {op} {maximum}, got {value!r}")
    return int(value) if integer else float(value)


def check_bool(attack: str, param: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, else raise naming the attack and parameter."""
    if not isinstance(value, bool):
        raise AttackParamError(f"{attack}: parameter {param!r} must be true or false, got {value!r}")
    return value


def check_choice(attack: str, param: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    if value not in choices:
        raise AttackParamError(f"{attack}: parameter {param!r} must be one of {list(choices)}, got {value!r}")
    return value
