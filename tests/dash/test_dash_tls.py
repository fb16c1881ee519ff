"""The dashboard over HTTPS in a real Chromium: the page, its API calls and its live feed
(``wss://``, chosen from the page's own scheme) all through `serve --tls-cert --tls-key`.

The browser is told to trust exactly the server's key (``--ignore-certificate-errors-spki-list``
pins its SPKI hash: every other certificate is still verified), since the throwaway CA is in no
trust store Chromium reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dash_helpers import Tab, background, chromium_path, clean_env, torc_json
from tls_helpers import Pki, make_pki, tls_server  # dash_helpers puts tests/cli on the path

SPEC = """
name: tls-live
jobs:
  - name: gate
    command: "while [ ! -f {go} ]; do sleep 0.05; done"
  - name: after_{{i}}
    command: "echo {{i}}"
    depends_on: [gate]
    parameters: {{i: "1:4"}}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "127.0.0.1")


@pytest.fixture(scope="module")
def pinned_browser(pki: Pki) -> Iterator[Any]:
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, headless=True, args=[
            f"--ignore-certificate-errors-spki-list={pki.spki_sha256}"])
        try:
            yield b
        finally:
            b.close()


def test_the_dashboard_follows_a_run_live_over_https(tmp_path: Path, pki: Pki,
                                                     pinned_browser: Any) -> None:
    srv = tls_server(tmp_path / "torc.db", pki)
    tab = Tab(pinned_browser)
    try:
        env = clean_env(TORC_API_URL=srv.url, TORC_CA_FILE=str(pki.ca))
        go = tmp_path / "go"
        spec = tmp_path / "spec.yaml"
        spec.write_text(SPEC.format(go=go))
        wid = int(torc_json(tmp_path, "create", str(spec), env=env)["id"])
        base = f"https://127.0.0.1:{srv.port}"
        assert tab.open(f"{base}/workflows/{wid}").status == 200
        tab.ready()
        page = tab.page
        page.wait_for_selector("#conn[data-state='live']")  # the feed, over wss://
        assert page.evaluate("location.protocol") == "https:"
        with background(tmp_path, "run", str(wid), "-j", "2", env=env) as run:
            page.wait_for_selector("#counts .count[data-status='running'] .n:text('1')")
            go.write_text("")
            page.wait_for_function(
                "document.getElementById('app').dataset.state === 'complete'")
            run.wait(timeout=60)
            assert run.returncode == 0, run.stderr.read() if run.stderr else ""
        assert page.locator("#stat-done").inner_text().startswith("5 / 5")
        tab.no_errors()
    finally:
        tab.close()
        srv.stop()
