"""`torc-trio plot-resources` through the real command, and its pages in a real browser.

The databases are built here with Torc's time-series schema (what runners write under
``<output dir>/resource_utilization/``): two jobs, a few samples each, in two files (job 2
was sampled on both nodes, as a retried job would be). The pages are then opened in Debian's
chromium, headless through Playwright, from file:// URLs with every http(s) request refused:
a plot that rendered there needs no network.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import chromium_path, clean_env, torc

SCHEMA = """
CREATE TABLE job_resource_samples (
    id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL, timestamp REAL NOT NULL,
    cpu_percent REAL NOT NULL, memory_bytes INTEGER NOT NULL, num_processes INTEGER NOT NULL);
CREATE TABLE job_metadata (job_id INTEGER PRIMARY KEY, job_name TEXT NOT NULL);
"""
GB = 1024**3
T0 = 1_700_000_000.0
# job id -> (name, [(seconds after T0, cpu %, memory bytes, processes)]) per database
Jobs = dict[int, tuple[str, list[tuple[float, float, int, int]]]]
NODE_A: Jobs = {
    1: ("prep", [(0, 10.0, 1 * GB, 1), (2, 95.5, 2 * GB, 3), (4, 50.0, GB // 2, 2),
                 (6, 20.0, GB // 4, 1)]),
    2: ("train", [(1, 100.0, 3 * GB, 4), (3, 180.0, 4 * GB, 5)]),
}
NODE_B: Jobs = {
    2: ("train", [(5, 150.0, 5 * GB, 5), (7, 90.0, 2 * GB, 2)]),
}
#: A server address where none listens: the command must not need one.
NO_SERVER_ENV = {"TORC_API_URL": "http://127.0.0.1:9/torc-service/v1"}
ALL_FILES = {"resource_plot_job_1.html", "resource_plot_job_2.html",
             "resource_plot_cpu_all_jobs.html", "resource_plot_memory_all_jobs.html",
             "resource_plot_summary.html"}


def make_db(path: Path, jobs: Jobs) -> Path:
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
        for job_id, (name, samples) in jobs.items():
            conn.execute("INSERT INTO job_metadata VALUES (?, ?)", (job_id, name))
            conn.executemany(
                "INSERT INTO job_resource_samples (job_id, timestamp, cpu_percent, "
                "memory_bytes, num_processes) VALUES (?, ?, ?, ?, ?)",
                [(job_id, T0 + t, cpu, mem, procs) for t, cpu, mem, procs in samples])
    conn.close()
    return path


@pytest.fixture
def dbs(tmp_path: Path) -> list[str]:
    util = tmp_path / "out" / "resource_utilization"
    util.mkdir(parents=True)
    a = make_db(util / "resource_metrics_nodea_1_1.db", NODE_A)
    b = make_db(util / "resource_metrics_nodeb_1_1.db", NODE_B)
    return [str(a.relative_to(tmp_path)), str(b.relative_to(tmp_path))]


def plot(tmp_path: Path, *args: str) -> Any:
    return torc(tmp_path, *args, env=clean_env(**NO_SERVER_ENV))


def test_plots_of_two_jobs_from_two_databases(tmp_path: Path, dbs: list[str]) -> None:
    proc = plot(tmp_path, "plot-resources", *dbs, "-o", "plots")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plots = tmp_path / "plots"
    assert {p.name for p in plots.iterdir()} == ALL_FILES
    assert "Job 2 (train): 4 samples, 6.0s duration, peak CPU: 180.0%, peak mem: 5.00 GB" \
        in proc.stdout
    for name in ALL_FILES:
        assert f"Created: plots/{name}" in proc.stdout
    assert not (tmp_path / "torc_output").exists()  # no standalone server, no database

    expected_titles = {
        "resource_plot_job_1.html": "Job 1 (prep) Resource Usage Timeline",
        "resource_plot_job_2.html": "Job 2 (train) Resource Usage Timeline",
        "resource_plot_cpu_all_jobs.html": "CPU Usage - All Jobs",
        "resource_plot_memory_all_jobs.html": "Memory Usage - All Jobs",
        "resource_plot_summary.html": "Resource Usage Summary - All Jobs",
    }
    for name, title in expected_titles.items():
        page = (plots / name).read_text(encoding="utf-8")
        assert f"<title>{title}</title>" in page
        assert title in page.split("</head>", 1)[1]  # in the figure too
        # plotly.js is inside the page; nothing is loaded from the network.
        assert "plotly.js v" in page and len(page) > 1_000_000
        assert not re.search(r"<script[^>]*\bsrc=[\"']?https?:", page)
        assert '"Time (seconds)"' in page or name.endswith("summary.html")
    job1 = (plots / "resource_plot_job_1.html").read_text(encoding="utf-8")
    for words in ('"CPU %"', '"Memory (GB)"', '"# Processes"', '"Processes"',
                  "Peak: 95.5% CPU, 2.00 GB Memory"):
        assert words in job1
    summary = (plots / "resource_plot_summary.html").read_text(encoding="utf-8")
    for words in ('"Peak CPU %"', '"Avg CPU %"', '"Peak Memory (GB)"', '"Avg Memory (GB)"',
                  '"Job ID"'):
        assert words in summary


def test_json_output_has_each_jobs_numbers(tmp_path: Path, dbs: list[str]) -> None:
    proc = plot(tmp_path, "-f", "json", "plot-resources", *dbs, "-o", "plots")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {Path(f).name for f in out["files"]} == ALL_FILES
    jobs = {j["job_id"]: j for j in out["jobs"]}
    assert jobs[1]["job_name"] == "prep" and jobs[1]["samples"] == 4
    assert jobs[1]["peak_cpu_percent"] == 95.5
    assert jobs[1]["avg_cpu_percent"] == pytest.approx((10 + 95.5 + 50 + 20) / 4)
    assert jobs[1]["peak_memory_gb"] == 2.0 and jobs[1]["duration_seconds"] == 6.0
    # job 2's samples from both files, merged in time order
    assert jobs[2]["samples"] == 4 and jobs[2]["peak_memory_gb"] == 5.0
    assert jobs[2]["avg_memory_gb"] == pytest.approx((3 + 4 + 5 + 2) / 4)


def test_job_ids_choose_the_jobs(tmp_path: Path, dbs: list[str]) -> None:
    proc = plot(tmp_path, "plot-resources", *dbs, "-o", "one", "--job-ids", "2")
    assert proc.returncode == 0, proc.stderr
    # One job: its plot and the summary (as in Torc, no all-jobs comparison of one job).
    assert {p.name for p in (tmp_path / "one").iterdir()} == {
        "resource_plot_job_2.html", "resource_plot_summary.html"}
    proc = plot(tmp_path, "plot-resources", *dbs, "-o", "both", "-j", "2,1", "-p", "wf7")
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in (tmp_path / "both").iterdir()} == {
        n.replace("resource_plot", "wf7") for n in ALL_FILES}


def test_plots_of_a_real_run_sampled_by_the_runner(tmp_path: Path) -> None:
    """The databases the runner writes (not built by hand) plot as they are."""
    (tmp_path / "burn.py").write_text(
        "import sys, time\nx = bytearray(int(sys.argv[1]) << 20)\nt = time.monotonic()\n"
        "while time.monotonic() - t < 1.5:\n    pass\n")
    proc = torc(tmp_path, "-s", "exec", "--monitor", "time-series",
                "--sample-interval-seconds", "0.2", "-j", "2", "-c", "python3 burn.py {n}",
                "--param", "n=[20,60]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dbs = sorted((tmp_path / "torc_output" / "resource_utilization").glob("*.db"))
    assert len(dbs) == 1
    proc = plot(tmp_path, "-f", "json", "plot-resources", str(dbs[0]), "-o", "plots")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert {Path(f).name for f in out["files"]} == ALL_FILES
    jobs = {j["job_name"]: j for j in out["jobs"]}
    assert set(jobs) == {"job_20", "job_60"}
    assert all(j["samples"] >= 1 for j in jobs.values())
    assert jobs["job_60"]["peak_memory_gb"] * 1024 >= 60  # its bytearray was sampled
    page = (tmp_path / "plots" / f"resource_plot_job_{jobs['job_60']['job_id']}.html")
    assert "(job_60) Resource Usage Timeline" in page.read_text(encoding="utf-8")


def _error(tmp_path: Path, *args: str) -> str:
    proc = plot(tmp_path, "plot-resources", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    return str(proc.stderr)


def test_bad_input_is_named(tmp_path: Path, dbs: list[str]) -> None:
    assert "the following arguments are required: DB" in _error(tmp_path, "-o", "p")
    assert "nope.db: no such file" in _error(tmp_path, "nope.db")

    (tmp_path / "notes.db").write_text("not a database at all, just some words\n" * 50)
    err = _error(tmp_path, dbs[0], "notes.db")
    assert "notes.db: not a resource metrics database" in err

    with sqlite3.connect(tmp_path / "other.db") as conn:
        conn.execute("CREATE TABLE results (id INTEGER)")
    conn.close()
    err = _error(tmp_path, "other.db")
    assert "other.db: not a resource metrics database (no job_resource_samples table" in err

    with sqlite3.connect(tmp_path / "bad_row.db") as conn:
        conn.execute("CREATE TABLE job_resource_samples (id INTEGER PRIMARY KEY, job_id "
                     "INTEGER, timestamp REAL, cpu_percent REAL, memory_bytes INTEGER, "
                     "num_processes INTEGER)")
        conn.execute("INSERT INTO job_resource_samples VALUES (7, 1, 1.0, NULL, 10, 1)")
    conn.close()
    err = _error(tmp_path, "bad_row.db")
    assert "bad_row.db: job_resource_samples row 7: cpu_percent is None" in err

    make_db(tmp_path / "empty.db", {})  # every job was shorter than the sample interval
    assert "no resource samples in empty.db" in _error(tmp_path, "empty.db")

    err = _error(tmp_path, *dbs, "--job-ids", "2,9")
    assert "job id 9: no resource samples in" in err and dbs[0] in err
    assert "(jobs there: 1, 2)" in err
    assert "'x' is not a job id" in _error(tmp_path, *dbs, "--job-ids", "1,x")
    assert "give the start of a file name" in _error(tmp_path, *dbs, "-p", "a/b")
    assert not (tmp_path / "p").exists() and not (tmp_path / "torc_output").exists()


# ---------------------------------------------------------------------------------------------
# In a real browser




#: Traces each page must draw.
TRACES = {"resource_plot_job_1.html": 3, "resource_plot_job_2.html": 3,
          "resource_plot_cpu_all_jobs.html": 2, "resource_plot_memory_all_jobs.html": 2,
          "resource_plot_summary.html": 4}


def test_pages_render_in_chromium_without_a_network(tmp_path: Path, dbs: list[str]) -> None:
    executable = chromium_path()
    from playwright.sync_api import Route, sync_playwright

    proc = plot(tmp_path, "plot-resources", *dbs, "-o", "plots")
    assert proc.returncode == 0, proc.stderr
    refused: list[str] = []

    def refuse(route: Route) -> None:
        refused.append(route.request.url)
        route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page()
            page.route(re.compile(r"^https?://"), refuse)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            for name, traces in TRACES.items():
                page.goto((tmp_path / "plots" / name).as_uri())
                # Plotly drew the figure: its container and an SVG with one group per trace.
                page.wait_for_selector("#resource-plot .plot-container svg.main-svg g.trace",
                                       state="attached")
                drawn = page.evaluate(
                    "() => { const d = document.getElementById('resource-plot');"
                    " return {data: d.data.length, svg: d.querySelectorAll("
                    "'svg.main-svg g.trace').length, title: d.layout.title.text,"
                    " names: d.data.map(t => t.name)}; }")
                assert drawn["data"] == traces and drawn["svg"] == traces, (name, drawn)
                assert page.title() in drawn["title"]
                if name == "resource_plot_job_1.html":
                    assert drawn["names"] == ["CPU %", "Memory (GB)", "# Processes"]
                    # the title's text as drawn on the page
                    assert "Job 1 (prep) Resource Usage Timeline" in \
                        (page.text_content("#resource-plot .gtitle") or "")
            assert errors == []
            assert refused == []  # nothing even tried to reach the network
        finally:
            browser.close()
