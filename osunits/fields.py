"""The service keys: each declared once, with its parser, default, schema and help.

The JSON Schema (``osunits schema``), docs/format.md's key table and the
unknown-key hints all derive from ``SERVICE_FIELDS``, so they cannot drift.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, TypeVar

from osunits.errors import Location, Problem, closest
from osunits.load import Mapping, Scalar, Sequence, Value
from osunits.model import (
    MACHINE_DIRS,
    OWN_ROOTS,
    Bind,
    ConfigFile,
    Limits,
    NetworkMode,
    Port,
    Protocol,
    Publish,
    Readiness,
    ReadinessKind,
    RestartPolicy,
    StateDir,
)
from osunits.systemd import escape
from osunits.systemd.units import TARGET, UNIT_PREFIX, service_of

E = TypeVar("E")
T = TypeVar("T")

# Machine names double as unit instance names, host names inside the
# container and image names: keep them to what all three accept unescaped.
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION_RE = re.compile(r"^(\d+)\s*(s|sec|m|min|h)?$")
_SIZE_RE = re.compile(r"^(\d+)\s*([KMGT]?)(i?B?)?$", re.IGNORECASE)
_PUBLISH_RE = re.compile(
    r"^(?:(?P<addr>\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(?P<host>\d+):(?P<cont>\d+)(?:/(?P<proto>tcp|udp))?$"
)


class Invalid(Exception):
    """A value is wrong; carries the message, and optionally a more precise location."""

    def __init__(self, message: str, loc: Location | None = None, hint: str = "",
                 more: tuple[Invalid, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc
        self.hint = hint
        self.more = more  # the other items of the same list that are wrong too

    def each(self) -> tuple[Invalid, ...]:
        return (self, *self.more)


# --- scalar parsers --------------------------------------------------------------

def _scalar(v: Value, what: str) -> Any:
    if not isinstance(v, Scalar):
        raise Invalid(f"expected {what}, got a {'list' if isinstance(v, Sequence) else 'mapping'}")
    return v.value


def parse_str(v: Value, *, allow_empty: bool = True) -> str:
    x = _scalar(v, "a string")
    if isinstance(x, bool) or x is None:
        raise Invalid(f"expected a string, got {_show(x)}")
    s = str(x)
    if "\0" in s:
        raise Invalid("NUL characters are not allowed")
    if not allow_empty and not s:
        raise Invalid("must not be empty")
    return s


def _representable(s: str) -> None:
    """Refuse what the unit and .nspawn syntax cannot carry (see systemd/escape.py)."""
    try:
        escape.nspawn_word(s)
    except escape.EscapeError as e:
        raise Invalid(str(e)) from None


def parse_line(v: Value) -> str:
    """A string that ends up on one line of a unit file."""
    s = parse_str(v)
    if "\n" in s or "\r" in s:
        raise Invalid("must be a single line")
    return s


NAME_HINT = "use lower-case letters, digits and '-', starting with a letter (at most 63)"


def name_error(s: str, what: str = "name") -> str | None:
    """Why ``s`` is not a valid name (machine, unit and host names are built from it)."""
    if NAME_RE.match(s):
        return None
    if len(s) > 63 and NAME_RE.match(s[:63]):
        return f"{s[:20]!r}... is not a valid {what}: {len(s)} characters, at most 63"
    return f"{s!r} is not a valid {what}"


def parse_name(v: Value) -> str:
    s = parse_str(v, allow_empty=False)
    if (err := name_error(s)) is not None:
        raise Invalid(err, hint=NAME_HINT)
    return s


def parse_bool(v: Value) -> bool:
    x = _scalar(v, "true or false")
    if not isinstance(x, bool):
        raise Invalid(f"expected true or false, got {_show(x)}")
    return x


def parse_int(v: Value, lo: int, hi: int) -> int:
    x = _scalar(v, "an integer")
    if isinstance(x, bool) or not isinstance(x, int):
        raise Invalid(f"expected an integer, got {_show(x)}")
    if not lo <= x <= hi:
        raise Invalid(f"{x} is out of range {lo}..{hi}")
    return x


def parse_port(v: Value) -> int:
    return parse_int(v, 1, 65535)


def parse_duration(v: Value) -> int:
    """Seconds, from an integer or '90s', '5min', '1h'."""
    x = _scalar(v, "a duration")
    if isinstance(x, int) and not isinstance(x, bool):
        n = x
    else:
        m = _DURATION_RE.match(str(x)) if isinstance(x, str) else None
        if not m:
            raise Invalid(f"{_show(x)} is not a duration",
                          hint="write seconds, or e.g. 90s, 5min, 1h")
        n = int(m.group(1)) * {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60,
                               "h": 3600}[m.group(2) or ""]
    if not 0 < n <= 86400:
        raise Invalid(f"{x} is out of range (1s..24h)")
    return n


def parse_size(v: Value) -> int:
    x = _scalar(v, "a size")
    if isinstance(x, int) and not isinstance(x, bool) and x > 0:
        return x
    m = _SIZE_RE.match(str(x)) if isinstance(x, str) else None
    if not m:
        raise Invalid(f"{_show(x)} is not a size", hint="write bytes, or e.g. 512M, 2G")
    n: int = int(m.group(1)) * 1024 ** "_KMGT".index(m.group(2).upper() or "_")
    if n <= 0:
        raise Invalid("must be positive")
    if n >= 1 << 64:  # systemd's limit; it would ignore the setting
        raise Invalid(f"{_show(x)} is more than systemd can hold (16 EiB)")
    return n


def parse_abs_path(v: Value) -> PurePosixPath:
    s = parse_line(v)
    p = PurePosixPath(s)
    # ':' and whitespace separate nspawn's Bind= and the init's lists: never in a path
    if not p.is_absolute() or ".." in p.parts or s != str(p) or ":" in s or _SPACE.search(s):
        raise Invalid(f"{s!r} must be a normalised absolute path without '..', ':' or spaces")
    return p


_SPACE = re.compile(r"\s")


def parse_address(v: Value, *, v4_only: bool = False) -> str:
    s = parse_str(v, allow_empty=False)
    try:
        return str(ipaddress.IPv4Address(s) if v4_only else ipaddress.ip_address(s))
    except ValueError as e:
        raise Invalid(f"{s!r} is not an {'IPv4' if v4_only else 'IP'} address") from e


def parse_ipv4(v: Value) -> str:
    return parse_address(v, v4_only=True)


def parse_enum(cls: type[E]) -> Callable[[Value], E]:
    def parse(v: Value) -> E:
        x = _scalar(v, "a string")
        if x is False and "no" in [str(m) for m in cls]:  # type: ignore[attr-defined]
            x = "no"  # YAML 1.1 reads a bare `no` as false
        try:
            return cls(x)  # type: ignore[call-arg]
        except ValueError as e:
            choices = ", ".join(str(m) for m in cls)  # type: ignore[attr-defined]
            raise Invalid(f"{_show(x)} is not one of: {choices}") from e
    return parse


def _show(x: object) -> str:
    if x is None:
        return "nothing (null)"
    return repr(x)


# --- compound parsers -------------------------------------------------------------

def list_of(item: Callable[[Value], T]) -> Callable[[Value], tuple[T, ...]]:
    def parse(v: Value) -> tuple[T, ...]:
        if isinstance(v, Scalar) and v.value is None:
            return ()
        if not isinstance(v, Sequence):
            raise Invalid("expected a list")
        out = []
        wrong: list[Invalid] = []  # every bad item, not only the first: all errors at once
        for it in v.items:
            try:
                out.append(item(it))
            except Invalid as e:
                wrong += [Invalid(str(x), x.loc or it.loc, x.hint) for x in e.each()]
        if wrong:
            raise Invalid(str(wrong[0]), wrong[0].loc, wrong[0].hint, tuple(wrong[1:]))
        return tuple(out)
    return parse


def unique_list_of(item: Callable[[Value], T]) -> Callable[[Value], tuple[T, ...]]:
    """list_of, where an item listed twice is an error (a typo, or a copy left behind)."""
    parse_list = list_of(item)

    def parse(v: Value) -> tuple[T, ...]:
        items = parse_list(v)
        if len(set(items)) != len(items):
            dup = sorted({str(x) for x in items if items.count(x) > 1})
            raise Invalid(f"listed twice: {', '.join(dup)}")
        return items
    return parse


names_list = unique_list_of(parse_name)
# systemd.unit(5)'s name syntax, of the types a service can be ordered after.
HOST_UNIT_RE = re.compile(
    r"^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.(service|socket|target|mount|path|timer)$")


def parse_dependency(v: Value) -> str:
    """A service of the deployment, or a unit of the host (``libvirtd.service``)."""
    s = parse_str(v, allow_empty=False)
    if "." in s:
        if not HOST_UNIT_RE.match(s) or len(s) > 255 or "@." in s:
            raise Invalid(f"{s!r} is neither a service name nor a unit name",
                          hint="a host unit ends in .service, .socket, .target, .mount, .path "
                          "or .timer (a template unit needs its instance)")
        if s.startswith((UNIT_PREFIX, "osunits-")) or s == TARGET:
            raise Invalid(f"{s!r} is a unit osunits makes, not one of the host's",
                          hint=f"name the service: {service_of(s)}" if s.startswith(UNIT_PREFIX)
                          else "depend on the services themselves")
        return s
    return parse_name(v)


dependencies_list = unique_list_of(parse_dependency)


def parse_exec(v: Value) -> tuple[str, ...]:
    """A command as a list of arguments, or a string split like a shell would (no expansion)."""
    if isinstance(v, Sequence):
        args = list_of(parse_line)(v)
    else:
        s = parse_line(v)
        try:
            args = tuple(shlex.split(s))
        except ValueError as e:
            raise Invalid(f"cannot split command: {e}") from e
    if not args:
        raise Invalid("the command is empty")
    for a in args:
        _representable(a)
    if not args[0].startswith("/") and "/" in args[0]:
        raise Invalid(f"{args[0]!r}: give an absolute path or a plain program name")
    return args


def mapping_of(v: Value) -> Mapping:
    if not isinstance(v, Mapping):
        raise Invalid("expected a mapping")
    return v


def unknown_key_hint(k: str, known: Iterable[str]) -> str:
    """A "did you mean ...?" for a typo, else the list of what is known."""
    known = list(known)
    close = closest(k, known)
    return f"did you mean {close!r}?" if close else f"known keys: {', '.join(sorted(known))}"


def check_keys(m: Mapping, known: dict[str, Any], where: str) -> list[Problem]:
    problems = []
    for k in m.entries:
        if k not in known:
            problems.append(Problem("E101", f"unknown key in {where}", m.key_loc(k), key=k,
                                    hint=unknown_key_hint(k, known)))
    return problems


def parse_environment(v: Value) -> tuple[tuple[str, str], ...]:
    m = mapping_of(v)
    out = []
    wrong: list[Invalid] = []  # every bad variable, not only the first
    for k, val in m.entries.items():
        try:
            out.append((k, _env_value(k, val, m)))
        except Invalid as e:
            wrong.append(Invalid(str(e), e.loc or val.loc, e.hint))
    if wrong:
        raise Invalid(str(wrong[0]), wrong[0].loc, wrong[0].hint, tuple(wrong[1:]))
    return tuple(sorted(out))


def _env_value(k: str, val: Value, m: Mapping) -> str:
    if not ENV_RE.match(k):
        raise Invalid(f"{k!r} is not a valid environment variable name", m.key_loc(k))
    if k.startswith("OSUNITS_"):
        raise Invalid(f"{k!r}: names starting OSUNITS_ are reserved for the container init",
                      m.key_loc(k))
    if not isinstance(val, Scalar):
        raise Invalid(f"{k}: expected a string or number, got a "
                      f"{'list' if isinstance(val, Sequence) else 'mapping'}")
    x = val.value
    if isinstance(x, bool) or x is None:
        raise Invalid(f"{k}: expected a string or number, got "
                      f"{repr(val.raw) if val.raw else _show(x)}", val.loc,
                      hint="quote it: YAML reads yes/no/on/off as booleans")
    # A number as written: YAML 1.1 would make 1.10 of 1.10, 8 of 010, 750 of 12:30
    s = val.raw if isinstance(x, (int, float)) and val.raw else str(x)
    if "\n" in s or "\0" in s:
        raise Invalid(f"{k}: must be a single line", val.loc)
    try:
        _representable(f"{k}={s}")
    except Invalid as e:
        raise Invalid(f"{k}: {e}", val.loc) from None
    return s


def parse_port_spec(v: Value) -> Port:
    if isinstance(v, Mapping):
        _only(v, {"port", "protocol"}, "a port")
        return Port(parse_port(_need(v, "port")),
                    parse_enum(Protocol)(v.get("protocol") or Scalar("tcp", v.loc)))
    x = _scalar(v, "a port")
    if isinstance(x, int) and not isinstance(x, bool):
        return Port(parse_port(v))
    m = re.match(r"^(\d+)(?:/(tcp|udp))?$", str(x))
    if not m:
        raise Invalid(f"{_show(x)} is not a port", hint="e.g. 5000 or 5000/udp")
    return Port(parse_port(Scalar(int(m.group(1)), v.loc)), Protocol(m.group(2) or "tcp"))


def parse_publish(v: Value) -> Publish:
    if isinstance(v, Mapping):
        _only(v, {"host", "container", "protocol", "address"}, "a published port")
        return Publish(
            parse_port(_need(v, "host")),
            parse_port(v.get("container") or _need(v, "host")),
            parse_enum(Protocol)(v.get("protocol") or Scalar("tcp", v.loc)),
            parse_address(v.entries["address"]) if "address" in v.entries else "",
        )
    x = _scalar(v, "a published port")
    if isinstance(x, int) and not isinstance(x, bool):
        p = parse_port(v)
        return Publish(p, p)
    m = _PUBLISH_RE.match(str(x))
    if not m:
        raise Invalid(f"{_show(x)} is not a published port",
                      hint="HOSTPORT:CONTAINERPORT[/udp], optionally ADDRESS: in front")
    addr = m.group("addr") or ""
    if addr:
        addr = parse_address(Scalar(addr.strip("[]"), v.loc))
    return Publish(parse_port(Scalar(int(m.group("host")), v.loc)),
                   parse_port(Scalar(int(m.group("cont")), v.loc)),
                   Protocol(m.group("proto") or "tcp"), addr)


def parse_config_file(v: Value) -> ConfigFile:
    m = mapping_of(v)
    _only(m, {"template", "path", "mode"}, "a config file")
    tmpl = parse_line(_need(m, "template"))
    tp = PurePosixPath(tmpl)
    if tp.is_absolute() or ".." in tp.parts or not tmpl:
        raise Invalid(f"{tmpl!r}: give a path relative to the deployment's templates/",
                      m.entries["template"].loc)
    mode = 0o640
    if "mode" in m.entries:
        mv = m.entries["mode"]
        _scalar(mv, "a mode")
        # From the text as written: 0644, "0644" and 644 all mean rw-r--r--.
        raw = mv.raw if isinstance(mv, Scalar) else ""
        try:
            mode = int(raw, 8)
        except ValueError as e:
            raise Invalid(f"{raw!r} is not an octal mode", mv.loc) from e
        if not 0 <= mode <= 0o777:
            raise Invalid(f"{raw!r} is not a file mode", m.entries["mode"].loc)
    path = parse_abs_path(_need(m, "path"))
    if path == PurePosixPath("/"):
        raise Invalid("a config file cannot be the container's /", m.entries["path"].loc)
    return ConfigFile(tmpl, path, mode, m.loc)


def parse_bind(v: Value) -> Bind:
    """'HOST[:CONTAINER][:ro]' or {host, path, read_only}; the container path defaults to
    the host's."""
    if isinstance(v, Mapping):
        _only(v, {"host", "path", "read_only"}, "a bind")
        host = parse_abs_path(_need(v, "host"))
        path = parse_abs_path(v.entries["path"]) if "path" in v.entries else host
        ro = parse_bool(v.entries["read_only"]) if "read_only" in v.entries else False
        return _bind(Bind(host, path, ro))
    s = parse_line(v)
    parts = s.split(":")
    ro = len(parts) > 1 and parts[-1] in ("ro", "rw")
    mode = parts.pop() if ro else "rw"
    if not 1 <= len(parts) <= 2:
        raise Invalid(f"{s!r}: give HOST_PATH[:CONTAINER_PATH][:ro]")
    host = parse_abs_path(Scalar(parts[0], v.loc))
    return _bind(Bind(host, parse_abs_path(Scalar(parts[-1], v.loc)), mode == "ro"))


