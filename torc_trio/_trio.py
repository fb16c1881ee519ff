"""Running the async API from blocking code: ``trio.run`` underneath, refused inside Trio."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

T = TypeVar("T")


def blocking(name: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``trio.run(fn, *args)``; inside a Trio run (where that cannot work) a RuntimeError
    that names the ``await`` form to use instead."""
    import trio

    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        try:
            return trio.run(fn, *args)
        except BaseExceptionGroup as group:
            single = collapse(group)
            if single is group:
                raise
            raise single from None
    raise RuntimeError(f"{name}() blocks, and this code runs inside Trio: use "
                       f"await {name}_async(...) instead")


def collapse(error: BaseException) -> BaseException:
    """The one error inside nested single-error groups (a nursery wraps what its block
    raised: a caller of this library should get the SpecError or ApiError itself)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


@asynccontextmanager
async def plain_errors() -> AsyncIterator[None]:
    """Raise the one error of a group that holds only one (see :func:`collapse`)."""
    try:
        yield
    except BaseExceptionGroup as group:
        single = collapse(group)
        if single is group:
            raise
        raise single from None
