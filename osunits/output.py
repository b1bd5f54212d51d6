"""Write a host's planned files under a root: atomically, and only files osunits owns.

Ownership is recorded in ``ROOT/var/lib/osunits/manifest.json`` (path → sha256
of what osunits wrote, and the host it wrote them for).  A file that exists but is
not in the manifest, or was changed since osunits wrote it, is never overwritten or
deleted: the whole run stops with a list of such files before anything is written.
Neither is a root that holds another host's files.  Adopting (``adopt=True``) takes
over files whose content and mode are exactly what would be written, and nothing else.

A run commits in two phases, with a journal between them:

1. *stage*: every new file is written next to its target as ``.NAME.osunits-new``
   and flushed; a journal (``manifest.journal``) lists them first, so a run
   killed here is rolled back by the next one (temp files removed, old set intact);
2. *commit*: the journal is marked committing, then each temp file is renamed
   over its target and stale files are removed; a run killed here is rolled
   forward by the next one.  Then the new manifest replaces the old.

One run at a time (``manifest.lock``); docs/design.md has the flushing order.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from osunits.errors import OutputError
from osunits.plan import INSTALLED, Layout, PlannedFile


def _journal_of(manifest: PurePosixPath) -> PurePosixPath:
    return manifest.with_name("manifest.journal")


MANIFEST = INSTALLED.manifest
JOURNAL = _journal_of(MANIFEST)
TMP_SUFFIX = ".osunits-new"


class Change(StrEnum):
    ADD = "add"
    UPDATE = "update"
    REMOVE = "remove"
    ADOPT = "adopt"  # already as planned, and now osunits' (the manifest changes)


@dataclass(frozen=True, slots=True)
class FileChange:
    path: PurePosixPath
    change: Change
    old: bytes | None  # current content (or "->target" for a symlink)
    new: bytes | None


@dataclass(slots=True)
class Result:
    changes: list[FileChange] = field(default_factory=list)
    written: bool = False
    secret_paths: frozenset[str] = frozenset()  # files that hold or held a secret

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _prefix(root: Path | str) -> str:
    """``root`` as the start of the paths under it (``_disk``)."""
    root = str(root)
    return root if root.endswith("/") else root + "/"


def _disk(prefix: str, p: PurePosixPath | Path | str) -> str:
    """Where the absolute path ``p`` lies under the root of ``prefix`` (``_prefix``): a
    string, as it is computed for every planned file, where pathlib's cost adds up; and
    one concatenation, what os.path.join gives at a fifth of its cost."""
    return prefix + str(p).lstrip("/")


def on_disk(root: Path, p: PurePosixPath | Path) -> Path:
    """Where the absolute path ``p`` lies under ``root``."""
    return Path(_disk(_prefix(root), p))


NOT_A_DIRECTORY = b"<a parent is not a directory>"


def _not_a_directory(path: str) -> str:
    """The directory above ``path`` that is something else."""
    d = os.path.dirname(path)
    while d != os.path.dirname(d):
        try:
            if not stat.S_ISDIR(os.stat(d).st_mode):
                return d
        except OSError:
            pass
        d = os.path.dirname(d)
    return os.path.dirname(path)


def _read_current(path: str) -> tuple[bytes, int] | None:
    """Current content of ``path`` in the form PlannedFile.digest hashes, and its mode
    (0 for a symlink or directory); None if absent."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return b"->" + os.readlink(path).encode(), 0
        if stat.S_ISDIR(st.st_mode):
            return b"<directory>", 0
        with open(path, "rb") as f:
            return f.read(), st.st_mode & 0o7777
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return NOT_A_DIRECTORY, 0
    except OSError as e:
        raise OutputError(f"{path}: cannot read ({e.strerror}); refusing to write") from e


