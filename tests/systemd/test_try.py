"""`osunits try`: a rehearsal in a throwaway systemd host, for a new user."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from osunits.cli import app
from osunits.testbed import available
from tests.conftest import REPO
from tests.systemd.bus import log_calls

FAST = REPO / "tests" / "fixtures" / "fastdeploy"
pytest.importorskip("pystemd")


def _skip_without_testbed() -> None:
    why = available()
    if why:
        pytest.skip(why)


def test_try_starts_reports_and_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    _skip_without_testbed()
    log = log_calls(monkeypatch)
    res = CliRunner().invoke(app, ["try", "-H", "t1", "-d", str(FAST)])
    assert res.exit_code == 0, res.output
    for svc in ("db", "api", "cache", "worker"):
        assert f"ok done       {svc}" in res.output
    assert "openstack.target: active" in res.output
    # one connection to the test host starts, reports and stops everything
    assert [ln for ln in res.output.splitlines() if ln.startswith("stopped all in ")
            and ln.endswith(" s")], res.output
    assert len(log.connections) == 1
    assert [args for _path, args in log.of(log.connections[0], b"EnqueueUnitJob")] == [
        (b"openstack.target", b"start", b"replace"), (b"openstack.target", b"stop", b"replace")]
    assert "removed" in res.output.splitlines()[-1]
    name = res.output.split("test host ", 1)[1].split()[0]
    from osunits.testbed import leftovers
    assert not leftovers(name)


def _try_edited(tmp_path: Path, file: str, old: str, new: str,
                env: dict[str, str] | None = None) -> Result:
    """`osunits try` on a copy of the fast deployment with one edit."""
    _skip_without_testbed()
    dep = tmp_path / "dep"
    shutil.copytree(FAST, dep)
    f = dep / file
    f.write_text(f.read_text().replace(old, new))
    return CliRunner().invoke(app, ["try", "-H", "t1", "-d", str(dep)], env=env)


def test_try_reports_a_failure_and_exits_1(tmp_path: Path) -> None:
    res = _try_edited(tmp_path, "services/api.yaml", 'DB: "db"', 'DB: "nowhere"')
    assert res.exit_code == 1, res.output
    assert "FAILED api: job failed, the service exited with status 1" in res.output
    assert "cancelled because of it: worker" in res.output
    assert "api: database not reachable at start" in res.output


def test_try_names_missing_images(tmp_path: Path) -> None:
    res = _try_edited(tmp_path, "deployment.yaml", "rootfs: host", "rootfs: not-built-here",
                      env={"OSUNITS_IMAGES_ROOT": str(tmp_path / "empty")})
    assert res.exit_code == 2
    assert "root filesystems not built on this machine: not-built-here" in res.output
    assert "osunits rootfs build not-built-here" in res.output


def test_rehearse_runs_while_up_with_the_services_ready_then_stops(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _skip_without_testbed()
    log = log_calls(monkeypatch)
    from osunits.deployment import load_deployment
    from osunits.rehearse import rehearse
    from osunits.testbed import Testbed

    seen: list[str] = []

    def while_up(tb: Testbed) -> None:
        seen.append(tb.systemctl("is-active", "systemd-nspawn@api.service",
                                 check=False).stdout.strip())
        raise RuntimeError("a check failed")

    lines: list[str] = []
    with pytest.raises(RuntimeError, match="a check failed"):
        rehearse(load_deployment(FAST), "t1", out=lines.append, while_up=while_up)
    assert seen == ["active"]
    # what it raised did not skip the stop nor the teardown
    assert [args for _path, args in log.of(log.connections[0], b"EnqueueUnitJob")] == [
        (b"openstack.target", b"start", b"replace"), (b"openstack.target", b"stop", b"replace")]
    assert "removed" in lines[-1]
    from osunits.testbed import leftovers
    assert not leftovers(lines[0].split("test host ", 1)[1].split()[0])
