"""Work spread over the machine's CPUs by fork(2): rendering thousands of templates, and
writing the model cache while the checks go on.

A child computes from the parent's memory as it was at the fork (the model is immutable)
and sends back a pickle; it never returns into the caller's code (``os._exit``), so no
output or exit handler runs twice.  Whatever goes wrong in a child (an exception, a
signal, a failed fork) costs only time: the parent computes that part itself, and so
raises what the serial run would have raised.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _cpus() -> int:
    """CPUs to use; one while other threads run: a child forked then could find a lock
    held for ever (by a thread that exists only in the parent)."""
    if threading.active_count() > 1:
        return 1
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def map_chunks(fn: Callable[[Sequence[T]], R], items: Sequence[T], min_chunk: int) -> list[R]:
    """``fn`` over contiguous chunks of ``items``, in order: one per CPU, and none smaller
    than ``min_chunk`` (below it a fork costs more than it saves). The first chunk runs
    in this process, the others in forked children at the same time."""
    n = max(1, min(_cpus(), len(items) // max(min_chunk, 1)))
    if n == 1:
        return [fn(items)]
    size = -(-len(items) // n)
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    pending: list[tuple[Sequence[T], tuple[int, int]]] = []
    try:
        for chunk in chunks[1:]:
            pending.append((chunk, _spawn(fn, chunk)))
        results = [fn(chunks[0])]
        while pending:
            chunk, (pid, fd) = pending[0]
            result = _collect(pid, fd)
            pending.pop(0)
            results.append(fn(chunk) if result is None else result[0])
        return results
    finally:
        for _, (pid, fd) in pending:  # only after an exception: nobody waits for them
            with contextlib.suppress(OSError):
                os.close(fd)
            if pid:
                with contextlib.suppress(OSError):  # reaped already (SIGCHLD ignored)
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)


_background: list[int] = []  # children of in_background not waited for yet


def in_background(fn: Callable[[], object]) -> None:
    """Run ``fn`` in a child while this process goes on (``wait_background`` waits for it,
    and so does the process before it exits). Without a fork, ``fn`` runs here and now."""
    try:
        if _cpus() == 1:
            raise OSError("one CPU, or other threads")
        pid = os.fork()
    except OSError:
        fn()
        return
    if pid == 0:
        status = 1
        try:
            fn()
            status = 0
        finally:
            os._exit(status)
    _background.append(pid)


def wait_background() -> None:
    while _background:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(_background.pop(), 0)


atexit.register(wait_background)


def _spawn(fn: Callable[[Sequence[T]], R], chunk: Sequence[T]) -> tuple[int, int]:
    """A child computing ``fn(chunk)`` into a pipe: (its pid, the pipe's read end); a pid
    of 0 when it could not be forked."""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(w)
        return 0, r
    if pid == 0:
        status = 1
        try:
            os.close(r)
            data = pickle.dumps(fn(chunk), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(w, "wb") as out:
                out.write(data)
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    return pid, r


def _collect(pid: int, fd: int) -> tuple[Any] | None:
    """The child's result (in a 1-tuple), or None if it did not give one."""
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    if not pid:
        return None
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped by the kernel (SIGCHLD ignored): the data tells
        status = 0
    if status != 0 or not data:
        return None
    try:
        return (pickle.loads(data),)
    except Exception:  # noqa: BLE001 - cut short: computed again here
        return None
