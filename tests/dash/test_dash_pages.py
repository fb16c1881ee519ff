"""The dashboard in a real browser, through a real server and real runs.

What a user does: opens the list, sees a workflow appear; opens it and watches a real
`torc-trio run` move its counts live (no reload) to the end; filters and pages a
100,000-job workflow; cancels a running workflow from the page; on a server with
--require-auth is asked for credentials and sees only their own work; reads the tail of a
job's output in the drawer; runs `torc-trio dash` on a standalone database. No console errors.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from dash_helpers import (
    TORC,
    ServerProcess,
    background,
    clean_env,
    env_for,
    page_url,
    torc,
    torc_json,
)
from playwright.sync_api import Error as PlaywrightError

pytest_plugins = ["dash_helpers"]  # the browser, tabs and web_server fixtures

SPEC_GATED = """
name: gated
description: jobs wait for a file the test writes
jobs:
  - name: gate
    command: "while [ ! -f {go} ]; do sleep 0.05; done; echo gate open"
  - name: work_{{i}}
    command: "echo work {{i}}"
    depends_on: [gate]
    parameters: {{i: "1:12"}}
  - name: last
    command: echo last
    depends_on_regexes: ["work_.*"]
"""


def create(tmp_path: Path, env: dict[str, str], text: str, name: str = "spec.yaml") -> int:
    spec = tmp_path / name
    spec.write_text(text)
    return int(torc_json(tmp_path, "create", str(spec), env=env)["id"])


def app_attr(page: Any, name: str) -> str:
    return page.eval_on_selector("#app", f"el => el.dataset.{name} || ''")


def test_list_shows_a_workflow_created_while_it_is_open(tmp_path: Path, web_server: ServerProcess,
                                                        tabs: Any) -> None:
    env = env_for(web_server)
    first = create(tmp_path, env, "name: first\njobs:\n  - name: a\n    command: 'true'\n")
    tab = tabs()
    resp = tab.open(page_url(web_server))
    assert resp.status == 200
    tab.ready()
    page = tab.page
    row = page.locator(f"tr[data-workflow-id='{first}']")
    assert row.locator("td.name a").inner_text() == "first"
    assert row.locator("a").get_attribute("href") == f"/workflows/{first}"
    # Created after the page loaded: it appears from the feed, without a reload.
    page.evaluate("window.__same_page = true")
    second = create(tmp_path, env, "name: second\njobs:\n  - {name: a, command: 'true'}\n"
                                   "  - {name: b, command: 'true'}\n", "two.yaml")
    page.wait_for_selector(f"tr[data-workflow-id='{second}'] td.jobs:text('2')")
    assert page.locator(f"tr[data-workflow-id='{second}'] td.name").inner_text() == "second"
    assert page.evaluate("window.__same_page") is True
    tab.no_errors()


def test_workflow_page_follows_a_real_run_live(tmp_path: Path, web_server: ServerProcess,
                                               tabs: Any) -> None:
    env = env_for(web_server)
    go = tmp_path / "go"
    wid = create(tmp_path, env, SPEC_GATED.format(go=go))
    tab = tabs()
    tab.open(page_url(web_server, f"/workflows/{wid}"))
    tab.ready()
    page = tab.page
    page.evaluate("window.__same_page = true")
    assert page.locator("h1").inner_text() == "gated"
    assert page.locator("#counts .count[data-status='blocked'] .n").inner_text() == "13"
    with background(tmp_path, "run", str(wid), "-j", "4", env=env) as run:
        # The gate job runs: the page hears it from the feed.
        page.wait_for_selector("#counts .count[data-status='running'] .n:text('1')")
        assert app_attr(page, "completed") == "0"
        row = page.locator("#job-table tr[data-job-id]").first
        assert row.locator(".pill").inner_text() == "running"
        go.write_text("")
        page.wait_for_function("document.getElementById('app').dataset.completed === '14'")
        page.wait_for_function("document.getElementById('app').dataset.state === 'complete'")
        run.wait(timeout=60)
        assert run.returncode == 0, run.stderr.read() if run.stderr else ""
    assert page.evaluate("window.__same_page") is True
    assert page.locator("#stat-done").inner_text().startswith("14 / 14")
    # The job table's rows changed with the feed too.
    page.wait_for_function(
        "[...document.querySelectorAll('#job-table .pill')].every(p => p.textContent === "
        "'completed')")
    tab.no_errors()


def test_filter_and_page_a_hundred_thousand_jobs(tmp_path: Path, web_server: ServerProcess,
                                                 tabs: Any) -> None:
    env = env_for(web_server)
    wid = create(tmp_path, env, """
