"""The secret files a deployment's config templates read with ``secret(NAME)``, and
`osunits secrets generate`, which creates the missing ones (kolla-genpwd's job).

The names are found in the templates the services' ``config:`` entries name (and the
templates those include, import or extend by a constant name), by jinja2's own parser:
a call ``secret('NAME')`` whose argument is a constant string.  A computed name
(``secret(service.name ~ '-db')``) cannot be known without rendering: it is reported
with its template line, and left to the operator.

Secret files are made as ``secret()`` wants them: in ``$OSUNITS_SECRETS_DIR``, else
``DIR/secrets`` (a directory of the user's own that no one else can enter), each one
line, created mode 0600 and never rewritten.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import jinja2
from jinja2 import meta, nodes

from osunits.deployment import TEMPLATES_DIR
from osunits.errors import DeploymentError, Location, OsunitsError, Problem
from osunits.model import Deployment
from osunits.render import (
    SECRET_FUNCTION,
    BadSecret,
    ConfigRenderer,
    MissingSecret,
    check_secret_name,
    read_secret,
    template_not_found,
    template_syntax,
)

TOKEN_BYTES = 32  # secrets.token_urlsafe: 43 characters of [A-Za-z0-9_-], safe in URLs


class SecretsDirError(OsunitsError):
    """The secrets directory cannot be trusted or made: nothing is written."""


@dataclass(frozen=True, slots=True)
class SecretUses:
    """The secrets a deployment's templates read: name → where (sorted by name), and the
    calls whose name is computed or invalid (T004, T005)."""

    names: dict[str, tuple[Location, ...]]
    problems: tuple[Problem, ...]


def config_templates(dep: Deployment) -> dict[str, Location | None]:
    """Every template a service's ``config:`` names (per host too: overrides may add
    one), with the first place that names it."""
    out: dict[str, Location | None] = {}
    for svc in (*dep.services, *(s for h in dep.hosts for s in h.services)):
        for cf in svc.config:
            out.setdefault(cf.template, cf.loc)
    return out


def find_secret_uses(dep: Deployment) -> SecretUses:
    """The ``secret()`` calls of the templates the deployment's services use."""
    templates_dir = dep.root / TEMPLATES_DIR
    env = ConfigRenderer(templates_dir).env  # the renderer's loader and syntax
    names: dict[str, list[Location]] = {}
    problems: list[Problem] = []
    errors: list[Problem] = []
    named = config_templates(dep)
    todo = list(named.items())
    seen: set[str] = set()
    while todo:
        name, where = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = templates_dir / name
        try:
            source, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
            ast = env.parse(source, name, filename)
        except jinja2.TemplateNotFound as e:
            # only one that config: names is an error here: an include may be optional
            # ("ignore missing", one name of a list), and rendering reports a needed one
            if name in named:
                errors.append(template_not_found(e, env, templates_dir, where))
            continue
        except jinja2.TemplateSyntaxError as e:
            errors.append(template_syntax(e, path))
            continue
        for call in ast.find_all(nodes.Call):
            if not (isinstance(call.node, nodes.Name) and call.node.name == SECRET_FUNCTION):
                continue
            loc = Location(str(path), call.lineno)
            arg = _argument(call)
            if not (isinstance(arg, nodes.Const) and isinstance(arg.value, str)):
                problems.append(Problem(
                    "T004", "secret() with a computed name: `osunits secrets generate` "
                    "cannot create it", loc, "secret",
                    "create the file yourself (one line, chmod 600), or name it by a "
                    "constant: secret('NAME')"))
                continue
            try:
                check_secret_name(arg.value)
            except ValueError as e:
                problems.append(Problem("T005", str(e), loc, "secret"))
                continue
            names.setdefault(arg.value, []).append(loc)
        # include/import/extends by a constant name: its secrets are this one's too
        todo += [(t, Location(str(path))) for t in meta.find_referenced_templates(ast)
                 if t is not None]
    if errors:
        raise DeploymentError(errors)
    return SecretUses({n: tuple(sorted(locs)) for n, locs in sorted(names.items())},
                      tuple(sorted(problems, key=lambda p: p.location or Location(""))))