def _bind(b: Bind) -> Bind:
    if b.path == PurePosixPath("/"):
        raise Invalid(f"{b.host}: cannot be bound over the container's /")
    _not_osunits_own(b.host, None, "bind the directory the service needs, elsewhere")
    return b


def _not_osunits_own(host: PurePosixPath, loc: Location | None, hint: str) -> None:
    """A service's host directory must not be, hold or lie in osunits' own (but for their
    shared/): they hold every service's rendered config and secrets, state, the manifest
    and the images."""
    for own in (*OWN_ROOTS, *MACHINE_DIRS):
        shared = own / "shared"
        # /run itself may be bound (kolla binds it for nova-compute and the agents): in
        # generator mode the container then sees /run/osunits too (docs/format.md)
        if host == own:
            how = "is"
        elif host in own.parents and not own.is_relative_to("/run"):
            how = "holds"
        elif own in host.parents and not (
                own in OWN_ROOTS and (host == shared or shared in host.parents)):
            how = "is in"
        else:
            continue
        raise Invalid(f"{host}: {how} osunits' own {own}", loc,
                      hint + f" ({shared}/ is for services)" if own in OWN_ROOTS else hint)


def parse_device(v: Value) -> PurePosixPath:
    p = parse_abs_path(v)
    if p.parts[:2] != ("/", "dev") or len(p.parts) < 3:
        raise Invalid(f"{p}: a device node lives under /dev/")
    return p


