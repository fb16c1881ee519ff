"""Plots of jobs' resource use from Torc's time-series databases (``torc plot-resources``).

Why: a runner with ``resource_monitor: {granularity: time_series}`` samples every job's CPU,
memory and process count into ``<output dir>/resource_utilization/
resource_metrics_<hostname>_<workflow_id>_<run_id>.db`` (one per runner, so one per node and
run). These files are what people look at after a run to size ``resource_requirements``; this
module turns them into the same files Torc writes, so its how-to pages work as written:

* ``<prefix>_job_<id>.html``: one job's CPU %, memory (GB) and process count against seconds
  since its first sample, peaks and averages in the subtitle;
* ``<prefix>_cpu_all_jobs.html`` and ``<prefix>_memory_all_jobs.html``: every job's CPU or
  memory on one chart (as in Torc, only when there is more than one job to compare);
* ``<prefix>_summary.html``: grouped bars of peak and average CPU and memory per job.

Each file is a whole HTML page with plotly.js inside it (``include_plotlyjs=True``, ~4.5 MB a
file): plots are opened from compute nodes' shared file systems, copied off clusters and
attached to tickets, often where there is no network, so nothing is fetched when one opens.

Samples of one job found in several databases (a job retried on another node) are merged and
ordered by time, as Torc merges them. Memory is shown in GB of 1024**3 bytes, Torc's unit.
Anything that is not such a database, or a job id that is in none of them, is an
:class:`~torc_cli.exits.InputError` naming the file or the id.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torc_net.job_files import MetricsError, Sample, read_all_samples

from .exits import InputError

#: The file names' default start (Torc's ``--prefix`` default).
DEFAULT_PREFIX = "resource_plot"
#: Bytes in Torc's "GB".
GB = 1024**3
#: The ``id`` of the plot's ``<div>`` in every file (a stable handle for scripts and tests).
DIV_ID = "resource-plot"


@dataclass(slots=True)
class JobSeries:
    """One job's samples (in time order once loaded) and its name, if a database had it."""

    job_id: int
    name: str | None = None
    samples: list[Sample] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``Job 3 (train)``, or ``Job 3`` without a name: Torc's legend and title words."""
        return f"Job {self.job_id} ({self.name})" if self.name else f"Job {self.job_id}"

    def seconds(self) -> list[float]:
        """Each sample's time since the job's first sample."""
        start = self.samples[0].timestamp
        return [s.timestamp - start for s in self.samples]

    @property
    def peak_cpu(self) -> float:
        return max(s.cpu_percent for s in self.samples)

    @property
    def avg_cpu(self) -> float:
        return sum(s.cpu_percent for s in self.samples) / len(self.samples)

    @property
    def peak_memory_gb(self) -> float:
        return max(s.memory_bytes for s in self.samples) / GB

    @property
    def avg_memory_gb(self) -> float:
        return sum(s.memory_bytes for s in self.samples) / len(self.samples) / GB


# ---------------------------------------------------------------------------------------------
# Reading the databases


def load_jobs(db_paths: Sequence[Path]) -> dict[int, JobSeries]:
    """Every job's samples from ``db_paths``, merged by job id, each in time order."""
    if not db_paths:
        raise InputError("no resource metrics database given (Torc writes them as "
                         "<output dir>/resource_utilization/resource_metrics_*.db)")
    jobs: dict[int, JobSeries] = {}
    seen: set[Path] = set()
    for path in db_paths:
        key = Path(path).resolve()
        if key in seen:  # the same file twice (a glob and a name): its samples count once
            continue
        seen.add(key)
        _load_one(Path(path), jobs)
    for series in jobs.values():
        series.samples.sort(key=lambda s: s.timestamp)
    return jobs


