"""Command throughput: the same N shell commands through torc-trio, xargs, GNU parallel, HyperQueue.

Every tool runs the same ``commands.txt`` (default: 10,000 lines of ``true``) with the same
concurrency (``--parallel``, default 32), each in a temporary directory of its own, and each
runs every line through bash, so the per-command cost of the shell is the same for all:

* **torc-trio** -- ``torc-trio -f json run -j P commands.txt``: standalone (it starts its own
  server child on 127.0.0.1 with a file database under ``torc_output/``, creates the workflow,
  runs each job as ``bash -c LINE`` in its own session with stdout/stderr in two files per job
  under ``torc_output/job_stdio/``, records every result in the database). Timed end to end:
  interpreter start, server start, workflow creation, run, shutdown. Afterwards the completed
  jobs are counted in the database (``torc-trio -s -f json status ID``) -> ``torc_jobs_recorded``.
* **xargs** -- ``xargs -d '\\n' -P P -I{} bash -c '{}' < commands.txt``: one ``bash -c LINE``
  per line; all output to one file. No records of any kind.
* **GNU parallel** -- ``parallel --will-cite -j P < commands.txt``: runs each line through
  ``$SHELL -c LINE`` (``SHELL=/bin/bash`` is set here), output grouped per job into one file.
* **HyperQueue** -- the PyPI package ``hyperqueue`` (its ``LocalCluster``: server and one worker
  in a child Python process; the worker gets all cores, ``os.cpu_count()`` unless
  ``--hq-cores``). One job of N tasks, each ``["bash", "-c", LINE]`` with stdout/stderr to two
  files per task (as torc-trio does), submitted at once; ``wait_for_jobs``. Timed from submit to
  completion (cluster start-up and the worker's connection, awaited with a one-task warm-up
  job, excluded, which favours HyperQueue; reported as ``startup_s``). If the
  package is missing or the cluster does not start, ``"hq": {"error": "..."}``.

Prints ONE JSON object::

    {"jobs", "parallel", "cpus", "torc": {"wall_s", "jobs_per_s", "ok", ...},
     "xargs": {...}, "parallel_gnu": {...}, "hq": {...},
     "torc_jobs_recorded", "ratio_torc_over_hq", "ratio_torc_over_xargs"}

Ratios are of throughputs (jobs/s); > 1 means torc-trio is faster. Every subprocess has a
timeout (``--timeout``); traffic is loopback only.

``--torc-root [LABEL=]DIR`` (repeatable) adds the torc-trio of another checkout (its
``torc_core``/``torc_net``/``torc_cli`` first on ``PYTHONPATH``, same console script and
interpreter) as one more tool of every round, ``torc@LABEL``, so that the previous code and this
one take turns with xargs in one invocation: each gets ``ratio_torc@LABEL_over_xargs`` (median
of its rounds' ratios) and the default torc-trio gets ``ratio_torc_over_torc@LABEL``.

    python benchmarks/bench_exec.py [--jobs 10000] [--parallel 32] [--skip-hq] [--skip-gnu]
        [--skip-xargs] [--skip-torc] [--command true] [--hq-cores N] [--timeout 900]
        [--repeat N] [--workdir DIR] [--keep] [--torc-root [LABEL=]DIR ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _tail(path: Path, n: int = 800) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _timed(argv: list[str], cwd: Path, *, timeout: float, stdin: Path | None = None,
           env: dict[str, str] | None = None) -> tuple[float, int, Path, Path]:
    out, err = cwd / "bench.stdout", cwd / "bench.stderr"
    with open(out, "wb") as fo, open(err, "wb") as fe, \
            open(stdin if stdin else os.devnull, "rb") as fi:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, stdin=fi, stdout=fo, stderr=fe, timeout=timeout,
                              env=env, check=False)
        wall = time.perf_counter() - t0
    return wall, proc.returncode, out, err


def _result(n: int, wall: float, code: int, **extra: Any) -> dict[str, Any]:
    return {"wall_s": round(wall, 3), "jobs_per_s": round(n / wall, 1) if wall > 0 else None,
            "exit_code": code, "ok": code == 0, **extra}


def _guard(fn: Any, *args: Any) -> dict[str, Any]:
    try:
        return fn(*args)
    except subprocess.TimeoutExpired as exc:
        return {"error": f"timed out after {exc.timeout} s"}
    except Exception as exc:  # a failed peer is reported, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"}


def write_commands(d: Path, n: int, command: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / "commands.txt"
    path.write_text(f"{command}\n" * n)
    return path


# ----------------------------------------------------------------------------------------------

def write_spec(d: Path, n: int, command: str, stdio_mode: str) -> Path:
    """The same N commands as a Torc spec whose execution_config.stdio is ``stdio_mode``."""
    d.mkdir(parents=True, exist_ok=True)
    path = d / "spec.json"
    path.write_text(json.dumps({
        "name": f"bench_{stdio_mode}", "execution_config": {"stdio": {"mode": stdio_mode}},
        "jobs": [{"name": f"j{k}", "command": command} for k in range(n)]}))
    return path


def bench_torc(d: Path, args: argparse.Namespace, stdio_mode: str | None = None,
               root: Path | None = None) -> dict[str, Any]:
    """torc-trio run of commands.txt, or (``stdio_mode``) of the same commands as a spec
    with that stdio mode; ``root``: the torc-trio of that checkout."""
    target = (write_commands(d, args.jobs, args.command) if stdio_mode is None
              else write_spec(d, args.jobs, args.command, stdio_mode))
    argv = torc_argv()
    env = torc_env(root)
    wall, code, out, err = _timed([*argv, "-f", "json", "run", "-j", str(args.parallel),
                                   target.name], d, timeout=args.timeout, env=env)
    res = _result(args.jobs, wall, code)
    try:
        report = json.loads(out.read_text())
        wid = int(report["workflow_id"])
        res["run_counts_completed"] = report["counts"].get("completed")
        res["stop_reason"] = report.get("stop_reason")
    except (ValueError, KeyError, TypeError):
        res["error"] = f"no JSON report; stderr: {_tail(err)}"
        return res
    # Count what the database holds, through a fresh standalone server on the same database.
    proc = subprocess.run([*argv, "-s", "-f", "json", "status", str(wid)], cwd=d, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    try:
        status = json.loads(proc.stdout)
        res["recorded_completed"] = int(status["counts"].get("completed", 0))
    except (ValueError, KeyError, TypeError):
        res["recorded_completed"] = None
        res["status_error"] = (proc.stderr or proc.stdout)[-800:]
    stdio = d / "torc_output" / "job_stdio"
    res["stdio_files"] = sum(1 for p in stdio.rglob("*") if p.is_file()) if stdio.is_dir() else 0
    if code != 0:
        res["stderr"] = _tail(err)
    return res


def torc_argv() -> list[str]:
    """The ``torc-trio`` of this Python environment (its console script next to the
    interpreter, as in a virtualenv); not a version manager's shim found first on PATH (pyenv's
    adds ~0.1 s of bash per call)."""
    script = Path(sys.executable).parent / "torc-trio"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    exe = shutil.which("torc-trio")
    return [exe] if exe else [sys.executable, "-m", "torc_cli.main"]


def torc_env(root: Path | None) -> dict[str, str] | None:
    """The environment of a torc-trio run: ours (None), or with the checkout ``root`` first on
    PYTHONPATH (the console script, the server child and the spawner then all import it)."""
    if root is None:
        return None
    old = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(root) + (os.pathsep + old if old else "")}


def compile_package(root: Path | None = None) -> None:
    """Byte-compile torc-trio's modules once (ours, or those of the checkout ``root``), as a
    regular (non-editable) install does; with an editable install and
    PYTHONDONTWRITEBYTECODE, every process would compile them again (~0.3 s per process
    here)."""
    if root is None:
        import torc_cli
        import torc_core
        import torc_net

        dirs = [str(Path(m.__file__).parent) for m in (torc_core, torc_net, torc_cli)]
    else:
        dirs = [str(root / name) for name in ("torc_core", "torc_net", "torc_cli")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=False,
                   capture_output=True, timeout=300)


def parse_roots(values: list[str], p: argparse.ArgumentParser) -> list[tuple[str, Path]]:
    """``[LABEL=]DIR`` values of --torc-root as (label, absolute dir); the label defaults to
    the directory's name."""
    roots: list[tuple[str, Path]] = []
    for value in values:
        label, sep, path = value.partition("=")
        root = Path(path if sep else value).resolve()
        if not (root / "torc_cli" / "main.py").is_file():
            p.error(f"--torc-root {value}: {root} is not a torc-trio checkout (no "
                    "torc_cli/main.py)")
        label = label if sep else root.name
        if any(label == other for other, _ in roots):
            p.error(f"--torc-root {value}: the label {label!r} is given twice")
        roots.append((label, root))
    return roots


