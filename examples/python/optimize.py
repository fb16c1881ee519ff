"""An iterative optimisation with dynamic jobs: each generation's orchestrator job (``step``
in optimize_tasks.py) reads the values of its candidates and spawns the next generation,
until the search interval is narrow enough. The workflow grows while it runs; this script
builds only the first generation.

    python examples/python/optimize.py

A generation is one iteration; the workflow's ``max_iterations`` (here 20) bounds how many
there may be, so a search that never converges stops instead of running forever.
"""

from __future__ import annotations

from optimize_tasks import add_generation

import torc_trio


def main() -> None:
    wf = torc_trio.Workflow("optimize", max_iterations=20)
    add_generation(wf, 0, -10.0, 10.0)
    result = wf.run(jobs=4)
    steps = sorted((v for name, v in result.values.items() if name.endswith("_step")),
                   key=lambda v: v["generation"])
    for s in steps:
        print(f"generation {s['generation']}: best x = {s['best_x']:.4f}, "
              f"f = {s['best_f']:.6f}")
    final = steps[-1]
    print(f"converged after {len(steps)} generations ({result.total} jobs): "
          f"x = {final['best_x']:.3f}" if final["converged"] else "did not converge")
    if not (result.ok and final["converged"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