def _load_one(path: Path, jobs: dict[int, JobSeries]) -> None:
    """One database's samples and names into ``jobs`` (torc_net.job_files reads it: the one
    reader, which the dashboard's server uses too)."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file (give the resource_metrics_*.db files)")
    try:
        samples, names = read_all_samples(path)
    except MetricsError as exc:
        raise InputError(str(exc)) from None
    for job_id, sample in samples:
        jobs.setdefault(job_id, JobSeries(job_id)).samples.append(sample)
    for job_id, name in names.items():
        if job_id in jobs:
            jobs[job_id].name = name


def select_jobs(jobs: dict[int, JobSeries], job_ids: Iterable[int] | None,
                db_paths: Sequence[Path]) -> list[JobSeries]:
    """The jobs to plot, by id; an asked-for id that no database has is an error."""
    if job_ids is None:
        chosen = sorted(jobs)
    else:
        chosen = sorted(set(job_ids))
        absent = [i for i in chosen if i not in jobs]
        if absent:
            names = ", ".join(str(p) for p in db_paths)
            which = "job id" if len(absent) == 1 else "job ids"
            raise InputError(f"{which} {', '.join(map(str, absent))}: no resource samples in "
                             f"{names} (jobs there: {_id_list(sorted(jobs))})")
    if not chosen:
        names = ", ".join(str(p) for p in db_paths)
        raise InputError(f"no resource samples in {names} (a job shorter than the sample "
                         "interval leaves none)")
    return [jobs[i] for i in chosen]


def _id_list(ids: list[int], limit: int = 20) -> str:
    if not ids:
        return "none"
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


# ---------------------------------------------------------------------------------------------
# The figures (Torc's titles, trace names and axes)


def job_figure(job: JobSeries) -> Any:
    """One job: CPU % (left axis), memory in GB and process count (right axes) over time."""
    import plotly.graph_objects as go

    t = job.seconds()
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=t, y=[s.cpu_percent for s in job.samples], name="CPU %",
                             mode="lines", yaxis="y"))
    fig.add_trace(go.Scatter(x=t, y=[s.memory_bytes / GB for s in job.samples],
                             name="Memory (GB)", mode="lines", yaxis="y2"))
    fig.add_trace(go.Scatter(x=t, y=[s.num_processes for s in job.samples], name="# Processes",
                             mode="lines", yaxis="y3"))
    title = (f"{job.label} Resource Usage Timeline<br><sub>Peak: {job.peak_cpu:.1f}% CPU, "
             f"{job.peak_memory_gb:.2f} GB Memory | Avg: {job.avg_cpu:.1f}% CPU, "
             f"{job.avg_memory_gb:.2f} GB Memory</sub>")
    fig.update_layout(
        title={"text": title},
        # Room on the right for the two right-hand axes.
        xaxis={"title": {"text": "Time (seconds)"}, "domain": [0, 0.88]},
        # From zero: use is read against what was asked for, not against its own minimum.
        yaxis={"title": {"text": "CPU %"}, "rangemode": "tozero"},
        yaxis2={"title": {"text": "Memory (GB)"}, "overlaying": "y", "side": "right",
                "rangemode": "tozero", "tickmode": "auto", "showgrid": False},
        # Whole processes: ticks one apart, or wider with many.
        yaxis3={"title": {"text": "Processes"}, "overlaying": "y", "side": "right",
                "anchor": "free", "position": 0.95, "rangemode": "tozero", "tick0": 0,
                "dtick": max(1, math.ceil(max(s.num_processes for s in job.samples) / 5)),
                "showgrid": False},
    )
    return fig


def overview_figure(jobs: Sequence[JobSeries], metric: str) -> Any:
    """Every job's ``metric`` ("cpu" or "memory") over its own time, one line per job."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for job in jobs:
        if metric == "cpu":
            values = [s.cpu_percent for s in job.samples]
        else:
            values = [s.memory_bytes / GB for s in job.samples]
        fig.add_trace(go.Scatter(x=job.seconds(), y=values, name=job.label, mode="lines"))
    title, axis = (("CPU Usage - All Jobs", "CPU %") if metric == "cpu"
                   else ("Memory Usage - All Jobs", "Memory (GB)"))
    fig.update_layout(title={"text": title}, xaxis={"title": {"text": "Time (seconds)"}},
                      yaxis={"title": {"text": axis}, "rangemode": "tozero"})
    return fig


