"""The dashboard at scale, in a real browser: first render of a big workflow, and the page's
CPU while the feed carries thousands of transitions a second.

Starts ``python -m torc_net.server`` on a temporary file database (loopback only), creates one
workflow of ``--jobs`` independent jobs, and opens its page in Debian's chromium (headless,
Playwright). Then synthetic runners (no processes: claim a batch over real HTTP, report it
completed; each job is two transitions, ready->pending->completed) drive the feed at
``--rate`` transitions/s for ``--seconds``, paced, while Chrome's own counters
(CDP ``Performance.getMetrics``: TaskDuration = main-thread busy time) say how busy the page
is, and a long-task observer records its longest task. Afterwards: how long the page took to
show the server's final counts (it must not fall behind). Prints ONE JSON object::

    {"jobs", "create_s", "first_render_ms": {"workflow_page", "list_page"},
     "feed": {"target_transitions_per_s", "transitions_per_s", "seconds",
              "page_main_thread_busy", "page_script_s", "longest_task_ms", "renders",
              "catch_up_s", "page_done", "server_done", "resyncs"}}

    python benchmarks/bench_dash.py [--jobs 1000000] [--rate 2000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any

import trio
from _common import start_server, stop_server

from torc_net.http import HttpConnectionPool

LONGTASKS = """
window.__longest = 0; window.__renders = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__longest = Math.max(window.__longest, e.duration);
}).observe({type: 'longtask', buffered: true});
document.addEventListener('DOMContentLoaded', () => {
  new MutationObserver(() => { window.__renders++; }).observe(document.getElementById('app'),
    {attributes: true, attributeFilter: ['data-done']});
});
"""


async def post(pool: HttpConnectionPool, path: str, body: Any, status: int = 200) -> Any:
    resp = await pool.request("POST", path, json_body=body)
    if resp.status != status:
        raise RuntimeError(f"POST {path}: {resp.status} {resp.body[:300]!r}")
    return resp.json()


async def create(base_url: str, jobs: int) -> tuple[int, float]:
    async with HttpConnectionPool(base_url) as pool:
        spec = {"name": f"dash-{jobs}", "jobs": [{"name": "job_{i}", "command": "true",
                                                   "parameters": {"i": f"1:{jobs}"}}]}
        t0 = time.perf_counter()
        with trio.fail_after(900):
            wf = (await post(pool, "/workflows", {"spec": spec}, 201))["id"]
        return int(wf), time.perf_counter() - t0


async def drive(base_url: str, wf: int, rate: float, seconds: float,
                out: dict[str, Any]) -> None:
    """Claim and complete jobs so that the feed carries ``rate`` transitions/s: batches every
    50 ms, paced against the clock (a slow round trip is caught up, never run ahead)."""
    jobs_per_s = rate / 2
    tick = 0.05
    async with HttpConnectionPool(base_url, max_idle=4) as pool:
        cn = (await post(pool, f"/workflows/{wf}/compute_nodes",
                         {"hostname": "bench-dash", "pid": os.getpid()}, 201))["id"]
        base = f"/workflows/{wf}/compute_nodes/{cn}"
        start = trio.current_time()
        done = 0
        while (now := trio.current_time()) - start < seconds:
            due = int((now - start + tick) * jobs_per_s) - done
            if due > 0:
                claimed = (await post(pool, f"{base}/claim", {"limit": min(due, 5000)}))["jobs"]
                if not claimed:
                    break
                await post(pool, f"{base}/complete", {"results": [
                    {"job_id": j["id"], "attempt": j["attempt"], "run_id": j["run_id"],
                     "return_code": 0, "status": "completed", "exec_time_s": 0.0}
                    for j in claimed]})
                done += len(claimed)
            await trio.sleep_until(start + (int((trio.current_time() - start) / tick) + 1)
                                   * tick)
        out["jobs_done"] = done
        out["seconds"] = trio.current_time() - start


def metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def bench(args: argparse.Namespace) -> dict[str, Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("bench_dash: no chromium on PATH (scripts/ci-install-browser.sh)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="torc-bench-dash-") as tmp:
        proc, port = start_server(os.path.join(tmp, "torc.db"), threads=args.threads)
        base_url = f"http://127.0.0.1:{port}/torc-service/v1"
        try:
            wf, create_s = trio.run(create, base_url, args.jobs)
            report: dict[str, Any] = {"jobs": args.jobs, "create_s": round(create_s, 2)}
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, headless=True)
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.add_init_script(LONGTASKS)
                first = {}
                for name, path in (("list_page", "/"), ("workflow_page", f"/workflows/{wf}")):
                    page.goto(f"http://127.0.0.1:{port}{path}")
                    page.wait_for_selector("#app[data-ready='1']", timeout=120_000)
                    first[name] = float(page.eval_on_selector(
                        "#app", "el => el.dataset.readyMs"))
                report["first_render_ms"] = first
                page.wait_for_selector("#conn[data-state='live']")
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")
                page.evaluate("window.__longest = 0; window.__renders = 0")
                before, wall0 = metrics(cdp), time.perf_counter()
                driven: dict[str, Any] = {}
                thread = threading.Thread(target=trio.run, args=(
                    drive, base_url, wf, args.rate, args.seconds, driven))
                thread.start()
                thread.join()
                after, wall1 = metrics(cdp), time.perf_counter()
                server_done = 2 * driven["jobs_done"]  # transitions
                t_stop = time.perf_counter()
                page.wait_for_function(
                    f"Number(document.getElementById('app').dataset.completed) >= "
                    f"{driven['jobs_done']}", timeout=120_000)
                catch_up = time.perf_counter() - t_stop
                busy = after["TaskDuration"] - before["TaskDuration"]
                report["feed"] = {
                    "target_transitions_per_s": args.rate,
                    "transitions_per_s": round(server_done / driven["seconds"], 1),
                    "seconds": round(driven["seconds"], 2),
                    "page_main_thread_busy": round(busy / (wall1 - wall0), 4),
                    "page_script_s": round(after["ScriptDuration"]
                                           - before["ScriptDuration"], 3),
                    "page_layout_s": round(after["LayoutDuration"] - before["LayoutDuration"]
                                           + after["RecalcStyleDuration"]
                                           - before["RecalcStyleDuration"], 3),
                    "longest_task_ms": round(page.evaluate("window.__longest"), 1),
                    "renders": page.evaluate("window.__renders"),
                    "catch_up_s": round(catch_up, 3),
                    "page_done": int(page.eval_on_selector("#app", "el => el.dataset.done")),
                    "server_done_jobs": driven["jobs_done"],
                    "resyncs": int(page.eval_on_selector(
                        "#app", "el => el.dataset.resyncs || '0'")),
                }
                report["page_errors"] = errors
                browser.close()
            report["machine"] = {"cpus": os.cpu_count()}
            return report
        finally:
            stop_server(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=2000, help="transitions/s on the feed")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(bench(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
