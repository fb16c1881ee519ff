"""Where runners find the server: ``serve --advertise-url`` and what GET /version says of it,
and ``serve --url-file`` (written whole, rewritten on every start).

Real servers on port 0: in this process for what /version answers, as ``python -m
torc_net.server`` for the flags, the printed lines and restarts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Api, ServerProcess

from torc_net.server import Running
from torc_net.url_file import UrlFileError, read_url_file, write_url_file

API = "/torc-service/v1"


async def _version(port: int) -> dict[str, Any]:
    api = Api(port)
    try:
        return await api.ok("GET", "/version")  # type: ignore[no-any-return]
    finally:
        await api.aclose()


async def test_version_url_of_a_loopback_server(
        start_inprocess: Callable[..., Awaitable[Running]]) -> None:
    running = await start_inprocess(host="127.0.0.1")
    about = await _version(running.port)
    assert about["url"] == f"http://127.0.0.1:{running.port}{API}"
    assert about["url_file"] is None
    assert about["version"] and about["api"] == "v1"


async def test_version_url_of_a_wildcard_server_is_the_host_name(
        start_inprocess: Callable[..., Awaitable[Running]]) -> None:
    running = await start_inprocess(host="0.0.0.0")
    about = await _version(running.port)
    assert about["url"] == f"http://{socket.gethostname()}:{running.port}{API}"


async def test_version_url_is_the_advertised_one(
        start_inprocess: Callable[..., Awaitable[Running]], tmp_path: Path) -> None:
    url_file = tmp_path / "server.url"
    running = await start_inprocess(host="127.0.0.1",
                                    advertise_url=f"http://torc-head:8085{API}",
                                    url_file=str(url_file))
    about = await _version(running.port)
    assert about == {"version": about["version"], "api": "v1",
                     "url": f"http://torc-head:8085{API}", "url_file": str(url_file)}
    assert url_file.read_text() == f"http://torc-head:8085{API}\n"


async def test_serve_prints_and_writes_the_advertised_url(
        start_server: Callable[..., Awaitable[ServerProcess]], tmp_path: Path) -> None:
    url_file = tmp_path / "shared" / "torc.url"
    url_file.parent.mkdir()
    first = await start_server("--database", str(tmp_path / "torc.db"), "--host", "127.0.0.1",
                               "--url-file", str(url_file))
    url = f"http://127.0.0.1:{first.port}{API}"
    _, line = await first.wait_line("export TORC_API_URL=")
    assert line == f"export TORC_API_URL={url}"
    assert (await first.wait_line("dashboard: "))[1] == f"dashboard: http://127.0.0.1:{first.port}/"
    assert read_url_file(url_file) == url
    assert (await _version(first.port))["url_file"] == str(url_file)
    # Held open across the restart: a reader of the old file reads all of it, never a mix.
    with open(url_file) as old:  # noqa: ASYNC230 -- a tiny local file, on purpose
        inode = os.stat(url_file).st_ino
        assert await first.stop() == 0
        assert read_url_file(url_file) == url  # left in place: it names the last server
        second = await start_server("--database", str(tmp_path / "torc.db"), "--host",
                                    "127.0.0.1", "--url-file", str(url_file),
                                    "--advertise-url", f"http://elsewhere:{7}{API}/")
        assert old.read() == url + "\n"
    assert read_url_file(url_file) == f"http://elsewhere:7{API}"
    assert os.stat(url_file).st_ino != inode  # renamed over, not rewritten in place
    assert sorted(p.name for p in url_file.parent.iterdir()) == ["torc.url"]  # no temp left
    _, line = await second.wait_line("export TORC_API_URL=")
    assert line == f"export TORC_API_URL=http://elsewhere:7{API}"


def _serve_refused(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "torc_net.server", "--port", "0",
                           "--database", str(tmp_path / "torc.db"), *flags],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)


@pytest.mark.parametrize(("flags", "says"), [
    (("--advertise-url", "http://torc-head:8085"),
     "--advertise-url 'http://torc-head:8085': expected it to end with /torc-service/v1"),
    (("--advertise-url", "torc-head:8085/torc-service/v1"),
     "--advertise-url 'torc-head:8085/torc-service/v1': expected http://HOST:PORT/"),
    (("--url-file", "no/such/folder/torc.url"), "--url-file {tmp}/no/such/folder/torc.url: "
                                                "no folder {tmp}/no/such/folder"),
    (("--url-file", "."), "--url-file {tmp}: is a folder"),
])
def test_bad_advertise_flags_are_refused_before_anything_starts(
        tmp_path: Path, flags: tuple[str, ...], says: str) -> None:
    done = _serve_refused(tmp_path, *flags)
    assert done.returncode != 0
    assert done.stdout == ""  # never listened
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(says.format(tmp=tmp_path)), done.stderr
    assert not (tmp_path / "torc.db").exists()


def test_url_file_writes_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "torc.url"
    write_url_file(target, f"http://a:1{API}")
    assert target.read_text() == f"http://a:1{API}\n"
    (tmp_path / "ro").mkdir()
    with pytest.raises(UrlFileError, match=r"--url-file .*/gone/torc.url: cannot write it"):
        write_url_file(tmp_path / "gone" / "torc.url", f"http://a:1{API}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro", "torc.url"]


@pytest.mark.parametrize(("content", "says"), [
    (b"", "is empty"),
    (b"hello world\n", "holds no server URL (expected http://HOST:PORT/torc-service/v1; "
                       "it starts 'hello world')"),
    (b"http://a:1/x\n", "holds no server URL (expected it to end with /torc-service/v1"),
    (f"http://a:1{API}\nhttp://b:2{API}\n".encode(), "holds no server URL (more than one line"),
    (b"\x00" * 5000, "holds no server URL (larger than 4096 bytes"),
])
def test_url_file_with_garbage_is_named(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "torc.url"
    path.write_bytes(content)
    with pytest.raises(UrlFileError) as raised:
        read_url_file(path)
    message = str(raised.value)
    assert message.startswith(f"TORC_API_URL_FILE {path}: {says}"), message
    assert "\n" not in message


def test_url_file_unreadable_is_named(tmp_path: Path) -> None:
    with pytest.raises(UrlFileError, match=r"^TORC_API_URL_FILE .*/none: cannot read it: "
                                           r"No such file or directory$"):
        read_url_file(tmp_path / "none")
    with pytest.raises(UrlFileError, match=r"^TORC_API_URL_FILE .*: cannot read it: "
                                           r"Is a directory$"):
        read_url_file(tmp_path)
