"""osunits as a systemd generator, on a real systemd: boot-time units, visible failures."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

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
    tb.daemon_reload()
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
