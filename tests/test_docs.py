"""docs/ stays true to the code: generated parts in sync, schema useful, every command and code documented."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
import yaml

from osunits import docgen
from osunits.cli import app
from osunits.deployment import load_deployment
from osunits.errors import DeploymentError
from osunits.fields import SERVICE_FIELDS
from tests.conftest import EXAMPLE, REPO, write_tree

DOCS = REPO / "docs"
SERVICES = sorted((EXAMPLE / "services").glob("*.yaml"))


# --- (a) generated docs are in sync with the field table ------------------------------

def _docgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "osunits.docgen", *args], cwd=REPO,
                          capture_output=True, text=True, check=False)


def test_docgen_check_passes() -> None:
    res = _docgen("--check")
    assert res.returncode == 0, res.stderr


def test_docgen_check_notices_stale_docs(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    assert _docgen("--check", "--docs", str(docs)).returncode == 0
    fmt = docs / docgen.FORMAT_MD
    fmt.write_text(fmt.read_text().replace("| `rootfs` |", "| `rootfs-old` |"))
    assert _docgen("--check", "--docs", str(docs)).returncode == 1
    assert _docgen("--docs", str(docs)).returncode == 0  # rewrites
    assert _docgen("--check", "--docs", str(docs)).returncode == 0
    (docs / docgen.SCHEMA_JSON).write_text("{}\n")
    assert _docgen("--check", "--docs", str(docs)).returncode == 1


def test_every_service_key_is_in_the_table() -> None:
    text = (DOCS / "format.md").read_text()
    block = text[text.index(docgen.BEGIN):text.index(docgen.END)]
    for f in SERVICE_FIELDS:
        assert f"| `{f.key}` |" in block, f.key


def test_schema_file_is_what_osunits_schema_prints() -> None:
    res = subprocess.run([sys.executable, "-m", "osunits.cli", "schema"], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert json.loads(res.stdout) == json.loads((DOCS / "service.schema.json").read_text())


# --- (b) the schema accepts the examples and rejects bad definitions -------------------

@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((DOCS / "service.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("path", SERVICES, ids=[p.stem for p in SERVICES])
def test_schema_accepts_example(validator: jsonschema.Draft202012Validator, path: Path) -> None:
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


def test_schema_accepts_a_service_whose_rootfs_is_a_default(
        validator: jsonschema.Draft202012Validator) -> None:
    """Editors must not flag a valid file: `rootfs` may come from `defaults:`."""
    assert validator.is_valid({"exec": ["/usr/bin/web"]})


def test_examples_are_there() -> None:
    assert len(SERVICES) >= 10


_GOOD: dict[str, Any] = {"rootfs": "web", "exec": ["/usr/bin/web"]}
_BAD = [
    pytest.param({"pots": [8080]}, id="unknown-key"),
    pytest.param({"ports": [70000]}, id="port-out-of-range"),
    pytest.param({"ports": [0]}, id="port-zero"),
    pytest.param({"publish": [{"host": 99999}]}, id="publish-out-of-range"),
    pytest.param({"readiness": {"tcp": 8080, "http": "http://127.0.0.1/", "timeout": 5}},
                 id="two-readiness-kinds-and-timeout"),
    pytest.param({"readiness": {"tcp": 8080, "http": "http://127.0.0.1/"}},
                 id="two-readiness-kinds"),
    pytest.param({"readiness": {"timeout": 5}}, id="readiness-timeout-only"),
    pytest.param({"readiness": {"notify": False}}, id="readiness-notify-false"),
    pytest.param({"ports": ["abc"]}, id="port-string"),
    pytest.param({"publish": ["80"]}, id="publish-no-container-port"),
    pytest.param({"readiness": "sometimes"}, id="readiness-word"),
    pytest.param({"network": "bridge"}, id="network-enum"),
    pytest.param({"requires": ["Not_A_Name"]}, id="dependency-name"),
    pytest.param({"rootfs": None}, id="rootfs-null"),
]


@pytest.mark.parametrize("extra", _BAD)
def test_schema_rejects(validator: jsonschema.Draft202012Validator, extra: dict[str, Any]) -> None:
    assert validator.is_valid(_GOOD)
    assert not validator.is_valid({**_GOOD, **extra})


@pytest.mark.parametrize("extra", [p for p in _BAD if not p.marks])
def test_osunits_rejects_what_the_schema_rejects(tmp_path: Path, extra: dict[str, Any]) -> None:
    """The schema is a preview of the validator: what it refuses, osunits refuses too."""
    write_tree(tmp_path, {
        "deployment.yaml": "hosts:\n  h1: {address: 192.0.2.1, services: [web]}\n",
        "services/web.yaml": yaml.safe_dump({**_GOOD, **extra}),
    })
    with pytest.raises(DeploymentError):
        load_deployment(tmp_path)


def test_osunits_accepts_the_good_base(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "deployment.yaml": "hosts:\n  h1: {address: 192.0.2.1, services: [web]}\n",
        "services/web.yaml": yaml.safe_dump(_GOOD),
    })
    assert load_deployment(tmp_path).host("h1") is not None


# --- (c) every command is documented ----------------------------------------------------

def _commands() -> dict[str, Any]:
    """The typer app's commands (typer ships its own click: no isinstance against click)."""
    group = typer.main.get_command(app)
    return dict(getattr(group, "commands", {}))


def test_commands_found() -> None:
    assert {"generate", "check-deps", "schema"} <= set(_commands())


@pytest.mark.parametrize("name", sorted(_commands()))
def test_command_is_documented(name: str) -> None:
    text = (DOCS / "commands.md").read_text()
    assert re.search(rf"osunits {re.escape(name)}(?![\w-])", text), f"{name} is not documented"
    for param in _commands()[name].params:
        if param.param_type_name == "option":
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("--") and opt != "--help":
                    assert f"`{opt}" in text or f"{opt}]" in text or f"{opt} " in text, \
                        f"{name}: option {opt} is not documented"


# --- (d) every error code is documented ---------------------------------------------------

_CODE = re.compile(r"""["']([ECNPTR]\d{3})["']""")


def _codes_in_source() -> set[str]:
    return {c for p in (REPO / "osunits").rglob("*.py") for c in _CODE.findall(p.read_text())}


def _codes_in_table() -> set[str]:
    return set(re.findall(r"^\| `([A-Z]\d{3})` \|", (DOCS / "format.md").read_text(), re.M))


def test_codes_are_found() -> None:
    codes = _codes_in_source()
    assert {"E011", "E101", "C001", "T003", "R001"} <= codes  # multi-line Problem(...) calls too
    assert len(codes) >= 35


def test_every_error_code_is_documented() -> None:
    missing = _codes_in_source() - _codes_in_table()
    assert not missing, f"error codes missing from docs/format.md's table: {sorted(missing)}"


def test_no_documented_code_is_gone() -> None:
    stale = _codes_in_table() - _codes_in_source()
    assert not stale, f"docs/format.md documents codes osunits no longer uses: {sorted(stale)}"