# capabilities(7), as systemd names them.
CAPABILITIES = frozenset(f"CAP_{c}" for c in (
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE",
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER",
    "KILL", "LEASE", "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN",
    "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP",
    "SETUID", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT",
    "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "SYSLOG",
    "WAKE_ALARM"))


def parse_capability(v: Value) -> str:
    s = parse_str(v, allow_empty=False).upper()
    cap = s if s.startswith("CAP_") else f"CAP_{s}"
    if cap not in CAPABILITIES:
        close = closest(cap, sorted(CAPABILITIES))
        raise Invalid(f"{s!r} is not a capability (capabilities(7))",
                      hint=f"did you mean {close}?" if close else "")
    return cap


def parse_state_dir(v: Value) -> StateDir:
    if not isinstance(v, Mapping):
        return StateDir(parse_abs_path(v))
    _only(v, {"path", "host", "shared"}, "a state directory")
    host = parse_abs_path(v.entries["host"]) if "host" in v.entries else None
    # The host's variable state lives under /var/lib (FHS), never over /etc or /usr.
    if host is not None and (host.parts[:3] != ("/", "var", "lib") or len(host.parts) < 4):
        raise Invalid(f"{host}: host state directories live under /var/lib/",
                      v.entries["host"].loc)
    if host is not None:
        _not_osunits_own(host, v.entries["host"].loc,
                         "leave out host: to keep it under /var/lib/osunits/state/SERVICE/")
    return StateDir(parse_abs_path(_need(v, "path")), host,
                    parse_bool(v.entries["shared"]) if "shared" in v.entries else False)


