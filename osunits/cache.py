"""What osunits keeps between runs: compiled templates and validated deployments.

Both are pure speed: deleting the directory changes nothing but time.  The directory
is ``$OSUNITS_CACHE_DIR``, else /var/cache/osunits (root), else ~/.cache/osunits.

A validated deployment is kept when it loaded without errors, keyed by the stat of
every file it was read from (inode, size, mtime, ctime) and of osunits' own modules.
ctime cannot be set from user space, so any write to an input changes the key.  A
file changed within ``RACY_NS`` of being read is not cached: a second write in the
same clock tick could leave its stat unchanged (git's "racily clean" files).
"""

from __future__ import annotations

import hashlib
import marshal
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from osunits.model import Deployment

RACY_NS = 2_000_000_000
_MAGIC = b"osunits-model-1\n"
read_only = False  # a systemd generator must not write outside its output directories


def directory(kind: str) -> Path | None:
    """The cache directory for ``kind`` (created when writable), or None."""
    from osunits import __version__

    candidates = [os.environ.get("OSUNITS_CACHE_DIR", ""), "/var/cache/osunits",
                  os.path.expanduser("~/.cache/osunits")]
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


def _code_stats() -> list[tuple[str, int, int]]:
    pkg = Path(__file__).parent
    return [(e.name, e.stat().st_size, e.stat().st_mtime_ns)
            for e in sorted(os.scandir(pkg), key=lambda e: e.name) if e.name.endswith(".py")]


def input_key(root: Path, inputs: Iterable[str]) -> tuple[bytes, bool]:
    """Digest of the inputs' stats and osunits' code; and whether any input is racy."""
    now = time.time_ns()
    stats: list[object] = [str(root), sys.version, _code_stats()]
    racy = False
    for path in inputs:
        try:
            st = os.stat(path)
        except OSError:
            stats.append((path, None))
            continue
        stats.append((path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        racy = racy or max(st.st_mtime_ns, st.st_ctime_ns) > now - RACY_NS
    return hashlib.blake2b(marshal.dumps(stats), digest_size=32).digest(), racy


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
               build: Callable[[], Deployment]) -> Deployment:
    """``build()``, or the model it built before from the same inputs."""
    d = directory("models")
    if d is None:
        return build()
    path = d / (hashlib.blake2b(os.fsencode(os.path.abspath(root)) + b"\0" + os.fsencode(root),
                                digest_size=16).hexdigest() + ".pickle")
    key, racy = input_key(root, inputs())
    data = read(path, _MAGIC + key)
    if data is not None:
        try:
            model: Deployment = pickle.loads(data)
            return model
        except Exception:  # noqa: BLE001 - a torn or foreign cache file is only a miss
            pass
    model = build()
    if not racy:
        write(path, _MAGIC + key + pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    return model
