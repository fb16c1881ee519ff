"""Every example of docs/python.md runs as written, and so does every script in
examples/python/.

The doc's ```python blocks run in order, each as a script of its own, in one fresh
directory; a block whose first line is ``# file: NAME.py`` is written to NAME.py instead (a
module the later blocks import). A block that reads ``TORC_API_URL`` gets a real server's
URL there; the others run with none set (standalone)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "python.md"
EXAMPLES = REPO / "examples" / "python"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def env(url: str | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items()
           if k not in ("TORC_API_URL", "TORC_USERNAME", "TORC_PASSWORD")}
    if url is not None:
        out["TORC_API_URL"] = url
    return out


def test_the_doc_has_examples_of_each_part() -> None:
    text = "\n".join(blocks())
    for used in ("add_job", "to_spec", "from_file", "SpecError", "wf.run(", "results(",
                 "torc_trio.map(", "postprocess=", "MapError", "add_call", "connect(",
                 "watch(", "cancel(", "reset_status(", "run_async", "map_async",
                 "AsyncClient", "current_job()", "spawn_jobs"):
        assert used in text, f"docs/python.md has no example of {used}"


def test_every_docs_example_runs(tmp_path: Path, server_url: str) -> None:
    for k, code in enumerate(blocks()):
        first = code.splitlines()[0]
        if first.startswith("# file: "):
            (tmp_path / first.removeprefix("# file: ").strip()).write_text(code)
            continue
        script = tmp_path / f"example_{k}.py"
        script.write_text(code)
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
            timeout=180, env=env(server_url if "TORC_API_URL" in code else None),
            stdin=subprocess.DEVNULL, check=False)
        assert proc.returncode == 0, (
            f"docs/python.md example {k} failed (exit {proc.returncode}):\n{code}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr[-4000:]}")


@pytest.mark.parametrize(("script", "expected"), [
    ("sweep.py", "best point: lr=0.01 batch_size=64"),
    ("map_stats.py", "pi ~ 3.1"),
    ("optimize.py", "converged after"),
])
def test_every_example_script_runs(script: str, expected: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env(None),
                          stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, f"{script}: exit {proc.returncode}\n{proc.stderr[-4000:]}"
    assert expected in proc.stdout, proc.stdout
