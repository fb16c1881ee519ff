"""Build, initialize and drain a million-job workflow entirely inside the engine.

Two stages of N/2 jobs joined by a barrier (stage 2 depends on all of stage 1 through
``depends_on_regexes``), built through the real spec path (parse_spec + compile_workflow).
Runners are simulated in-process: claims in queue mode and completions in batches.

    python benchmarks/bench_core.py [--jobs 1000000] [--batch 1000]

After initializing, one job adds 10 jobs (dynamic jobs: ``grow_10_jobs_s`` is what that costs
in a workflow of this size); the drain runs them too.

Prints one JSON object. Timings are not asserted anywhere (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from torc_core import Engine, WorkflowModel
from torc_core import events as ev
from torc_core.graph import compile_workflow
from torc_core.parse import parse_spec

#: jobs added while the workflow is live (they run in the drain too)
GROWN = 10


def spec_document(jobs: int) -> dict[str, object]:
    half = jobs // 2
    return {
        "name": "bench_core",
        "jobs": [
            {"name": "stage1_{i}", "command": "true", "parameters": {"i": f"1:{half}"}},
            {
                "name": "stage2_{i}",
                "command": "true",
                "parameters": {"i": f"1:{jobs - half}"},
                "depends_on_regexes": ["stage1_.*"],
            },
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()

    t0 = time.perf_counter()
    spec = parse_spec(spec_document(args.jobs))
    model = compile_workflow(spec)
    del spec
    engine = Engine(model)
    t1 = time.perf_counter()
    engine.handle(ev.Initialize(), 0.0)
    t2 = time.perf_counter()
    # Dynamic jobs: a job adds a chain of 10 (the engine grows in place; the barrier moves).
    part = WorkflowModel.build(GROWN, [(i, i + 1) for i in range(GROWN - 1)])
    engine.handle(ev.AddJobs(part=part, after=(0,)), 0.0)
    grow_s = time.perf_counter() - t2
    t2 = time.perf_counter()

    transitions = 0
    batches = 0
    while True:
        effects = engine.handle(
            ev.ClaimJobs(runner_id=1, limit=args.batch, lease_s=1e9), 0.0
        )
        claimed = next(e for e in effects if isinstance(e, ev.JobsClaimed)).jobs
        if not claimed:
            break
        transitions += len(claimed)
        results = tuple(
            ev.JobResult(job=c.job, attempt=c.attempt, run_id=c.run_id, return_code=0)
            for c in claimed
        )
        for effect in engine.handle(ev.CompleteJobs(runner_id=1, results=results), 0.0):
            if isinstance(effect, ev.StatusesChanged):
                transitions += len(effect.jobs)
        batches += 1
    t3 = time.perf_counter()
    assert engine.is_complete, "drain did not complete the workflow"

    print(json.dumps({
        "benchmark": "core",
        "jobs": model.num_jobs,
        "barriers": model.num_barriers,
        "edges_stored": model.num_edges,
        "edges_as_written": model.uncompressed_edges,
        "batch": args.batch,
        "build_s": round(t1 - t0, 3),
        "initialize_s": round(t2 - t1 - grow_s, 3),
        "grow_10_jobs_s": round(grow_s, 3),
        "run_s": round(t3 - t2, 3),
        "transitions": transitions,
        "transitions_per_s": round(transitions / (t3 - t2)),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