class _Lookups:
    """``_read_current`` for the files under one root, but none in a directory found absent:
    a new host's or a new service's files are not looked up one by one (28 000 absent
    files on the first run for 5000 services, twice)."""

    def __init__(self, prefix: str) -> None:
        self.top = os.path.dirname(prefix)  # the root: nothing above it is looked at
        # directory -> stat(2) said ENOENT (so it says so for any path below), or did not
        self.absent: dict[str, bool] = {}

    def read(self, path: str) -> tuple[bytes, int] | None:
        # rpartition: dirname's result for the paths _disk makes (but "" for "/"), and
        # dirname cost as much as the rest of this
        d = path.rpartition("/")[0]
        if self.absent:
            known = self.absent.get(d)
            if known is None:
                known = self._known_absent(d)
            if known:
                return None
        current = _read_current(path)
        if current is None:
            self._note(d)
        return current

    def _known_absent(self, d: str) -> bool:
        """``d`` or a directory above it was found absent (no system call)."""
        below: list[str] = []
        while (known := self.absent.get(d)) is None:
            if len(d) <= len(self.top):  # the root itself, or a name above it
                return False
            below.append(d)
            d = d.rpartition("/")[0]
        if known:
            self.absent.update(dict.fromkeys(below, True))
        return known

    def _note(self, d: str) -> None:
        """A path in ``d`` is absent: is ``d`` (and the directories above it)?"""
        while d not in self.absent and len(d) >= len(self.top):
            try:
                os.stat(d)
            except FileNotFoundError:
                self.absent[d] = True
                d = d.rpartition("/")[0]
                continue
            except OSError:
                pass
            self.absent[d] = False
            return


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _planned_bytes(f: PlannedFile) -> bytes:
    return b"->" + f.link.encode() if f.link else f.content


@dataclass(frozen=True, slots=True)
class Manifest:
    files: dict[str, str]  # path → sha256 of what osunits wrote
    host: str = ""  # the host they were written for ("" before osunits recorded it)
    secrets: frozenset[str] = frozenset()  # the paths whose content holds a secret


def load_manifest(root: Path, manifest: PurePosixPath = MANIFEST,
                  *, dry_run: bool = False) -> Manifest:
    journal = on_disk(root, _journal_of(manifest))
    if dry_run and journal.exists():
        raise OutputError(f"{journal}: an interrupted run must be completed first: "
                          "run the same command without --dry-run/--diff")
    recover(root, manifest)
    path = on_disk(root, manifest)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Manifest({})
    except (OSError, ValueError) as e:
        raise OutputError(f"{path}: unreadable ownership manifest ({e}); "
                          "refusing to touch any file") from e
    files = data.get("files", {}) if isinstance(data, dict) else None
    if not isinstance(files, dict) or data.get("version") != 1:
        raise OutputError(f"{path}: malformed ownership manifest, or of another version of "
                          "osunits; refusing to touch any file")
    return Manifest({str(k): str(v) for k, v in files.items()}, str(data.get("host", "")),
                    frozenset(map(str, data.get("secrets", []))))


def plan_changes(root: Path, files: tuple[PlannedFile, ...],
                 manifest: PurePosixPath = MANIFEST, *, host: str = "", dry_run: bool = False,
                 adopt: bool = False, inventory: frozenset[str] = frozenset()
                 ) -> tuple[list[FileChange], Manifest]:
    """What writing ``files`` for ``host`` would change, and the manifest as it is; raises
    OutputError on any unowned conflict, and if the root holds another host's files
    (unless adopting them for a renamed host: one no longer in ``inventory``)."""
    m = load_manifest(root, manifest, dry_run=dry_run)
    if host and m.host and m.host != host and m.files and not (
            adopt and m.host not in inventory):
        raise OutputError(
            f"{on_disk(root, manifest)}: this root holds the units of host {m.host}, not "
            f"{host}; refusing to replace them (give --host {m.host}, or another --root"
            + ("; --adopt takes over the root of a renamed host only, and the inventory "
               f"still has {m.host})" if adopt else "; if the host was renamed, --adopt)"))
    owned = m.files
    conflicts: list[str] = []
    changes: list[FileChange] = []
    planned = {str(f.path) for f in files}
    prefix = _prefix(root)
    lookups = _Lookups(prefix)
    for f in files:
        disk = _disk(prefix, f.path)
        current = lookups.read(disk)
        new = _planned_bytes(f)
        if current is None:
            changes.append(FileChange(f.path, Change.ADD, None, new))
            continue
        cur, mode = current
        known = owned.get(str(f.path))
        if cur == NOT_A_DIRECTORY:
            conflicts.append(f"{_not_a_directory(disk)}: not a directory, and osunits writes "
                             "files under it")
        elif known is None:
            if cur == new and mode == (0 if f.link else f.mode):  # a link is mode 0
                if adopt:
                    changes.append(FileChange(f.path, Change.ADOPT, cur, new))
                else:
                    conflicts.append(f"{disk}: exists and is not osunits' (exactly as "
                                     "osunits would write it: --adopt takes it over)")
            elif cur == new and not f.link:
                conflicts.append(f"{disk}: exists and is not osunits' (its content is what "
                                 f"osunits would write, but its mode is {mode:04o}, not "
                                 f"{f.mode:04o})")
            else:
                conflicts.append(f"{disk}: exists and is not osunits' to overwrite")
        elif known != _digest(cur):
            conflicts.append(f"{disk}: changed since osunits wrote it; "
                             "move your change into the deployment, then remove the file")
        elif cur != new or not f.link and mode != f.mode:
            changes.append(FileChange(f.path, Change.UPDATE, cur, new))
    for path, digest in sorted(owned.items()):
        if path in planned:
            continue
        disk = _disk(prefix, path)
        current = _read_current(disk)
        if current is None:
            continue
        cur = current[0]
        if _digest(cur) != digest:
            conflicts.append(f"{disk}: osunits would remove it, but it changed since osunits "
                             "wrote it; remove it yourself")
            continue
        changes.append(FileChange(PurePosixPath(path), Change.REMOVE, cur, None))
    if conflicts:
        raise OutputError("refusing to write; nothing was changed:\n  "
                          + "\n  ".join(dict.fromkeys(conflicts)))
    return sorted(changes, key=lambda c: c.path.parts), m  # PurePath's order (see plan_host)


