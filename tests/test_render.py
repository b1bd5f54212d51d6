"""The deployment's config templates: rendered in jinja2's sandbox."""

from __future__ import annotations

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
