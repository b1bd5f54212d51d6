"""`osunits secrets generate|list`, and the bundled example reading its passwords with secret()."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osunits import generator
from osunits.cli import app
from osunits.deployment import load_deployment
from osunits.render import ConfigRenderer
from osunits.secretfiles import find_secret_uses
from tests.conftest import EXAMPLE, write_secret, write_tree

HOSTS = ["cmp01", "cmp02", "ctl01", "net01"]


@pytest.fixture
def dep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small deployment whose secrets go to DIR/secrets (no $OSUNITS_SECRETS_DIR)."""
    monkeypatch.delenv("OSUNITS_SECRETS_DIR", raising=False)
    return write_tree(tmp_path / "dep", {
        "deployment.yaml": "defaults: {rootfs: test-minimal}\nhosts:\n  h1: {address: 192.0.2.1, "
                           "roles: [all]}\nroles:\n  all: [db, api]\n",
        "services/db.yaml": "exec: [/bin/db]\nconfig:\n  - {template: db.j2, path: /etc/db}\n",
        "services/api.yaml": "exec: [/bin/api]\nconfig:\n  - {template: api.j2, path: /etc/api}\n",
        "templates/db.j2": "{% include 'common.j2' %}\npw = {{ secret('db-root') }}\n",
        "templates/common.j2": 'user = {{ secret(name="api-db") }}\n',
        "templates/api.j2": "db = {{ secret('api-db') | urlencode }}\n"
                            "{% if false %}{{ secret(\"api-key\") }}{% endif %}\n",
        # in templates/, but no service renders it
        "templates/unused.j2": "{{ secret('unused-secret') }}\n",
    })


def _generate(d: Path) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["secrets", "generate", "-d", str(d)])
    return res.exit_code, res.output


def test_generate_creates_the_missing_secrets_and_only_them(dep: Path) -> None:
    code, out = _generate(dep)
    assert code == 0, out
    sdir = dep / "secrets"
    # constant names of the services' templates and what they include, even under an `if`
    assert sorted(os.listdir(sdir)) == ["api-db", "api-key", "db-root"]
    assert stat.S_IMODE(sdir.stat().st_mode) == 0o700
    values = []
    for p in sdir.iterdir():
        st = p.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
        value = p.read_text()
        assert value.endswith("\n") and value.count("\n") == 1 and len(value) > 40
        assert value.strip() not in out  # names only, never values
        values.append(value)
    assert len(set(values)) == 3
    assert "created  api-db" in out and "unused-secret" not in out
    # and generate now renders with them
    gen = CliRunner().invoke(app, ["generate", "-H", "h1", "-d", str(dep), "--root",
                                   str(dep.parent / "root"), "--no-reload"])
    assert gen.exit_code == 0, gen.output
    api = dep.parent / "root/var/lib/osunits/config/api/etc/api"
    assert api.read_text().startswith(f"db = {(sdir / 'api-db').read_text().strip()}\n")


def test_generate_never_changes_an_existing_secret(dep: Path) -> None:
    kept = write_secret(dep / "secrets", "api-db", "chosen by the operator")
    before = kept.stat()
    code, out = _generate(dep)
    assert code == 0, out
    assert kept.read_bytes() == b"chosen by the operator\n"
    assert kept.stat().st_mtime_ns == before.st_mtime_ns
    assert "present  api-db" in out and "created  db-root" in out
    again = {p.name: p.read_bytes() for p in (dep / "secrets").iterdir()}
    code, out = _generate(dep)  # a second run creates nothing
    assert code == 0 and "created" not in out.replace("0 created", "")
    assert {p.name: p.read_bytes() for p in (dep / "secrets").iterdir()} == again


def test_an_existing_secret_that_secret_would_refuse_is_reported_not_fixed(dep: Path) -> None:
    open_ = write_secret(dep / "secrets", "api-db", "pw")
    open_.chmod(0o644)
    code, out = _generate(dep)
    assert code == 1
    assert "refused  api-db: must be a file of yours that no one else can read" in out
    assert stat.S_IMODE(open_.stat().st_mode) == 0o644 and open_.read_text() == "pw\n"


@pytest.mark.parametrize(("content", "link"), [
    (b"", False), (b"\n", False), (b"a\nb\n", False), (b"x" * 5000, False), (b"pw\n", True)])