def render_diff(changes: list[FileChange], hide: frozenset[str] = frozenset()) -> str:
    """A unified diff of ``changes``; a file in ``hide`` (one that holds or held a secret,
    ``Result.secret_paths``) is named, not shown."""
    import difflib  # only for --diff

    out: list[str] = []
    for c in changes:
        a = "/dev/null" if c.change is Change.ADD else f"a{c.path}"
        b = "/dev/null" if c.change is Change.REMOVE else f"b{c.path}"
        if str(c.path) in hide:
            out += [f"--- {a}\n", f"+++ {b}\n", "(holds secrets: not shown)\n"]
            continue
        old = (c.old or b"").decode(errors="replace").splitlines(keepends=True)
        new = (c.new or b"").decode(errors="replace").splitlines(keepends=True)
        diff = list(difflib.unified_diff(old, new, a, b))
        if c.change is Change.ADOPT:
            diff = [f"--- {a}\n", f"+++ {b}\n", "(adopted: already as osunits writes it)\n"]
        elif not diff:
            diff = [f"--- {a}\n", f"+++ {b}\n", "(mode changed)\n"]
        out.extend(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in diff)
    return "".join(out)


def write_files(root: Path, files: tuple[PlannedFile, ...], *, host: str = "",
                dry_run: bool = False, adopt: bool = False,
                inventory: frozenset[str] = frozenset(), layout: Layout = INSTALLED,
                vet: Callable[[list[FileChange]], None] | None = None) -> Result:
    """Make the files under ``root`` exactly ``files``, ``host``'s (osunits' own files only).
    ``vet`` sees the changes (under the lock, before anything is written; with
    ``dry_run`` too, so that it says what the run would) and may refuse them by raising
    OutputError."""
    if os.path.lexists(root) and not root.is_dir():
        raise OutputError(f"{root}: not a directory; nothing was written")
    if dry_run:
        return _write_files(root, files, host, True, adopt, inventory, layout, vet)
    # Files get their modes explicitly; directories get 0755 whatever the caller's umask:
    # a container's services, not only root, read through the bound hosts directory.
    umask = os.umask(0o022)
    try:
        return _write_locked(root, files, host, adopt, inventory, layout, vet)
    finally:
        os.umask(umask)


def _write_locked(root: Path, files: tuple[PlannedFile, ...], host: str, adopt: bool,
                  inventory: frozenset[str], layout: Layout,
                  vet: Callable[[list[FileChange]], None] | None) -> Result:
    lock = on_disk(root, layout.manifest.with_name("manifest.lock"))
    planned = None
    if not lock.exists():
        # A root osunits never wrote to: find any refusal before the lock creates a file
        # (an OSError is left to the locked run, which says it as it says it always)
        with contextlib.suppress(OSError):
            planned = plan_changes(root, files, layout.manifest, host=host, dry_run=True,
                                   adopt=adopt, inventory=inventory)
    with _locked(lock):
        if planned is not None and any(os.path.lexists(on_disk(root, p)) for p in (
                layout.manifest, _journal_of(layout.manifest))):
            planned = None  # another run wrote first: plan again, under the lock
        return _write_files(root, files, host, False, adopt, inventory, layout, vet, planned)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time: a second run would take the first one's journal for a crash."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise OutputError(f"{e.filename or path}: {e.strerror}; nothing was written") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_files(root: Path, files: tuple[PlannedFile, ...], host: str, dry_run: bool,
                 adopt: bool, inventory: frozenset[str], layout: Layout,
                 vet: Callable[[list[FileChange]], None] | None = None,
                 planned: tuple[list[FileChange], Manifest] | None = None) -> Result:
    """``planned``: plan_changes' answer for this root while it held no manifest or journal
    (nothing osunits wrote yet: the first run's plan, made before taking the lock)."""
    recovered = not dry_run and on_disk(root, _journal_of(layout.manifest)).exists()
    changes, before = planned or plan_changes(root, files, layout.manifest, host=host,
                                              dry_run=dry_run, adopt=adopt,
                                              inventory=inventory)
    if vet is not None:
        vet(changes)
    secrets = _secrets(files)
    result = Result(changes, written=recovered,  # a completed interrupted run needs a reload
                    secret_paths=before.secrets | secrets)
    manifest_path = on_disk(root, layout.manifest)
    # Nothing to change, but an older manifest names no host yet: record it, or the
    # wrong-host check would never hold for this root.
    if dry_run or (not changes and manifest_path.exists() and before.host == host
                   and before.secrets == secrets):
        return result
    try:
        return _write(root, files, changes, host, sorted(secrets), layout, result)
    except OSError as e:
        raise OutputError(f"{e.filename or root}: {e.strerror}; the previous files are kept "
                          "(an interrupted write is completed or undone by the next run)") from e