def _argument(call: nodes.Call) -> nodes.Expr | None:
    """The name given to secret(): its first argument, or ``name=``."""
    if call.args:
        return call.args[0]
    return next((kw.value for kw in call.kwargs if kw.key == "name"), None)


def _open_dir(directory: Path, *, create: bool) -> int | None:
    """A descriptor of the secrets directory after checking that it is the user's alone
    (made 0700 if ``create`` and absent); None if it is absent and not to be made."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if not create:
            return None
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(directory, 0o700)
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise SecretsDirError(f"{e.filename or directory}: {e.strerror}; "
                                  "nothing was written") from None
    except OSError as e:
        raise SecretsDirError(f"{directory}: {e.strerror}; nothing was written") from None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.close(fd)
        whose = "yours" if st.st_uid == os.geteuid() else f"owned by uid {st.st_uid}"
        raise SecretsDirError(
            f"{directory}: a secrets directory must be the user's own and closed to others "
            f"(it is {whose}, mode {stat.S_IMODE(st.st_mode):04o}): chmod 700 it; "
            "nothing was written")
    return fd


def _existing(fd: int, directory: Path, name: str) -> SecretState:
    """The file ``name``: present, missing, or refused as secret() would refuse it (by
    secret()'s own check, which reads the value: a torn or emptied file is refused)."""
    try:
        read_secret(directory, name, dir_fd=fd)
    except MissingSecret:
        return SecretState(name, Status.MISSING)
    except BadSecret as e:
        return SecretState(name, Status.REFUSED, e.why)
    return SecretState(name, Status.PRESENT)


class Status(StrEnum):
    CREATED = "created"
    PRESENT = "present"
    MISSING = "missing"
    REFUSED = "refused"  # there, but secret() would refuse it (``SecretState.why``)


@dataclass(frozen=True, slots=True)
class SecretState:
    name: str
    status: Status
    why: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (Status.CREATED, Status.PRESENT)

    def __str__(self) -> str:
        return f"{self.status:8} {self.name}" + (f": {self.why}" if self.why else "")


def generate_secrets(directory: Path, names: Iterable[str]) -> list[SecretState]:
    """Create each secret of ``names`` missing in ``directory``, with a random value:
    O_EXCL and mode 0600 from the start, so an existing file is never touched."""
    fd = _open_dir(directory, create=True)
    assert fd is not None
    out: list[SecretState] = []
    try:
        for name in names:
            value = (secrets.token_urlsafe(TOKEN_BYTES) + "\n").encode()
            try:
                f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                            | os.O_CLOEXEC, 0o600, dir_fd=fd)
            except FileExistsError:
                out.append(_existing(fd, directory, name))
                continue
            except OSError as e:
                raise SecretsDirError(f"{directory / name}: {e.strerror}") from None
            try:
                view = memoryview(value)
                while view:
                    view = view[os.write(f, view):]
                os.fsync(f)
            except OSError as e:  # a torn secret would stay forever: none instead
                os.unlink(name, dir_fd=fd)
                raise SecretsDirError(f"{directory / name}: {e.strerror}") from None
            finally:
                os.close(f)
            out.append(SecretState(name, Status.CREATED))
        os.fsync(fd)  # the new names durable: a lost secret is a locked-out service
    finally:
        os.close(fd)
    return out


def list_secrets(directory: Path, names: Iterable[str]) -> list[SecretState]:
    """Whether each secret of ``names`` is in ``directory``, as secret() would take it (its
    value is read to check it, never shown)."""
    fd = _open_dir(directory, create=False)
    out: list[SecretState] = []
    try:
        for name in names:
            out.append(SecretState(name, Status.MISSING) if fd is None
                       else _existing(fd, directory, name))
    finally:
        if fd is not None:
            os.close(fd)
    return out
