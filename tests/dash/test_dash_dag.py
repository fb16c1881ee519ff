"""The DAG view (torc_net/dash/static/dag.js) in a real headless Chromium, against a real
in-process server.

The page is tests/dash/dag_page.html, put (``set_content``) into a document the server itself
served (``/ping``: a page fulfilled by Playwright counts as a public origin, and Chromium's
local network access checks then refuse its websocket to 127.0.0.1). dag.js and dag.css come
from the package's static directory through Playwright's request interception, so the module
is tested on its own; its fetches and the websocket feed go to the real server.
Chromium runs in a worker thread (Playwright's sync API would block the trio loop the server
runs in).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from dash_helpers import chromium_path

from torc_net.api_dag import pattern_of
from torc_net.http import HttpConnectionPool
from torc_net.server import Running

STATIC = Path(__file__).resolve().parents[2] / "torc_net" / "dash" / "static"
PAGE = Path(__file__).with_name("dag_page.html")
#: dag.js's fallback colours (the test page has no dash.css), as computed styles
COMPLETED_RGB = "rgb(58, 157, 93)"
X = "\u00d7"  # the multiplication sign of "pattern xN"
DISABLED_RGB = "rgb(217, 217, 217)"
#: Names and patterns that dag.js's patternOf must agree on with the server's pattern_of.
NAMES = ["work_007", "train_lr0.1_bs32", "v1.2.3", "prep", "job1.", "a.5", "x\u0661\u0662", "", "3",
         "stage2_part10_of_12", "ümlaut_09", "1.2.3.4", "a..1", "0x1F", "run-5-of-10",
         "\U0001d7d8\U0001d7d9_7", "tab\t9"]




def _browse(port: int, fn: Callable[[Any], Any], allow: str | None = None) -> Any:
    """Open the test page on the server's origin and run ``fn(page)``; page errors and console
    errors (but those matching ``allow``) fail the test."""
    executable = chromium_path()
    from playwright.sync_api import Route, sync_playwright

    origin = f"http://127.0.0.1:{port}"

    def serve_static(route: Route) -> None:
        name = route.request.url.split("?", 1)[0].rsplit("/", 1)[-1]
        path = STATIC / name
        kind = {"js": "text/javascript", "css": "text/css"}[path.suffix[1:]]
        route.fulfill(status=200, content_type=kind, body=path.read_bytes())

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.route(re.compile(r"/dash/static/(dag\.js|dag\.css|statuses\.js)(\?.*)?$"),
                       serve_static)
            page.goto(f"{origin}/torc-service/v1/ping")
            page.set_content(PAGE.read_text(encoding="utf-8"))
            page.wait_for_function("window.pageReady === true")
            result = fn(page)
            assert [e for e in errors if not (allow and re.search(allow, e))] == []
            return result
        finally:
            browser.close()


async def browse(server: Running, fn: Callable[[Any], Any], allow: str | None = None) -> Any:
    return await trio.to_thread.run_sync(partial(_browse, server.port, fn, allow))


# Fixtures of tests/conftest.py by name only: tests/dash/conftest.py (the dashboard pages'
# tests) has its own `server`, and `from conftest import ...` would find that one.
@pytest.fixture
async def server(start_inprocess: Callable[..., Any]) -> Running:
    return await start_inprocess()  # type: ignore[no-any-return]


@pytest.fixture
async def api(server: Running) -> Any:
    pool = HttpConnectionPool(f"http://127.0.0.1:{server.port}/torc-service/v1")
    yield pool
    await pool.aclose()


async def call(api: HttpConnectionPool, method: str, path: str, body: Any = None,
               status: int = 200) -> Any:
    with trio.fail_after(60):
        resp = await api.request(method, path, json_body=body)
    assert resp.status == status, (method, path, resp.status, resp.body)
    return json.loads(resp.body)


async def create(api: HttpConnectionPool, spec: dict[str, Any]) -> dict[str, int]:
    """Create; answer job name -> job id."""
    wf = (await call(api, "POST", "/workflows", {"spec": spec}, status=201))["id"]
    dag = await call(api, "GET", f"/workflows/{wf}/dag?max_nodes=5000")
    ids = {n["name"]: n["job_id"] for n in dag["nodes"] if n["kind"] == "job"}
    ids["_workflow"] = wf
    return ids


MIXED = {"name": "mixed", "jobs": [
    {"name": "prep", "command": "true"},
    # 20 of one pattern in one layer: a collapsed cluster
    {"name": "work_{i}", "command": "echo {i}", "depends_on": ["prep"],
     "parameters": {"i": "1:20"}},
    # 2 of one pattern: an expanded cluster
    {"name": "side_{i}", "command": "echo {i}", "depends_on": ["prep"],
     "parameters": {"i": "1:2"}},
    # every fan_in waits for every work: 20 x 4 >= 64, through a barrier
    {"name": "fanin_{i}", "command": "echo {i}", "depends_on_regexes": ["work_.*"],
     "parameters": {"i": "1:4"}},
    {"name": "last", "command": "true", "depends_on": ["side_1", "side_2"]},
]}


def _fill(page: Any, job_id: int) -> str:
    return str(page.evaluate(
        "(id) => getComputedStyle(document.querySelector(`[data-job='${id}'] rect`)).fill",
        job_id))


async def test_graph_view(server: Running, api: HttpConnectionPool) -> None:
    ids = await create(api, MIXED)
    wf = ids["_workflow"]

    def check(page: Any) -> None:
        assert page.evaluate("(id) => mount(id)", wf)["mode"] == "graph"
        count = "(sel) => document.querySelectorAll(sel).length"
        # prep, side_1, side_2, fanin_1..4, last drawn; work_* as one collapsed group.
        assert page.evaluate(count, "svg g.dag-job") == 8
        assert page.evaluate(count, "svg g.dag-group") == 1
        assert page.evaluate(count, "svg g.dag-barrier") == 1
        # side_{} (2) and fanin_{} (4): small clusters, drawn expanded in a frame
        assert page.evaluate(count, "svg g.dag-frame") == 2
        assert f"work_{{}} {X}20" in page.text_content("svg g.dag-group text")
        assert page.evaluate(count, "svg .dag-edges path") == 1
        # Every job has its name as a tooltip.
        titles = page.evaluate("() => [...document.querySelectorAll('g.dag-job > title')]"
                               ".map((t) => t.textContent)")
        assert "prep (ready)" in titles and "last (blocked)" in titles
        # Clicking a job node selects it.
        page.click(f"[data-job='{ids['last']}']")
        assert page.evaluate("() => window.selected") == [ids["last"]]
        # update() recolours what it names: a drawn node, a collapsed group's bar.
        assert _fill(page, ids["prep"]) != COMPLETED_RGB
        page.evaluate("(c) => handle.update(c)", [[ids["prep"], "completed"],
                                                  [ids["work_3"], "completed"],
                                                  [ids["work_4"], "completed"]])
        assert _fill(page, ids["prep"]) == COMPLETED_RGB
        bar = page.evaluate("() => [...document.querySelectorAll('g.dag-group .dag-bar rect')]"
                            ".map((r) => [r.dataset.status, +r.getAttribute('width')])")
        assert [s for s, _ in bar] == ["blocked", "completed"]
        assert bar[1][1] * 10 == pytest.approx(bar[0][1] + bar[1][1])  # 2 of 20
        assert "completed 2" in page.text_content("svg g.dag-group title")
        # Expand the group: its 20 jobs are drawn, with the statuses update() gave them.
        work = page.get_attribute("svg g.dag-group", "data-cluster")
        page.click("svg g.dag-group")
        assert page.evaluate(count, "svg g.dag-job") == 28
        assert page.evaluate(count, "svg g.dag-group") == 0
        assert _fill(page, ids["work_3"]) == COMPLETED_RGB
        assert _fill(page, ids["work_5"]) != COMPLETED_RGB
        page.click(f"[data-job='{ids['work_5']}']")
        assert page.evaluate("() => window.selected") == [ids["last"], ids["work_5"]]
        assert page.evaluate(count, "svg g.dag-frame") == 3
        # ... and collapse it again with its frame's button.
        page.click(f"svg .dag-toggle[data-cluster='{work}']")
        assert page.evaluate(count, "svg g.dag-job") == 8
        assert page.evaluate(count, "svg g.dag-group") == 1
        # Expand all and collapse all
        page.click("text=Expand all")
        assert page.evaluate(count, "svg g.dag-job") == 28
        page.click("text=Collapse all")
        assert page.evaluate(count, "svg g.dag-job") == 2  # prep, last
        assert page.evaluate(count, "svg g.dag-group") == 3
        page.evaluate("() => handle.destroy()")
        assert page.evaluate(count, "#dag *") == 0
        # The pattern rule is the server's.
        assert page.evaluate("(names) => names.map(dagModule.patternOf)", NAMES) == \
            [pattern_of(n) for n in NAMES]

    await browse(server, check)


async def test_pan_and_zoom_change_the_view_box(server: Running, api: HttpConnectionPool) -> None:
    ids = await create(api, MIXED)

    def check(page: Any) -> None:
        page.evaluate("(id) => mount(id)", ids["_workflow"])
        box = "() => document.querySelector('svg.dag-svg').getAttribute('viewBox')"
        before = [float(x) for x in page.evaluate(box).split()]
        page.mouse.move(600, 500)
        page.mouse.wheel(0, -400)  # zoom in about the pointer
        zoomed = [float(x) for x in page.evaluate(box).split()]
        assert zoomed[2] < before[2] and zoomed[3] < before[3]
        page.mouse.move(600, 500)
        page.mouse.down()
        page.mouse.move(700, 520, steps=5)
        page.mouse.up()
        panned = [float(x) for x in page.evaluate(box).split()]
        assert panned[2:] == zoomed[2:] and panned[0] < zoomed[0] and panned[1] < zoomed[1]
        assert page.evaluate("() => window.selected") == []  # a drag is no click

    await browse(server, check)


def _wide_spec(n: int) -> dict[str, Any]:
    """n jobs whose names share no pattern (letters only), each waiting for one or two
    earlier ones (a tree-like graph, ~7 layers, the widest ~2/3 of the jobs): n nodes drawn
    one by one."""
    def name(i: int) -> str:
        s = ""
        while True:
            s = chr(ord("a") + i % 26) + s
            i //= 26
            if not i:
                return "job_" + s
    jobs: list[dict[str, Any]] = []
    for i in range(n):
        deps = sorted({name(j) for j in ((i - 1) // 3, (i - 1) // 5) if 0 <= j < i})
        jobs.append({"name": name(i), "command": "true", **({"depends_on": deps} if deps
                                                             else {})})
    return {"name": f"wide{n}", "jobs": jobs}


async def test_thousands_of_nodes(server: Running, api: HttpConnectionPool) -> None:
    """3,000 and 5,000 nodes lay out and draw without errors (the times are printed: see
    the report in the commit, not an assertion)."""
    workflows = {n: (await create(api, _wide_spec(n)))["_workflow"] for n in (3000, 5000)}

    def check(page: Any) -> dict[int, Any]:
        times = {}
        for n, wf in workflows.items():
            times[n] = page.evaluate("([id, m]) => mount(id, m)", [wf, 5000])
            assert times[n]["mode"] == "graph"
            assert page.evaluate("() => document.querySelectorAll('g.dag-job').length") == n
            # zoomed to fit: far out, labels hidden
            assert page.evaluate("() => document.querySelector('svg.dag-svg')"
                                 ".classList.contains('dag-far')")
            page.evaluate("() => handle.update(Array.from(document.querySelectorAll("
                          "'g.dag-job'), (g) => [+g.dataset.job, 'completed']))")
            first = int(page.evaluate("() => document.querySelector('g.dag-job').dataset.job"))
            assert _fill(page, first) == COMPLETED_RGB
        return times

    times = await browse(server, check)
    print(f"\ndag.js mount (fetch+layout+draw) / until painted, ms: {times}")


async def test_summary_view_and_live_update(server: Running, api: HttpConnectionPool) -> None:
    spec = {"name": "fan", "jobs": [
        {"name": "prep", "command": "true"},
        {"name": "up_{i}", "command": "echo {i}", "depends_on": ["prep"],
         "parameters": {"i": "1:8"}},
        {"name": "down_{i}", "command": "echo {i}", "depends_on_regexes": ["up_.*"],
         "parameters": {"i": "1:8"}},
    ]}
    ids = await create(api, spec)
    wf = ids["_workflow"]

    def check(page: Any) -> None:
        assert page.evaluate("([id, m]) => mount(id, m)", [wf, 5])["mode"] == "summary"
        patterns = page.evaluate("() => [...document.querySelectorAll('g.dag-pattern')]"
                                 ".map((g) => g.dataset.pattern)")
        assert patterns == ["prep", "up_{}", "down_{}"]
        assert page.evaluate("() => document.querySelectorAll('.dag-edges path').length") == 1
        title = "() => document.querySelector(\"g[data-pattern='down_{}'] title\").textContent"
        assert page.evaluate(title) == f"down_{{}} {X}8: blocked 8"
        # A real change, heard through the real feed, moves one job in its pattern's counts.
        page.evaluate("(id) => follow(id)", wf)
        page.evaluate("(path) => fetch(path, {method: 'POST', body: '{}', headers: "
                      "{'Content-Type': 'application/json'}}).then((r) => r.status)",
                      f"/torc-service/v1/workflows/{wf}/jobs/{ids['down_3']}/disable")
        page.wait_for_function(f"({title})().includes('disabled 1')")
        assert page.evaluate(title) == f"down_{{}} {X}8: blocked 7, disabled 1"
        bar = page.evaluate("() => [...document.querySelectorAll(\"g[data-pattern='down_{}'] "
                            ".dag-bar rect\")].map((r) => getComputedStyle(r).fill)")
        assert DISABLED_RGB in bar
        # Entries without name and old status say too little for a summary: ignored.
        page.evaluate(f"() => handle.update([[{ids['down_4']}, 'completed']])")
        assert page.evaluate(title) == f"down_{{}} {X}8: blocked 7, disabled 1"

    await browse(server, check)


async def test_mount_fails_cleanly(server: Running, api: HttpConnectionPool) -> None:
    def check(page: Any) -> str:
        return str(page.evaluate("() => mount(999999).then(() => 'mounted', (e) => e.message)"))

    message = await browse(server, check, allow=r"status of 404")
    assert message.startswith("404: no workflow 999999"), message
