"""Build root filesystem images from specs, one cached layer per spec.

Layout (``root`` is ``/`` unless the CLI gets ``--root``)::

    CACHE/layers/KEY16/          one complete tree per built layer, never changed once renamed in
    CACHE/archives/              .debs apt downloaded (bind-mounted at build time, shared)
    CACHE/debootstrap/           .debs debootstrap downloaded
    ROOT/var/lib/osunits/rootfs/NAME -> CACHE/layers/KEY16   the image machines use

KEY is the spec's content hash chained with its base's key (``spec.spec_key``):
an unchanged spec finds its layer and does nothing (and two specs with the same
content share one layer).  A layer is built in ``.KEY16.tmp`` beside its final
name and renamed into place only when complete (manifest written), so a killed
build never leaves a half image under the final name; the next build removes
the leftover.  A derived layer starts as
``cp -a --reflink=auto`` of its base — plain directories, no btrfs subvolumes or
``machinectl clone``.  Machines run the image with ``Volatile=overlay``, so the
tree is never written at run time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from osunits.errors import OsunitsError
from osunits.rootfs import apt
from osunits.rootfs.spec import REQUIRED_PACKAGES, Debootstrap, FileSpec, Spec, layer_keys

IMAGES_DIR = Path("var/lib/osunits/rootfs")
CACHE_DIR = Path("var/cache/osunits/rootfs")
MANIFEST = Path("usr/lib/osunits/rootfs.json")
# invoke-rc.d(8): exit status 101 of policy-rc.d means "action forbidden", so
# package scripts do not start services inside the image being built.
POLICY_RC_D = Path("usr/sbin/policy-rc.d")
POLICY_RC_D_TEXT = "#!/bin/sh\n# osunits rootfs build: do not start services\nexit 101\n"
BUILD_ENV = ("DEBIAN_FRONTEND=noninteractive", "LANG=C.UTF-8")
# Each image must hold these (spec.REQUIRED_PACKAGES), checked after the build.
REQUIRED_FILES = {"python3": ("usr/bin/python3",),
                  "iproute2": ("usr/bin/ip", "usr/sbin/ip", "bin/ip", "sbin/ip")}
KEY_CHARS = 16


class BuildError(OsunitsError):
    """An image could not be built."""


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, capture: bool = False) -> str: ...


Log = Callable[[str], None]


def run_command(argv: Sequence[str], *, capture: bool = False) -> str:
    """Run ``argv``; its output goes to ours unless captured. Raise BuildError on failure."""
    try:
        done = subprocess.run(list(argv), check=True, stdin=subprocess.DEVNULL, text=True,
                              stdout=subprocess.PIPE if capture else None)
    except FileNotFoundError as e:
        raise BuildError(f"{argv[0]} not found: install it (apt-get install debootstrap "
                         "systemd-container)") from e
    except subprocess.CalledProcessError as e:
        raise BuildError(f"command failed with exit status {e.returncode}: "
                         f"{shlex.join(argv)}") from e
    return done.stdout or ""


@dataclass(frozen=True, slots=True)
class Store:
    """Where images and layers live."""

    root: Path = Path("/")
    cache: Path | None = None

    @property
    def cache_dir(self) -> Path:
        return self.cache if self.cache is not None else self.root / CACHE_DIR

    @property
    def images(self) -> Path:
        return self.root / IMAGES_DIR

    @property
    def layers(self) -> Path:
        return self.cache_dir / "layers"

    @property
    def trash(self) -> Path:
        return self.cache_dir / "trash"

    @property
    def users(self) -> Path:
        """One file per images directory that links into this cache (its path): a cache
        shared by several roots (--cache) is pruned against all of their images."""
        return self.cache_dir / "users"

    def record_user(self) -> None:
        where = str(self.images.resolve())
        self.users.mkdir(parents=True, exist_ok=True)
        entry = self.users / hashlib.sha256(where.encode()).hexdigest()[:KEY_CHARS]
        if not entry.is_file():
            _write(entry, where + "\n", 0o644)

    def used_layers(self) -> set[Path]:
        """The layers an image of any recorded root (and of this one) points at."""
        dirs = {self.images}
        if self.users.is_dir():
            dirs |= {Path(p.read_text().strip()) for p in self.users.iterdir() if p.is_file()}
        return {img.resolve() for d in dirs if d.is_dir() for img in d.iterdir()
                if img.is_symlink()}

    def image(self, name: str) -> Path:
        return self.images / name

    def layer(self, key: str) -> Path:
        return self.layers / key[:KEY_CHARS]


# --- the public entry point -------------------------------------------------------


def build(name: str, specs: Mapping[str, Spec], *, root: Path = Path("/"),
          cache: Path | None = None, mirror: str | None = None, force: bool = False,
          log: Log = print, run: Runner = run_command,
          apt_etc: Path = apt.APT_ETC, done: set[str] | None = None) -> Path:
    """Build (or find cached) every layer of spec ``name``; return its image path.

    Each layer of the chain also gets its image link.  ``force`` rebuilds every
    layer even when cached (to pick up Debian updates); the replaced layers go
    to ``CACHE/trash`` for ``prune``, since running machines may still use them.
    ``done`` holds the keys of the layers this command already built or found: a chain
    shared by several images is built once (with ``force`` too).
    """
    done = set() if done is None else done
    umask = os.umask(0o022)  # the image's modes are the spec's, not the caller's umask
    try:
        return _build(name, specs, root, cache, mirror, force, log, run, apt_etc, done)
    finally:
        os.umask(umask)


def _build(name: str, specs: Mapping[str, Spec], root: Path, cache: Path | None,
           mirror: str | None, force: bool, log: Log, run: Runner, apt_etc: Path,
           done: set[str]) -> Path:
    if name not in specs:
        raise BuildError(f"no rootfs spec named {name!r} (have: {', '.join(sorted(specs))})")
    store = Store(root, cache)
    keys = layer_keys(name, specs)
    for d in (store.layers, store.cache_dir / "archives", store.cache_dir / "debootstrap",
              store.images):
        d.mkdir(parents=True, exist_ok=True)
    with _locked(store.cache_dir / ".lock", log):
        store.record_user()
        base_layer: Path | None = None
        for layer_name, key in keys.items():
            layer = store.layer(key)
            if key in done:
                pass
            elif layer.is_dir() and not force:
                log(f"rootfs {layer_name}: cached ({key[:KEY_CHARS]})")
                if mirror is not None and isinstance(specs[layer_name].base, Debootstrap):
                    _say_if_other_mirror(layer, layer_name, mirror, log)
            else:
                log(f"rootfs {layer_name}: building ({key[:KEY_CHARS]})")
                started = dt.datetime.now(dt.UTC)
                try:
                    build_layer(specs[layer_name], key, base_layer, layer, store,
                                mirror=mirror, log=log, run=run, apt_etc=apt_etc)
                except OSError as e:  # a full disk, a read-only cache: said, not a traceback
                    raise BuildError(f"rootfs {layer_name}: {e.filename or layer}: "
                                     f"{e.strerror}; nothing of it was kept") from None
                took = (dt.datetime.now(dt.UTC) - started).total_seconds()
                log(f"rootfs {layer_name}: built in {took:.0f} s")
            done.add(key)
            link_image(store.image(layer_name), layer)
            base_layer = layer
    return store.image(name)


def _say_if_other_mirror(layer: Path, name: str, mirror: str, log: Log) -> None:
    """The mirror is not part of a layer's key (the same packages from any mirror): say
    when a cached base uses another one, which its derived layers' apt will use too."""
    try:
        sources = (layer / "etc/apt/sources.list.d/debian.sources").read_text()
    except OSError:
        return
    if mirror.rstrip("/") not in (u.rstrip("/") for ln in sources.splitlines()
                                  if ln.startswith("URIs:") for u in ln.split()[1:]):
        log(f"rootfs {name}: cached, built from another mirror than {mirror}, which its "
            "apt keeps using; --force rebuilds it from this one")


