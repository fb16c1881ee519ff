"""`torc-trio serve` and `torc-trio completions` through the real command: Torc's flags, the
lines a server prints, its pid file and signals, Torc's default port, and shell completion
(the script, and completion round trips as a shell does them)."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import TORC, clean_env, port_free, torc

from torc_net.config import TORC_FLAGS_WITHOUT_EFFECT


class Serve:
    """`torc-trio serve ARGS` in the background: its stdout lines as they come, its stderr in a
    file."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.stderr_path = cwd / f"serve-{len(list(cwd.glob('serve-*.err')))}.err"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*TORC, "serve", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=err, text=True,
                env=env or clean_env(PYTHONUNBUFFERED="1"))
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def line(self, prefix: str, timeout_s: float = 60) -> str:
        """The next stdout line starting with ``prefix`` (earlier ones are kept in lines)."""
        while True:
            try:
                line = self._queue.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} line within {timeout_s} s: "
                                     f"{self.lines}\n{self.stderr()}") from None
            if line is None:
                raise AssertionError(f"serve ended (exit {self.proc.wait()}) before a {prefix!r} "
                                     f"line: {self.lines}\n{self.stderr()}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def port(self) -> int:
        return int(self.line("TORC_SERVER_PORT=").split("=", 1)[1])

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self) -> int:
        """SIGTERM, and the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def serves() -> Iterator[list[Serve]]:
    """Servers a test started, killed at its end whatever happened."""
    started: list[Serve] = []
    yield started
    for s in started:
        s.kill()


def _serve(serves: list[Serve], cwd: Path, *args: str, env: dict[str, str] | None = None) \
        -> Serve:
    s = Serve(cwd, *args, env=env)
    serves.append(s)
    return s


# ---------------------------------------------------------------------------------------------
# Flags and printed lines


def test_serve_prints_its_port_then_the_line_to_export(tmp_path: Path,
                                                       serves: list[Serve]) -> None:
    s = _serve(serves, tmp_path, "--database", "torc.db", "--host", "127.0.0.1", "--port", "0")
    port = s.port()
    export = s.line("export ")
    assert s.lines == [f"TORC_SERVER_PORT={port}", export]  # the port line first, unchanged
    assert export == f"export TORC_API_URL=http://127.0.0.1:{port}/torc-service/v1"
    # The line works as printed: a client given that URL reaches this server.
    url = export.split("=", 1)[1]
    ping = torc(tmp_path, "--url", url, "ping")
    assert ping.returncode == 0, ping.stderr
    assert s.stop() == 0


def test_torcs_flags_that_change_nothing_say_why_and_the_server_runs(
        tmp_path: Path, serves: list[Serve]) -> None:
    s = _serve(serves, tmp_path, "-d", ":memory:", "-H", "127.0.0.1", "-p", "0", "-t", "2",
               "-l", "warn", "-c", "5", "--enforce-access-control",
               "--log-dir", str(tmp_path / "logs"), "--json-logs", "--daemon",
               "--credential-cache-ttl-secs", "0",
               env=clean_env(TORC_SERVER_SNAPSHOT_PATH=str(tmp_path / "snap.db")))
    port = s.port()
    assert torc(tmp_path, "--url", f"http://127.0.0.1:{port}/torc-service/v1",
                "ping").returncode == 0
    assert s.stop() == 0
    notes = [line for line in s.stderr().splitlines() if line.startswith("torc-trio serve: ")]
    assert notes == [f"torc-trio serve: {flag}: {why}"
                     for flag, why in TORC_FLAGS_WITHOUT_EFFECT.values()]
    assert not (tmp_path / "logs").exists()
    # Torc's --https does something here: HTTPS, with the certificate it needs.
    refused = torc(tmp_path, "serve", "-p", "0", "--https")
    assert refused.returncode != 0
    assert "--https needs --tls-cert PEM and --tls-key PEM" in refused.stderr


def test_serve_help_shows_torcs_flags_and_port(tmp_path: Path) -> None:
    out = torc(tmp_path, "serve", "--help", check=True).stdout
    for flag in ("-H HOST, --host HOST", "-u HOST, --url HOST", "-p PORT, --port PORT",
                 "-t THREADS, --threads THREADS", "-d PATH, --database PATH",
                 "-l LEVEL, --log-level LEVEL", "--auth-file", "--require-auth",
                 "--credential-cache-ttl-secs", "--admin-user", "--pid-file",
                 "-c S, --completion-check-interval-secs S", "--https",
                 "--enforce-access-control", "--log-dir", "--json-logs", "--daemon"):
        assert flag in out, flag
    assert "default: 8080" in out
    assert "8085" not in out
    assert "export TORC_API_URL=http://HOST:PORT/torc-service/v1" in out


@pytest.mark.alone  # holds port 8080 (see tests/conftest.py)
def test_default_port_is_torcs_8080(tmp_path: Path, serves: list[Serve]) -> None:
    if not port_free(8080):
        pytest.skip("port 8080 is in use here: serve without --port needs it free")
    s = _serve(serves, tmp_path, "-d", ":memory:",
               env=clean_env(TORC_SERVER_SNAPSHOT_PATH=str(tmp_path / "snap.db")))
    try:
        port = s.port()
    except AssertionError:
        if "address already in use" in s.stderr().lower():
            pytest.skip("port 8080 was taken between the check and the start")
        raise
    assert port == 8080
    assert s.line("export ") == "export TORC_API_URL=http://127.0.0.1:8080/torc-service/v1"
    assert s.stop() == 0


# ---------------------------------------------------------------------------------------------
# The pid file


def test_pid_file_signals_and_refuses_a_second_server(tmp_path: Path,
                                                      serves: list[Serve]) -> None:
    """`kill -USR1 $(cat torc.pid)` snapshots that server (not every server on the machine);
    a second server with the same pid file is refused, naming the first's pid; at a clean
    exit the file goes."""
    pid_file = tmp_path / "torc.pid"
    snapshot = tmp_path / "snaps" / "torc.db"
    env = clean_env(PYTHONUNBUFFERED="1", TORC_SERVER_SNAPSHOT_PATH=str(snapshot))
    s = _serve(serves, tmp_path, "-d", ":memory:", "--host", "127.0.0.1", "--port", "0",
               "--pid-file", "torc.pid", env=env)
    s.port()  # listening: the pid file is there
    pid = int(pid_file.read_text())
    assert pid == s.proc.pid
    assert pid_file.read_text() == f"{pid}\n"

    os.kill(pid, signal.SIGUSR1)
    assert s.line("TORC_SNAPSHOT_DONE=") == f"TORC_SNAPSHOT_DONE={snapshot}"
    assert snapshot.is_file()

    second = torc(tmp_path, "serve", "-d", ":memory:", "--host", "127.0.0.1", "--port", "0",
                  "--pid-file", str(pid_file), timeout=60, env=env)
    assert second.returncode == 2, second.stderr
    assert f"the torc-trio server with pid {pid} is running" in second.stderr
    assert "TORC_SERVER_PORT=" not in second.stdout
    assert pid_file.read_text() == f"{pid}\n"  # untouched

    assert s.stop() == 0
    assert not pid_file.exists()


def test_stale_pid_file_is_replaced(tmp_path: Path, serves: list[Serve]) -> None:
    pid_file = tmp_path / "torc.pid"
    other = subprocess.Popen(["sleep", "300"])  # a live process, but no torc-trio server
    try:
        pid_file.write_text(f"{other.pid}\n")
        s = _serve(serves, tmp_path, "--database", "torc.db", "--host", "127.0.0.1",
                   "--port", "0", "--pid-file", str(pid_file))
        s.port()
        assert pid_file.read_text() == f"{s.proc.pid}\n"
        assert s.stop() == 0
        assert not pid_file.exists()
    finally:
        other.kill()
        other.wait()


def test_a_pid_file_that_holds_no_pid_is_not_overwritten(tmp_path: Path) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes\n")
    refused = torc(tmp_path, "serve", "--database", "torc.db", "--host", "127.0.0.1",
                   "--port", "0", "--pid-file", "notes.txt", timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "holds no pid: not overwriting it" in refused.stderr
    assert precious.read_text() == "my notes\n"
    assert not (tmp_path / "torc.db").exists()  # refused before anything was made


# ---------------------------------------------------------------------------------------------
# Shell completion


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completions_prints_a_script(tmp_path: Path, shell: str) -> None:
    proc = torc(tmp_path, "completions", shell)
    assert proc.returncode == 0, proc.stderr
    assert "torc-trio" in proc.stdout
    assert "_ARGCOMPLETE" in proc.stdout
    if shell == "bash" and shutil.which("bash"):
        syntax = subprocess.run(["bash", "-n"], input=proc.stdout, text=True,
                                capture_output=True)
        assert syntax.returncode == 0, syntax.stderr


COMPLETING = """\
#!{python}
# What `torc-trio` does once the CLI calls autocomplete(parser) before parsing.
from torc_cli.cli import build_parser
from torc_cli.commands import COMMANDS, GROUPS
from torc_cli.commands.completion import autocomplete

