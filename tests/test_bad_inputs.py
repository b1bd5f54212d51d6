"""One fixture per bad input (tests/fixtures/bad/NAME/), its expected errors in `# expect:` lines.

Every case must exit 2 from `generate` with every expected line in the output,
and leave an existing generated tree exactly as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from osunits.cli import app
from osunits.deployment import load_deployment
from osunits.errors import OsunitsError
from osunits.fields import SERVICE_FIELDS
from osunits.graph import check_deployment
from osunits.plan import plan_host
from tests.conftest import EXAMPLE, snapshot

BAD = Path(__file__).parent / "fixtures" / "bad"
CASES = sorted(p.name for p in BAD.iterdir() if p.is_dir())


def expectations(case: Path, kind: str = "expect") -> list[str]:
    """What the output must say (``# expect:`` lines), or must not (``# expect-not:``)."""
    lines = (case / "deployment.yaml").read_text().splitlines()
    return [ln.removeprefix(f"# {kind}: ") for ln in lines if ln.startswith(f"# {kind}: ")]


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
    host = {"unknown-host": "h2", "host-named-like-service": "a"}.get(case, "h1")
    res = CliRunner().invoke(app, ["generate", "-H", host, "-d", str(dep), "--root", str(root)])
    assert res.exit_code == 2, res.output
    out = res.output.replace(str(tmp_path) + "/" + case + "/", "")
    for exp in expectations(src):
        assert exp in out, f"expected {exp!r} in:\n{out}"
    for unexpected in expectations(src, "expect-not"):
        assert unexpected not in out, f"did not expect {unexpected!r} in:\n{out}"
    assert "Traceback" not in out
    assert snapshot(root) == before


def test_check_deps_reports_problems_with_exit_1() -> None:
    res = CliRunner().invoke(app, ["check-deps", "-d", str(BAD / "cycle-requires")])
    assert res.exit_code == 1
    assert "dependency cycle: a => b => a" in res.output


def test_a_rootfs_no_spec_provides_is_a_warning_with_the_closest(tmp_path: Path) -> None:
    dep = tmp_path / "dep"
    shutil.copytree(EXAMPLE, dep)
    svc = dep / "services/keystone.yaml"
    svc.write_text(svc.read_text().replace("rootfs: keystone", "rootfs: keystnoe"))
    res = CliRunner().invoke(app, ["check-deps", "-d", str(dep)])
    assert res.exit_code == 1
    assert f"{svc}:2: warning[C009]: rootfs: unknown rootfs spec 'keystnoe'" in res.output
    assert "did you mean 'keystone'?" in res.output
    assert res.output.count("C009") == 1
    (dep / "rootfs_specs").mkdir()  # the deployment's own specs count too
    (dep / "rootfs_specs/keystnoe.yaml").write_text("base: keystone\n")
    res = CliRunner().invoke(app, ["check-deps", "-d", str(dep)])
    assert res.exit_code == 0 and "C009" not in res.output


@pytest.mark.parametrize("case", ["config-template-missing", "config-template-syntax"])
def test_check_deps_reports_template_errors_as_generate_does(case: str) -> None:
    res = CliRunner().invoke(app, ["check-deps", "-d", str(BAD / case)])
    assert res.exit_code == 1
    out = res.output.replace(str(BAD / case) + "/", "")
    for exp in expectations(BAD / case):
        assert exp in out, f"expected {exp!r} in:\n{out}"
    res = CliRunner().invoke(app, ["check-deps", "-d", str(BAD / case), "--no-render"])
    assert "error[T" not in res.output  # (exit 1 still: the fixture's rootfs is C009)


def test_a_template_that_fails_to_render_names_its_own_line(tmp_path: Path) -> None:
    dep = tmp_path / "dep"
    shutil.copytree(EXAMPLE, dep)
    tmpl = dep / "templates/glance/glance-api.conf.j2"
    lines = tmpl.read_text().splitlines(keepends=True)
    tmpl.write_text("".join(lines[:2]) + "x = {{ host.nosuch }}\n" + "".join(lines[2:]))
    for argv in (["check-deps"], ["generate", "-H", "ctl01", "--root", str(tmp_path / "r")]):
        res = CliRunner().invoke(app, [*argv, "-d", str(dep)])
        assert res.exit_code == (1 if argv[0] == "check-deps" else 2), res.output
        assert f"{tmpl}:3: error[T003]: config.template: cannot render " in res.output
        assert f"hint: used at {dep}/services/glance-api.yaml:" in res.output
        assert res.output.count("T003") == 1


@pytest.mark.parametrize("case", ["missing include", "include loop", "error in include",
                                  "syntax in include"])
def test_an_included_templates_problem_is_named_at_its_line(case: str, tmp_path: Path) -> None:
    dep = tmp_path / "dep"
    shutil.copytree(EXAMPLE, dep)
    tmpl = dep / "templates/glance/glance-api.conf.j2"
    inner = dep / "templates/glance/inner.j2"
    inner.write_text("a = 1\nb = {{ host.nosuch }}\n" if case != "syntax in include"
                     else "a = 1\n{% if %}\n")
    include = {"missing include": "glance/nope.j2", "include loop": "glance/glance-api.conf.j2",
               "error in include": "glance/inner.j2", "syntax in include": "glance/inner.j2"}[case]
    lines = tmpl.read_text().splitlines(keepends=True)
    tmpl.write_text("".join(lines[:2]) + f'{{% include "{include}" %}}\n' + "".join(lines[2:]))
    res = CliRunner().invoke(app, ["check-deps", "-d", str(dep)])
    assert res.exit_code == 1, res.output
    expected = {
        "missing include": f"{tmpl}:3: error[T001]: config.template: config template "
                           "'glance/nope.j2' not found",
        "include loop": f"{tmpl}:3: error[T003]: config.template: cannot render "
                        "glance/glance-api.conf.j2: templates include each other without end",
        "error in include": f"{inner}:2: error[T003]: config.template: cannot render "
                            "glance/glance-api.conf.j2: ",
        "syntax in include": f"{inner}:2: error[T002]: config.template: template syntax error",
    }[case]
    assert expected in res.output
    if case != "syntax in include":  # T002 names the file and line alone
        assert f"used at {dep}/services/glance-api.yaml:" in res.output
    assert "Traceback" not in res.output


def test_check_deps_checks_the_deployments_own_rootfs_specs(tmp_path: Path) -> None:
    dep = tmp_path / "dep"
    shutil.copytree(EXAMPLE, dep)
    (dep / "rootfs_specs").mkdir()
    (dep / "rootfs_specs/my-api.yaml").write_text("base: keystnoe\npackages: [python3-x]\n")
    res = CliRunner().invoke(app, ["check-deps", "-d", str(dep)])
    assert res.exit_code == 1
    assert f"{dep}/rootfs_specs/my-api.yaml:1: error[R010]: base: unknown base spec 'keystnoe'" \
        in res.output
    assert "did you mean 'keystone'?" in res.output
    assert "error[R" not in res.output.replace("R010", "")  # the bundled specs are fine


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


def test_environment_numbers_are_kept_as_written(tmp_path: Path) -> None:
    """YAML 1.1 reads 1.10 as 1.1, 010 as 8, 12:30 as 750: a version or a time would change."""
    from osunits.deployment import load_deployment
    from tests.conftest import write_tree

    written = {"A": "0x1F", "C": "12:30", "D": "1.10", "E": "010", "F": "1_000", "G": ".inf",
               "H": "42", "I": "-0.50"}
    write_tree(tmp_path, {
        "deployment.yaml": "hosts:\n  h1: {address: 192.0.2.1, services: [a]}\n",
        "services/a.yaml": "rootfs: x\nexec: /bin/true\nenvironment:\n"
                           + "".join(f"  {k}: {v}\n" for k, v in written.items()),
    })
    (svc,) = load_deployment(tmp_path).services
    assert dict(svc.environment) == written


def test_every_bad_environment_variable_is_named(tmp_path: Path) -> None:
    from tests.conftest import write_tree

    write_tree(tmp_path, {
        "deployment.yaml": "hosts:\n  h1: {address: 192.0.2.1, services: [a]}\n",
        "services/a.yaml": "rootfs: x\nexec: /bin/true\nenvironment:\n  A: [1]\n"
                           "  B: yes\n  C: {x: 1}\n  D: fine\n",
    })
    res = CliRunner().invoke(app, ["check-deps", "-d", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert "a.yaml:4: error[E108]: environment: A: expected a string or number, got a list" \
        in res.output
    assert "a.yaml:5: error[E108]: environment: B: expected a string or number, got 'yes'" \
        in res.output
    assert "a.yaml:6: error[E108]: environment: C: expected a string or number, got a mapping" \
        in res.output
    assert res.output.count("error[") == 3


# Any values under any service keys: the pipeline compiles them or says what is wrong,
# never a traceback (checked with 3000 examples while writing this; 60 per suite run).
_KEYS = sorted(f.key for f in SERVICE_FIELDS)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=12),
                     st.sampled_from(["tcp:80", "http://x/", "1s", "0644", "/var/lib/x", "a=b",
                                      "%n", "$X", "9292", "8080:80", "mariadb", "notify"]))
_values = st.recursive(_scalars, lambda c: st.one_of(
    st.lists(c, max_size=3),
    st.dictionaries(st.sampled_from([*_KEYS, "tcp", "http", "timeout", "path", "template",
                                     "port", "memory", "command"]), c, max_size=3)),
    max_leaves=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6))
def test_any_service_values_compile_or_are_a_clear_error(
        tmp_path_factory: pytest.TempPathFactory, values: dict[str, object]) -> None:
    d = tmp_path_factory.mktemp("dep")
    shutil.copytree(EXAMPLE, d, dirs_exist_ok=True)
    svc = d / "services/keystone.yaml"
    svc.write_text(yaml.safe_dump({**yaml.safe_load(svc.read_text()), **values}))
    try:
        dep = load_deployment(d)
        check_deployment(dep)
        plan_host(dep, "ctl01")
    except OsunitsError as e:
        assert str(e)


@pytest.mark.parametrize("raw", [86401, 0, -5, "0s", "25h", "1441min"])
def test_a_duration_out_of_range_says_so(raw: object) -> None:
    from osunits.errors import Location
    from osunits.fields import Invalid, parse_duration
    from osunits.load import Scalar

    with pytest.raises(Invalid, match=r"out of range \(1s\.\.24h\)"):
        parse_duration(Scalar(raw, Location("a.yaml", 1)))  # type: ignore[arg-type]
