"""Work split over forked processes: the same results, in order, whatever a child does."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from osunits import parallel


@pytest.fixture(autouse=True)
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "_cpus", lambda: 2)


def _children() -> set[int]:
    """This process's children (pytest may have some of its own)."""
    me = str(os.getpid())
    out = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[1] == me:
                    out.add(int(pid))
        except OSError:
            pass
    return out


@pytest.fixture(autouse=True)
def no_children_left() -> Iterator[None]:
    before = _children()
    yield
    assert _children() <= before  # none running, no zombie


def test_chunks_run_in_other_processes_and_come_back_in_order() -> None:
    def square(xs: Sequence[int]) -> tuple[int, list[int]]:
        return os.getpid(), [x * x for x in xs]

    out = parallel.map_chunks(square, list(range(10)), min_chunk=3)
    assert [x for _, xs in out for x in xs] == [x * x for x in range(10)]
    assert len(out) == 2
    assert out[0][0] == os.getpid() != out[1][0]


def test_small_work_stays_in_this_process() -> None:
    out = parallel.map_chunks(lambda xs: (os.getpid(), list(xs)), [1, 2, 3], min_chunk=2)
    assert out == [(os.getpid(), [1, 2, 3])]


@pytest.mark.parametrize("how", ["raise", "exit", "kill"])
def test_a_child_that_fails_costs_only_time(how: str) -> None:
    me = os.getpid()

    def double(xs: Sequence[int]) -> list[int]:
        if os.getpid() != me:
            if how == "raise":
                raise RuntimeError("a child's failure")
            if how == "exit":
                os._exit(0)  # no result at all
            os.kill(os.getpid(), 9)
        return [2 * x for x in xs]

    out = parallel.map_chunks(double, list(range(8)), min_chunk=2)
    assert [x for chunk in out for x in chunk] == [2 * x for x in range(8)]


def test_what_the_serial_run_raises_is_raised_and_no_child_is_left() -> None:
    def boom(xs: Sequence[int]) -> list[int]:
        raise ValueError(f"bad {xs[0]}")

    with pytest.raises(ValueError, match="bad 0"):
        parallel.map_chunks(boom, list(range(8)), min_chunk=2)


def test_background_work_is_waited_for(tmp_path: Path) -> None:
    out = tmp_path / "out"
    me = os.getpid()

    def write() -> None:
        import time

        time.sleep(0.2)
        out.write_text(str(os.getpid()))

    parallel.in_background(write)
    parallel.wait_background()
    assert out.read_text() != str(me)  # written by another process, before the wait ended


def test_nothing_is_forked_while_other_threads_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.undo()  # the real CPU count: the threads decide
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        out = parallel.map_chunks(lambda xs: os.getpid(), list(range(10_000)), min_chunk=1)
        ran: list[int] = []
        parallel.in_background(lambda: ran.append(os.getpid()))
    finally:
        stop.set()
        t.join()
    assert out == [os.getpid()]
    assert ran == [os.getpid()]