name: big
jobs:
  - name: root
    command: "true"
  - name: job_{i}
    command: "true"
    depends_on: [root]
    parameters: {i: "1:99999"}
""")
    tab = tabs()
    tab.open(page_url(web_server, f"/workflows/{wid}"))
    tab.ready()
    page = tab.page
    jobs = page.locator("#jobs")
    assert jobs.get_attribute("data-total") == "100000"
    assert page.locator("#job-range").inner_text() == "1\u2013100 of 100,000"
    # Last page, then back one.
    page.click("#job-last")
    page.wait_for_selector("#jobs[data-offset='99900']")
    assert page.locator("#job-table tr[data-job-id]").count() == 100
    page.click("#job-prev")
    page.wait_for_selector("#jobs[data-offset='99800']")
    # Status filter: the one ready job (the root); blocked: all the others.
    page.select_option("#job-status", "ready")
    page.wait_for_selector("#jobs[data-total='1']")
    assert page.locator("#job-table tr[data-job-id] td.name").inner_text() == "root"
    page.select_option("#job-status", "blocked")
    page.wait_for_selector("#jobs[data-total='99999']")
    page.select_option("#job-page-size", "500")
    page.wait_for_function("document.querySelectorAll('#job-table tr[data-job-id]').length "
                           "=== 500")
    page.click("#job-next")
    page.wait_for_selector("#jobs[data-offset='500']")
    # Name filter (server side) combined with the status filter.
    page.fill("#job-name", "JOB_9999")
    page.wait_for_selector("#jobs[data-total='11']")  # job_9999 and job_99990..99999
    names = page.locator("#job-table tr[data-job-id] td.name").all_inner_texts()
    assert sorted(names) == sorted(["job_9999", *[f"job_{n}" for n in range(99990, 100000)]])
    # Sorting by name, descending.
    page.click("#job-table th[data-key='name']")
    page.click("#job-table th[data-key='name']")
    page.wait_for_selector("#job-table th.sorted-desc[data-key='name']")
    page.wait_for_function("document.querySelector('#job-table tr[data-job-id] td.name')"
                           ".textContent === 'job_99999'")
    tab.no_errors()


def test_cancel_from_the_page_stops_a_running_workflow(tmp_path: Path, web_server: ServerProcess,
                                                       tabs: Any) -> None:
    env = env_for(web_server)
    wid = create(tmp_path, env, """
name: long
jobs:
  - name: sleeper_{i}
    command: sleep 300
    parameters: {i: "1:2"}
  - name: after
    command: "true"
    depends_on_regexes: ["sleeper_.*"]
""")
    tab = tabs()
    tab.open(page_url(web_server, f"/workflows/{wid}"))
    tab.ready()
    page = tab.page
    with background(tmp_path, "run", str(wid), "-j", "2", env=env) as run:
        page.wait_for_selector("#counts .count[data-status='running'] .n:text('2')")
        page.click("#action-cancel")
        dialog = page.locator(".modal")
        assert "terminated" in dialog.inner_text()
        page.click(".modal [data-confirm]")
        page.wait_for_function("document.getElementById('app').dataset.state === 'canceled'")
        run.wait(timeout=90)
    status = torc_json(tmp_path, "status", str(wid), env=env)
    assert status["is_canceled"] is True
    assert status["counts"]["completed"] == 0
    tab.no_errors()


def test_a_page_dropped_by_the_feed_resynchronises(tmp_path: Path, tabs: Any) -> None:
    """A subscriber that falls behind is dropped (here: a queue of 4 messages, while a run of
    300 jobs publishes hundreds per commit); the page reconnects, takes the counts the new
    connection starts with, and ends right."""
    db = tmp_path / "torc.db"
    srv = ServerProcess(db, flags=["--database", str(db), "--host", "127.0.0.1", "--port", "0",
                                   "--feed-queue-size", "4"])
    try:
        env = env_for(srv)
        wid = create(tmp_path, env, """
name: burst
jobs:
  - name: job_{i}
    command: "true"
    parameters: {i: "1:300"}
