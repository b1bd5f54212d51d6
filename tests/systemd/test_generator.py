"""osunits as a systemd generator, on a real systemd: boot-time units, visible failures."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from osunits.cli import app
from osunits.generator import FAILED_UNIT, LAST_GOOD_FILE, WATCH_UNIT
from osunits.runtime import Systemd
from osunits.testbed import Testbed, available, leftovers
from tests.conftest import REPO

FAST = REPO / "tests" / "fixtures" / "fastdeploy"
WRAPPER = f"""#!/bin/sh
exec {REPO}/.venv/bin/python -I -m osunits.generator "$@"
"""


@pytest.fixture(scope="module")
def tb() -> Iterator[Testbed]:
    why = available()
    if why:
        pytest.skip(why)
    bed = Testbed(extra_args=(f"--bind-ro={REPO}",))
    bed.start()
    try:
        # the wrapper runs osunits from this checkout (python -I ignores PYTHONPATH: cd instead)
        bed.write("/etc/osunits-generator",
                  WRAPPER.replace("exec ", f"cd {REPO} && exec "), 0o755)
        gen = bed.root / "etc/systemd/system-generators"
        gen.mkdir(parents=True, exist_ok=True)
        (gen / "osunits").symlink_to("/etc/osunits-generator")
        yield bed
    finally:
        bed.teardown()
        assert not leftovers(bed.name)


def install_deployment(tb: Testbed, src: object = FAST) -> None:
    dst = tb.root / "etc/osunits"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(str(src), dst)
    (dst / "host").write_text("t1\n")


def test_generator_compiles_units_at_reload_and_they_start(tb: Testbed) -> None:
    install_deployment(tb)
    t0 = time.monotonic()
    tb.daemon_reload()
    reload_s = time.monotonic() - t0
    show = tb.show("openstack.target", "LoadState", "FragmentPath", "Wants")
    assert show["LoadState"] == "loaded"
    assert show["FragmentPath"] == "/run/systemd/generator/openstack.target"
    assert "systemd-nspawn@api.service" in show["Wants"]
    # boot starts it: `systemctl enable` refuses generated units, so the generator links it
    assert "openstack.target" in tb.show("multi-user.target", "Wants")["Wants"].split()
    assert (tb.root / "run/systemd/nspawn/api.nspawn").is_file()
    assert (tb.root / "run/machines/api").is_symlink()
    drop = tb.show("systemd-nspawn@api.service", "DropInPaths", "Requires")
    assert "/run/systemd/generator/systemd-nspawn@api.service.d/50-osunits.conf" in drop["DropInPaths"]
    assert "systemd-nspawn@db.service" in drop["Requires"]
    tb.systemctl("start", "openstack.target")
    assert tb.show("systemd-nspawn@worker.service", "ActiveState")["ActiveState"] == "active"
    tb.systemctl("stop", "openstack.target")
    print(f"daemon-reload with the osunits generator: {reload_s * 1000:.0f} ms")


def test_generator_failure_is_visible(tb: Testbed, tmp_path: object) -> None:
    from pathlib import Path
    bad = Path(str(tmp_path)) / "bad"
    shutil.copytree(FAST, bad)
    api = bad / "services/api.yaml"
    api.write_text(api.read_text().replace("requires: [db]", "requires: [dbb]"))
    install_deployment(tb, bad)
    # the first run of a boot, as far as the generator knows: no last good units to keep
    (tb.root / str(LAST_GOOD_FILE).lstrip("/")).unlink(missing_ok=True)
    tb.daemon_reload()
    assert "systemd-nspawn@api.service" not in tb.show("openstack.target", "Wants")["Wants"]
    errors = (tb.root / "run/osunits/generator-errors").read_text()
    assert ("/etc/osunits/services/api.yaml:4: error[C002]: requires: api on t1: "
            "unknown service 'dbb'") in errors
    res = tb.systemctl("start", "openstack.target", check=False)
    assert res.returncode != 0
    st = tb.show("osunits-generator-failed.service", "ActiveState", "Result")
    assert st["ActiveState"] == "failed"
    assert "unknown service 'dbb'" in tb.journal("osunits-generator-failed.service")
    # fixed deployment: the failure unit is gone at the next reload
    install_deployment(tb)
    tb.daemon_reload()
    assert tb.show("openstack.target", "Requires")["Requires"] == ""
    assert not (tb.root / "run/osunits/generator-errors").exists()


def wait_state(tb: Testbed, unit: str, want: str, timeout: float = 30) -> None:
    """Until ``unit`` is ``want`` (ActiveState), as systemd signals it."""
    with Systemd(tb.bus_address.decode()) as sd:
        changes = sd.watch([unit], until=time.time() + timeout)
        if sd.properties(unit)["ActiveState"] == want:
            return
        for ch in changes:
            if ch.active == want:
                return
    raise AssertionError(f"{unit} not {want} after {timeout} s")


def status(tb: Testbed) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["status", "--bus", tb.bus_address.decode()])
    return res.exit_code, res.output


def test_a_broken_deployment_keeps_the_running_services_units(tb: Testbed,
                                                              tmp_path: object) -> None:
    """The reviewer's case: services run, one typo, any daemon-reload (an apt upgrade)."""
    from pathlib import Path
    install_deployment(tb)
    tb.daemon_reload()
    tb.systemctl("start", "openstack.target")
    assert tb.show("systemd-nspawn@api.service", "ActiveState")["ActiveState"] == "active"
    # the target pulled in the path unit that reports a failure
    assert tb.show(WATCH_UNIT, "ActiveState")["ActiveState"] == "active"
    bad = Path(str(tmp_path)) / "bad"
    shutil.copytree(FAST, bad)
    api = bad / "services/api.yaml"
    api.write_text(api.read_text().replace("requires: [db]", "requires: [dbb]"))
    install_deployment(tb, bad)
    tb.daemon_reload()
    # the containers keep their drop-ins, and their network namespace units their ExecStop=
    drop = tb.show("systemd-nspawn@api.service", "DropInPaths", "BindsTo", "ActiveState")
    assert "/run/systemd/generator/systemd-nspawn@api.service.d/50-osunits.conf" in drop[
        "DropInPaths"]
    assert "osunits-net-api.service" in drop["BindsTo"] and drop["ActiveState"] == "active"
    net = tb.show("osunits-net-api.service", "LoadState", "ActiveState")
    assert net == {"LoadState": "loaded", "ActiveState": "active"}
    # and the failure is loud: the path unit started the failure unit after the reload
    wait_state(tb, FAILED_UNIT, "failed")
    assert FAILED_UNIT in tb.systemctl("--failed", "--plain").stdout
    assert "unknown service 'dbb'" in tb.journal(FAILED_UNIT)
    code, out = status(tb)
    assert code == 1, out
    assert "its last run FAILED" in out and "these are the last good units" in out
    assert "unknown service 'dbb'" in out
    assert "systemd-nspawn@api.service" in tb.show("openstack.target", "Wants")["Wants"]
    # fixed and reloaded: all is normal again, and the failure unit failed no longer
    install_deployment(tb)
    tb.daemon_reload()
    wait_state(tb, FAILED_UNIT, "inactive")
    assert FAILED_UNIT not in tb.systemctl("--failed", "--plain").stdout
    assert FAILED_UNIT not in tb.show("openstack.target", "Requires")["Requires"]
    code, out = status(tb)
    assert code == 0, out
    assert "FAILED" not in out and "api" in out
    res = CliRunner().invoke(app, ["stop", "--bus", tb.bus_address.decode()])
    assert res.exit_code == 0, res.output
    for s in ("api", "cache", "db", "worker"):
        assert tb.show(f"osunits-net-{s}.service", "ActiveState")["ActiveState"] == "inactive"
    assert "osunits-" not in tb.run(["/usr/bin/ip", "netns", "list"]).stdout
