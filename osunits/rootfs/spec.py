"""Root filesystem specs: ``rootfs_specs/NAME.yaml`` → frozen ``Spec`` values.

A spec either starts from debootstrap (``base: {suite: bookworm, variant: minbase}``)
or layers on another spec (``base: NAME``).  Every problem is collected and
raised together as ``path:line`` errors; the chain of bases is checked here
(unknown names, cycles reported as ``a => b => a``) so the builder never meets
an invalid spec.
"""

from __future__ import annotations

import graphlib
import hashlib
import json
import re
from collections.abc import Iterable
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from osunits.errors import DeploymentError, Location, Problem, closest
from osunits.load import Mapping, Scalar, Sequence, Value, load_yaml

SPEC_SUFFIX = ".yaml"
# Every image runs the osunits container init (a stdlib Python script) as PID 1,
# and the init configures the container's addresses with `ip`.
REQUIRED_PACKAGES = ("python3", "iproute2")
VARIANTS = ("minbase", "buildd", "default")  # debootstrap(8) --variant; default = Priority: important
# Bumped when the builder changes what it puts into an image, so old layers rebuild.
BUILD_FORMAT = 2

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
# Debian policy §5.6.1 package names, optionally pinned with =VERSION.
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")
SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True, slots=True)
class Debootstrap:
    """The bottom of a layer chain: a fresh ``debootstrap`` of a suite."""

    suite: str
    variant: str = "minbase"
    components: tuple[str, ...] = ("main",)

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "variant": self.variant, "components": list(self.components)}


@dataclass(frozen=True, slots=True)
class FileSpec:
    """A file dropped into the image after the packages are installed."""

    path: str
    content: str
    mode: int = 0o644

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "content": self.content, "mode": self.mode}


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    base: str | Debootstrap
    packages: tuple[str, ...] = ()
    files: tuple[FileSpec, ...] = ()
    run: tuple[tuple[str, ...], ...] = ()
    description: str = ""
    source: Location = Location("")
    base_loc: Location | None = None  # where `base:` is written, for errors about it

    def content(self) -> dict[str, Any]:
        """What goes into the image: everything but the name, description and source."""
        base = self.base if isinstance(self.base, str) else self.base.to_json()
        return {
            "base": base,
            "packages": list(self.packages),
            "files": [f.to_json() for f in self.files],
            "run": [list(argv) for argv in self.run],
        }


@dataclass(frozen=True, slots=True)
class _Key:
    doc: str
    hint: str = ""


SPEC_KEYS: dict[str, _Key] = {
    "description": _Key("One line saying what the image is for."),
    "base": _Key("Another spec's name to layer on, or {suite, variant, components} "
                 "for debootstrap."),
    "packages": _Key("Debian packages to apt-get install (--no-install-recommends)."),
    "files": _Key("Files to write after the install: [{path, content, mode}]."),
    "run": _Key("Commands (argv lists) run inside the image after the install."),
}
BASE_KEYS = ("suite", "variant", "components")
FILE_KEYS = ("path", "content", "mode")


# --- loading ------------------------------------------------------------------


def load_specs(specs_dir: Path, *more: Path) -> dict[str, Spec]:
    """Load and check every ``*.yaml`` in ``specs_dir``, then in each of ``more`` that
    exists (a deployment's own ``rootfs_specs/``), where a name replaces the earlier spec
    of that name; raise DeploymentError with all problems."""
    if not specs_dir.is_dir():
        raise DeploymentError([Problem("R000", "rootfs specs directory not found",
                                       Location(str(specs_dir)))])
    problems: list[Problem] = []
    specs: dict[str, Spec] = {}
    for d in (specs_dir, *(m for m in more if m.is_dir())):
        for path in sorted(d.glob("*" + SPEC_SUFFIX)):
            spec = _collect_spec(path, problems)
            if spec is not None:
                specs[spec.name] = spec
    problems += check_specs(specs)
    if any(p.severity == "error" for p in problems):
        raise DeploymentError(problems)
    return specs


def _collect_spec(path: Path, problems: list[Problem]) -> Spec | None:
    name = path.name.removesuffix(SPEC_SUFFIX)
    if not NAME_RE.match(name):
        problems.append(Problem("R001", f"{name!r} is not a valid spec name", Location(str(path)),
                                hint="name the file with lower-case letters, digits and '-'"))
        return None
    try:
        doc = load_yaml(path)
    except DeploymentError as e:
        problems += e.problems
        return None
    return parse_spec(name, doc, problems)


def parse_spec(name: str, doc: Mapping, problems: list[Problem]) -> Spec | None:
    """Turn one loaded YAML mapping into a Spec, appending problems instead of raising."""
    n = len(problems)
    for key in doc.entries:
        if key not in SPEC_KEYS:
            close = closest(key, SPEC_KEYS)
            hint = f"did you mean {close!r}?" if close else f"known keys: {', '.join(SPEC_KEYS)}"
            problems.append(Problem("R002", "unknown key in rootfs spec", doc.key_loc(key),
                                    key=key, hint=hint))
    description = _str(doc.get("description"), "description", problems, required=False)
    base = _base(doc, problems)
    packages = _packages(doc.get("packages"), problems)
    files = _files(doc.get("files"), problems)
    run = _run(doc.get("run"), problems)
    if len(problems) > n or base is None:
        return None
    return Spec(name=name, base=base, packages=packages, files=files, run=run,
                description=description or "", source=Location(doc.source or doc.loc.path),
                base_loc=doc.key_loc("base") if "base" in doc.entries else None)


