"""The jobs of optimize.py: ``evaluate`` one candidate, and ``step``, the orchestrator, which
reads a generation's values, narrows the search interval around the best candidate and, until
it is narrow enough, adds the next generation to its own workflow (``spawn_jobs``)."""

from __future__ import annotations

from typing import Any

import torc_trio

#: candidates per generation (evenly spaced over the interval, ends included)
CANDIDATES = 9
#: stop once the interval is this narrow
TOLERANCE = 1e-2


def objective(x: float) -> float:
    """What is minimised: smallest (1.0) at x = 3.2."""
    return (x - 3.2) ** 2 + 1.0


def evaluate(x: float) -> float:
    """One candidate (in a real study: a simulation, a training run, ...)."""
    return objective(x)


def candidates(lo: float, hi: float) -> list[float]:
    return [lo + (hi - lo) * k / (CANDIDATES - 1) for k in range(CANDIDATES)]


def add_generation(wf: torc_trio.Workflow, generation: int, lo: float, hi: float) -> None:
    """One generation: a job per candidate, then the step that reads their values."""
    evals = [wf.add_call(evaluate, {"x": x}, name=f"g{generation}_eval_{k}")
             for k, x in enumerate(candidates(lo, hi))]
    wf.add_call(step, {"generation": generation, "lo": lo, "hi": hi},
                name=f"g{generation}_step", results_of=evals)


def step(values: list[float], generation: int, lo: float, hi: float) -> dict[str, Any]:
    """The orchestrator of one generation (its return value is stored with its job)."""
    xs = candidates(lo, hi)
    best = min(range(len(xs)), key=values.__getitem__)
    width = (hi - lo) / (CANDIDATES - 1)
    new_lo, new_hi = xs[best] - width, xs[best] + width
    converged = new_hi - new_lo < TOLERANCE
    if not converged:
        nxt = torc_trio.Workflow(f"generation {generation + 1}")
        add_generation(nxt, generation + 1, new_lo, new_hi)
        torc_trio.current_job().spawn_jobs(nxt)  # waits for this job; this job now ends
    return {"generation": generation, "best_x": xs[best], "best_f": values[best],
            "converged": converged}