# --- one layer ------------------------------------------------------------------


def build_layer(spec: Spec, key: str, base_layer: Path | None, dest: Path, store: Store, *,
                mirror: str | None, log: Log, run: Runner, apt_etc: Path) -> None:
    """Build ``spec`` into ``dest`` via a temp dir beside it, renamed in when complete."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    # systemd-nspawn locks a directory image with ".#NAME.lck" beside it.
    nspawn_lock = dest.with_name(f".#{tmp.name}.lck")
    remove_tree(tmp)  # left over by a killed build
    nspawn_lock.unlink(missing_ok=True)
    try:
        if isinstance(spec.base, Debootstrap):
            _debootstrap(spec.base, tmp, store, mirror=mirror, log=log, run=run, apt_etc=apt_etc)
        else:
            if base_layer is None:  # pragma: no cover - layer_keys puts the base first
                raise BuildError(f"{spec.name}: base {spec.base!r} not built")
            log(f"rootfs {spec.name}: copying {base_layer.name}")
            run(["cp", "-a", "--reflink=auto", "--", str(base_layer), str(tmp)])
        _write(tmp / POLICY_RC_D, POLICY_RC_D_TEXT, 0o755)
        nspawn = nspawn_argv(tmp, spec.name, store)
        if spec.packages:
            run([*nspawn, "apt-get", "update", "-q"])
            run([*nspawn, "apt-get", "install", "-y", "-q", "--no-install-recommends",
                 *spec.packages])
        for f in spec.files:
            write_file_in(tmp, f)
        for argv in spec.run:
            log(f"rootfs {spec.name}: run {shlex.join(argv)}")
            run([*nspawn, *argv])
        (tmp / POLICY_RC_D).unlink()
        clean_apt(tmp)
        forget_machine_id(tmp)
        check_required(tmp, spec.name)
        packages = installed_packages(tmp, run)
        write_manifest(tmp, spec, key, base_layer, packages)
        if dest.exists():  # force: keep the old tree until prune, machines may use it
            store.trash.mkdir(parents=True, exist_ok=True)
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
            os.rename(dest, store.trash / f"{dest.name}.{stamp}")
        os.rename(tmp, dest)
    except BaseException:
        remove_tree(tmp)
        raise


def _debootstrap(base: Debootstrap, tmp: Path, store: Store, *, mirror: str | None, log: Log,
                 run: Runner, apt_etc: Path) -> None:
    sources = apt.read_sources(apt_etc)
    uri = mirror or apt.pick_mirror(sources, base.suite)
    log(f"rootfs: debootstrap {base.suite} ({base.variant}) from {uri}")
    argv = ["debootstrap"]
    if base.variant != "default":
        argv.append(f"--variant={base.variant}")
    argv += [f"--components={','.join(base.components)}",
             f"--cache-dir={(store.cache_dir / 'debootstrap').resolve()}",
             base.suite, str(tmp), uri]
    # Its own mount namespace: the /proc and /sys debootstrap mounts in the
    # target vanish with it if it is killed, so the leftover is safe to delete.
    run(["unshare", "--mount", "--propagation=private", *argv])
    keyrings = {s.signed_by for s in sources
                if s.signed_by and (tmp / s.signed_by.lstrip("/")).is_file()}
    if mirror is not None:
        sources = [apt.AptSource(mirror, (base.suite,), base.components)] + [
            s for s in sources if base.suite not in s.suites]
    _write(tmp / "etc/apt/sources.list.d/debian.sources",
           apt.image_sources(sources, base.suite, base.components, keyrings), 0o644)
    (tmp / "etc/apt/sources.list").unlink(missing_ok=True)
    # debootstrap copies the build host's name; a machine gets its own from nspawn.
    (tmp / "etc/hostname").unlink(missing_ok=True)


def nspawn_argv(tree: Path, name: str, store: Store) -> list[str]:
    """systemd-nspawn running one command in ``tree`` (no machined outside to register with)."""
    archives = (store.cache_dir / "archives").resolve()
    return [
        "systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--as-pid2",
        f"--machine=osunits-build-{name}"[:64], f"--directory={tree}", "--pipe",
        "--resolv-conf=replace-host", "--timezone=off", "--link-journal=no",
        # Downloads are shared by all builds and never land in the image.
        f"--bind={archives}:/var/cache/apt/archives",
        *(f"--setenv={e}" for e in BUILD_ENV), "--",
    ]


def write_file_in(tree: Path, f: FileSpec) -> None:
    """Write a spec's file inside ``tree``, resolving symlinks as the image would."""
    _write(resolve_in(tree, f.path), f.content, f.mode)


