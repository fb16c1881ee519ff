"""``torc-trio plot-resources DB... -o DIR [--job-ids 1,2]`` (Torc's ``torc plot-resources``).

No client: it reads the time-series databases runners leave under
``<output dir>/resource_utilization/`` and writes HTML next to nothing else, so it starts no
server and needs none (it is in :data:`torc_cli.early.NO_SERVER`); it works on a laptop with
files copied off a cluster. The plotting is :mod:`torc_cli.plots`, imported only when the
command runs (Plotly is a heavy import every other command would pay for).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..command import Command
from ..exits import EXIT_OK, CliError


def job_id_list(text: str) -> list[int]:
    """``--job-ids 1,2,3`` (Torc's comma-separated list) as ids; anything else is refused by
    name."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a job id (give ids separated by commas: 1,2,3)") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{value} is not a job id (ids start at 1)")
        ids.append(value)
    return ids


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("db_paths", nargs="+", type=Path, metavar="DB",
                   help="resource metrics databases (runners write them as resource_metrics_"
                        "<host>_<workflow>_<run>.db in <output dir>/resource_utilization/)")
    p.add_argument("-o", "--output-dir", type=Path, default=Path("."), dest="plot_dir",
                   metavar="DIR",
                   help="where the HTML files go (made if missing; default: .)")
    p.add_argument("-j", "--job-ids", type=job_id_list, metavar="IDS",
                   help="only these jobs, comma-separated (default: every job sampled)")
    p.add_argument("-p", "--prefix", default="resource_plot",
                   help="start of the file names (default: resource_plot)")


def _plot_resources(args: argparse.Namespace) -> int:
    from .. import plots
    from ..output import print_json

    try:
        jobs = plots.select_jobs(plots.load_jobs(args.db_paths), args.job_ids, args.db_paths)
        paths = plots.write_job_plots(jobs, args.plot_dir, args.prefix)
    except CliError as exc:
        print(f"torc-trio: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    if getattr(args, "format", "table") == "json":
        print_json({"files": [str(p) for p in paths], "jobs": plots.describe(jobs)})
        return EXIT_OK
    for row in plots.describe(jobs):
        name = f"Job {row['job_id']}" + (f" ({row['job_name']})" if row["job_name"] else "")
        print(f"{name}: {row['samples']} samples, {row['duration_seconds']:.1f}s duration, "
              f"peak CPU: {row['peak_cpu_percent']:.1f}%, "
              f"peak mem: {row['peak_memory_gb']:.2f} GB")
    for path in paths:
        print(f"Created: {path}")
    return EXIT_OK


DESCRIPTION = """\
Interactive HTML plots of the samples runners write with resource_monitor granularity
time_series (Torc's files and titles):
  resource_plot_job_<id>.html          one job: CPU %, memory (GB), processes over time
  resource_plot_cpu_all_jobs.html      every job's CPU (with more than one job)
  resource_plot_memory_all_jobs.html   every job's memory (with more than one job)
  resource_plot_summary.html           peak and average CPU and memory per job
Each file holds plotly.js, so it opens in a browser without a network. No server is needed."""

COMMANDS = [
    Command("plot-resources",
            "interactive HTML plots of jobs' CPU and memory over time (Torc's plot-resources)",
            """torc-trio plot-resources torc_output/resource_utilization/*.db -o plots
               torc-trio plot-resources resource_metrics_node1_1_1.db -o plots --job-ids 15,16
               torc-trio -f json plot-resources run1.db run2.db -o plots   # files and peaks
               xdg-open plots/resource_plot_summary.html   # peak and average per job""",
            arguments=_arguments, main=_plot_resources,
            description=DESCRIPTION),
]