def _problem(problems: list[Problem], message: str, v: Value | Location, key: str,
             hint: str = "", code: str = "R003") -> None:
    loc = v if isinstance(v, Location) else v.loc
    problems.append(Problem(code, message, loc, key=key, hint=hint))


def _str(v: Value | None, key: str, problems: list[Problem], *, required: bool = True) -> str | None:
    if v is None:
        return None
    if not isinstance(v, Scalar) or not isinstance(v.value, str) or (required and not v.value):
        _problem(problems, "expected a string", v, key)
        return None
    if "\n" in v.value:
        _problem(problems, "must be a single line", v, key)
        return None
    return v.value


def _base(doc: Mapping, problems: list[Problem]) -> str | Debootstrap | None:
    v = doc.get("base")
    if v is None:
        _problem(problems, "missing key 'base'", doc.loc, "base",
                 hint="base: {suite: bookworm, variant: minbase}, or another spec's name",
                 code="R004")
        return None
    if isinstance(v, Scalar):
        if not isinstance(v.value, str) or not NAME_RE.match(v.value):
            _problem(problems, f"{v.value!r} is not a spec name", v, "base",
                     hint="or give {suite: bookworm, variant: minbase} to start from debootstrap")
            return None
        return v.value
    if not isinstance(v, Mapping):
        _problem(problems, "expected a spec name or {suite, variant, components}", v, "base")
        return None
    for key in v.entries:
        if key not in BASE_KEYS:
            close = closest(key, BASE_KEYS)
            _problem(problems, "unknown key in base", v.key_loc(key), f"base.{key}",
                     hint=f"did you mean {close!r}?" if close else
                     f"known keys: {', '.join(BASE_KEYS)}", code="R002")
    suite = _str(v.get("suite"), "base.suite", problems)
    if suite is None and v.get("suite") is None:
        _problem(problems, "missing key 'suite'", v, "base.suite", hint="e.g. suite: bookworm",
                 code="R004")
    elif suite is not None and not SUITE_RE.match(suite):
        _problem(problems, f"{suite!r} is not a suite name", v.get("suite") or v, "base.suite")
        suite = None
    variant = _str(v.get("variant"), "base.variant", problems) or "minbase"
    if variant not in VARIANTS:
        _problem(problems, f"unknown debootstrap variant {variant!r}", v.get("variant") or v,
                 "base.variant", hint=f"one of: {', '.join(VARIANTS)}")
    components = _str_list(v.get("components"), "base.components", problems, SUITE_RE)
    if suite is None:
        return None
    return Debootstrap(suite, variant, components or ("main",))


def _str_list(v: Value | None, key: str, problems: list[Problem],
              pattern: re.Pattern[str] | None = None, what: str = "name") -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, Sequence):
        _problem(problems, "expected a list", v, key)
        return ()
    out: list[str] = []
    for item in v.items:
        if not isinstance(item, Scalar) or not isinstance(item.value, str) or not item.value:
            _problem(problems, "expected a string", item, key)
        elif pattern is not None and not pattern.match(item.value):
            _problem(problems, f"{item.value!r} is not a valid {what}", item, key)
        elif item.value in out:
            _problem(problems, f"{item.value!r} is listed twice", item, key)
        else:
            out.append(item.value)
    return tuple(out)


def _packages(v: Value | None, problems: list[Problem]) -> tuple[str, ...]:
    return _str_list(v, "packages", problems, PACKAGE_RE, "Debian package name")


def _run(v: Value | None, problems: list[Problem]) -> tuple[tuple[str, ...], ...]:
    if v is None:
        return ()
    if not isinstance(v, Sequence):
        _problem(problems, "expected a list of commands", v, "run")
        return ()
    out = []
    for cmd in v.items:
        if isinstance(cmd, Scalar):
            _problem(problems, "a command must be an argv list", cmd, "run",
                     hint="write [sh, -c, '...'] to run a shell line")
            continue
        argv = _str_list(cmd, "run", problems) if isinstance(cmd, Sequence) else None
        if argv is None:
            _problem(problems, "a command must be an argv list", cmd, "run")
        elif not argv:
            _problem(problems, "empty command", cmd, "run")
        else:
            out.append(argv)
    return tuple(out)