def _write(root: Path, files: tuple[PlannedFile, ...], changes: list[FileChange], host: str,
           secrets: list[str], layout: Layout, result: Result) -> Result:
    by_path = {f.path: f for f in files}
    staged: list[tuple[str, str]] = []
    journal_path = on_disk(root, _journal_of(layout.manifest))
    to_stage = [c for c in changes if c.change in (Change.ADD, Change.UPDATE)]
    prefix = _prefix(root)
    finals = [_disk(prefix, c.path) for c in to_stage]
    temps = [_tmp_name(final) for final in finals]
    # Paths under the root, not absolute: a copy of the root (a backup restored elsewhere)
    # completes its own run, never the original's.
    rel = len(prefix)
    # New keys for them: an older osunits finds none of its own (it fails, or leaves the
    # temp files) instead of applying these relative to its working directory.
    write_json(journal_path, {"state": "staging", "temps_in_root": [t[rel:] for t in temps]})
    # Durable before any temp file exists, so that a crash cannot leave temp files the
    # next run does not know to remove (they may be on another file system).
    _sync([str(journal_path.parent)])
    made: set[str] = set()
    for c, tmp, final in zip(to_stage, temps, finals, strict=True):
        _stage(tmp, by_path[c.path], made)
        staged.append((tmp, final))
    _sync([os.path.dirname(tmp) for tmp, _ in staged])
    removals = [_disk(prefix, c.path) for c in changes if c.change is Change.REMOVE]
    new_manifest = {str(f.path): f.digest for f in files}
    write_json(journal_path, {"state": "committing",
                              "renames_in_root": [(t[rel:], f[rel:]) for t, f in staged],
                              "removals_in_root": [r[rel:] for r in removals],
                              "manifest": new_manifest, "host": host, "secrets": secrets})
    _sync([str(journal_path.parent)])  # the commit record durable before the first rename
    _commit(root, staged, removals, new_manifest, host, secrets, layout.manifest)
    result.written = result.written or bool(changes)  # systemd reloads for files, not this
    return result


def recover(root: Path, manifest: PurePosixPath = MANIFEST) -> None:
    """Finish or undo a run that was killed (see the module docstring)."""
    journal_path = on_disk(root, _journal_of(manifest))
    try:
        journal = json.loads(journal_path.read_text())
    except FileNotFoundError:
        return
    except ValueError:
        journal = {"state": "staging", "temps": []}  # torn write: nothing was committed yet
    under = _prefix(root)

    def paths(key: str) -> list[Any]:
        """The journal's ``key`` as absolute paths: ``KEY_in_root`` holds paths under this
        root, ``KEY`` (a journal of an earlier osunits) absolute ones."""
        if f"{key}_in_root" not in journal:
            return list(journal.get(key, []))
        return [[under + p for p in x] if isinstance(x, list) else under + x
                for x in journal[f"{key}_in_root"]]

    if journal.get("state") == "committing":
        _commit(root, paths("renames"), paths("removals"), journal["manifest"],
                journal.get("host", ""), journal.get("secrets", []), manifest, recovering=True)
        return
    for tmp in paths("temps"):
        Path(tmp).unlink(missing_ok=True)
    journal_path.unlink()