autocomplete(build_parser(COMMANDS, GROUPS))
raise SystemExit("not a completion request")
"""


def _bash_complete(tmp_path: Path, line: str, path_dir: Path) -> list[str]:
    """What bash offers for ``line``: the script of `completions bash` sourced, its function
    called as bash calls it on TAB, with ``torc-trio`` found in ``path_dir``."""
    script = tmp_path / "torc-trio.bash"
    script.write_text(torc(tmp_path, "completions", "bash", check=True).stdout)
    words = line.split(" ")
    driver = (
        f"source {script}\n"
        f"COMP_LINE='{line}'; COMP_POINT={len(line)}; COMP_TYPE=9\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        f"_python_argcomplete torc-trio '{words[-1]}' '{words[-2]}'\n"
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    env = clean_env(PATH=f"{path_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", driver], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [w.strip() for w in proc.stdout.splitlines() if w.strip()]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_commands_and_options(tmp_path: Path) -> None:
    """The script and the completion module, end to end in a real bash; ``torc-trio`` here is
    a stand-in that calls autocomplete(parser) as the CLI is to (see the next test)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "torc-trio"
    stand_in.write_text(COMPLETING.format(python=sys.executable))
    stand_in.chmod(0o755)
    assert _bash_complete(tmp_path, "torc-trio wor", bin_dir) == ["workflows"]
    assert _bash_complete(tmp_path, "torc-trio serve --pid", bin_dir) == ["--pid-file"]
    assert "--completion-check-interval-secs" in _bash_complete(tmp_path, "torc-trio serve --",
                                                                 bin_dir)
    assert _bash_complete(tmp_path, "torc-trio completions z", bin_dir) == ["zsh"]
    listed = _bash_complete(tmp_path, "torc-trio workflows ", bin_dir)
    assert {"create", "list", "status"} <= set(listed)


def _console_script() -> str:
    beside = Path(sys.executable).with_name("torc-trio")
    return str(beside) if beside.exists() else (shutil.which("torc-trio") or "torc-trio")


def test_the_console_script_completes(tmp_path: Path) -> None:
    """A completion request as the script of `completions bash` makes it (argcomplete's
    protocol: _ARGCOMPLETE, COMP_LINE, COMP_POINT; the answer in _ARGCOMPLETE_STDOUT_FILENAME)."""
    answer = tmp_path / "answer"
    env = clean_env(_ARGCOMPLETE="1", _ARGCOMPLETE_SHELL="bash", COMP_LINE="torc-trio wor",
                    COMP_POINT="13", _ARGCOMPLETE_STDOUT_FILENAME=str(answer))
    proc = subprocess.run([_console_script()], cwd=tmp_path, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert answer.exists(), f"no completions written (exit {proc.returncode})"
    assert [w.strip() for w in answer.read_text().split("\x0b")] == ["workflows"]
    assert proc.returncode == 0
