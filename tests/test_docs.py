"""docs/ stays true to the code: generated parts in sync, schema useful, every command and code
documented, example output as the commands print it."""

from __future__ import annotations

import json
import os
import re
import shlex
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


# --- (e) the example output in the docs is what the commands print ------------------------
#
# A fenced block that shows a session (`$ COMMAND` lines, or `[HOST] $ COMMAND` for one of
# two hosts, each followed by what it printed) is run again, command by command, in one
# bash session from the repository's root, stdout and stderr together in the order they
# were written (as on a terminal). A line `...` in the doc stands for one or more lines
# left out; everything else must be the very lines printed. Only what truly varies is
# normalised: the scratch paths the docs name (/tmp/ctl01, build/graph.svg) become this
# test's own, and back in the output; an `ls -l` line's owner and time.

_PROMPT = re.compile(r"^(?:\[(\w+)\] )?\$ (.*)$")
_MARK = "@@osunits-docs-test: next command@@"


def _block(doc: str, after: str) -> list[str]:
    """The lines of the first fenced block of docs/DOC after the text `after`."""
    text = (DOCS / doc).read_text()
    assert text.count(after) == 1, f"docs/{doc}: {after!r} is not there once"
    rest = text[text.index(after):]
    m = re.search(r"^```[\w-]*\n(.*?)^```$", rest, re.M | re.S)
    assert m, f"docs/{doc}: no fenced block after {after!r}"
    return m.group(1).splitlines()


def _session(lines: list[str]) -> list[tuple[str | None, str, list[str]]]:
    """(host prompt or None, command, the lines shown after it), for each command."""
    out: list[tuple[str | None, str, list[str]]] = []
    for line in lines:
        m = _PROMPT.match(line)
        if m:
            out.append((m.group(1), m.group(2), []))
        else:
            assert out, f"a block that does not start with a command: {line!r}"
            out[-1][2].append(line)
    return out


def _elided_match(shown: list[str], actual: list[str]) -> bool:
    """Is `shown` `actual` with runs of one or more lines replaced by a line `...`?"""
    parts: list[list[str]] = [[]]
    for line in shown:
        if line.strip() == "...":
            parts.append([])
        else:
            parts[-1].append(line)
    if len(parts) == 1:
        return shown == actual
    first, *middle, last = parts
    end = len(actual) - len(last)
    if actual[:len(first)] != first or actual[end:] != last:
        return False
    pos = len(first)
    for seg in middle:  # each as early as it can be: leaves the most room for the rest
        for i in range(pos + 1, end - len(seg)):
            if actual[i:i + len(seg)] == seg:
                pos = i + len(seg)
                break
        else:
            return False
    return end - pos >= 1


def _assert_shown(where: str, command: str, shown: list[str], actual: list[str]) -> None:
    if not _elided_match(shown, actual):
        pytest.fail(f"{where}: `{command}` is shown printing\n" + "\n".join(shown)
                    + "\n--- but it prints ---\n" + "\n".join(actual), pytrace=False)


def _ls_l(line: str) -> str:
    """`ls -l`'s owner and time vary: as the docs show them (root, `...`)."""
    return re.sub(r"^([l-][rwxsStT-]{9}\.?\s+\d+)\s+\S+\s+\S+\s+(\d+)\s+\w{3}\s+\d+\s+[\d:]+ ",
                  r"\1 root root \2 ... ", line)


