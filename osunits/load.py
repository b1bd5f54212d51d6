"""Load YAML files into plain values that remember where each value came from.

PyYAML's composer keeps a start mark on every node; we turn the node tree into
``Mapping``/``Sequence``/``Scalar`` wrappers so that semantic errors found much
later can still say ``path:line``.  Aliases are refused outright: they are the
vehicle of "billion laughs" bombs, and overrides already cover reuse.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from osunits.errors import DeploymentError, Location, Problem

MAX_FILE_BYTES = 1 << 20  # a deployment file is hand-written; anything larger is a mistake
MAX_DEPTH = 32


# Not frozen: half a million are made for a big deployment, and a frozen dataclass
# takes four times as long to build.  Nothing changes them after loading.
@dataclass(slots=True)
class Scalar:
    value: str | int | float | bool | None
    loc: Location
    raw: str = ""  # the text as written (YAML 1.1 reads 0644 as octal, 644 as decimal)


@dataclass(slots=True)
class Sequence:
    items: tuple[Value, ...]
    loc: Location


@dataclass(slots=True)
class Mapping:
    """A YAML mapping with string keys, in file order; duplicate keys are refused."""

    entries: dict[str, Value]
    key_locs: dict[str, Location]
    loc: Location
    source: str = field(default="")

    def get(self, key: str) -> Value | None:
        return self.entries.get(key)

    def key_loc(self, key: str) -> Location:
        return self.key_locs.get(key, self.loc)


Value = Scalar | Sequence | Mapping


_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available
_STR = "tag:yaml.org,2002:str"


class _Loader(_BASE):  # type: ignore[misc]
    """The safe loader with a cheaper tag resolver; the tags it gives are the same.

    libyaml parses in C, but calls back into Python for every node's implicit tag, where
    PyYAML tries a list of regular expressions: the larger part of parsing a big deployment.
    A plain scalar whose first character starts no implicit type is a string (that is how
    the resolver is keyed); the others are remembered.  There are no path resolvers.
    """

    _first = frozenset(_BASE.yaml_implicit_resolvers)
    _seen: dict[tuple[Any, str, Any], str] = {}

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            if not implicit[0]:
                return _STR  # quoted or block: a string, as PyYAML's resolver says too
            if value and value[0] not in self._first:
                return _STR
        key = (kind, value, implicit)
        tag = self._seen.get(key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(self._seen) < 4096:
                self._seen[key] = tag
        return tag


assert None not in _BASE.yaml_implicit_resolvers and not _BASE.yaml_path_resolvers


def read_text(path: Path) -> str:
    """Read a deployment file, refusing empty, oversized and binary content."""
    loc = Location(str(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            # sized to the file: read(1 MiB) would allocate 1 MiB for every small file
            want = min(size, MAX_FILE_BYTES) + 1 if size else MAX_FILE_BYTES + 1
            data = os.read(fd, want)
            while (size == 0 or len(data) < size) and len(data) <= MAX_FILE_BYTES:
                more = os.read(fd, 1 << 16)  # a pipe, or a short read (FUSE, NFS)
                if not more:
                    break
                data += more
        finally:
            os.close(fd)
    except OSError as e:
        raise DeploymentError([Problem("E001", f"cannot read file: {e.strerror}", loc)]) from e
    if len(data) > MAX_FILE_BYTES:
        raise DeploymentError(
            [Problem("E002", f"file is larger than {MAX_FILE_BYTES} bytes", loc)]
        )
    if b"\0" in data:
        raise DeploymentError([Problem("E003", "file is binary (contains NUL bytes)", loc)])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DeploymentError(
            [Problem("E003", "file is not valid UTF-8", Location(str(path), line))]
        ) from e


def load_yaml(path: Path) -> Mapping:
    """Parse one YAML document from ``path`` into located values."""
    text = read_text(path)
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        raise DeploymentError([Problem("E004", "file is empty", Location(str(path)))])
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except RecursionError as e:
        raise DeploymentError(
            [Problem("E007", f"nesting deeper than {MAX_DEPTH} levels", Location(str(path)))]
        ) from e
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        msg = e.problem or e.context or "invalid YAML"
        # PyYAML says "cannot start any token" of a tab, or worse, nothing about it
        lines = text.split("\n", mark.line + 1) if mark is not None else []
        tab = mark is not None and mark.line < len(lines) and "\t" in lines[mark.line]
        raise DeploymentError(
            [Problem("E005", f"invalid YAML: {msg}", Location(str(path), line),
                     hint="this line holds a tab: YAML indents with spaces only" if tab else "")]
        ) from e
    except yaml.YAMLError as e:
        raise DeploymentError([Problem("E005", f"invalid YAML: {e}", Location(str(path)))]) from e
    if node is None:
        raise DeploymentError([Problem("E004", "file is empty", Location(str(path)))])
    problems: list[Problem] = []
    # Aliases need an anchor (&) and an asterisk: without both, skip the per-node check.
    seen: set[int] | None = set() if "&" in text and "*" in text else None
    value = _convert(node, str(path), problems, 0, seen)
    if problems:
        raise DeploymentError(problems)
    if not isinstance(value, Mapping):
        raise DeploymentError(
            [Problem("E006", "the top level must be a mapping of keys", value.loc)]
        )
    return value


_new = tuple.__new__


def _convert(node: Node, path: str, problems: list[Problem], depth: int,
             seen: set[int] | None) -> Value:
    mark = node.start_mark
    loc = _new(Location, (path, mark.line + 1, mark.column + 1))
    if _seen_before(node, seen, problems, loc):
        return Scalar(None, loc)
    if depth > MAX_DEPTH:
        problems.append(Problem("E007", f"nesting deeper than {MAX_DEPTH} levels", loc))
        return Scalar(None, loc)
    cls = node.__class__
    if cls is ScalarNode:
        tag = node.tag
        value = node.value if tag == _STR else _construct_scalar(node, loc, problems)
        return Scalar(value, loc, node.value)
    depth += 1
    if cls is SequenceNode:
        return Sequence(tuple([_convert(n, path, problems, depth, seen) for n in node.value]), loc)
    if cls is MappingNode:
        entries: dict[str, Value] = {}
        key_locs: dict[str, Location] = {}
        for knode, vnode in node.value:
            kmark = knode.start_mark
            kloc = _new(Location, (path, kmark.line + 1, kmark.column + 1))
            if _seen_before(knode, seen, problems, kloc):  # an anchored key reused
                continue
            if knode.__class__ is not ScalarNode or knode.tag == "tag:yaml.org,2002:merge":
                problems.append(Problem("E008", "keys must be plain strings", kloc))
                continue
            key = str(knode.value)
            if key in entries:
                problems.append(
                    Problem("E009", "duplicate key", kloc, key=key,
                            hint=f"first defined on line {key_locs[key].line}")
                )
                continue
            key_locs[key] = kloc
            entries[key] = _convert(vnode, path, problems, depth, seen)
        return Mapping(entries, key_locs, loc, path)
    problems.append(Problem("E005", "unsupported YAML node", loc))  # pragma: no cover
    return Scalar(None, loc)


_SCALAR_LOADER = yaml.SafeLoader("")
# Straight to the constructor for each core tag: most scalars are strings, and the
# generic construct_object costs more than the parse.
_CONSTRUCT: dict[str, Any] = {
    "tag:yaml.org,2002:null": _SCALAR_LOADER.construct_yaml_null,
    "tag:yaml.org,2002:bool": _SCALAR_LOADER.construct_yaml_bool,
    "tag:yaml.org,2002:int": _SCALAR_LOADER.construct_yaml_int,
    "tag:yaml.org,2002:float": _SCALAR_LOADER.construct_yaml_float,
}


def _seen_before(node: Node, seen: set[int] | None, problems: list[Problem],
                 loc: Location) -> bool:
    """True (and E011) for a node met before: the composer hands out the anchored node
    again for every alias, so seeing one twice means an alias, refused before it can
    expand into a bomb.  ``seen`` is None when the text cannot hold an alias."""
    if seen is None:
        return False
    if id(node) not in seen:
        seen.add(id(node))
        return False
    if not any(p.code == "E011" for p in problems):  # one is enough; a bomb has millions
        problems.append(Problem("E011", "YAML aliases (*name) are not supported", loc,
                                hint="use the deployment's defaults or overrides instead"))
    return True


def _construct_scalar(node: Node, loc: Location, problems: list[Problem]) -> Any:
    # Only YAML's core scalar types: timestamps and binaries would surprise an operator.
    tag = node.tag
    fn = _CONSTRUCT.get(tag)
    if fn is not None:
        try:
            return fn(node)
        except (yaml.YAMLError, ValueError) as e:  # pragma: no cover - resolver agrees
            problems.append(Problem("E005", f"invalid scalar: {e}", loc))
            return None
    if tag == "tag:yaml.org,2002:timestamp":
        return str(node.value)
    problems.append(Problem("E010", f"unsupported YAML tag {tag!r}", loc))
    return None


def to_plain(value: Value) -> Any:
    """Strip locations (for JSON output and tests)."""
    if isinstance(value, Scalar):
        return value.value
    if isinstance(value, Sequence):
        return [to_plain(v) for v in value.items]
    return {k: to_plain(v) for k, v in value.entries.items()}
