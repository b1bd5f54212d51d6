"""A deployment directory: its layout, and loading it, from the cache when unchanged.

``deployment.yaml`` (inventory, roles, defaults), ``services/NAME.yaml`` (one definition
each) and ``templates/`` (config file templates).  Validation (``osunits.validate``, with
PyYAML and the field parsers) is imported only when the model is not cached: on a hit,
`generate` starts without them.
"""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when loading: the CLI's runtime commands need neither
    from osunits.cache import Previous
    from osunits.model import Deployment

DEFAULT_DEPLOYMENT = Path("/etc/osunits")
DEPLOYMENT_FILE = "deployment.yaml"
HOST_FILE = "host"  # optional: DIR/host names this machine in the inventory
SERVICES_DIR = "services"
TEMPLATES_DIR = "templates"
SPECS_DIR = "rootfs_specs"  # optional: the deployment's own rootfs specs
SECRETS_DIR = "secrets"  # optional: what templates read with secret(NAME); not versioned


def deployment_dir(given: Path | None = None) -> Path:
    """``--deployment DIR``, else ``$OSUNITS_DEPLOYMENT``, else /etc/osunits."""
    if given is not None:
        return given
    env = os.environ.get("OSUNITS_DEPLOYMENT")
    return Path(env) if env else DEFAULT_DEPLOYMENT


def secrets_dir(root: Path) -> Path:
    """Where ``secret(NAME)`` reads: ``$OSUNITS_SECRETS_DIR``, else DIR/secrets."""
    env = os.environ.get("OSUNITS_SECRETS_DIR")
    return Path(env) if env else root / SECRETS_DIR


def bundled_specs_dir() -> Path:
    """The rootfs specs shipped with osunits (in the package; in a checkout, beside it)."""
    here = Path(__file__).parent
    for cand in (here / "rootfs_specs", here.parent / "rootfs_specs"):
        if cand.is_dir():
            return cand
    return here / "rootfs_specs"


def spec_dirs(root: Path) -> tuple[Path, Path]:
    """Where the specs of the deployment in ``root`` come from: the bundled ones, then its
    own ``rootfs_specs/`` (which may be absent), whose specs replace bundled namesakes."""
    return bundled_specs_dir(), root / SPECS_DIR


def spec_names(root: Path) -> set[str]:
    """The rootfs spec names a service of the deployment in ``root`` may use."""
    names: set[str] = set()
    for d in spec_dirs(root):
        with contextlib.suppress(OSError):  # no such directory: no names from it
            names.update(n[:-5] for n in os.listdir(d) if n.endswith(".yaml"))
    return names


def short_hostname() -> str:
    """This machine's host name up to the first dot (gethostname(2), without socket)."""
    return os.uname().nodename.split(".")[0]


def this_host(root: Path) -> tuple[str, str]:
    """This machine's name in the inventory of the deployment in ``root``, and what gave it.

    ``$OSUNITS_HOST``, else the content of ``ROOT/host``, else the short host name: one rule
    for `osunits generate`, `osunits try` and the generator, so that they agree."""
    env = os.environ.get("OSUNITS_HOST")
    if env:
        return env, "$OSUNITS_HOST"
    path = root / HOST_FILE
    try:
        name = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        name = ""
    if name:
        return name, str(path)
    return short_hostname(), "this machine's host name"


def load_deployment(root: Path) -> Deployment:
    """Read and validate the deployment in ``root``; raise DeploymentError with every problem."""
    # Nearly everything allocated here lives on as the model: the cyclic collector would
    # only rescan it, again and again (a third of check-deps' time at 10 000 services).
    # Frozen afterwards, later collections skip it too.
    from osunits import cache

    enabled = gc.isenabled()
    gc.disable()
    try:
        return cache.load_model(root, lambda: input_files(root),
                                lambda previous: _build(root, previous))
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _build(root: Path, previous: Previous | None) -> Deployment:
    from osunits import validate

    # A service is built from its own file and deployment.yaml's defaults, and per host
    # from the overrides too: the previous model's builds stand while these are unchanged.
    # Editing the inventory then costs no service file a reread.
    if previous is None:
        return validate.build_deployment(root)
    old = previous.model
    reuse = {str(s.source): s for s in old.services if str(s.source) in previous.unchanged}
    hosts = old.host_index() if str(root / DEPLOYMENT_FILE) in previous.unchanged else None
    return validate.build_deployment(root, reuse, hosts, old.defaults_key)


def service_files(sdir: Path) -> list[str]:
    """The service definitions' file names in ``sdir``, sorted."""
    return sorted(n for n in os.listdir(sdir) if _suffix(n) in (".yaml", ".yml"))


def _suffix(name: str) -> str:
    i = name.rfind(".")  # as Path.suffix: ".yaml" alone is a name, "..yaml" has a suffix
    return name[i:] if 0 < i < len(name) - 1 else ""


def input_files(root: Path) -> list[str]:
    """Every file a deployment is read from (the model cache's key)."""
    sdir = root / SERVICES_DIR
    try:
        names = service_files(sdir)
    except OSError:
        names = []
    base = str(sdir)  # strings: 10 000 Path objects would cost more than the stats
    return [str(root / DEPLOYMENT_FILE), base, *(os.path.join(base, n) for n in names)]
