"""The bundled example's services started for real (`make e2e`, slow).

Builds (or reuses, cached by content) the real Debian images of mariadb, rabbitmq,
memcached and keystone, then rehearses a controller holding just those, from the
example's own definitions, in a throwaway systemd host: each must become ready —
mariadb by its own sd_notify through the container init (and creating the services'
databases), rabbitmq and memcached by their TCP ports, keystone by its API answering
after it bootstrapped itself against mariadb, reached by name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osunits.cli import app
from osunits.testbed import available
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.e2e
INFRA = ["keystone", "mariadb", "memcached", "rabbitmq"]


@pytest.fixture(scope="module")
def images_root() -> Path:
    why = available()
    if why:
        pytest.skip(why)
    root = Path(os.environ.get("OSUNITS_E2E_ROOTFS_ROOT", "/var/tmp/osunits-e2e/root"))
    res = CliRunner().invoke(app, ["rootfs", "build", *INFRA, "--root", str(root)])
    assert res.exit_code == 0, res.output
    return root


def test_infrastructure_services_start_for_real(images_root: Path, tmp_path: Path) -> None:
    dep = tmp_path / "deployment"
    shutil.copytree(EXAMPLE, dep)
    (dep / "deployment.yaml").write_text(
        "hosts:\n  ctl01: {address: 192.0.2.11, roles: [infra]}\n"
        f"roles:\n  infra: [{', '.join(INFRA)}]\n")
    res = CliRunner().invoke(app, ["try", "-H", "ctl01", "-d", str(dep), "--timeout", "300"],
                             env={"OSUNITS_IMAGES_ROOT": str(images_root)})
    assert res.exit_code == 0, res.output
    for svc in INFRA:
        assert f"ok done       {svc}" in res.output
    assert "Taking your SQL requests now" in res.output  # mariadb's own READY=1 STATUS=
    assert "ready (http:http://127.0.0.1:5000/v3)" in res.output  # keystone serves
