"""``okq worker module:function QUEUE...``: a Python handler run per event, as the workers of
arq, rq and celery run theirs.

Owns: finding the handler from its ``module:function`` spec (the current directory first on
``sys.path``, as ``python -m`` has it), and what its outcome means: returning (anything but
``False``) acknowledges the event; returning ``False`` or raising leaves it unacknowledged, so
okq redelivers it once its claim expires (the exception is logged with its traceback).  A
coroutine function runs on an event loop of each consumer thread's own.
Must not know: consuming (``okq_transports.sync.Client.consume`` does it) or signals (the
``consume`` command's handling is shared).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from okq_proto import Delivery

from ._common import EXIT_ERROR, EXIT_USAGE, CliError

__all__ = ["Handler", "load_handler"]


def load_handler(spec: str) -> Callable[..., Any]:
    """The callable named by ``"package.module:function"`` (``function`` may be dotted:
    ``module:Class.method``).

    Raises:
        CliError: a spec without ``:``, a name that is not there or not callable (usage, 2),
            or a module that fails to import (1, with the import's error).
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(
            f"okq worker: error: {spec!r} is not MODULE:FUNCTION (e.g. myapp.tasks:handle)",
            EXIT_USAGE,
        )
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)  # as `python -m` and the workers of rq and celery do
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise CliError(
                f"okq worker: error: no module named {exc.name!r} (run it from the folder that"
                " holds it, or put it on PYTHONPATH)",
                EXIT_USAGE,
            ) from exc
        raise CliError(f"cannot import {module_name}: {exc}", EXIT_ERROR) from exc
    except Exception as exc:  # the user's module failed while importing
        raise CliError(
            f"cannot import {module_name}: {type(exc).__name__}: {exc}", EXIT_ERROR
        ) from exc
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise CliError(
                f"okq worker: error: {module_name} has no {attribute!r}", EXIT_USAGE
            ) from None
    if not callable(target):
        raise CliError(f"okq worker: error: {spec} is not callable", EXIT_USAGE)
    return target  # type: ignore[no-any-return]


class Handler:
    """A `Client.consume` handler calling ``function(delivery)``: true (ack) unless it
    returned ``False``; an exception propagates (the consumer logs it and does not ack).  A
    coroutine function is run to its end on an event loop of the calling thread's own;
    `close` closes those loops."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.is_async = inspect.iscoroutinefunction(function)
        self._local = threading.local()
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._lock = threading.Lock()

    def __call__(self, delivery: Delivery) -> bool:
        if not self.is_async:
            return self.function(delivery) is not False
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
            with self._lock:
                self._loops.append(loop)
        return loop.run_until_complete(self.function(delivery)) is not False

    def close(self) -> None:
        with self._lock:
            loops, self._loops = self._loops, []
        for loop in loops:
            loop.close()