_READINESS_KINDS = {"notify", "tcp", "http", "command", "none"}


def parse_readiness(v: Value) -> Readiness:
    if isinstance(v, Scalar):
        x = v.value
        if x in ("notify", "none"):
            return Readiness(ReadinessKind(x))
        raise Invalid(f"{_show(x)} is not a readiness check",
                      hint="notify, none, or a mapping: {tcp: PORT}, {http: URL}, {command: CMD}")
    m = mapping_of(v)
    _only(m, _READINESS_KINDS | {"timeout"}, "readiness")
    kinds = [k for k in m.entries if k in _READINESS_KINDS]
    if len(kinds) != 1:
        raise Invalid("give exactly one of: " + ", ".join(sorted(_READINESS_KINDS)))
    kind = ReadinessKind(kinds[0])
    val = m.entries[kinds[0]]
    timeout = parse_duration(m.entries["timeout"]) if "timeout" in m.entries else 90
    target = ""
    try:
        if kind is ReadinessKind.TCP:
            target = str(parse_port(val))
        elif kind is ReadinessKind.HTTP:
            target = parse_line(val)
            if not re.match(r"^https?://[^\s/]+(/\S*)?$", target):
                raise Invalid(f"{target!r} is not an http:// or https:// URL")
        elif kind is ReadinessKind.COMMAND:
            target = shlex.join(parse_exec(val))
        elif not parse_bool(val):
            raise Invalid(f"{kinds[0]}: write `{kinds[0]}: true`")
    except Invalid as e:
        raise Invalid(str(e), e.loc or val.loc, e.hint, e.more) from e
    return Readiness(kind, target, timeout)


