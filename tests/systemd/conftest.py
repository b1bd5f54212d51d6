"""Tests against a real systemd 252, booted once per module in a throwaway container."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from osunits.testbed import Testbed, available, leftovers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    why = available()
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.systemd)
            if why:
                item.add_marker(pytest.mark.skip(reason=f"real systemd testbed: {why}"))


@pytest.fixture(scope="module")
def testbed() -> Iterator[Testbed]:
    why = available()
    if why:
        pytest.skip(f"real systemd testbed: {why}")
    tb = Testbed()
    tb.start()
    try:
        yield tb
    finally:
        tb.teardown()
        left = leftovers(tb.name)
        assert not left, f"test host {tb.name} left {left}"


@pytest.fixture(scope="module")
def jobs(testbed: Testbed) -> Iterator[object]:
    pystemd = pytest.importorskip("pystemd")
    del pystemd
    from .bus import Jobs

    j = Jobs(testbed.bus_address)
    yield j
    j.close()
