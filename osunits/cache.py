"""What osunits keeps between runs: compiled templates and validated deployments.

Both are pure speed: deleting the directory changes nothing but time.  The directory
is ``$OSUNITS_CACHE_DIR``, else /var/cache/osunits (root), else ~/.cache/osunits;
``OSUNITS_CACHE_DIR=`` (empty) runs without any cache.

A validated deployment is kept when it loaded without errors, keyed by the stat of
every file it was read from (device, inode, size, mtime, ctime), of the code that
validated it (osunits and PyYAML) and by the Python version.
ctime cannot be set from user space, so any write to an input changes the key.  A
file changed within ``RACY_NS`` of being read is not cached: a second write in the
same clock tick could leave its stat unchanged (git's "racily clean" files).  When
some inputs changed, the builder is given the previous model and the inputs that did
not, so that it can reuse what they produced.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from osunits import parallel

if TYPE_CHECKING:
    from osunits.model import Deployment

RACY_NS = 2_000_000_000
_MAGIC = b"osunits-model-3\n"
_Stat = tuple[int, int, int, int, int] | None
read_only = False  # a systemd generator must not write outside its output directories


def directory(kind: str) -> Path | None:
    """The cache directory for ``kind`` (created when writable), or None: none at all when
    ``OSUNITS_CACHE_DIR`` is set and empty."""
    from osunits import __version__

    chosen = os.environ.get("OSUNITS_CACHE_DIR")
    if chosen == "":
        return None
    candidates = [chosen, "/var/cache/osunits", os.path.expanduser("~/.cache/osunits")]
    for base in filter(None, candidates):
        d = Path(base) / f"{kind}-{__version__}"
        if read_only:
            if d.is_dir():
                return d
            continue
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return d
    return None


def _code_stats() -> list[tuple[str, int, int, int]]:
    """What validation runs: osunits (subpackages too: it uses osunits.systemd.escape) and
    PyYAML (its version and whether libyaml is used decide some values)."""
    import importlib.util

    dirs = [Path(__file__).parent]
    spec = importlib.util.find_spec("yaml")  # finds without importing it
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(p) for p in spec.submodule_search_locations]
    out = []
    for top in dirs:
        for d, subdirs, files in os.walk(top):
            subdirs[:] = sorted(x for x in subdirs if x != "__pycache__")
            for name in sorted(files):
                if name.endswith((".py", ".so")):
                    st = os.stat(os.path.join(d, name))
                    out.append((os.path.join(d, name), st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return out


def input_stats(root: Path, inputs: Iterable[str]) -> tuple[bytes, dict[str, _Stat], bool]:
    """A digest of what else a model depends on (osunits' code, Python, the root as given);
    each input's stat; and whether any input changed too recently to be trusted."""
    now = time.time_ns()
    context = hashlib.blake2b(marshal.dumps([str(root), sys.version, _code_stats()]),
                              digest_size=32).digest()
    stats: dict[str, _Stat] = {}
    racy = False
    for path in inputs:
        try:
            st = os.stat(path)
        except OSError:
            stats[path] = None
            continue
        stats[path] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        racy = racy or max(st.st_mtime_ns, st.st_ctime_ns) > now - RACY_NS
    return context, stats, racy


@dataclass(frozen=True)
class Previous:
    """The last cached model of this deployment, and which of its inputs are unchanged."""

    model: Deployment
    unchanged: frozenset[str]


def read(path: Path, header: bytes) -> bytes | None:
    """What follows ``header`` in the cache file ``path``; None if absent, if its header
    differs, or if anyone but us could have written it (what is cached runs as code)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            if f.read(len(header)) != header:
                return None
            return f.read()
    finally:
        os.close(fd)


def write(path: Path, data: bytes) -> None:
    """Replace the cache file ``path``; a cache that cannot be written is only slower."""
    if read_only:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as f:
                f.write(data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def load_model(root: Path, inputs: Callable[[], list[str]],
               build: Callable[[Previous | None], Deployment]) -> Deployment:
    """The model built before from the same inputs, else ``build(previous)``."""
    d = directory("models")
    if d is None:
        return build(None)
    try:
        where = os.fsencode(os.path.abspath(root)) + b"\0" + os.fsencode(root)
    except OSError:  # a relative root and a working directory that is gone
        return build(None)
    path = d / (hashlib.blake2b(where, digest_size=16).hexdigest() + ".pickle")
    parallel.wait_background()  # a cache this process is writing: read it when written
    context, stats, racy = input_stats(root, inputs())
    key = hashlib.blake2b(marshal.dumps(sorted(stats.items())), digest_size=32).digest()
    data = read(path, _MAGIC + context)
    previous = None
    if data is not None:
        try:
            old_stats, model = pickle.loads(data[len(key):])
            if data[:len(key)] == key:
                return model  # type: ignore[no-any-return]
            previous = Previous(model, frozenset(p for p, st in stats.items()
                                                 if st is not None and old_stats.get(p) == st))
        except Exception:  # noqa: BLE001 - a torn or foreign cache file is only a miss
            pass
    model = build(previous)
    if not racy and not read_only:  # pickling takes as long as the checks that follow
        parallel.in_background(lambda: write(path, _MAGIC + context + key + pickle.dumps(
            (stats, model), protocol=pickle.HIGHEST_PROTOCOL)))
    return model
