"""The generator's output when the deployment breaks: the last good units stay, loudly."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from osunits import control, generator
from osunits.systemd.units import TARGET
from tests.conftest import REPO

FAST = REPO / "tests" / "fixtures" / "fastdeploy"
UNIT_DIR = Path("/run/systemd/generator")
OWN = {generator.FAILED_UNIT, generator.WATCH_UNIT, f"{TARGET}.d/{generator.TARGET_DROPIN}"}


@pytest.fixture
def dep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "dep"
    shutil.copytree(FAST, d)
    (d / "host").write_text("t1\n")
    monkeypatch.delenv("OSUNITS_HOST", raising=False)
    return d


def _boot(tmp_path: Path, dep: Path, root: Path | None = None) -> tuple[Path, dict[str, bytes]]:
    """One generator run into an emptied generator directory (as systemd runs it)."""
    root = root or tmp_path / "root"
    out = root / "run/systemd/generator"
    shutil.rmtree(out, ignore_errors=True)
    assert generator.run(UNIT_DIR, dep, root) == 0
    return root, _tree(out)


def _tree(d: Path) -> dict[str, bytes]:
    files = {}
    for p in sorted(d.rglob("*")):
        if p.is_symlink():
            files[str(p.relative_to(d))] = b"->" + os.readlink(p).encode()
        elif p.is_file():
            files[str(p.relative_to(d))] = p.read_bytes()
    return files


def _break(dep: Path) -> None:
    api = dep / "services/api.yaml"
    api.write_text(api.read_text().replace("requires: [db]", "requires: [dbb]"))


def test_a_failed_run_writes_the_last_good_units_again_and_the_failure(
        tmp_path: Path, dep: Path) -> None:
    root, good = _boot(tmp_path, dep)
    assert "systemd-nspawn@api.service.d/50-osunits.conf" in good
    record = root / str(generator.LAST_GOOD_FILE).lstrip("/")
    assert record.stat().st_mode & 0o777 == 0o600  # rendered units may hold secrets
    assert not (root / "run/osunits/generator-check").exists()
    _break(dep)
    _, bad = _boot(tmp_path, dep, root)
    # every unit of the good run, byte for byte; only the generator's own files differ
    assert {k: v for k, v in bad.items() if k not in OWN} == {
        k: v for k, v in good.items() if k not in OWN}
    dropin = bad[f"{TARGET}.d/{generator.TARGET_DROPIN}"].decode()
    assert f"Requires={generator.FAILED_UNIT}" in dropin
    assert "unknown service 'dbb'" in bad[generator.FAILED_UNIT].decode()  # its Description
    errors = (root / "run/osunits/generator-errors").read_text()
    assert "api.yaml:4: error[C002]: requires: api on t1: unknown service 'dbb'" in errors
    assert (root / "run/osunits/generator-check").exists()  # the path unit starts the failure
    # fixed: the failure unit runs once more (and succeeds); the target requires nothing
    (root / "run/osunits/generator-check").unlink()
    api = dep / "services/api.yaml"
    api.write_text(api.read_text().replace("requires: [dbb]", "requires: [db]"))
    _, fixed = _boot(tmp_path, dep, root)
    assert fixed == good
    assert not (root / "run/osunits/generator-errors").exists()
    assert (root / "run/osunits/generator-check").exists()


def test_a_failed_first_run_writes_the_stand_in(tmp_path: Path, dep: Path) -> None:
    _break(dep)
    root, bad = _boot(tmp_path, dep)
    assert not any(k.startswith("systemd-nspawn@") for k in bad)
    assert f"Requires={generator.FAILED_UNIT}" in bad[TARGET].decode()
    assert bad[f"multi-user.target.wants/{generator.FAILED_UNIT}"] == (
        f"->{UNIT_DIR}/{generator.FAILED_UNIT}".encode())  # as systemd sees it, not under root
    assert "unknown service 'dbb'" in (root / "run/osunits/generator-errors").read_text()


def test_another_hosts_last_good_units_are_not_used(tmp_path: Path, dep: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = _boot(tmp_path, dep)
    (dep / "host").write_text("t2\n")  # not in the inventory: an error, and not t1's units
    _, bad = _boot(tmp_path, dep, root)
    assert not any(k.startswith("systemd-nspawn@") for k in bad)
    assert "Description=OpenStack services (not generated" in bad[TARGET].decode()
    assert "the last good units are host t1's, not t2's" in capsys.readouterr().err


def test_any_exception_keeps_the_last_good_units(tmp_path: Path, dep: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from osunits import plan

    root, good = _boot(tmp_path, dep)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(plan, "plan_host", boom)
    _, bad = _boot(tmp_path, dep, root)
    assert {k: v for k, v in bad.items() if k not in OWN} == {
        k: v for k, v in good.items() if k not in OWN}
    assert (root / "run/osunits/generator-errors").read_text() == "RuntimeError: a bug\n"


def test_a_record_naming_a_path_outside_the_unit_directory_is_refused(
        tmp_path: Path, dep: Path) -> None:
    root, _ = _boot(tmp_path, dep)
    record = root / str(generator.LAST_GOOD_FILE).lstrip("/")
    data = json.loads(record.read_text())
    data["files"].append({"path": "../../../etc/evil", "mode": 0o644, "link": "", "content": "x"})
    record.write_text(json.dumps(data))
    _break(dep)
    _, bad = _boot(tmp_path, dep, root)
    assert "(not generated" in bad[TARGET].decode()
    assert not any(k.startswith("systemd-nspawn@") for k in bad)  # none of the record's
    assert not (root / "etc/evil").exists() and not (root / "run/etc/evil").exists()


def test_status_says_the_generator_failed_and_that_no_services_is_no_table() -> None:
    st = {"target": TARGET, "active": "active", "sub": "active", "since": "-", "services": [],
          "generator": {"units": "stand-in", "errors": [f"e{i}" for i in range(7)],
                        "errors_file": "/run/osunits/generator-errors",
                        "failed_unit": generator.FAILED_UNIT}}
    text = control.format_status(st)
    assert "its last run FAILED" in text and "stand-in" in text
    assert "  e4" in text and "e5" not in text and "2 more line(s)" in text
    assert text.splitlines()[-1] == f"no services: {TARGET} wants none"
    assert "SERVICE" not in text
