"""Golden files: the example's generated units, byte for byte, and systemd-analyze verify.

Regenerate with `pytest tests/test_golden.py --update-golden` and review the diff.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from osunits.deployment import load_deployment
from osunits.output import write_files
from osunits.plan import INIT_HOST_PATH, INIT_SOURCE, INSTALLED, _init_bytecode, _pyc_path, plan_host
from tests.conftest import EXAMPLE

GOLDEN = Path(__file__).parent / "golden"
HOSTS = ["cmp01", "cmp02", "ctl01", "net01"]
PYC = str(_pyc_path(INSTALLED)).lstrip("/")
SKIP = {"var/lib/osunits/manifest.json", "var/lib/osunits/manifest.lock",
        str(INIT_HOST_PATH).lstrip("/"), PYC}


def generated(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel in SKIP:
            continue
        if p.is_symlink():
            out[rel + ".symlink"] = str(p.readlink()) + "\n"
        elif p.is_file():
            out[rel] = p.read_text()
    return out


@pytest.fixture(scope="module")
def deployment():  # type: ignore[no-untyped-def]
    return load_deployment(EXAMPLE)


@pytest.mark.parametrize("host", HOSTS)
def test_golden(host: str, tmp_path: Path, update_golden: bool, deployment) -> None:  # type: ignore[no-untyped-def]
    write_files(tmp_path, plan_host(deployment, host).files)
    got = generated(tmp_path)
    gdir = GOLDEN / host
    if update_golden:
        shutil.rmtree(gdir, ignore_errors=True)
        for rel, text in got.items():
            (gdir / rel).parent.mkdir(parents=True, exist_ok=True)
            (gdir / rel).write_text(text)
    want = {str(p.relative_to(gdir)): p.read_text() for p in sorted(gdir.rglob("*"))
            if p.is_file()}
    assert sorted(got) == sorted(want)
    for rel in want:
        assert got[rel] == want[rel], f"{host}: {rel} differs from tests/golden (--update-golden)"
    assert (tmp_path / str(INIT_HOST_PATH).lstrip("/")).read_bytes() == INIT_SOURCE.read_bytes()
    pyc = (tmp_path / PYC).read_bytes()
    assert pyc == _init_bytecode() and pyc[:4] == importlib.util.MAGIC_NUMBER


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("host", HOSTS)
def test_systemd_analyze_verify(host: str, tmp_path: Path, deployment) -> None:  # type: ignore[no-untyped-def]
    plan = plan_host(deployment, host)
    write_files(tmp_path, plan.files)
    unit_dir = tmp_path / "etc/systemd/system"
    units = ["openstack.target"] + sorted(
        p.name.removesuffix(".d") for p in unit_dir.iterdir() if p.name.endswith(".service.d"))
    assert len(units) == len(plan.graph.order) + 1
    # A trailing ':' keeps systemd's own unit paths, where the stock systemd-nspawn@.service lives.
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"}
    res = subprocess.run(["systemd-analyze", "verify", *units], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    # verify exits 0 on unknown keys and unparsable values: any message is a failure.
    assert res.stderr.strip() == "", res.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("host", HOSTS)
def test_boot_transaction_has_no_ordering_cycle(host: str, tmp_path: Path, deployment) -> None:  # type: ignore[no-untyped-def]
    """Enabled, the target is started by multi-user.target with basic.target, sockets.target
    and the rest of boot; systemd breaks an ordering cycle there by dropping a job (a
    published port's socket, sockets.target itself), which verifying openstack.target
    alone does not show."""
    write_files(tmp_path, plan_host(deployment, host).files)
    unit_dir = tmp_path / "etc/systemd/system"
    (unit_dir / "multi-user.target.wants").mkdir()
    (unit_dir / "multi-user.target.wants/openstack.target").symlink_to(
        "/etc/systemd/system/openstack.target")
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"}
    res = subprocess.run(["systemd-analyze", "verify", "multi-user.target"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, check=False)
    assert "cycle" not in res.stderr and "to break" not in res.stderr, res.stderr


def test_verify_catches_a_broken_dropin(tmp_path: Path, deployment) -> None:  # type: ignore[no-untyped-def]
    """The verify test above would notice a bad value (so it can fail)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("needs systemd-analyze")
    write_files(tmp_path, plan_host(deployment, "ctl01").files)
    unit_dir = tmp_path / "etc/systemd/system"
    dropin = unit_dir / "systemd-nspawn@keystone.service.d/50-osunits.conf"
    dropin.write_text(dropin.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"}
    res = subprocess.run(["systemd-analyze", "verify", "systemd-nspawn@keystone.service"],
                         env=env, capture_output=True, text=True, check=False)
    assert "sometimes" in res.stderr


def test_deterministic(tmp_path: Path) -> None:
    """Two separate compilations give identical bytes, and a rerun changes nothing."""
    for host in HOSTS:
        a = plan_host(load_deployment(EXAMPLE), host).files
        b = plan_host(load_deployment(EXAMPLE), host).files
        assert a == b
    plan = plan_host(load_deployment(EXAMPLE), "ctl01")
    assert write_files(tmp_path, plan.files).changed
    first = generated(tmp_path)
    manifest = (tmp_path / "var/lib/osunits/manifest.json").read_bytes()
    again = write_files(tmp_path, plan.files)
    assert not again.changed
    assert generated(tmp_path) == first
    assert (tmp_path / "var/lib/osunits/manifest.json").read_bytes() == manifest