MAX_CPU_PERCENT = 100 * 4096  # CPUs; far above any host, and CPUQuota= holds it


def parse_limits(v: Value) -> Limits:
    m = mapping_of(v)
    _only(m, {"memory", "cpu", "tasks"}, "limits")
    parsers: dict[str, Callable[[Value], int]] = {
        "memory": parse_size, "cpu": _parse_cpu, "tasks": lambda x: parse_int(x, 1, 1 << 22)}
    got: dict[str, int] = {}
    wrong: list[Invalid] = []  # each limit's problem, named: not only the first
    for key, parse in parsers.items():
        if key in m.entries:
            try:
                got[key] = parse(m.entries[key])
            except Invalid as e:
                wrong.append(Invalid(f"{key}: {e}", e.loc or m.entries[key].loc, e.hint))
    if wrong:
        raise Invalid(str(wrong[0]), wrong[0].loc, wrong[0].hint, tuple(wrong[1:]))
    return Limits(got.get("memory"), got.get("cpu"), got.get("tasks"))


def _parse_cpu(v: Value) -> int:
    """Percent of a CPU, from 1.5 or "150%"."""
    raw = _scalar(v, "a CPU quota")
    cpu = None
    mm = re.match(r"^(\d+)%$", str(raw))
    if (isinstance(raw, (int, float)) and not isinstance(raw, bool)
            and 0 < raw <= MAX_CPU_PERCENT / 100):  # compared first: 1e308 * 100 is inf
        cpu = round(raw * 100)
    elif mm:
        cpu = int(mm.group(1))
    # CPUQuota= is in percent: 0.004 CPUs would be no limit at all
    if cpu is None or not 1 <= cpu <= MAX_CPU_PERCENT:
        raise Invalid(f"{raw!r} is not a CPU quota",
                      hint="a number of CPUs (1.5) or a percentage (150%), from 0.01 "
                           f"(1%) to {MAX_CPU_PERCENT // 100}")
    return cpu


