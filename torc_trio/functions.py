"""Functions as jobs: which functions a runner can call, and the command that calls one.

A job runs in a process of its own, perhaps on another machine, so it cannot be handed a
function object: it imports the function by module and qualified name
(``python -m torc_trio.call MODULE:QUALNAME``; :mod:`torc_trio.call`). Hence the rule,
checked before anything is created: the function is a ``def`` at the top level of a module
(or a class in one) that imports under the same name, not a lambda, not nested in another
function, and not in ``__main__`` (the script being run, which a job would run again rather
than import). Each refusal names the function and says what to do instead.
"""

from __future__ import annotations

import importlib
import inspect
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The job entry point's module.
ENTRY_MODULE = "torc_trio.call"


class FunctionNotImportable(TypeError):
    """A function a runner could not import by module and name (nothing was created)."""


@dataclass(frozen=True, slots=True)
class FunctionRef:
    module: str
    qualname: str
    #: the directory to put on the job's sys.path so that ``module`` imports (None: it
    #: imports from an installed package or the standard library)
    path: str | None

    @property
    def target(self) -> str:
        return f"{self.module}:{self.qualname}"


def function_ref(func: Callable[..., Any], caller: str) -> FunctionRef:
    """Where a runner imports ``func`` from; :class:`FunctionNotImportable` naming it (and
    ``caller``, the API that was given it) when it cannot."""
    if not callable(func):
        raise FunctionNotImportable(f"{caller}: expected a function, got "
                                    f"{type(func).__name__} {func!r}")
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    label = qualname or repr(func)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise FunctionNotImportable(
            f"{caller}: {func!r} has no module and name to import it by (a functools.partial "
            "or a callable object?): pass a function defined with def at the top level of a "
            "module; give fixed arguments through the parameters")
    if qualname == "<lambda>" or qualname.endswith(".<lambda>"):
        raise FunctionNotImportable(
            f"{caller}: a lambda ({module}:{qualname}) cannot run as a job: a runner imports "
            "the function by module and name; define it with def at the top level of a module")
    if "<locals>" in qualname:
        raise FunctionNotImportable(
            f"{caller}: {module}:{qualname} is defined inside another function; a runner "
            "imports the function by module and name: move it to the top level of its module")
    if module == "__main__":
        where = getattr(sys.modules.get("__main__"), "__file__", None) or "the main script"
        raise FunctionNotImportable(
            f"{caller}: {label} is defined in __main__ ({where}); a runner imports the "
            f"function by module and name, and __main__ is not importable: move {label} into "
            "a module (e.g. tasks.py beside the script) and import it from there")
    found = _resolve(module, qualname)
    if found is not func and getattr(found, "__wrapped__", None) is not func:
        raise FunctionNotImportable(
            f"{caller}: {module}:{qualname} does not import as this function (importing it "
            f"gives {found!r}): pass a function defined with def at the top level of a module")
    return FunctionRef(module, qualname, _import_root(module))


def _resolve(module: str, qualname: str) -> Any:
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise FunctionNotImportable(f"{module}:{qualname} cannot be imported by a runner: "
                                    f"{type(exc).__name__}: {exc}") from None
    return obj


def _import_root(module: str) -> str | None:
    """The directory from which ``module`` imports (its file's directory, less one level for
    each dot in the name), or None for modules of the interpreter's own paths."""
    mod = sys.modules.get(module)
    file: str | None = getattr(mod, "__file__", None)
    if not file:
        return None
    path = os.path.abspath(file)
    levels = module.count(".") + (1 if os.path.basename(path).startswith("__init__.") else 0)
    root = os.path.dirname(path)
    for _ in range(levels):
        root = os.path.dirname(root)
    if _on_interpreter_path(root):
        return None
    return root


def _on_interpreter_path(root: str) -> bool:
    """Whether any interpreter started like this one imports from ``root`` anyway: the
    standard library and site-packages (not the script's directory or PYTHONPATH, which a
    runner elsewhere may not share)."""
    import site
    import sysconfig

    fixed = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    fixed.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    user = getattr(site, "getusersitepackages", None)
    if user is not None:
        fixed.add(str(user()))
    real = os.path.realpath(root)
    return any(real == os.path.realpath(p) for p in fixed)


def call_command(ref: FunctionRef, python: str | None = None) -> str:
    """The job's command: ``PYTHON -m torc_trio.call MODULE:QUALNAME [--path DIR]``."""
    argv = [python or sys.executable, "-m", ENTRY_MODULE, ref.target]
    if ref.path is not None:
        argv += ["--path", ref.path]
    return shlex.join(argv)


def signature_problem(sig: inspect.Signature | None, kwargs: dict[str, Any],
                      positional: int = 0) -> str | None:
    """Why a function of signature ``sig`` would refuse ``(*positional values, **kwargs)``
    by Python's binding rules (None if they bind, or there is no signature to read)."""
    if sig is None:
        return None
    try:
        sig.bind(*([None] * positional), **kwargs)
    except TypeError as exc:
        return str(exc)
    return None
