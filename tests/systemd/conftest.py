"""Tests against a real systemd 252, booted once per module in a throwaway container."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from osunits.testbed import Testbed, available, leftovers

ONE_HOST_DEFAULTS = "defaults: {rootfs: host, restart: 'no', stop_timeout: 5s}\n"


def generate_one_host(tmp_path: Path, services: dict[str, str]) -> Path:
    """A deployment of ``services`` (NAME: YAML) on host t1 with the test host's image,
    generated into a root; returns the root."""
    from typer.testing import CliRunner

    from osunits.cli import app

    dep = tmp_path / "dep"
    (dep / "services").mkdir(parents=True)
    (dep / "deployment.yaml").write_text(
        ONE_HOST_DEFAULTS + f"hosts:\n  t1: {{address: 192.0.2.1, services: [{', '.join(services)}]}}\n")
    for name, text in services.items():
        (dep / "services" / f"{name}.yaml").write_text(text)
    root = tmp_path / "root"
    res = CliRunner().invoke(app, ["generate", "-H", "t1", "-d", str(dep), "--root", str(root)])
    assert res.exit_code == 0, res.output
    return root


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