def _run_block(where: str, lines: list[str], subs: dict[str, str]) -> None:
    """Run the block's commands (with `subs` applied) and compare with what it shows."""
    session = _session(lines)
    assert all(host is None for host, _, _ in session), f"{where}: a command of another host"
    script = [f'osunits() {{ {shlex.quote(sys.executable)} -m osunits.cli "$@"; }}']
    for _, command, _ in session:
        for old, new in subs.items():
            command = command.replace(old, new)
        # the marker keeps $? for a following `echo $?`
        script.append(f"__s=$?; echo {shlex.quote(_MARK)}; (exit $__s); {command}")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OSUNITS_HOST", "OSUNITS_DEPLOYMENT", "OSUNITS_BUS_ADDRESS")}
    env.update(PYTHONUNBUFFERED="1", LC_ALL="C")
    res = subprocess.run(["bash", "-c", "\n".join(script)], cwd=REPO, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    out = res.stdout
    for old, new in subs.items():
        out = out.replace(new, old)
    outputs = out.split(_MARK + "\n")
    assert outputs[0] == "" and len(outputs) == len(session) + 1, res.stdout
    for (_, command, shown), printed in zip(session, outputs[1:], strict=True):
        actual = printed.splitlines()
        if command.startswith("ls -l"):
            actual = [_ls_l(line) for line in actual]
        _assert_shown(where, command, shown, actual)


def test_elided_match() -> None:
    actual = ["a", "b", "c", "d", "e"]
    assert _elided_match(actual, actual)
    assert _elided_match(["a", "...", "e"], actual)
    assert _elided_match(["...", "c", "...", "e"], actual)
    assert _elided_match(["a", "...", "c", "d", "e"], actual)
    assert not _elided_match(["a", "...", "b", "c", "d", "e"], actual)  # `...` is a line or more
    assert not _elided_match(["a", "c", "...", "e"], actual)
    assert not _elided_match(["a", "...", "d"], actual)
    assert not _elided_match(["a", "...", "c", "b", "...", "e"], actual)
    assert not _elided_match(actual[:-1], actual)


def test_commands_md_generate_examples(tmp_path: Path) -> None:
    """docs/commands.md's `generate` examples, in the doc's order on one scratch root."""
    subs = {"/tmp/ctl01": str(tmp_path / "ctl01")}
    changed = tmp_path / "deployment"  # "After changing memory: 2G to 3G" in a copy
    shutil.copytree(EXAMPLE, changed)
    mariadb = changed / "services" / "mariadb.yaml"
    assert "limits: {memory: 2G}" in mariadb.read_text()
    mariadb.write_text(mariadb.read_text().replace("limits: {memory: 2G}", "limits: {memory: 3G}"))
    for after, extra in [("First run, into a scratch root", {}),
                         ("Run again: nothing changes", {}),
                         ("After changing `limits: {memory: 2G}` to `3G`",
                          {"examples/openstack": str(changed)}),
                         ("A file edited by hand is never overwritten", {}),
                         ("An invalid deployment or an unknown host", {})]:
        _run_block(f"docs/commands.md, after {after!r}", _block("commands.md", after),
                   {**subs, **extra})


def test_commands_md_check_deps_text_example() -> None:
    after = "```\n$ osunits check-deps --deployment examples/openstack; echo $?"
    _run_block("docs/commands.md", _block("commands.md", after), {})


def test_commands_md_check_deps_json_example() -> None:
    _run_block("docs/commands.md", _block("commands.md", "**JSON** (`--format json`)"), {})


def test_commands_md_check_deps_dot_example(tmp_path: Path) -> None:
    subs = {"build/graph.svg": str(tmp_path / "graph.svg")}
    if shutil.which("dot") is None:  # graphviz (make deps installs it): its picture is not checked
        subs = {"dot -Tsvg -o build/graph.svg": "cat >/dev/null"}
    _run_block("docs/commands.md", _block("commands.md", "**DOT** (`--format dot`)"), subs)
    assert shutil.which("dot") is None or (tmp_path / "graph.svg").stat().st_size > 0


NETDEPLOY = REPO / "tests" / "fixtures" / "netdeploy"


def test_networks_md_check_deps_example() -> None:
    after = "```\n$ osunits check-deps -d tests/fixtures/netdeploy"
    _run_block("docs/networks.md", _block("networks.md", after), {})


@pytest.fixture(scope="module")
def netdeploy_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tests/fixtures/netdeploy generated for its hosts a and b, as the docs show them."""
    roots = {}
    for host in ("a", "b"):
        roots[host] = tmp_path_factory.mktemp(f"netdeploy-{host}")
        subprocess.run([sys.executable, "-m", "osunits.cli", "generate", "-H", host, "-d",
                        str(NETDEPLOY), "--root", str(roots[host])], cwd=REPO,
                       capture_output=True, text=True, check=True)
    return roots


def test_networks_md_hosts_files(netdeploy_roots: dict[str, Path]) -> None:
    session = _session(_block("networks.md", "Host `a` (private-network containers) and host `b`"))
    assert [host for host, _, _ in session] == ["a", "b"]
    for host, command, shown in session:
        assert host is not None and command.startswith("cat /")
        actual = (netdeploy_roots[host] / command.removeprefix("cat /")).read_text()
        _assert_shown(f"docs/networks.md, host {host}", command, shown, actual.splitlines())


@pytest.mark.parametrize("unit,host", [("osunits-publish-web1-8081.socket", "a"),
                                       ("osunits-publish-web1-8081.service", "a"),
                                       ("osunits-remote-web1.service", "b")])
def test_networks_md_units(netdeploy_roots: dict[str, Path], unit: str, host: str) -> None:
    """An `ini` block headed `# UNIT` is that unit as generated, less its two comment lines
    naming the source."""
    shown = _block("networks.md", f"```ini\n# {unit}")
    assert re.fullmatch(rf"# {re.escape(unit)}( \(on host {host}\))?", shown[0])
    lines = (netdeploy_roots[host] / "etc/systemd/system" / unit).read_text().splitlines()
    assert lines[0].startswith("# Generated by osunits") and lines[1].startswith("# change")
    _assert_shown(f"docs/networks.md, host {host}", f"cat {unit}", shown[1:], lines[2:])