def test_list_and_generate_refuse_exactly_what_secret_refuses(
        dep: Path, content: bytes, link: bool) -> None:
    """An emptied secret (`touch`, a torn copy on a full disk), more than one line, too
    long, or a link: secret() refuses it, so list and generate say `refused`, not present."""
    sdir = dep / "secrets"
    target = write_secret(sdir, "real" if link else "api-db", "x")
    target.write_bytes(content)
    if link:
        (sdir / "api-db").symlink_to(target)
    for command in ("list", "generate"):
        res = CliRunner().invoke(app, ["secrets", command, "-d", str(dep)])
        assert res.exit_code == 1, res.output
        [line] = [ln for ln in res.output.splitlines() if "api-db" in ln and "refused" in ln]
        assert line.startswith("refused  api-db"), res.output
        assert "present" not in line
    with pytest.raises(ValueError, match="secret\\('api-db'\\)"):
        ConfigRenderer(dep / "templates", sdir)._secret("api-db")


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o777])
def test_a_secrets_dir_others_can_enter_is_refused_and_nothing_written(
        dep: Path, mode: int) -> None:
    sdir = dep / "secrets"
    sdir.mkdir()
    sdir.chmod(mode)
    code, out = _generate(dep)
    assert code == 2
    assert f"mode {mode:04o}" in out and "chmod 700" in out and "nothing was written" in out
    assert os.listdir(sdir) == []
    assert stat.S_IMODE(sdir.stat().st_mode) == mode


