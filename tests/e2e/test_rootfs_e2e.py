"""Really build rootfs images: debootstrap from the host's mirror, apt in systemd-nspawn.

Slow (about 1.5 min for test-minimal and keystone together on a 2-core VM with a
near mirror) and needs root, debootstrap, systemd-nspawn and the Debian mirror.
Run with ``pytest -m e2e tests/e2e``.  Set OSUNITS_E2E_ROOTFS_ROOT=DIR to keep
the built tree (and its cache) between runs; otherwise a fresh temp dir is used.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from osunits.rootfs import MANIFEST, ImageStatus, build, list_images, load_specs

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "rootfs_specs"


def _missing_prerequisite() -> str:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("debootstrap", "systemd-nspawn", "unshare", "dpkg-query"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return ""


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    why = _missing_prerequisite()
    if why:
        pytest.skip(why)
    keep = os.environ.get("OSUNITS_E2E_ROOTFS_ROOT")
    if keep:
        yield Path(keep)
        return
    # Not pytest's tmp_path: other pytest runs on the machine prune old basetemps,
    # which deleted a tree here mid-build once. /var/tmp is on disk (the images
    # take about 1 GB); /tmp may be a tmpfs.
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="osunits-rootfs-e2e-") as d:
        yield Path(d)


def in_image(image: Path, *argv: str, volatile: str = "no") -> str:
    """Run a command in the image the way the tests and machines do (no machined)."""
    res = subprocess.run(
        ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", f"--volatile={volatile}",
         "-D", str(image), "--pipe", "--", *argv],
        capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def _build(name: str, root: Path, log: list[str]) -> tuple[Path, float]:
    specs = load_specs(SPECS)
    t = time.monotonic()
    image = build(name, specs, root=root, log=log.append)
    return image, time.monotonic() - t


def _du_mb(path: Path) -> int:
    out = subprocess.run(["du", "-sxm", str(path.resolve())], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[0])


def test_build_test_minimal(root: Path) -> None:
    log: list[str] = []
    image, took = _build("test-minimal", root, log)
    print(f"\ntest-minimal: {took:.0f} s, {_du_mb(image)} MB")
    assert image == root / "var/lib/osunits/rootfs/test-minimal"
    assert in_image(image, "python3", "-c", "import sys; print(sys.version_info[:2])") == \
        "(3, 11)\n"
    assert "iproute2" in in_image(image, "ip", "-V")
    manifest = json.loads((image / MANIFEST).read_text())
    assert set(manifest["packages"]) >= {"python3", "iproute2", "base-files"}
    assert not (image / "usr/sbin/policy-rc.d").exists()
    assert not list((image / "var/lib/apt/lists").glob("*Packages*"))

    # An unchanged spec is a no-op.
    log2: list[str] = []
    again, took2 = _build("test-minimal", root, log2)
    assert again == image and took2 < 5
    assert log2 == [m for m in log2 if "cached" in m]

    # Volatile=overlay, as machines run it, leaves the shared image untouched.
    in_image(image, "touch", "/etc/written-at-run-time", volatile="overlay")
    assert not (image / "etc/written-at-run-time").exists()


def test_build_keystone(root: Path) -> None:
    log: list[str] = []
    image, took = _build("keystone", root, log)
    print(f"\nkeystone (with its base): {took:.0f} s, {_du_mb(image)} MB")
    version = in_image(image, "keystone-manage", "--version").strip()
    assert version.split(".")[0] == "22", version  # Zed
    in_image(image, "test", "-x", "/usr/bin/uwsgi", "-a", "-f", "/etc/keystone/keystone-uwsgi.ini")
    assert "uid=" in in_image(image, "id", "keystone")
    manifest = json.loads((image / MANIFEST).read_text())
    assert manifest["base"] == "bookworm-minbase"
    assert manifest["packages"]["keystone"].startswith("2:22.")
    # bookworm-minbase's dpkg path-excludes: no docs above the base, copyrights kept.
    assert [p.name for p in (image / "usr/share/doc/python3-keystone").iterdir()] == ["copyright"]
    statuses = {i.name: i.status for i in list_images(root, load_specs(SPECS))}
    assert statuses["keystone"] == statuses["bookworm-minbase"] == ImageStatus.CURRENT