def _files(v: Value | None, problems: list[Problem]) -> tuple[FileSpec, ...]:
    if v is None:
        return ()
    if not isinstance(v, Sequence):
        _problem(problems, "expected a list of {path, content, mode}", v, "files")
        return ()
    out: list[FileSpec] = []
    for item in v.items:
        if not isinstance(item, Mapping):
            _problem(problems, "expected {path, content, mode}", item, "files")
            continue
        for key in item.entries:
            if key not in FILE_KEYS:
                _problem(problems, "unknown key in files", item.key_loc(key), f"files.{key}",
                         hint=f"known keys: {', '.join(FILE_KEYS)}", code="R002")
        path = _str(item.get("path"), "files.path", problems)
        content_v = item.get("content")
        content = _str_multiline(content_v, problems)
        mode = _mode(item.get("mode"), problems)
        if item.get("path") is None or content_v is None:
            _problem(problems, "a file needs both path and content", item, "files", code="R004")
            continue
        if path is None or content is None or mode is None:
            continue
        pure = PurePosixPath(path)
        if not pure.is_absolute() or ".." in pure.parts or path.endswith("/"):
            _problem(problems, f"{path!r} must be an absolute file path without '..'",
                     item.get("path") or item, "files.path")
        elif any(f.path == path for f in out):
            _problem(problems, f"{path!r} is written twice", item, "files.path")
        else:
            out.append(FileSpec(str(pure), content, mode))
    return tuple(out)


def _str_multiline(v: Value | None, problems: list[Problem]) -> str | None:
    if v is None:
        return None
    if not isinstance(v, Scalar) or not isinstance(v.value, str):
        _problem(problems, "expected a string", v, "files.content",
                 hint="quote it, or use a block scalar (content: |)")
        return None
    return v.value


def _mode(v: Value | None, problems: list[Problem]) -> int | None:
    if v is None:
        return 0o644
    # From the text as written, as a service's config mode: 0755, "0755" and 755 all mean
    # rwxr-xr-x (YAML reads an unquoted 755 as the decimal 755, which is mode 1363).
    raw = v.raw if isinstance(v, Scalar) else ""
    if not re.fullmatch(r"0?[0-7]{3,4}", raw):
        _problem(problems, "expected a file mode such as 0644", v, "files.mode")
        return None
    return int(raw, 8)


# --- the chain of bases ---------------------------------------------------------


def check_specs(specs: AbcMapping[str, Spec]) -> list[Problem]:
    """Problems across specs: unknown bases, cycles, missing required packages."""
    problems: list[Problem] = []
    for spec in specs.values():
        if isinstance(spec.base, str) and spec.base not in specs:
            close = closest(spec.base, specs)
            problems.append(Problem("R010", f"unknown base spec {spec.base!r}",
                                    spec.base_loc or spec.source,
                                    key="base", hint=f"did you mean {close!r}?" if close
                                    else "add rootfs_specs/" + spec.base + SPEC_SUFFIX))
    try:
        build_order(specs, specs)
    except graphlib.CycleError as e:
        cycle = list(e.args[1])
        problems.append(Problem("R011", "base specs form a cycle: " + " => ".join(cycle),
                                specs[cycle[0]].base_loc or specs[cycle[0]].source,
                                key="base"))
        return problems
    if problems:
        return problems
    for spec in specs.values():
        have = {p.split("=", 1)[0] for s in chain(spec.name, specs) for p in s.packages}
        missing = [p for p in REQUIRED_PACKAGES if p not in have]
        if missing:
            problems.append(Problem(
                "R012", f"the image would lack {', '.join(missing)}", spec.source, key="packages",
                hint="every image needs python3 (the container init) and iproute2; "
                     "add them here or to a base"))
    return problems


def chain(name: str, specs: AbcMapping[str, Spec]) -> list[Spec]:
    """The layers of ``name``, bottom (debootstrap) first."""
    out: list[Spec] = []
    seen: set[str] = set()
    cur: str | Debootstrap = name
    while isinstance(cur, str):
        if cur in seen:
            raise ValueError(f"base specs form a cycle at {cur!r}")
        seen.add(cur)
        spec = specs[cur]
        out.append(spec)
        cur = spec.base
    return out[::-1]


def build_order(names: Iterable[str], specs: AbcMapping[str, Spec]) -> list[str]:
    """``names`` and their bases, each after its base (raises graphlib.CycleError)."""
    graph: dict[str, set[str]] = {}
    todo = list(names)
    while todo:
        n = todo.pop()
        if n in graph or n not in specs:
            continue
        base = specs[n].base
        graph[n] = {base} if isinstance(base, str) and base in specs else set()
        todo.extend(graph[n])
    # Sorted insertion so the order is the same on every run.
    ts = graphlib.TopologicalSorter({n: sorted(graph[n]) for n in sorted(graph)})
    return list(ts.static_order())


def spec_key(spec: Spec, base_key: str | None) -> str:
    """Content hash of one layer: its spec's content, its base's key, the build format."""
    doc = {"format": BUILD_FORMAT, "base_key": base_key, "spec": spec.content()}
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()


def layer_keys(name: str, specs: AbcMapping[str, Spec]) -> dict[str, str]:
    """Key of every layer of ``name``, bottom first (dict order is chain order)."""
    keys: dict[str, str] = {}
    base_key: str | None = None
    for spec in chain(name, specs):
        base_key = keys[spec.name] = spec_key(spec, base_key)
    return keys
