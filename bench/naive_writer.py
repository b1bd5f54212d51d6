"""Baseline: write a given set of files with no model, templates or checks.

``naive_writer.py FILES.pickle ROOT [--atomic]`` writes the (path, content,
mode, link) tuples of FILES.pickle under ROOT: the bytes ``osunits generate``
produced, so the difference to osunits is the price of compiling them.  With
``--atomic`` each file is written as osunits does (temp file, fsync, rename,
fsync of each directory), the floor of a durable write of the same bytes.
Standard library only, so its start-up is the interpreter's.
"""

from __future__ import annotations

import os
import pickle
import sys


def main() -> None:
    src, root = sys.argv[1], sys.argv[2]
    atomic = "--atomic" in sys.argv[3:]
    with open(src, "rb") as fh:
        files: list[tuple[str, bytes, int, str]] = pickle.load(fh)
    dirs: set[str] = set()
    for rel, content, mode, link in files:
        path = os.path.join(root, rel)
        d = os.path.dirname(path)
        if d not in dirs:
            os.makedirs(d, exist_ok=True)
            dirs.add(d)
        tmp = os.path.join(d, "." + os.path.basename(path) + ".new") if atomic else path
        if link:
            os.symlink(link, tmp)
        else:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            os.write(fd, content)
            if atomic:
                os.fsync(fd)
            os.close(fd)
        if atomic:
            os.replace(tmp, path)
    if atomic:
        for d in sorted(dirs):
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(fd)
            os.close(fd)


if __name__ == "__main__":
    main()
