"""Render unit templates (unit_templates/) and the deployment's config templates.

Unit templates see only escaped values: the environment's ``finalize`` hook
refuses any printed value that did not pass through one of the filters of
``osunits.systemd.escape``, so an unescaped value cannot reach a unit file.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import jinja2
import jinja2.bccache
import jinja2.sandbox
from jinja2.exceptions import SecurityError

from osunits import cache
from osunits.errors import DeploymentError, Location, Problem, closest
from osunits.systemd import escape

UNIT_TEMPLATES = Path(__file__).parent / "unit_templates"
if not UNIT_TEMPLATES.is_dir():  # running from a source tree without installing
    UNIT_TEMPLATES = Path(__file__).parent.parent / "unit_templates"


class UnescapedValue(TypeError):
    pass


def _finalize(value: Any) -> Any:
    if isinstance(value, escape.Escaped):
        return value
    if value is None or value == "":
        return ""
    raise UnescapedValue(f"template printed {value!r} without an escaping filter")


class _BytecodeCache(jinja2.BytecodeCache):
    """Compiled templates kept between runs (a third of a small `generate`'s time), by the
    rules of osunits' other caches: only files of our own are loaded (they run as code),
    writes are atomic, and none are made in read-only mode (the generator)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def _path(self, bucket: jinja2.bccache.Bucket) -> Path:
        return self.dir / f"__jinja2_{bucket.key}.cache"

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        data = cache.read(self._path(bucket), b"")
        if data is not None:
            bucket.bytecode_from_string(data)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        cache.write(self._path(bucket), bucket.bytecode_to_string())


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    d = cache.directory("jinja2")
    return _BytecodeCache(d) if d is not None else None


@functools.cache
def unit_env() -> jinja2.Environment:
    env = jinja2.Environment(
        bytecode_cache=_bytecode_cache(),
        auto_reload=False,  # the templates do not change during a run: no stat per render
        loader=jinja2.FileSystemLoader(str(UNIT_TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        unit=escape.unit_value,
        exec=escape.exec_line,
        unit_env=lambda kv: escape.unit_environment(kv[0], kv[1]),
        nspawn=escape.nspawn_value,
        nspawn_words=escape.nspawn_words,
        nspawn_env=lambda kv: escape.nspawn_word(f"{kv[0]}={kv[1]}"),
        bind=lambda sd: escape.nspawn_bind(sd[0], sd[1]),
    )
    # The templates print their context through the filters and call nothing: without
    # jinja2's default globals (range, dict, lipsum, ...) a render does not copy them into
    # its context first (3 µs of the 26 a netns unit takes).
    env.globals.clear()
    return env


def render_unit(template: str, **context: Any) -> str:
    return unit_env().get_template(template).render(**context)


@functools.cache
def text_env() -> jinja2.Environment:
    """For generated files that are not systemd syntax (/etc/hosts, nftables rules);
    their values are addresses and validated names only."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(UNIT_TEMPLATES)),
                              bytecode_cache=_bytecode_cache(), auto_reload=False,
                              undefined=jinja2.StrictUndefined, autoescape=False,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def render_text(template: str, **context: Any) -> str:
    return text_env().get_template(template).render(**context)


class _Sandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """jinja2's sandbox, where templates cannot change what they are given (the model's
    dicts and lists are shared) nor reach the file system through a path of the model:
    a concrete ``Path``'s attributes are allowed only where ``PurePath`` has them.

    The verdict on an attribute depends on the object's type and the name alone, so it is
    remembered per (type, name): deciding it anew was half of every render."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._safe: dict[tuple[type, str], bool] = {}

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        key = (type(obj), attr)
        safe = self._safe.get(key)
        if safe is None:
            safe = self._safe[key] = super().is_safe_attribute(obj, attr, value) and not (
                isinstance(obj, PurePath) and not hasattr(PurePath, attr))
        return safe

    def getattr(self, obj: Any, attribute: str) -> Any:
        # An attribute already found safe on this type: read it, and wrap str.format as
        # the sandbox does; anything else the long way.
        if self._safe.get((type(obj), attribute)):
            try:
                value = getattr(obj, attribute)
            except AttributeError:
                pass
            else:
                fmt = self.wrap_str_format(value)
                return value if fmt is None else fmt
        return super().getattr(obj, attribute)


_SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SECRET_MAX = 4096
SECRET_FUNCTION = "secret"  # the templates' global: osunits.secretfiles looks for its calls
CREATE_SECRETS = "run `osunits secrets generate` to create the missing ones"


def check_secret_name(name: object) -> str:
    """``name`` if it can name a secret file (letters, digits, '_.-'; no path), else
    ValueError: the one rule for secret() and `osunits secrets generate`."""
    if not isinstance(name, str) or not _SECRET_NAME.match(name):
        raise ValueError(f"secret({name!r}): not a secret name (letters, digits, '_.-')")
    return name


class MissingSecret(ValueError):
    """A secret file that does not exist (`osunits secrets generate` makes it)."""


class BadSecret(ValueError):
    """A secret file that secret() refuses; ``why`` says what is wrong with it."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


_SECRET_FILE = "must be a file of yours that no one else can read (chmod 600)"


def read_secret(directory: Path, name: str, dir_fd: int | None = None) -> str:
    """The value of the secret file ``directory/name`` (opened relative to ``dir_fd`` when
    given), as secret() takes it: the one set of rules for secret() and `osunits secrets
    list|generate`.  MissingSecret if it does not exist, BadSecret if it is refused."""
    path = directory / name
    try:  # O_NONBLOCK: a fifo must not hang the run (it is refused below)
        fd = os.open(name if dir_fd is not None else path,
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError as e:
        raise MissingSecret(f"secret({name!r}): {path}: {e.strerror}") from None
    except OSError as e:
        why = (f"{_SECRET_FILE}; it is a symbolic link" if e.errno == errno.ELOOP
               else str(e.strerror))
        raise BadSecret(f"secret({name!r}): {path}: {why}", why) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077 or st.st_uid != os.geteuid():
            why = _SECRET_FILE + ("; it is not a regular file" if not stat.S_ISREG(st.st_mode)
                                  else f"; it is mode {stat.S_IMODE(st.st_mode):04o}, "
                                  f"uid {st.st_uid}")
            raise BadSecret(f"secret({name!r}): {path} {why}", why)
        data = os.read(fd, _SECRET_MAX + 1)
    finally:
        os.close(fd)
    value = data.decode("utf-8", "replace").rstrip("\r\n")
    if not value or "\n" in value or "\r" in value or len(data) > _SECRET_MAX:
        why = f"must hold one non-empty line (at most {_SECRET_MAX} bytes)"
        raise BadSecret(f"secret({name!r}): {path} {why}", why)
    return value


def template_not_found(e: jinja2.TemplateNotFound, env: jinja2.Environment, directory: Path,
                       where: Location | None) -> Problem:
    close = closest(str(e.name), env.list_templates())
    return Problem("T001", f"config template {e.name!r} not found in {directory}", where,
                   "config.template", f"did you mean {close!r}?" if close else "")


def template_syntax(e: jinja2.TemplateSyntaxError, path: Path) -> Problem:
    """``path``: the template rendered; the error may be in one it includes (e.filename)."""
    return Problem("T002", f"template syntax error: {e.message}",
                   Location(e.filename or str(path), e.lineno or 0), "config.template")


class ConfigRenderer:
    """The deployment's own templates (templates/), sandboxed and strict.

    ``secret(NAME)`` reads ``secrets_dir/NAME``: passwords stay out of the deployment's
    files (and its repository); the values read are kept in ``secrets`` for masking."""

    def __init__(self, templates_dir: Path, secrets_dir: Path | None = None) -> None:
        self.dir = templates_dir
        self.secrets_dir = secrets_dir
        self.secrets: set[str] = set()
        self.used_secret = False  # by the last render: its text holds a secret, in some form
        self.env = _Sandbox(
            loader=jinja2.FileSystemLoader(str(templates_dir)),
            bytecode_cache=_bytecode_cache(),
            auto_reload=False,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,
        )
        self.env.globals[SECRET_FUNCTION] = self._secret

    def masked(self, p: Problem) -> Problem:
        """``p`` without any secret value read by this renderer (or given it by others that
        rendered in other processes): the same error text whatever read what first."""
        return dataclasses.replace(p, message=self._masked(p.message), hint=self._masked(p.hint))

    def _masked(self, text: str) -> str:
        """``text`` (an error) without any secret's value: an error may quote one."""
        for value in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(value, "********")
        return text

    def _secret(self, name: str) -> str:
        check_secret_name(name)
        if self.secrets_dir is None:
            raise ValueError(f"secret({name!r}): this deployment has no secrets directory")
        value = read_secret(self.secrets_dir, name)
        self.secrets.add(value)
        self.used_secret = True
        return value

    def render(self, name: str, context: Mapping[str, Any], where: Location | None) -> str:
        self.used_secret = False
        try:
            return self.env.get_template(name).render(**context)
        except jinja2.TemplateNotFound as e:
            # one the template includes (imports, extends): named at that line
            at = _template_frame(e, self.dir) if e.name != name else None
            p = template_not_found(e, self.env, self.dir, at or where)
            if at and where:
                p = dataclasses.replace(p, hint="; ".join(filter(None, [
                    p.hint, f"used at {where}"])))
            raise DeploymentError([dataclasses.replace(p, message=self._masked(p.message))]
                                  ) from None
        except jinja2.TemplateSyntaxError as e:
            raise DeploymentError([template_syntax(e, self.dir / name)]) from None
        except Exception as e:  # noqa: BLE001 - a template is code: whatever it raises
            # (1 // 0, a bad format, an undefined name) is the template's error, not a crash
            at = _template_frame(e, self.dir)
            what = ("templates include each other without end (an include loop)"
                    if isinstance(e, RecursionError) else
                    str(e) if isinstance(e, (jinja2.TemplateError, SecurityError, TypeError,
                                             ValueError)) else f"{type(e).__name__}: {e}")
            what = self._masked(what)
            hints = [CREATE_SECRETS] if isinstance(e, MissingSecret) else []
            if at and where:
                hints.append(f"used at {where}")
            raise DeploymentError([Problem(
                "T003", f"cannot render {name}: {what}", at or where, "config.template",
                hint="; ".join(hints))]) from None


def _template_frame(e: BaseException, directory: Path) -> Location | None:
    """Where in the templates the error was raised: the innermost frame of a template
    under ``directory`` (jinja2 rewrites tracebacks so that a template's frames carry its
    file name and line), or None."""
    top = os.path.normpath(directory) + os.sep
    at = None
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(top):
            at = Location(tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return at