def _commit(root: Path, renames: list[tuple[str, str]] | list[list[str]], removals: list[str],
            manifest: dict[str, str], host: str, secrets: list[str],
            manifest_path: PurePosixPath, *, recovering: bool = False) -> None:
    dirs: set[str] = set()
    for tmp, final in renames:
        try:
            os.replace(tmp, final)
        except FileNotFoundError:
            if not recovering:  # staged by this very run: someone removed it
                raise
            # else renamed already, by the run this one completes
        except IsADirectoryError:
            raise OutputError(f"{final}: is a directory") from None
        dirs.add(os.path.dirname(final))
    for path in removals:
        p = Path(path)
        if p.is_symlink() or p.exists():
            p.unlink()
        _prune_empty(p.parent, root, on_disk(root, manifest_path.parent / "config"))
        dirs.add(str(p.parent))
    write_json(on_disk(root, manifest_path),
                {"version": 1, "host": host, "files": dict(sorted(manifest.items())),
                 "secrets": secrets})
    # renames, removals and manifest durable before the journal that would redo them goes
    _sync([str(on_disk(root, manifest_path.parent)), *sorted(dirs)])
    on_disk(root, _journal_of(manifest_path)).unlink(missing_ok=True)


def _secrets(files: tuple[PlannedFile, ...]) -> frozenset[str]:
    return frozenset(str(f.path) for f in files if f.secret)


def _tmp_name(path: str) -> str:
    # os.path.split and join, for the normalised paths _disk makes, at a third of their cost
    head, sep, name = path.rpartition("/")
    return f"{head}{sep}.{name}{TMP_SUFFIX}"


def _make_dir(d: str, made: set[str]) -> None:
    """``d`` and its missing parents (``made`` are there already), with one mkdir(2) for
    each: os.makedirs stats every level first."""
    if d in made:
        return
    try:
        os.mkdir(d)  # its parent is usually there
    except FileExistsError:
        pass
    except FileNotFoundError:
        parent = os.path.dirname(d)
        if parent == d:
            raise
        _make_dir(parent, made)
        with contextlib.suppress(FileExistsError):
            os.mkdir(d)
    made.add(d)


def _stage(tmp: str, f: PlannedFile, made: set[str]) -> None:
    _make_dir(os.path.dirname(tmp), made)
    try:
        fd = _create(tmp, f)
    except FileExistsError:
        os.unlink(tmp)  # left by a run that was killed
        fd = _create(tmp, f)
    if fd is None:
        return
    try:
        view = memoryview(f.content)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, f.mode)  # neither the umask nor a directory's default ACL applies
    finally:
        os.close(fd)


def _create(tmp: str, f: PlannedFile) -> int | None:
    """Create the temporary file for ``f`` (a symlink: made, and None)."""
    if f.link:
        os.symlink(f.link, tmp)
        return None
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, f.mode)


_libc: Any = None


def _sync(dirs: list[str]) -> None:
    """Flush what was written in ``dirs``: one syncfs(2) per filesystem, not an fsync per
    file and directory (each fsync is a journal commit: 20 services touch 25 directories)."""
    global _libc
    if not dirs:
        return
    import ctypes  # not on a run that writes nothing

    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.syncfs  # noqa: B018 - probe for the symbol
        except (OSError, AttributeError):
            _libc = False
    devs: dict[int, str] = {}
    for d in dict.fromkeys(dirs):
        while True:
            try:
                st = os.stat(d)
            except OSError:  # pruned after its last file was removed
                parent = os.path.dirname(d)
                if parent == d:
                    raise
                d = parent
                continue
            if stat.S_ISDIR(st.st_mode):
                break
            d = os.path.dirname(d)
        devs.setdefault(st.st_dev, d)
    for d in devs.values():
        if not _libc:
            os.sync()
            return
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _libc.syncfs(fd) != 0:
                err = ctypes.get_errno()
                if err != errno.ENOSYS:  # a write-back error (EIO, ENOSPC): stop before renaming
                    raise OSError(err, os.strerror(err), d)
                os.sync()
        finally:
            os.close(fd)


def write_json(path: Path, data: object) -> None:
    """Write-temp-rename; the caller flushes (one syncfs covers several writes)."""
    tmp = Path(_tmp_name(str(path)))
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.unlink(missing_ok=True)
    # root's alone: it holds the digest of every config file, secrets included
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def _prune_empty(d: Path, root: Path, config: Path) -> None:
    # Only the per-service directories osunits creates (drop-in and config dirs).
    while d != config and root in d.parents:
        if d.name.endswith(".service.d") or config in d.parents:
            try:
                d.rmdir()
            except OSError:
                return
            d = d.parent
        else:
            return
