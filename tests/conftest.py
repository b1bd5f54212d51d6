from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "openstack"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite tests/golden/ from the current output")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Caches (models, compiled templates) of this run only: never the machine's."""
    os.environ["OSUNITS_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


def write_secret(directory: Path, name: str, value: str) -> Path:
    """A secret file as secret() wants it: one line, the user's own, mode 0600."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return path


@pytest.fixture(autouse=True, scope="session")
def example_secrets(_private_cache: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fixed values for every secret the bundled example reads, in $OSUNITS_SECRETS_DIR:
    its generated files stay the same from run to run (tests/golden)."""
    from osunits.deployment import load_deployment
    from osunits.secretfiles import find_secret_uses

    directory = tmp_path_factory.mktemp("secrets")
    directory.chmod(0o700)
    for name in find_secret_uses(load_deployment(EXAMPLE)).names:
        write_secret(directory, name, f"example-{name}-value")
    os.environ["OSUNITS_SECRETS_DIR"] = str(directory)
    return directory


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A private copy of the bundled example deployment."""
    dst = tmp_path / "deployment"
    shutil.copytree(EXAMPLE, dst)
    return dst


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file and symlink under root, with content (or link target) and mode."""
    out: dict[str, bytes | str] = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + str(p.readlink())
        elif p.is_file():
            out[rel] = p.read_bytes() + f"\0mode={p.stat().st_mode & 0o7777:o}".encode()
        else:
            out[rel] = "<dir>"
    return out
