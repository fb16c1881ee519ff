"""Fixtures and helpers of the dashboard's browser tests (a plugin of the test modules, by
``pytest_plugins``: a conftest.py here would shadow tests/conftest.py's module name).

The tests drive Debian's chromium, headless, through Playwright, against a real
`torc-trio serve` (a child process on 127.0.0.1, a real SQLite file) and real runners.

Tests wait on conditions the page exposes (``#app[data-...]`` attributes it sets as it
renders), never on fixed sleeps. Every page collects its console errors and uncaught
exceptions, and any request that leaves the server (the dashboard works offline: no CDN);
:meth:`Tab.no_errors` is asserted at the end of each test.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cli"))

from cli_helpers import (
    TORC,
    ServerProcess,
    background,
    chromium_path,
    clean_env,
    torc,
    torc_json,
)

__all__ = ["TORC", "ServerProcess", "background", "chromium_path", "clean_env", "torc",
           "torc_json"]

#: Generous: a loaded CI machine; the page itself is fast (BENCHMARKS.md).
TIMEOUT_MS = 60_000




@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, headless=True)
        try:
            yield b
        finally:
            b.close()


class Tab:
    """A page with its console errors collected."""

    def __init__(self, browser: Any, credentials: tuple[str, str] | None = None) -> None:
        options: dict[str, Any] = {"viewport": {"width": 1300, "height": 900}}
        if credentials:
            options["http_credentials"] = {"username": credentials[0],
                                           "password": credentials[1]}
        self.context = browser.new_context(**options)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        # Offline by design: every request the page makes stays on this server.
        self.page.on("request", lambda r: None if urlsplit(r.url).hostname in (None, "127.0.0.1")
                     else self.errors.append(f"request off the server: {r.url}"))

    def open(self, url: str) -> Any:
        resp = self.page.goto(url)
        return resp

    def ready(self) -> None:
        self.page.wait_for_selector("#app[data-ready='1']")

    def no_errors(self) -> None:
        assert self.errors == [], self.errors

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tabs(browser: Any) -> Iterator[Any]:
    opened: list[Tab] = []

    def make(credentials: tuple[str, str] | None = None) -> Tab:
        tab = Tab(browser, credentials)
        opened.append(tab)
        return tab

    yield make
    for tab in opened:
        tab.close()


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "torc.db")
    try:
        yield srv
    finally:
        srv.stop()


def env_for(srv: ServerProcess, **extra: str) -> dict[str, str]:
    return clean_env(TORC_API_URL=srv.url, **extra)


def page_url(srv: ServerProcess, path: str = "/") -> str:
    return f"http://127.0.0.1:{srv.port}{path}"
