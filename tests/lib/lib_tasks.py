"""Functions the torc_trio tests run as jobs (a module, so that a runner can import them)."""

from __future__ import annotations

from typing import Any


def square(x: int) -> int:
    return x * x


def total(values: list[int], offset: int = 0) -> int:
    return sum(values) + offset


def boom(x: int) -> int:
    if x == 3:
        raise ValueError(f"x must not be {x}")
    return x


def not_json(x: int) -> Any:
    return {x}


def orchestrate(values: list[int] | None = None, *, generation: int, last: int) -> dict[str, Any]:
    """Each generation evaluates two squares and spawns the next orchestrator on their
    values, until generation ``last``: a lineage of ``last`` spawns."""
    import torc_trio

    if generation >= last:
        return {"generation": generation, "values": values, "spawned": None}
    nxt = torc_trio.Workflow(f"generation {generation + 1}")
    evals = [nxt.add_call(square, {"x": 10 * (generation + 1) + k},
                          name=f"g{generation + 1}_square_{k}") for k in range(2)]
    nxt.add_call(orchestrate, {"generation": generation + 1, "last": last},
                 name=f"orchestrate_{generation + 1}", results_of=evals)
    spawned = torc_trio.current_job().spawn_jobs(nxt)
    return {"generation": generation, "values": values, "spawned": spawned.iteration}


def broken_total(values: list[int]) -> int:
    raise RuntimeError(f"cannot add {len(values)} values")
