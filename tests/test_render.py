"""The deployment's config templates: rendered in jinja2's sandbox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from osunits.deployment import load_deployment
from osunits.errors import DeploymentError
from osunits.render import ConfigRenderer
from tests.conftest import EXAMPLE


@pytest.mark.parametrize("expr", [
    "host.__class__", "service.__init__", "''.__class__.__mro__", "host.service.__globals__",
    "'{0.__class__}'.format(host)", "'{x.__class__}'.format_map({'x': host})",
])
def test_config_templates_stay_sandboxed(tmp_path: Path, expr: str) -> None:
    """The renderer remembers which attributes are safe: what the sandbox refuses stays
    refused, the second time too (after a safe access of the same type)."""
    (tmp_path / "t.j2").write_text(f"{{{{ host.name }}}} {{{{ {expr} }}}}\n")
    r = ConfigRenderer(tmp_path)
    dep = load_deployment(EXAMPLE)
    ctl = dep.host("ctl01")
    assert ctl is not None
    ctx = {"host": ctl, "service": ctl.services[0]}
    for _ in range(2):
        with pytest.raises(DeploymentError, match="T003.*unsafe"):
            r.render("t.j2", ctx, None)
    (tmp_path / "ok.j2").write_text("{{ host.name }} {{ '{0}'.format(host.name) }}\n")
    assert r.render("ok.j2", ctx, None) == "ctl01 ctl01\n"


@pytest.mark.parametrize(("expr", "said"), [
    ("1 // 0", "ZeroDivisionError: integer division or modulo by zero"),
    ("'{0}'.format()", "IndexError: "),
    ("range(10**9) | list", "OverflowError: "),
    ("nosuch", "'nosuch' is undefined"),
])
def test_whatever_a_template_raises_is_its_error_at_its_line(tmp_path: Path, expr: str,
                                                             said: str) -> None:
    (tmp_path / "t.j2").write_text(f"a = 1\nb = {{{{ {expr} }}}}\n")
    with pytest.raises(DeploymentError) as e:
        ConfigRenderer(tmp_path).render("t.j2", {}, None)
    [p] = e.value.problems
    assert p.code == "T003" and said in p.message
    assert p.location is not None and p.location.line == 2


class _O:
    def __init__(self, fmt: object) -> None:
        self.fmt = fmt


@pytest.mark.parametrize("expr", [
    "deployment.root.joinpath('x').write_text('y')", "service.source.read_text()",
    "deployment.root.parent.exists()", "hosts.clear()", "service.exec.__len__()",
    "a.fmt ~ b.fmt(1)",  # a safe name on a type, then a str.format under it
])
def test_templates_cannot_reach_files_or_change_the_model(tmp_path: Path, expr: str) -> None:
    dep = load_deployment(EXAMPLE)
    ctl = dep.host("ctl01")
    assert ctl is not None
    ctx = {"deployment": dep, "service": ctl.services[0], "hosts": dep.host_index(),
           "a": _O("x"), "b": _O("{0.__class__.__mro__}".format)}
    (tmp_path / "t.j2").write_text(f"{{{{ {expr} }}}}\n")
    with pytest.raises(DeploymentError, match="T003"):
        ConfigRenderer(tmp_path).render("t.j2", ctx, None)
    assert not (EXAMPLE / "x").exists() and len(dep.host_index()) == 4
    (tmp_path / "ok.j2").write_text("{{ deployment.root.name }} {{ service.source.stem }} "
                                    "{{ hosts | length }} {{ a.fmt }}\n")
    assert ConfigRenderer(tmp_path).render("ok.j2", ctx, None) == (
        f"{EXAMPLE.name} {ctl.services[0].name} 4 x\n")


def test_a_missing_template_names_the_closest(tmp_path: Path) -> None:
    (tmp_path / "glance").mkdir()
    (tmp_path / "glance/glance-api.conf.j2").write_text("x\n")
    (tmp_path / "t.j2").write_text("{% include 'glance/glance-api.conf' %}\n")
    for name in ("glance/glance-api.conf", "t.j2"):  # named, or included by one
        with pytest.raises(DeploymentError) as e:
            ConfigRenderer(tmp_path).render(name, {}, None)
        [p] = e.value.problems
        assert p.code == "T001" and "'glance/glance-api.conf' not found" in p.message
        assert p.hint == "did you mean 'glance/glance-api.conf.j2'?"


def test_secrets_come_from_their_own_files(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "db-password").write_text("s3cr3t\n")
    (secrets / "db-password").chmod(0o600)
    (tmp_path / "t.j2").write_text("[db]\npassword = {{ secret('db-password') }}\n")
    r = ConfigRenderer(tmp_path, secrets)
    assert r.render("t.j2", {}, None) == "[db]\npassword = s3cr3t\n"
    assert r.secrets == {"s3cr3t"}
    cases = {
        "{{ secret('nope') }}": "secret('nope'): " + str(secrets / "nope") + ": No such file",
        "{{ secret('../t.j2') }}": "not a secret name",
        "{{ secret('open') }}": "no one else can read (chmod 600)",
        "{{ secret('two') }}": "must hold one non-empty line",
    }
    os.mkfifo(secrets / "fifo", 0o600)  # must not hang the run
    (secrets / "big").write_text("a" * 5000 + "\n")
    (secrets / "big").chmod(0o600)
    cases["{{ secret('fifo') }}"] = "no one else can read"
    cases["{{ secret('big') }}"] = "at most 4096 bytes"
    (secrets / "crlf").write_text("pw\r\n")
    (secrets / "crlf").chmod(0o600)
    (tmp_path / "crlf.j2").write_text("[{{ secret('crlf') }}]")
    assert ConfigRenderer(tmp_path, secrets).render("crlf.j2", {}, None) == "[pw]"
    (secrets / "open").write_text("x\n")
    (secrets / "open").chmod(0o644)
    (secrets / "two").write_text("a\nb\n")
    (secrets / "two").chmod(0o600)
    for expr, said in cases.items():
        (tmp_path / "bad.j2").write_text(f"x = 1\ny = {expr}\n")
        with pytest.raises(DeploymentError) as e:
            ConfigRenderer(tmp_path, secrets).render("bad.j2", {}, None)
        [p] = e.value.problems
        assert p.code == "T003" and said in p.message, p.message
        assert p.location is not None and p.location.line == 2
    with pytest.raises(DeploymentError, match="has no secrets directory"):
        ConfigRenderer(tmp_path).render("t.j2", {}, None)
    (tmp_path / "leak.j2").write_text("{{ {}[secret('db-password')] }}\n")  # quotes the key
    with pytest.raises(DeploymentError) as e:
        ConfigRenderer(tmp_path, secrets).render("leak.j2", {}, None)
    assert "s3cr3t" not in str(e.value)