def test_a_secrets_dir_of_another_user_is_refused(dep: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the directory away")
    sdir = dep / "secrets"
    sdir.mkdir(mode=0o700)
    os.chown(sdir, 65534, 65534)
    code, out = _generate(dep)
    assert code == 2 and "owned by uid 65534" in out
    assert os.listdir(sdir) == []


def test_secrets_dir_from_the_environment(dep: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    vault = tmp_path / "vault" / "deep"
    monkeypatch.setenv("OSUNITS_SECRETS_DIR", str(vault))
    assert _generate(dep)[0] == 0
    assert sorted(os.listdir(vault)) == ["api-db", "api-key", "db-root"]
    assert not (dep / "secrets").exists()


def test_a_computed_name_is_reported_at_its_line_and_the_others_are_made(dep: Path) -> None:
    (dep / "templates/api.j2").write_text("a = 1\nb = {{ secret(service.name ~ '-x') }}\n"
                                          "c = {{ secret('../up') }}\nd = {{ secret('ok') }}\n")
    code, out = _generate(dep)
    assert code == 1
    assert f"{dep / 'templates/api.j2'}:2: error[T004]: secret: secret() with a computed " \
        "name" in out
    assert f"{dep / 'templates/api.j2'}:3: error[T005]: secret: secret('../up'): not a " \
        "secret name" in out
    assert sorted(os.listdir(dep / "secrets")) == ["api-db", "db-root", "ok"]


def test_a_template_that_does_not_parse_is_t002_and_nothing_is_written(dep: Path) -> None:
    (dep / "templates/api.j2").write_text("x\n{% if %}\n")
    code, out = _generate(dep)
    assert code == 2 and f"{dep / 'templates/api.j2'}:2: error[T002]" in out
    assert not (dep / "secrets").exists()


def test_list_says_present_and_missing_without_values(dep: Path) -> None:
    write_secret(dep / "secrets", "db-root", "do-not-print")
    res = CliRunner().invoke(app, ["secrets", "list", "-d", str(dep)])
    assert res.exit_code == 1  # one is missing
    lines = res.output.splitlines()
    assert lines[0].split() == ["missing", "api-db", f"{dep / 'templates/api.j2'}:1"]
    assert lines[2].split() == ["present", "db-root", f"{dep / 'templates/db.j2'}:2"]
    assert "do-not-print" not in res.output and not (dep / "secrets/api-db").exists()


def test_a_missing_secret_names_the_command_that_makes_it(dep: Path) -> None:
    res = CliRunner().invoke(app, ["check-deps", "-d", str(dep)])
    assert res.exit_code == 1
    assert "secret('api-db')" in res.output and "No such file" in res.output
    assert "hint: run `osunits secrets generate`" in res.output
    assert _generate(dep)[0] == 0
    res = CliRunner().invoke(app, ["check-deps", "-d", str(dep)])
    assert res.exit_code == 0, res.output


def test_the_generator_reads_the_secrets_of_its_deployment(dep: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """At boot there is no $OSUNITS_SECRETS_DIR: DIR/secrets, as `secrets generate` made it."""
    assert _generate(dep)[0] == 0
    (dep / "host").write_text("h1\n")
    monkeypatch.delenv("OSUNITS_HOST", raising=False)
    root = tmp_path / "boot"
    assert generator.run(Path("/run/systemd/generator"), dep, root) == 0
    assert not (root / "run/osunits/generator-errors").exists()
    db = root / "run/osunits/config/db/etc/db"
    assert db.read_text().endswith(f"pw = {(dep / 'secrets/db-root').read_text()}")


# --- the bundled example -------------------------------------------------------------

OLD_DEMO_VALUES = ["password = admin", "--bootstrap-password", "osunits-example-secret",
                   "IDENTIFIED BY 'keystone'", "IDENTIFIED BY 'nova'", ":openstack@",
                   "nova:nova@", "keystone:keystone@", "glance:glance@", "neutron:neutron@",
                   "placement:placement@", "guest:guest"]


def test_the_example_holds_no_password(tmp_path: Path, example_secrets: Path) -> None:
    """Every credential of the example comes from a secret: its rendered files hold none
    of the old demo values, and each secret's value appears where it is used."""
    root = tmp_path / "root"
    seen = set()
    for host in HOSTS:
        res = CliRunner().invoke(app, ["generate", "-H", host, "-d", str(EXAMPLE), "--root",
                                       str(root / host), "--no-reload"])
        assert res.exit_code == 0, res.output
        for p in (root / host).rglob("*"):
            if p.is_file() and not p.name.endswith(".pyc"):
                text = p.read_text()
                for old in OLD_DEMO_VALUES:
                    assert old not in text, f"{p}: {old!r}"
                seen.update(n for n in os.listdir(example_secrets)
                            if (example_secrets / n).read_text().strip() in text)
    assert seen == set(os.listdir(example_secrets))
    names = find_secret_uses(load_deployment(EXAMPLE)).names
    assert {"keystone-admin", "nova-db", "rabbitmq-openstack", "metadata-proxy"} <= set(names)


def test_keystones_admin_password_is_not_on_its_command_line(example_secrets: Path,
                                                              tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["generate", "-H", "ctl01", "-d", str(EXAMPLE), "--root",
                                   str(tmp_path), "--no-reload"])
    assert res.exit_code == 0, res.output
    nspawn = (tmp_path / "etc/systemd/nspawn/keystone.nspawn").read_text()
    admin = (example_secrets / "keystone-admin").read_text().strip()
    assert admin not in nspawn and "OS_BOOTSTRAP_PASSWORD=$(cat " in nspawn
    # ... but in the file the command reads, root's alone on the host
    pw = tmp_path / "var/lib/osunits/config/keystone/etc/keystone/osunits-admin-password"
    assert pw.read_text() == admin + "\n" and stat.S_IMODE(pw.stat().st_mode) == 0o600


def test_the_example_is_ready_after_secrets_generate(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """What README's first command does: a fresh copy, `secrets generate`, check-deps."""
    monkeypatch.delenv("OSUNITS_SECRETS_DIR", raising=False)
    d = tmp_path / "example"
    shutil.copytree(EXAMPLE, d, ignore=shutil.ignore_patterns("secrets"))
    assert CliRunner().invoke(app, ["check-deps", "-d", str(d)]).exit_code == 1
    code, out = _generate(d)
    assert code == 0, out
    assert sorted(os.listdir(d / "secrets")) == sorted(
        find_secret_uses(load_deployment(d)).names)
    res = CliRunner().invoke(app, ["check-deps", "-d", str(d)])
    assert res.exit_code == 0, res.output


def test_an_optional_include_that_is_missing_is_not_an_error(dep: Path) -> None:
    """{% include ... ignore missing %} renders; the scan must not refuse what generate takes."""
    db = dep / "templates/db.j2"
    db.write_text(db.read_text() + "{% include 'optional.j2' ignore missing %}\n")
    code, out = _generate(dep)
    assert code == 0, out
    assert sorted(os.listdir(dep / "secrets")) == ["api-db", "api-key", "db-root"]
    (dep / "templates/api.j2").unlink()  # one that config: names is still T001
    res = CliRunner().invoke(app, ["secrets", "list", "-d", str(dep)])
    assert res.exit_code == 2 and "error[T001]" in res.output and "api.j2" in res.output
