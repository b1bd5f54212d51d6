"""One fixture per bad input (tests/fixtures/bad/NAME/), its expected errors in `# expect:` lines.

Every case must exit 2 from `generate` with every expected line in the output,
and leave an existing generated tree exactly as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osunits.cli import app
from tests.conftest import EXAMPLE, snapshot

BAD = Path(__file__).parent / "fixtures" / "bad"
CASES = sorted(p.name for p in BAD.iterdir() if p.is_dir())


def expectations(case: Path) -> list[str]:
    lines = (case / "deployment.yaml").read_text().splitlines()
    return [ln.removeprefix("# expect: ") for ln in lines if ln.startswith("# expect: ")]


@pytest.fixture(scope="module")
def previous_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding a generated unit set, to prove bad input leaves it alone."""
    root = tmp_path_factory.mktemp("root")
    res = CliRunner().invoke(app, ["generate", "-H", "ctl01", "-d", str(EXAMPLE),
                                   "--root", str(root)])
    assert res.exit_code == 0, res.output
    return root


def test_every_case_has_expectations() -> None:
    assert len(CASES) >= 25
    for c in CASES:
        assert expectations(BAD / c), c


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: str, tmp_path: Path, previous_root: Path) -> None:
    src = BAD / case
    dep = tmp_path / case
    shutil.copytree(src, dep)
    root = tmp_path / "root"
    shutil.copytree(previous_root, root, symlinks=True)
    before = snapshot(root)
    host = "h2" if case == "unknown-host" else "h1"
    res = CliRunner().invoke(app, ["generate", "-H", host, "-d", str(dep), "--root", str(root)])
    assert res.exit_code == 2, res.output
    out = res.output.replace(str(tmp_path) + "/" + case + "/", "")
    for exp in expectations(src):
        assert exp in out, f"expected {exp!r} in:\n{out}"
    assert "Traceback" not in out
    assert snapshot(root) == before


def test_check_deps_reports_problems_with_exit_1() -> None:
    res = CliRunner().invoke(app, ["check-deps", "-d", str(BAD / "cycle-requires")])
    assert res.exit_code == 1
    assert "dependency cycle: a => b => a" in res.output


def test_check_deps_unreadable_input_exit_2() -> None:
    res = CliRunner().invoke(app, ["check-deps", "-d", str(BAD / "binary-file")])
    assert res.exit_code == 2
    assert "file is binary" in res.output


@pytest.mark.parametrize("written", ["0644", '"0644"', "644", "'644'"])
def test_config_mode_is_octal_as_written(written: str, tmp_path: Path) -> None:
    from osunits.deployment import load_deployment
    from tests.conftest import write_tree

    write_tree(tmp_path, {
        "deployment.yaml": "hosts:\n  h1: {address: 192.0.2.1, services: [a]}\n",
        "services/a.yaml": "rootfs: x\nexec: /bin/true\nconfig:\n"
                           f"  - {{template: a.j2, path: /etc/a, mode: {written}}}\n",
    })
    (svc,) = load_deployment(tmp_path).services
    assert svc.config[0].mode == 0o644