def resolve_in(tree: Path, path: str, *, max_links: int = 40) -> Path:
    """``path`` inside ``tree`` with the image's symlinks followed relative to ``tree``.

    An absolute symlink in the image (``/etc/foo -> /usr/...``) must not lead to
    the build host's own file.
    """
    parts = [p for p in path.split("/") if p and p != "."]
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = tree.joinpath(*done, part)
        if parts and here.is_symlink():  # the last part is written, not followed
            links += 1
            if links > max_links:
                raise BuildError(f"too many symlinks resolving {path} in the image")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        done.append(part)
    return tree.joinpath(*done)


def clean_apt(tree: Path) -> None:
    """Drop apt's package lists and caches: every build runs apt-get update anyway."""
    lists = tree / "var/lib/apt/lists"
    if lists.is_dir():
        for p in lists.iterdir():
            if p.is_file() and p.name != "lock":
                p.unlink()
    cache = tree / "var/cache/apt"
    if cache.is_dir():
        for p in cache.glob("*.bin"):
            p.unlink()
        for p in (cache / "archives").glob("*.deb"):
            p.unlink()


def forget_machine_id(tree: Path) -> None:
    """An image's machine ID would be every container's (and every host's that gets the
    image): empty, as image builders leave it, each machine gets its own at start."""
    etc = tree / "etc/machine-id"
    if etc.is_file() and not etc.is_symlink():
        etc.write_text("")
    dbus = tree / "var/lib/dbus/machine-id"
    if dbus.is_file() and not dbus.is_symlink():
        dbus.unlink()


def check_required(tree: Path, name: str) -> None:
    missing = [pkg for pkg in REQUIRED_PACKAGES
               if not any(os.path.lexists(tree / f) for f in REQUIRED_FILES[pkg])]
    if missing:
        raise BuildError(f"rootfs {name}: the image lacks {', '.join(missing)} after the build")