def summary_figure(jobs: Sequence[JobSeries]) -> Any:
    """Peak and average CPU (left axis) and memory (right axis) per job, as grouped bars."""
    import plotly.graph_objects as go

    ids = [str(job.job_id) for job in jobs]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=ids, y=[j.peak_cpu for j in jobs], name="Peak CPU %", yaxis="y",
                         offsetgroup="1"))
    fig.add_trace(go.Bar(x=ids, y=[j.avg_cpu for j in jobs], name="Avg CPU %", yaxis="y",
                         offsetgroup="2"))
    fig.add_trace(go.Bar(x=ids, y=[j.peak_memory_gb for j in jobs], name="Peak Memory (GB)",
                         yaxis="y2", offsetgroup="3"))
    fig.add_trace(go.Bar(x=ids, y=[j.avg_memory_gb for j in jobs], name="Avg Memory (GB)",
                         yaxis="y2", offsetgroup="4"))
    fig.update_layout(
        title={"text": "Resource Usage Summary - All Jobs"}, barmode="group",
        xaxis={"title": {"text": "Job ID"}, "type": "category"},
        yaxis={"title": {"text": "CPU %"}},
        yaxis2={"title": {"text": "Memory (GB)"}, "overlaying": "y", "side": "right",
                "rangemode": "tozero"},
    )
    return fig


def _page_title(fig: Any) -> str:
    """The figure's title without its subtitle or markup, for the page's ``<title>``."""
    text = str(fig.layout.title.text or "")
    return text.split("<br>", 1)[0]


def write_figure(fig: Any, path: Path) -> None:
    """``fig`` as a self-contained page at ``path`` (plotly.js inside; written to a temporary
    file and renamed, so a reader never sees half a page)."""
    import html

    page = fig.to_html(include_plotlyjs=True, full_html=True, div_id=DIV_ID)
    # Plotly's page has no <title>; a browser tab and a file list should say what it shows.
    page = page.replace("<head>", f"<head><title>{html.escape(_page_title(fig))}</title>", 1)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The whole command


def write_plots(db_paths: list[Path], out_dir: Path, job_ids: list[int] | None = None,
                prefix: str = DEFAULT_PREFIX) -> list[Path]:
    """Read ``db_paths``, write Torc's plot files for ``job_ids`` (default: every job found)
    into ``out_dir`` (made if missing) and return their paths: each job's, then (with more
    than one job) the CPU and memory overviews, then the summary."""
    check_prefix(prefix)
    return write_job_plots(select_jobs(load_jobs(db_paths), job_ids, db_paths), out_dir, prefix)


def check_prefix(prefix: str) -> None:
    """A prefix is the start of a file name: no directory in it (``-o`` says where)."""
    if not prefix or "/" in prefix or os.sep in prefix or prefix in (".", ".."):
        raise InputError(f"--prefix {prefix!r}: give the start of a file name, without a "
                         "directory (-o/--output-dir says where the files go)")


def write_job_plots(jobs: Sequence[JobSeries], out_dir: Path,
                    prefix: str = DEFAULT_PREFIX) -> list[Path]:
    """The files of :func:`write_plots` for ``jobs`` (loaded and chosen already)."""
    check_prefix(prefix)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot make the output directory: {exc}") from None
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: not a directory")
    plan: list[tuple[Path, Any]] = [
        (out_dir / f"{prefix}_job_{job.job_id}.html", job_figure(job)) for job in jobs]
    if len(jobs) > 1:
        plan.append((out_dir / f"{prefix}_cpu_all_jobs.html", overview_figure(jobs, "cpu")))
        plan.append((out_dir / f"{prefix}_memory_all_jobs.html",
                     overview_figure(jobs, "memory")))
    plan.append((out_dir / f"{prefix}_summary.html", summary_figure(jobs)))
    written: list[Path] = []
    for path, fig in plan:
        try:
            write_figure(fig, path)
        except OSError as exc:
            raise InputError(f"{path}: cannot write it: {exc}") from None
        written.append(path)
    return written


def describe(jobs: Sequence[JobSeries]) -> list[dict[str, Any]]:
    """Each plotted job's numbers (the command's JSON output and its table)."""
    return [{"job_id": j.job_id, "job_name": j.name, "samples": len(j.samples),
             "duration_seconds": j.seconds()[-1], "peak_cpu_percent": j.peak_cpu,
             "avg_cpu_percent": j.avg_cpu, "peak_memory_gb": j.peak_memory_gb,
             "avg_memory_gb": j.avg_memory_gb} for j in jobs]

