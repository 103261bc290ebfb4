"""Checks of the values users type into the nodes, with messages that say what to do."""
from __future__ import annotations

import math
from collections.abc import Iterable


def check_choice(value: str, options: Iterable[str], name: str) -> str:
    """One of a dropdown's ``options``: an API prompt or a script can send anything."""
    options = tuple(options)
    if value not in options:
        raise ValueError(f"Unknown {name} {value!r}; choose one of {', '.join(options)}.")
    return value


def check_strength(strength: float) -> float:
    """The share of an edit to apply: a number from 0 (none) to 1 (all), refused otherwise."""
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise ValueError(f"strength must be between 0 and 1 (got {strength!r}): 1 applies the full erasure.")
    return float(strength)


def check_disjoint(removed: list[str], kept: list[str], removed_word: str = "forgotten",
                   kept_word: str = "retained") -> None:
    """A concept in both lists (case aside) would be erased and protected at once: refuse it by name."""
    both = [c for c in removed if c.lower() in {k.lower() for k in kept}]
    if both:
        raise ValueError(f"{', '.join(map(repr, both))} is both {removed_word} and {kept_word}: remove it from one list.")
