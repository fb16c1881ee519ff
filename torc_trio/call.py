"""The entry point of a function job: ``python -m torc_trio.call MODULE:QUALNAME [--path DIR]``.

The runner starts it with ``TORC_API_URL``, ``TORC_WORKFLOW_ID`` and ``TORC_JOB_ID`` set. It
reads the job (its user data ids), the job's ``<job>.params`` item (``{"function", "kwargs",
"results_of"?}``; :meth:`torc_trio.Workflow.add_call`) and, for ``results_of``, the return
values of those function jobs; imports the function (``--path`` first on ``sys.path``);
calls it; and stores the return value, as JSON, in the job's ``<job>.result`` item before it
exits 0. The job succeeds only once its value is stored (acknowledged means on disk).

Any failure (the import, the call raising, a value JSON cannot hold, the server) exits 1
with the reason on stderr (a raised exception: its traceback), which the runner keeps as the
result's stderr tail; :func:`torc_trio.map` quotes it.

Standard library only (see :mod:`torc_trio.jobapi` for why): three requests and the user's
import are the whole cost of a call.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

from .jobapi import JobApi, path

PARAMS_SUFFIX = ".params"  # builder.PARAMS_SUFFIX (not imported: keep this module small)
RESULT_SUFFIX = ".result"
USAGE = "usage: python -m torc_trio.call MODULE:QUALNAME [--path DIR]"


class CallFailed(Exception):
    """A failure before or after the call, with the message the job's stderr gets."""


def _arguments(argv: list[str]) -> tuple[str, str, str | None]:
    target, root = None, None
    rest = list(argv)
    while rest:
        word = rest.pop(0)
        if word == "--path" and rest:
            root = rest.pop(0)
        elif target is None and not word.startswith("-"):
            target = word
        else:
            raise CallFailed(f"{USAGE} (unexpected {word!r})")
    if target is None or ":" not in target:
        raise CallFailed(USAGE)
    module, _, qualname = target.partition(":")
    return module, qualname, root


def _environment() -> tuple[int, int]:
    try:
        return int(os.environ["TORC_WORKFLOW_ID"]), int(os.environ["TORC_JOB_ID"])
    except (KeyError, ValueError):
        raise CallFailed("torc_trio.call runs as a torc-trio job: the runner sets "
                         "TORC_API_URL, TORC_WORKFLOW_ID and TORC_JOB_ID") from None


def _import(module: str, qualname: str, root: str | None) -> Any:
    if root is not None and root not in sys.path:
        sys.path.insert(0, root)
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        import traceback  # only on failure (5 ms of every call's start otherwise)

        where = f" (sys.path[0] {root})" if root else ""
        raise CallFailed(f"cannot import {module}:{qualname}{where}: "
                         f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}") from None
    return obj


def _user_data(api: JobApi, wid: int, ids: list[int]) -> dict[str, tuple[int, Any]]:
    """name -> (id, data) of the items ``ids``: one GET each when few, else the listing."""
    if len(ids) <= 4:
        items = [api.get(path("workflows", wid, "user_data", i)) for i in ids]
    else:
        wanted, items, offset = set(ids), [], 0
        while len(items) < len(wanted):
            page = api.get(path("workflows", wid, "user_data"),
                           {"offset": offset, "limit": 1000})
            got = page.get("items") or []
            items += [u for u in got if u["id"] in wanted]
            offset += len(got)
            if not got or offset >= int(page.get("total", offset)):
                break
    return {str(u["name"]): (int(u["id"]), u.get("data")) for u in items}


def run_call(argv: list[str]) -> int:
    module, qualname, root = _arguments(argv)
    wid, jid = _environment()
    with JobApi.from_env() as api:
        job = api.get(path("workflows", wid, "jobs", jid))
        name = str(job["name"])
        inputs = _user_data(api, wid, [int(i) for i in job.get("input_user_data") or []])
        if name + PARAMS_SUFFIX not in inputs:
            raise CallFailed(f"job {name!r} has no input user data {name + PARAMS_SUFFIX!r} "
                             "(a function job is made by Workflow.add_call or map)")
        params = inputs[name + PARAMS_SUFFIX][1] or {}
        args: list[Any] = []
        if params.get("results_of") is not None:
            missing = [n for n in params["results_of"] if n not in inputs]
            if missing:
                raise CallFailed(f"results_of: {', '.join(missing)} are not input user data "
                                 f"of job {name!r}")
            values = [inputs[n][1] for n in params["results_of"]]
            if params.get("flatten_results"):  # the values of batches, joined in order
                values = [v for batch in values for v in (batch or {}).get("values") or []]
            args.append(values)
        outputs = [int(i) for i in job.get("output_user_data") or []]
        func = _import(module, qualname, root)
        target = f"{module}:{qualname}"
        code = 0
        if "batch" in params:  # several calls, each kept apart: a failure stops none
            results: list[Any] = []
            failed: list[dict[str, Any]] = []
            for k, kwargs in enumerate(params["batch"]):
                ok, result = _one_call(func, target, args, dict(kwargs), f"call {k}: ")
                results.append(result if ok else None)
                if not ok:
                    failed.append({"index": k, "error": result})
            value: Any = {"values": results, "failed": failed}
            code = 1 if failed else 0
        else:
            ok, value = _one_call(func, target, args, dict(params.get("kwargs") or {}), "")
            if not ok:
                return 1
        out = _user_data(api, wid, outputs) if len(outputs) > 1 else None
        if out is not None:
            result_id = out.get(name + RESULT_SUFFIX, (None, None))[0]
        else:
            result_id = outputs[0] if outputs else None
        if result_id is None:
            raise CallFailed(f"job {name!r} has no output user data {name + RESULT_SUFFIX!r}")
        api.put(path("workflows", wid, "user_data", result_id), {"data": value})
    return code


def _one_call(func: Any, target: str, args: list[Any], kwargs: dict[str, Any],
              label: str) -> tuple[bool, Any]:
    """(True, the return value), or (False, the error in one line) with the reason and the
    function's own frames of the traceback on stderr."""
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    try:
        value = func(*args, **kwargs)
    except Exception as exc:
        import traceback

        print(f"torc_trio.call: {label}{target}({'values, ' if args else ''}{shown}) raised "
              f"{type(exc).__name__}", file=sys.stderr)
        traceback.print_exception(type(exc), exc,
                                  exc.__traceback__.tb_next if exc.__traceback__ else None)
        return False, f"{type(exc).__name__}: {exc}"
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        problem = (f"{target} returned {type(value).__name__}, which is not JSON: {exc}; "
                   "return JSON values (dict, list, str, number, bool, None)")
        print(f"torc_trio.call: {label}{problem}", file=sys.stderr)
        return False, problem
    return True, value


def main(argv: list[str] | None = None) -> int:
    try:
        return run_call(sys.argv[1:] if argv is None else argv)
    except CallFailed as exc:
        print(f"torc_trio.call: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