""")
        tab = tabs()
        tab.open(page_url(srv, f"/workflows/{wid}"))
        tab.ready()
        page = tab.page
        page.wait_for_selector("#conn[data-state='live']")
        page.evaluate("window.__same_page = true")
        assert torc(tmp_path, "run", str(wid), "-j", "8", env=env).returncode == 0
        page.wait_for_function("document.getElementById('app').dataset.completed === '300'")
        page.wait_for_function("document.getElementById('app').dataset.state === 'complete'")
        assert int(app_attr(page, "resyncs")) >= 1
        assert page.evaluate("window.__same_page") is True
        assert page.locator("#counts .count[data-status='ready'] .n").inner_text() == "0"
        tab.no_errors()
    finally:
        srv.stop()


def _htpasswd(path: Path, users: dict[str, str]) -> Path:
    path.write_text("".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)).decode()}\n"
                            for u, p in users.items()))
    return path


def test_require_auth_asks_for_credentials_and_bob_sees_nothing_of_alices(
        tmp_path: Path, tabs: Any) -> None:
    users = _htpasswd(tmp_path / "htpasswd", {"alice": "apw", "bob": "bpw"})
    db = tmp_path / "torc.db"
    srv = ServerProcess(db, flags=["--database", str(db), "--host", "127.0.0.1", "--port", "0",
                                   "--auth-file", str(users), "--require-auth"])
    try:
        alice_env = env_for(srv, TORC_USERNAME="alice", TORC_PASSWORD="apw")
        wid = create(tmp_path, alice_env, "name: secret-of-alice\njobs:\n"
                                          "  - {name: a, command: 'true'}\n")
        # No credentials: the browser is challenged (a headless one has nothing to answer with
        # and gives up), and what the server sent names the scheme and nothing of the list.
        anon = tabs()
        challenges: list[Any] = []
        anon.page.on("response", lambda r: challenges.append(r))
        with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            anon.open(page_url(srv))
        assert challenges and challenges[0].status == 401
        assert challenges[0].headers["www-authenticate"].startswith("Basic")
        assert "secret-of-alice" not in challenges[0].text()
        for path in ("/", f"/workflows/{wid}", "/login"):
            assert anon.context.request.get(page_url(srv, path)).status == 401
        # Wrong password: the browser's answer to the challenge is refused again.
        wrong = tabs(("alice", "nope"))
        try:
            assert wrong.open(page_url(srv)).status == 401
        except PlaywrightError as exc:
            assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
        assert "secret-of-alice" not in wrong.page.content()
        # Bob: an empty list (the feed's counts do not mention alice's workflow either),
        # and her workflow's page is forbidden.
        bob = tabs(("bob", "bpw"))
        assert bob.open(page_url(srv)).status == 200
        bob.ready()
        bob.page.wait_for_selector("#conn[data-state='live']")
        bob.page.wait_for_selector("#list-empty:not([hidden])")
        assert bob.page.locator("#workflows tbody tr").count() == 0
        assert "secret-of-alice" not in bob.page.content()
        assert bob.page.locator("#who").inner_text() == "bob"
        bob.no_errors()
        # (from here on, 403s are what the test asks for)
        assert bob.open(page_url(srv, f"/workflows/{wid}")).status == 403
        # Bob cannot act on it through the page's API either.
        refused = bob.page.evaluate(
            f"fetch('/torc-service/v1/workflows/{wid}/cancel', {{method: 'POST', "
            "body: '{}', headers: {'Content-Type': 'application/json'}}).then(r => r.status)")
        assert refused == 403
        # Alice sees it, live.
        alice = tabs(("alice", "apw"))
        assert alice.open(page_url(srv)).status == 200
        alice.ready()
        alice.page.wait_for_selector(f"tr[data-workflow-id='{wid}']")
        alice.page.wait_for_selector("#conn[data-state='live']")
        alice.open(page_url(srv, f"/workflows/{wid}"))
        alice.ready()
        alice.page.wait_for_selector("#conn[data-state='live']")
        assert alice.page.locator("h1").inner_text() == "secret-of-alice"
        alice.no_errors()
    finally:
        srv.stop()


def test_job_drawer_shows_the_tail_of_a_failed_jobs_output(tmp_path: Path,
                                                            web_server: ServerProcess,
                                                            tabs: Any) -> None:
    env = env_for(web_server)
    wid = create(tmp_path, env, """
name: tails
jobs:
  - name: ok
    command: echo all is well
  - name: broken
    command: "echo about to fail; echo 'the reason it failed' >&2; exit 3"
