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

    monkeypatch.undo()  # the real _cpus(), on four CPUs: only the thread keeps it to one
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
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


def test_children_reaped_by_the_kernel_still_give_their_results() -> None:
    """A parent that ignores SIGCHLD (inherited across exec) has no children to wait for."""
    import signal

    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        out = parallel.map_chunks(lambda xs: [x + 1 for x in xs], list(range(8)), min_chunk=2)

        def boom(xs: Sequence[int]) -> list[int]:
            raise ValueError("in every process")

        with pytest.raises(ValueError, match="in every process"):
            parallel.map_chunks(boom, list(range(8)), min_chunk=2)
    finally:
        signal.signal(signal.SIGCHLD, old)
    assert [x for c in out for x in c] == list(range(1, 9))


def _host_plan(dep_dir: Path, cpus: int, monkeypatch: pytest.MonkeyPatch) -> object:
    from osunits import plan
    from osunits.deployment import load_deployment
    from osunits.errors import DeploymentError

    monkeypatch.setattr(parallel, "_cpus", lambda: cpus)
    monkeypatch.setattr(plan, "RENDERS_PER_FORK", 1)
    dep = load_deployment(dep_dir)
    try:
        return plan.plan_host(dep, "ctl01").files, plan.check_configs(dep, dep.hosts)
    except DeploymentError as e:
        return [str(p) for p in e.problems]


def test_a_host_planned_over_three_processes_is_the_one_planned_in_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file, byte for byte and in order, through the children's tuples."""
    import shutil

    from tests.conftest import EXAMPLE

    dep = tmp_path / "dep"
    shutil.copytree(EXAMPLE, dep, ignore=shutil.ignore_patterns("secrets"))
    from typer.testing import CliRunner

    from osunits.cli import app
    assert CliRunner().invoke(app, ["secrets", "generate", "-d", str(dep)]).exit_code == 0
    one = _host_plan(dep, 1, monkeypatch)
    three = _host_plan(dep, 3, monkeypatch)
    assert isinstance(one, tuple) and one[0] and one == three


def test_a_secret_read_in_another_process_is_masked_in_every_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """a's template reads the secret "galera"; b's fails quoting that word: masked whether a
    rendered in this process or in a child."""
    from tests.conftest import write_secret, write_tree

    services = {f"services/{n}.yaml": f"rootfs: x\nexec: /bin/true\nconfig:\n"
                f"  - {{template: {t}, path: /etc/{n}}}\n" for n, t in (("a", "a.j2"), ("b", "b.j2"))}
    write_tree(tmp_path, {
        "deployment.yaml": "hosts:\n  ctl01: {address: 192.0.2.1, services: [a, b]}\n",
        "templates/a.j2": "user = {{ secret('dbuser') }}\n",
        "templates/b.j2": "x = {{ address_of('galera') }}\n", **services})
    write_secret(tmp_path / "secrets", "dbuser", "galera")
    monkeypatch.setenv("OSUNITS_SECRETS_DIR", str(tmp_path / "secrets"))
    one = _host_plan(tmp_path, 1, monkeypatch)
    two = _host_plan(tmp_path, 2, monkeypatch)
    assert one == two
    assert isinstance(one, list) and len(one) == 1, "\n".join(map(str, one))
    assert "address_of('********')" in one[0] and "galera" not in one[0], one
