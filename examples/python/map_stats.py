"""``torc_trio.map`` of a function with a postprocess: 16 batches of a Monte Carlo estimate
of pi, one job each, then one job that combines their counts.

    python examples/python/map_stats.py

Each call runs in a Python process of its own (``python -m torc_trio.call
stats_tasks:sample``), with this folder put on its ``sys.path``; its return value is stored
with its job on the server, and map returns them in input order.
"""

from __future__ import annotations

import math

from stats_tasks import POINTS, estimate_pi, sample

import torc_trio


def main() -> None:
    params = [{"seed": seed, "points": POINTS} for seed in range(16)]
    counts, pi = torc_trio.map(sample, params, postprocess=estimate_pi, jobs=4,
                               resource_requirements={"num_cpus": 1, "memory": "100m"})
    print(f"{len(counts)} batches, first counts {counts[:3]}")
    print(f"pi ~ {pi:.4f} (error {abs(pi - math.pi):.4f})")


if __name__ == "__main__":
    main()