""")
    proc = torc(tmp_path, "run", str(wid), env=env)
    assert proc.returncode != 0  # a job failed
    jobs = {j["name"]: j["id"] for j in torc_json(tmp_path, "jobs", "list", str(wid), env=env)}
    tab = tabs()
    tab.open(page_url(web_server, f"/workflows/{wid}"))
    tab.ready()
    page = tab.page
    page.click(f"#job-table tr[data-job-id='{jobs['broken']}']")
    page.wait_for_selector(f"#drawer[data-job-id='{jobs['broken']}']")
    assert page.locator("#drawer-command").inner_text().startswith("echo about to fail")
    assert page.locator("#job-results tbody tr").count() == 1
    assert "3" in page.locator("#job-results tbody tr td").nth(3).inner_text()
    assert "about to fail" in page.locator("pre.tail.stdout").inner_text()
    assert "the reason it failed" in page.locator("pre.tail.stderr").inner_text()
    # A successful job sent no tail (output_tails defaults to failed): the drawer says so.
    page.click("#drawer .close")
    page.wait_for_selector("#drawer", state="detached")
    page.click(f"#job-table tr[data-job-id='{jobs['ok']}']")
    page.wait_for_selector(f"#drawer[data-job-id='{jobs['ok']}']")
    assert page.locator("pre.tail").count() == 0
    assert "output_tails" in page.locator("#job-output").inner_text()
    tab.no_errors()


def test_dash_command_serves_a_standalone_database(tmp_path: Path, tabs: Any) -> None:
    (tmp_path / "burn.py").write_text(
        "import time\nx = bytearray(40 << 20)\nt = time.monotonic()\n"
        "while time.monotonic() - t < 1.5:\n    pass\nprint('hello from a file')\n")
    proc = torc(tmp_path, "-s", "exec", "--name", "local", "--monitor", "time-series",
                "--sample-interval-seconds", "0.2", "-c", "python3 burn.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "torc_output" / "torc.db").is_file()
    with background(tmp_path, "dash", "--port", "0", "--no-open",
                    env=clean_env(PYTHONUNBUFFERED="1")) as dash:
        assert dash.stdout is not None
        line = dash.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert match, line
        url = match.group(1)
        tab = tabs()
        tab.open(url)
        tab.ready()
        page = tab.page
        page.wait_for_selector("tr[data-workflow-id] td.name a:text-is('local')")
        page.click("tr[data-workflow-id] td.name a")
        tab.ready()
        page.wait_for_function("document.getElementById('app').dataset.state === 'complete'")
        page.click("#job-table tr[data-job-id]")
        page.wait_for_selector("#drawer[data-job-id]")
        # No tail was sent (the job succeeded); dash may read the job's own file.
        assert "hello from a file" in page.locator("pre.tail.stdout").inner_text()
        assert "read from the file" in page.locator("#job-output").inner_text()
        # Its time series (the runner's database under torc_output/resource_utilization),
        # drawn by the plotly.js of the installed plotly package.
        page.wait_for_selector("#plot .main-svg")
        assert page.locator("#plot .scatterlayer .trace").count() == 2
        tab.no_errors()
        dash.terminate()
        dash.wait(timeout=30)
    # Without a database: a clear error, nothing created.
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    proc = torc(empty, "dash", "--no-open")
    assert proc.returncode == 2
    assert "no database at torc_output/torc.db" in proc.stderr
    assert not (empty / "torc_output").exists()


def test_serve_prints_the_dashboard_url(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*TORC, "serve", "--database", str(tmp_path / "t.db"),
         "--port", "0"], stdout=subprocess.PIPE, text=True, env=clean_env(), cwd=tmp_path)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        port = lines[0].split("=", 1)[1]
        assert lines[2] == f"dashboard: http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_pages_and_assets_refuse_what_they_should(web_server: ServerProcess, tabs: Any) -> None:
    tab = tabs()
    assert tab.open(page_url(web_server, "/workflows/999")).status == 404
    assert tab.open(page_url(web_server, "/dash/static/..%2F__init__.py")).status == 404
    assert tab.open(page_url(web_server, "/dash/static/nothing.js")).status == 404
    resp = tab.open(page_url(web_server, "/dash/static/workflow.js"))
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/javascript")
    resp = tab.open(page_url(web_server, "/dash/vendor/plotly.min.js"))
    assert resp.status == 200 and len(resp.body()) > 1_000_000