def _need(m: Mapping, key: str) -> Value:
    if key not in m.entries:
        raise Invalid(f"missing required key {key!r}", m.loc)
    return m.entries[key]


def _only(m: Mapping, keys: set[str], what: str) -> None:
    for k in m.entries:
        if k not in keys:
            raise Invalid(f"unknown key {k!r} in {what}", m.key_loc(k),
                          hint=unknown_key_hint(k, keys))


# --- the table --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Field:
    key: str
    parse: Callable[[Value], Any]
    default: Any
    help: str
    schema: dict[str, Any]
    required: bool = False


_NAME_SCHEMA = {"type": "string", "pattern": NAME_RE.pattern}
_DURATION_SCHEMA = {"oneOf": [{"type": "integer", "minimum": 1},
                              {"type": "string", "pattern": _DURATION_RE.pattern}]}
_NAMES_SCHEMA = {"type": "array", "items": _NAME_SCHEMA, "uniqueItems": True}
_DEPENDENCIES_SCHEMA = {"type": "array", "uniqueItems": True, "items": {
    "oneOf": [_NAME_SCHEMA, {"type": "string", "pattern": HOST_UNIT_RE.pattern}]}}
_EXEC_SCHEMA = {"oneOf": [{"type": "string", "minLength": 1},
                          {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
_PORT_SCHEMA = {"type": "integer", "minimum": 1, "maximum": 65535}

SERVICE_FIELDS: tuple[Field, ...] = (
    Field("name", parse_name, None, "Service name; also its machine name. Defaults to the "
          "file's name without .yaml and must match it.", _NAME_SCHEMA),
    Field("description", parse_line, "", "One line shown by systemctl and machinectl.",
          {"type": "string"}),
    Field("rootfs", parse_name, None, "The root filesystem spec (a name in rootfs_specs/).",
          _NAME_SCHEMA, required=True),
    Field("exec", parse_exec, (), "The command to run, as a list or a shell-like string "
          "(split, never expanded). Required unless boot is true.", _EXEC_SCHEMA),
    Field("boot", parse_bool, False, "Boot the container's own init instead of running exec.",
          {"type": "boolean"}),
    Field("user", lambda v: _user(v), "root", "User the command runs as inside the container.",
          {"type": "string", "pattern": USER_RE.pattern}),
    Field("working_directory", lambda v: str(parse_abs_path(v)), "",
          "Working directory of the command.", {"type": "string", "pattern": "^/"}),
    Field("environment", parse_environment, (), "Environment variables of the command.",
          {"type": "object", "propertyNames": {"pattern": ENV_RE.pattern},
           "additionalProperties": {"type": ["string", "number"]}}),
    Field("requires", dependencies_list, (), "Services that must be ready first; a failure of "
          "one fails this service too (Requires= + After=). A unit name (libvirtd.service) is "
          "the host's own unit.", _DEPENDENCIES_SCHEMA),
    Field("wants", dependencies_list, (), "Services started and awaited first; their failure "
          "is tolerated (Wants= + After=).", _DEPENDENCIES_SCHEMA),
    Field("after", dependencies_list, (), "Order after these services when both are started "
          "(After= only).", _DEPENDENCIES_SCHEMA),
    Field("ports", unique_list_of(parse_port_spec), (), "Ports the service listens on: 5000, "
          "'5000/udp' or {port, protocol}.",
          {"type": "array", "items": {"oneOf": [_PORT_SCHEMA, {
              "type": "string", "pattern": r"^\d+(/(tcp|udp))?$"}, {
              "type": "object", "properties": {"port": _PORT_SCHEMA,
                                               "protocol": {"enum": ["tcp", "udp"]}},
              "required": ["port"], "additionalProperties": False}]}}),
    Field("publish", unique_list_of(parse_publish), (), "Container ports published on the host: "
          "'HOST:CONTAINER[/udp]', 'ADDRESS:HOST:CONTAINER' or a mapping.",
          {"type": "array", "items": {"oneOf": [_PORT_SCHEMA, {
              "type": "string", "pattern": _PUBLISH_RE.pattern}, {
              "type": "object", "properties": {
                  "host": _PORT_SCHEMA, "container": _PORT_SCHEMA,
                  "protocol": {"enum": ["tcp", "udp"]}, "address": {"type": "string"}},
              "required": ["host"], "additionalProperties": False}]}}),
    Field("network", parse_enum(NetworkMode), NetworkMode.PRIVATE, "private: own network "
          "namespace on the host's bridge; host: share the host's network.",
          {"enum": [str(m) for m in NetworkMode]}),
    Field("address", parse_ipv4, "", "Fixed address on the host bridge (default: allocated).",
          {"type": "string", "format": "ipv4"}),
    Field("config", list_of(parse_config_file), (), "Config files: jinja2 templates from the "
          "deployment's templates/, rendered per host, installed at path (copied in at each "
          "start; bound read-only when boot).",
          {"type": "array", "items": {"type": "object", "properties": {
              "template": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
              "mode": {"type": ["string", "integer"]}},
              "required": ["template", "path"], "additionalProperties": False}}),
    Field("state", list_of(parse_state_dir), (), "Directories kept across restarts, stored on "
          "the host under /var/lib/osunits/state/SERVICE/ (or at host; shared: true lets "
          "several services bind one host directory).",
          {"type": "array", "items": {"oneOf": [{"type": "string", "pattern": "^/"}, {
              "type": "object", "properties": {
                  "path": {"type": "string", "pattern": "^/"},
                  "host": {"type": "string", "pattern": "^/"}, "shared": {"type": "boolean"}},
              "required": ["path"], "additionalProperties": False}]}}),
    Field("binds", unique_list_of(parse_bind), (), "Host paths the container sees, such as "
          "a libvirt or Open vSwitch socket directory: 'HOST[:CONTAINER][:ro]' or {host, path, "
          "read_only}.",
          {"type": "array", "items": {"oneOf": [
              {"type": "string", "pattern": "^/[^:]*(:/[^:]*)?(:(ro|rw))?$"}, {
                  "type": "object", "properties": {
                      "host": {"type": "string", "pattern": "^/"},
                      "path": {"type": "string", "pattern": "^/"},
                      "read_only": {"type": "boolean"}},
                  "required": ["host"], "additionalProperties": False}]}}),
    Field("devices", unique_list_of(parse_device), (), "Device nodes the container may use, "
          "such as /dev/kvm: bound into it and allowed (DeviceAllow=).",
          {"type": "array", "items": {"type": "string", "pattern": "^/dev/."},
           "uniqueItems": True}),
    Field("capabilities", unique_list_of(parse_capability), (), "Capabilities on top of "
          "systemd-nspawn's default set, such as CAP_NET_ADMIN for a network agent "
          "(Capability=).",
          {"type": "array", "items": {"type": "string", "pattern": "^(CAP_)?[A-Za-z_]+$"},
           "uniqueItems": True}),
    Field("readiness", parse_readiness, None, "When the service counts as ready: notify, "
          "{tcp: PORT}, {http: URL}, {command: CMD}, each with an optional timeout; or none.",
          {"oneOf": [{"enum": ["notify", "none"]}, *[
              {"type": "object", "properties": {kind: schema, "timeout": _DURATION_SCHEMA},
               "required": [kind], "additionalProperties": False}
              for kind, schema in (("notify", {"const": True}), ("none", {"const": True}),
                                   ("tcp", _PORT_SCHEMA),
                                   ("http", {"type": "string", "pattern": "^https?://"}),
                                   ("command", _EXEC_SCHEMA))]]}),
    Field("restart", parse_enum(RestartPolicy), RestartPolicy.ON_FAILURE,
          "When systemd restarts the service (Restart=).",
          {"enum": [str(m) for m in RestartPolicy] + [False]}),
    Field("restart_sec", parse_duration, 5, "Delay before a restart (RestartSec=).",
          _DURATION_SCHEMA),
    Field("stop_timeout", parse_duration, 90, "Time allowed to stop (TimeoutStopSec=).",
          _DURATION_SCHEMA),
    Field("limits", parse_limits, Limits(), "Resource limits: memory (512M), cpu (1.5 or "
          "150%), tasks.",
          {"type": "object", "properties": {
              "memory": {"type": ["string", "integer"]}, "cpu": {"type": ["string", "number"]},
              "tasks": {"type": "integer", "minimum": 1}}, "additionalProperties": False}),
)

FIELDS_BY_KEY = {f.key: f for f in SERVICE_FIELDS}


def _user(v: Value) -> str:
    s = parse_str(v, allow_empty=False)
    if not USER_RE.match(s):
        raise Invalid(f"{s!r} is not a valid user name")
    return s


HOST_KEYS = {"address": "The host's address, reached by other hosts.",
             "roles": "Roles of this host: their services run here.",
             "services": "Extra services on this host, beyond its roles'.",
             "overrides": "Per-service values for this host: SERVICE: {key: value}."}
ROLE_KEYS = {"services": "Services of this role.",
             "overrides": "Per-service values for hosts of this role: SERVICE: {key: value}."}
DEPLOYMENT_KEYS = {"hosts": "The inventory: HOST: {address, roles, services, overrides}.",
                   "roles": "ROLE: {services, overrides}.",
                   "defaults": "Values applied to every service unless it sets them.",
                   "network": "Addressing of the per-host service bridge (see docs/networks.md)."}
