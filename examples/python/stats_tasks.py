"""The functions map_stats.py runs as jobs. They live in a module of their own: a runner
imports a function by module and name, which it cannot do for one defined in the script
being run (``__main__``)."""

from __future__ import annotations

import random

#: points per batch
POINTS = 20_000


def sample(seed: int, points: int = POINTS) -> int:
    """How many of ``points`` random points of the unit square fall inside the quarter
    circle (a Monte Carlo estimate of pi, one batch)."""
    rng = random.Random(seed)
    return sum(1 for _ in range(points) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)


def estimate_pi(counts: list[int]) -> float:
    """The postprocess: every batch's count (in input order) -> pi."""
    return 4.0 * sum(counts) / (POINTS * len(counts))
