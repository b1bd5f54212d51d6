"""What images exist under a root, and whether they match their specs (read-only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from osunits.rootfs.build import Store, read_manifest
from osunits.rootfs.spec import Spec, layer_keys


class ImageStatus(StrEnum):
    CURRENT = "current"  # built from the spec as it is now
    STALE = "stale"  # the spec (or a base) changed since: build again
    BROKEN = "broken"  # the link points nowhere, or the tree has no manifest
    UNBUILT = "unbuilt"  # a spec with no image yet
    BUILT = "built"  # built, no spec given to compare with


@dataclass(frozen=True, slots=True)
class Image:
    name: str
    path: Path  # ROOT/var/lib/osunits/rootfs/NAME
    status: ImageStatus
    layer: Path | None = None  # the cached tree it points at
    key: str = ""
    built: str = ""
    packages: int = 0
    description: str = ""


def list_images(root: Path = Path("/"), specs: Mapping[str, Spec] | None = None, *,
                cache: Path | None = None) -> list[Image]:
    """Every image under ``root``, plus the specs not built yet when ``specs`` is given."""
    store = Store(root, cache)
    names: set[str] = set(specs or ())
    if store.images.is_dir():
        names |= {p.name for p in store.images.iterdir()
                  if p.is_symlink() and not p.name.startswith(".")}
    return [_describe(store, name, specs) for name in sorted(names)]


def _describe(store: Store, name: str, specs: Mapping[str, Spec] | None) -> Image:
    path = store.image(name)
    spec = specs.get(name) if specs is not None else None
    if not path.is_symlink():
        return Image(name, path, ImageStatus.UNBUILT, description=spec.description if spec else "")
    layer = path.resolve()
    manifest = read_manifest(layer) if layer.is_dir() else None
    if manifest is None:
        return Image(name, path, ImageStatus.BROKEN, layer if layer.exists() else None)
    key = str(manifest.get("key", ""))
    packages = manifest.get("packages")
    if specs is None or spec is None:
        status = ImageStatus.BUILT
    else:
        status = ImageStatus.CURRENT if layer_keys(name, specs)[name] == key \
            else ImageStatus.STALE
    return Image(name, path, status, layer, key, str(manifest.get("built", "")),
                 len(packages) if isinstance(packages, dict) else 0,
                 str(manifest.get("description", "")))
