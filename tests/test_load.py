"""The YAML loader's shortcuts give exactly what PyYAML would."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from osunits.deployment import load_deployment
from osunits.errors import DeploymentError
from osunits.load import MAX_FILE_BYTES, _Loader, load_yaml, read_text, to_plain

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "openstack"

# Scalars that look like YAML 1.1's implicit types, and arbitrary text.
typed = st.sampled_from(["", "~", "null", "Null", "yes", "No", "on", "OFF", "true", "y", "n",
                         "0644", "0x1F", "0b101", "1_000", "190:20:30", "-1", "+.inf", ".NaN",
                         "1e3", "3.14", "2001-12-14", "<<", "=", "0o17", "08", "1:2"])


@given(st.one_of(typed, st.text(max_size=12)), st.booleans(), st.booleans())
def test_resolver_gives_pyyamls_tags(value: str, plain: bool, quoted: bool) -> None:
    ours = _Loader("")
    theirs = yaml.SafeLoader("")
    for kind in (ScalarNode, SequenceNode, MappingNode):
        # twice: the second answer may come from the memo
        for _ in range(2):
            assert ours.resolve(kind, value, (plain, quoted)) == \
                theirs.resolve(kind, value, (plain, quoted)), (kind, value)


def test_values_match_pyyaml_on_the_example() -> None:
    for path in sorted(EXAMPLE.rglob("*.yaml")):
        assert to_plain(load_yaml(path)) == yaml.safe_load(path.read_text()), path


@pytest.mark.parametrize("text", [
    "a: &x [1, 2]\nb: *x\n",  # one anchor, one alias
    "&n description: x\nrootfs: *n\n",  # an anchored key reused as a value
])
def test_aliases_refused(tmp_path: Path, text: str) -> None:
    p = tmp_path / "a.yaml"
    p.write_text(text)
    with pytest.raises(DeploymentError) as e:
        load_yaml(p)
    assert [pr.code for pr in e.value.problems] == ["E011"]
    loc = e.value.problems[0].location
    assert loc is not None and loc.line == 1  # the composer hands back the anchored node


def test_file_size_limit_is_exact(tmp_path: Path) -> None:
    p = tmp_path / "big.yaml"
    p.write_bytes(b"#" * MAX_FILE_BYTES)
    assert len(read_text(p)) == MAX_FILE_BYTES
    p.write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(DeploymentError) as e:
        read_text(p)
    assert e.value.problems[0].code == "E002"


def test_collector_state_restored() -> None:
    assert gc.isenabled()
    load_deployment(EXAMPLE)
    assert gc.isenabled()
    gc.disable()
    try:
        load_deployment(EXAMPLE)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_pipe_written_in_pieces_is_read_whole(tmp_path: Path) -> None:
    import os
    import threading
    import time

    fifo = tmp_path / "svc.yaml"
    os.mkfifo(fifo)

    def writer() -> None:
        with open(fifo, "w") as f:
            f.write("a: 1\n")
            f.flush()
            time.sleep(0.05)  # the reader sees a short read first
            f.write("b: 2\n")

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert to_plain(load_yaml(fifo)) == {"a": 1, "b": 2}
    finally:
        t.join()


# Pieces of YAML syntax (anchors, tags, merge keys, flow and block forms) in any order.
yamlish = st.lists(st.sampled_from(list("ab01:-[]{},&*!|>'\"#%@`?.~ \n\t\\<=+") +
                                   ["yes", "null", "0x1", "1e3", "<<", "!!binary",
                                    "!!python/object", "---", "...", "&a", "*a", "\n  "]),
                   max_size=40).map("".join)


@given(yamlish)
def test_any_text_loads_or_is_a_clear_error(tmp_path_factory: pytest.TempPathFactory,
                                            text: str) -> None:
    p = tmp_path_factory.mktemp("y") / "f.yaml"
    p.write_text(text)
    try:
        load_yaml(p)
    except DeploymentError as e:
        assert e.problems and all(pr.location is not None for pr in e.problems)
