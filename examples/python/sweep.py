"""A parameter sweep built in Python: one job per (learning rate, batch size), each writing
a small JSON result; a report job, run once every point is done, ranks them.

    python examples/python/sweep.py            # standalone, output in ./torc_output
    TORC_API_URL=http://host:8080/torc-service/v1 python examples/python/sweep.py

Each job here is a shell command (any program would do); see map_stats.py for Python
functions as jobs.
"""

from __future__ import annotations

import json
import shlex
import sys
from itertools import product
from pathlib import Path

import torc_trio

LEARNING_RATES = (0.1, 0.01, 0.001)
BATCH_SIZES = (16, 64)

# what each point runs: a stand-in for training, a loss from the two parameters
TRAIN = """
import json, sys
lr, bs = float(sys.argv[1]), int(sys.argv[2])
loss = (lr - 0.01) ** 2 * 1000 + abs(bs - 64) / 100
json.dump({"lr": lr, "batch_size": bs, "loss": round(loss, 4)}, open(sys.argv[3], "w"))
"""
REPORT = """
import glob, json
rows = sorted((json.load(open(p)) for p in glob.glob("sweep_results/*.json")),
              key=lambda r: r["loss"])
json.dump(rows, open("sweep_report.json", "w"), indent=1)
print("best:", rows[0])
"""


def build() -> torc_trio.Workflow:
    wf = torc_trio.Workflow("sweep", description="learning rate x batch size")
    small = wf.add_resource_requirements("small", num_cpus=1, memory="200m", runtime="PT5M")
    py = shlex.quote(sys.executable)
    points = []
    for lr, bs in product(LEARNING_RATES, BATCH_SIZES):
        path = f"sweep_results/lr{lr}_bs{bs}.json"
        out = wf.add_file(f"result_lr{lr}_bs{bs}", path)
        points.append(wf.add_job(
            f"train_lr{lr}_bs{bs}",
            f"mkdir -p sweep_results && {py} -c {shlex.quote(TRAIN)} {lr} {bs} {path}",
            output_files=[out], resource_requirements=small))
    wf.add_job("report", f"{py} -c {shlex.quote(REPORT)}", depends_on=points,
               resource_requirements=small)
    return wf


def main() -> None:
    result = build().run(jobs=4)
    print(f"workflow {result.workflow_id}: {result.counts['completed']} of {result.total} "
          f"jobs completed")
    if not result.ok:
        raise SystemExit(1)
    best = json.loads(Path("sweep_report.json").read_text())[0]
    print(f"best point: lr={best['lr']} batch_size={best['batch_size']} loss={best['loss']}")


if __name__ == "__main__":
    main()