def bench_xargs(d: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmds = write_commands(d, args.jobs, args.command)
    wall, code, _, err = _timed(
        ["xargs", "-d", "\n", "-P", str(args.parallel), "-I{}", "bash", "-c", "{}"],
        d, timeout=args.timeout, stdin=cmds)
    res = _result(args.jobs, wall, code)
    if code != 0:
        res["stderr"] = _tail(err)
    return res


def bench_gnu_parallel(d: Path, args: argparse.Namespace) -> dict[str, Any]:
    exe = shutil.which("parallel")
    if exe is None:
        return {"error": "GNU parallel not found (Debian package 'parallel')"}
    cmds = write_commands(d, args.jobs, args.command)
    env = {**os.environ, "SHELL": shutil.which("bash") or "/bin/bash"}
    wall, code, _, err = _timed([exe, "--will-cite", "-j", str(args.parallel)], d,
                                timeout=args.timeout, stdin=cmds, env=env)
    res = _result(args.jobs, wall, code)
    if code != 0:
        res["stderr"] = _tail(err)
    return res


def bench_hq(d: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmds = write_commands(d, args.jobs, args.command)
    cores = args.hq_cores or os.cpu_count() or 1
    argv = [sys.executable, os.path.abspath(__file__), "--hq-child", str(d), str(cmds),
            str(cores)]
    _, code, out, err = _timed(argv, d, timeout=args.timeout)
    try:
        child = json.loads(out.read_text().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"HyperQueue child failed (exit {code}): {_tail(err)}"}
    if "error" in child:
        return child
    return _result(args.jobs, child["wall_s"], code, worker_cores=cores,
                   startup_s=child["startup_s"], all_succeeded=child["all_succeeded"])


def hq_child(d: str, cmds_path: str, cores: int) -> None:
    """Runs in a child process (so a hang or crash of the cluster is bounded by a timeout)."""
    try:
        from hyperqueue import Job, LocalCluster
        from hyperqueue.cluster import WorkerConfig
    except ImportError as exc:
        print(json.dumps({"error": f"hyperqueue not importable: {exc} (pip install hyperqueue)"}))
        return
    commands = Path(cmds_path).read_text().splitlines()
    root = Path(d).resolve()
    out_dir = root / "hq_stdio"
    out_dir.mkdir(exist_ok=True)
    try:
        t0 = time.perf_counter()
        cluster = LocalCluster(server_dir=str(root / "hq_server"),
                               worker_config=WorkerConfig(cores=cores))
    except Exception as exc:
        print(json.dumps({"error": f"LocalCluster did not start: {type(exc).__name__}: {exc}"}))
        return
    try:
        client = cluster.client()
        # Warm-up: one task, so the worker has connected before the timed submit.
        warm = Job(default_workdir=root, max_fails=None)
        warm.program(["bash", "-c", "true"], stdout=str(out_dir / "warm.o"),
                     stderr=str(out_dir / "warm.e"))
        client.wait_for_jobs([client.submit(warm)], raise_on_error=False)
        startup = time.perf_counter() - t0
        job = Job(default_workdir=root, max_fails=None)
        for i, line in enumerate(commands):
            job.program(["bash", "-c", line], stdout=str(out_dir / f"{i}.o"),
                        stderr=str(out_dir / f"{i}.e"))
        t1 = time.perf_counter()
        submitted = client.submit(job)
        ok = client.wait_for_jobs([submitted], raise_on_error=False)
        wall = time.perf_counter() - t1
        print(json.dumps({"wall_s": wall, "startup_s": round(startup, 3), "all_succeeded": ok}))
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    finally:
        cluster.stop()


def median_ratio(nums: list[dict[str, Any]], dens: list[dict[str, Any]]) \
        -> tuple[float, list[float]] | None:
    """The median of the rounds' throughput ratios (rounds where both succeeded), and them."""
    per = [n["jobs_per_s"] / d["jobs_per_s"] for n, d in zip(nums, dens, strict=True)
           if n.get("ok") and d.get("ok", True) and "error" not in n and "error" not in d
           and n.get("jobs_per_s") and d.get("jobs_per_s")]
    if not per:
        return None
    return round(sorted(per)[(len(per) - 1) // 2], 3), [round(x, 3) for x in per]


def _succeeded(run: dict[str, Any]) -> bool:
    """Whether a tool's round ran to its end (no error, and exit code 0 where there is one)."""
    return bool(run.get("ok", True)) and "error" not in run


def _median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput (failed rounds count as the slowest)."""
    ranked = sorted(runs, key=lambda r: (_succeeded(r), r.get("jobs_per_s") or 0.0))
    return dict(ranked[(len(ranked) - 1) // 2]) if len(ranked) > 1 else dict(ranked[0])


# ----------------------------------------------------------------------------------------------

def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--hq-child":
        hq_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=10000)
    p.add_argument("--parallel", type=int, default=32)
    p.add_argument("--command", default="true", help="the command on every line")
    p.add_argument("--skip-torc", action="store_true")
    p.add_argument("--skip-xargs", action="store_true")
    p.add_argument("--skip-gnu", "--skip-parallel", dest="skip_gnu", action="store_true")
    p.add_argument("--skip-hq", action="store_true")
    p.add_argument("--hq-cores", type=int, default=None,
                   help="cores given to the HyperQueue worker (default: all, os.cpu_count())")
    p.add_argument("--timeout", type=float, default=900.0, help="per tool, seconds")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds; the tools take turns in each round (order alternating); each "
                   "throughput is the median round, each ratio the median of the rounds' "
                   "ratios (default: 1)")
    p.add_argument("--workdir", default=None,
                   help="where the temporary directories go (default: the system's, /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    p.add_argument("--torc-root", action="append", default=[], metavar="[LABEL=]DIR",
                   help="also run the torc-trio of the checkout DIR (first on PYTHONPATH) in "
                        "every round, as torc@LABEL (default label: DIR's name); repeatable")
    p.add_argument("--stdio", default=None, metavar="MODE[,MODE...]",
                   help="instead of one torc-trio run of commands.txt, one per stdio mode "
                        "(separate, combined, no_stdout, no_stderr, none), each a spec with "
                        "that execution_config.stdio; ratios of each to 'separate'")
    args = p.parse_args()
    if not 0 < args.jobs <= 1_000_000 or not 0 < args.parallel <= 4096:
        p.error("--jobs must be in 1..1e6 and --parallel in 1..4096")
    if not 1 <= args.repeat <= 20:
        p.error("--repeat must be in 1..20")

    roots = parse_roots(args.torc_root, p)
    if not args.skip_torc:
        compile_package()
    for _, root in roots:
        compile_package(root)
    # Every directory is removed only at the end: deleting one tool's 20,000 files would slow
    # the next tool's file creation (ext4 without a journal skips recently freed inodes).
    if args.workdir:  # a file system to measure on, made if it is not there yet
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="torc-bench-exec-", dir=args.workdir))
    result: dict[str, Any] = {"jobs": args.jobs, "parallel": args.parallel,
                              "cpus": os.cpu_count(), "command": args.command,
                              "repeat": args.repeat}
    modes = [m.strip() for m in args.stdio.split(",")] if args.stdio else []
    torc_plan: list[tuple[str, bool, Any]] = (
        [(f"torc_{m}", args.skip_torc, lambda d, a, m=m: bench_torc(d, a, m)) for m in modes]
        if modes else [("torc", args.skip_torc, bench_torc)])
    # Other checkouts' torc-trio: the main plan's torc run (first stdio mode) with their code.
    other_mode = modes[0] if modes else None
    torc_plan += [(f"torc@{label}", False,
                   lambda d, a, r=root: bench_torc(d, a, other_mode, r)) for label, root in roots]
    plan = [*torc_plan, ("xargs", args.skip_xargs, bench_xargs),
            ("parallel_gnu", args.skip_gnu, bench_gnu_parallel),
            ("hq", args.skip_hq, bench_hq)]
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, skip, _ in plan if not skip}
    try:
        for k in range(args.repeat):
            # Alternate the order, so that a slow drift of the machine favours nobody.
            for name, skip, fn in (plan if k % 2 == 0 else plan[::-1]):
                if not skip:
                    rounds[name].append(_guard(fn, root / f"{name}{k}", args))
    finally:
        if args.keep:
            result["workdir"] = str(root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    for name, runs in rounds.items():
        result[name] = _median_round(runs)
        if len(runs) > 1:
            result[name]["jobs_per_s_rounds"] = [r.get("jobs_per_s") for r in runs]
        failed = {k: r.get("error") or r.get("stderr") or f"exit code {r.get('exit_code')}"
                  for k, r in enumerate(runs) if not _succeeded(r)}
        if failed:  # a failed round is left out of the ratios: say why, round by round
            result[name]["failed_rounds"] = failed

    if modes:
        base = rounds.get("torc_separate")
        for m in modes:
            runs = rounds.get(f"torc_{m}")
            if base and runs and m != "separate":
                per = [r["jobs_per_s"] / b["jobs_per_s"] for r, b in zip(runs, base, strict=True)
                       if r.get("jobs_per_s") and b.get("jobs_per_s")]
                if per:
                    result[f"ratio_{m}_over_separate_rounds"] = [round(x, 3) for x in per]
                    result[f"ratio_{m}_over_separate"] = round(sorted(per)[(len(per) - 1) // 2],
                                                               3)
        main_mode = "separate" if "separate" in modes else modes[0]
        result["torc"] = result[f"torc_{main_mode}"]
        rounds["torc"] = rounds[f"torc_{main_mode}"]
    torc = result.get("torc", {})
    result["torc_jobs_recorded"] = torc.get("recorded_completed")
    result["all_torc_jobs_recorded"] = torc.get("recorded_completed") == args.jobs
    for label, _ in roots:
        name = f"torc@{label}"
        result[f"{name}_jobs_recorded"] = result[name].get("recorded_completed")
        for num, den in ((name, "xargs"), ("torc", name)):
            if num in rounds and den in rounds:
                ratio = median_ratio(rounds[num], rounds[den])
                if ratio is not None:
                    result[f"ratio_{num}_over_{den}"], result[f"ratio_{num}_over_{den}_rounds"] \
                        = ratio
    for peer in ("hq", "xargs", "parallel_gnu"):
        a, b = torc.get("jobs_per_s"), result.get(peer, {}).get("jobs_per_s")
        key = ("ratio_torc_over_gnu_parallel" if peer == "parallel_gnu"
               else f"ratio_torc_over_{peer}")
        ok = torc.get("ok") and result.get(peer, {}).get("ok", True)
        result[key] = round(a / b, 3) if a and b and ok and "error" not in torc else None
        if args.repeat > 1 and result[key] is not None:
            # Rounds are compared with the peer of the same round (minutes apart at most),
            # and the median of those ratios is the figure: this machine's speed drifts.
            per_round = [
                t["jobs_per_s"] / q["jobs_per_s"]
                for t, q in zip(rounds["torc"], rounds[peer], strict=True)
                if t.get("ok") and q.get("ok", True) and t.get("jobs_per_s")
                and q.get("jobs_per_s")
            ]
            if per_round:
                result[key + "_rounds"] = [round(r, 3) for r in per_round]
                result[key] = round(sorted(per_round)[(len(per_round) - 1) // 2], 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