def installed_packages(tree: Path, run: Runner) -> dict[str, str]:
    """Package → version from the image's dpkg database (read by the host's dpkg-query)."""
    out = run(["dpkg-query", f"--admindir={tree / 'var/lib/dpkg'}", "-W",
               "-f=${binary:Package}\\t${Version}\\t${db:Status-Abbrev}\\n"], capture=True)
    packages = {}
    for line in out.splitlines():
        pkg, _, rest = line.partition("\t")
        version, _, status = rest.partition("\t")
        if status.startswith("ii"):
            packages[pkg] = version
    return dict(sorted(packages.items()))


def write_manifest(tree: Path, spec: Spec, key: str, base_layer: Path | None,
                   packages: Mapping[str, str]) -> None:
    doc = {
        "name": spec.name,
        "description": spec.description,
        "key": key,
        "base": spec.base if isinstance(spec.base, str) else None,
        "base_layer": base_layer.name if base_layer else None,
        "spec": spec.content(),
        "source": str(spec.source),
        "built": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "packages": dict(packages),
    }
    _write(tree / MANIFEST, json.dumps(doc, indent=2, sort_keys=True) + "\n", 0o644)


def read_manifest(tree: Path) -> dict[str, object] | None:
    try:
        doc = json.loads((tree / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# --- images and cleanup -----------------------------------------------------------


def link_image(image: Path, layer: Path) -> None:
    """Point ``image`` at ``layer`` atomically (a new symlink renamed over the old)."""
    if image.exists() and not image.is_symlink():
        raise BuildError(f"{image} exists and is not a symlink osunits made; move it away")
    target = os.path.relpath(layer, image.parent)
    if image.is_symlink() and os.readlink(image) == target:
        return
    tmp = image.with_name(f".{image.name}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, image)


def prune(*, root: Path = Path("/"), cache: Path | None = None, log: Log = print) -> list[Path]:
    """Delete layers no image points at, forced-out layers and leftovers of killed builds,
    except those a running container uses (machines hold their image until restart)."""
    store = Store(root, cache)
    if not store.layers.is_dir():
        return []
    removed: list[Path] = []
    with _locked(store.cache_dir / ".lock", log):
        used = store.used_layers()
        # nspawn's own lock files (.#NAME.lck) are not layers
        doomed = [p for p in sorted(store.layers.iterdir())
                  if not p.name.startswith(".#") and p.resolve() not in used]
        if store.trash.is_dir():
            doomed += sorted(store.trash.iterdir())
        for p in doomed:
            with _unused(p) as free:
                if not free:
                    log(f"rootfs: keeping {p}: a running container uses it")
                    continue
                log(f"rootfs: removing {p}")
                remove_tree(p)
                removed.append(p)
    return removed


NSPAWN_LOCKS = Path("/run/systemd/nspawn/locks")


@contextlib.contextmanager
def _unused(tree: Path) -> Iterator[bool]:
    """Whether no container uses ``tree``, holding it so while true.  systemd-nspawn takes
    a shared lock on the image's inode (NSPAWN_LOCKS/inode-DEV:INO, which follows a
    tree into trash/) and on .#NAME.lck beside it, for as long as the container runs; its
    root is an overlay on the tree, in a mount namespace this process does not see."""
    try:
        st = tree.lstat()
    except FileNotFoundError:
        yield True
        return
    paths = [tree.with_name(f".#{tree.name}.lck")]
    if not tree.is_symlink():
        paths.append(NSPAWN_LOCKS / f"inode-{st.st_dev}:{st.st_ino}")
    fds = []
    try:
        for path in paths:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            fds.append(fd)
            try:  # a POSIX lock conflicts with nspawn's OFD locks
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
        yield True
        for path in paths[:1]:  # ours to remove with the layer; /run's is systemd's
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    finally:
        for fd in fds:
            os.close(fd)


def remove_tree(path: Path) -> None:
    """rm -rf ``path``, refusing if anything is mounted below it."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    real = str(path.resolve())
    for mount_point in _mount_points():
        if mount_point == real or mount_point.startswith(real + "/"):
            raise BuildError(f"{mount_point} is mounted inside {path}; unmount it first")
    shutil.rmtree(path)


def _mount_points() -> list[str]:
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return []
    # mountinfo(5): field 5 is the mount point, with octal escapes for spaces.
    return [line.split()[4].encode().decode("unicode_escape") for line in text.splitlines()
            if len(line.split()) > 4]


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)


@contextlib.contextmanager
def _locked(lock_path: Path, log: Log) -> Iterator[None]:
    """One build per cache at a time (two builds of a base would race on its temp dir)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"rootfs: waiting for another build holding {lock_path}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
