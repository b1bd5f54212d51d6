"""Container root filesystems built from ``rootfs_specs/NAME.yaml`` with real Debian packages.

Stages: ``spec`` (YAML → frozen Spec, path:line errors) → ``build`` (debootstrap,
layer copies, apt in systemd-nspawn, content-hash cache) → ``images`` (what is
built and whether it is current).  See docs/rootfs.md.
"""

from osunits.rootfs.build import CACHE_DIR, IMAGES_DIR, MANIFEST, BuildError, build, prune
from osunits.rootfs.images import Image, ImageStatus, list_images
from osunits.rootfs.spec import Debootstrap, FileSpec, Spec, build_order, load_specs

__all__ = [
    "CACHE_DIR", "IMAGES_DIR", "MANIFEST", "BuildError", "Debootstrap", "FileSpec", "Image",
    "ImageStatus", "Spec", "build", "build_order", "list_images", "load_specs", "prune",
]
