"""The bundled example's controller started for real (`make e2e`, slow).

Builds (or reuses, cached by content) the real Debian images the example's ctl01 names,
then `osunits try --host ctl01` on the example itself: all eleven services — mariadb,
rabbitmq, memcached, keystone, glance-api, placement-api, nova-api, nova-scheduler,
nova-conductor, neutron-server, horizon — each in its own container and network
namespace, must become ready in dependency order: mariadb by its own sd_notify through
the container init, the APIs by answering HTTP after creating their schemas against
mariadb, reached by name.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osunits.cli import app
from osunits.testbed import available
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.e2e
CTL01 = ["glance-api", "horizon", "keystone", "mariadb", "memcached", "neutron-server",
         "nova-api", "nova-conductor", "nova-scheduler", "placement-api", "rabbitmq"]
IMAGES = ["glance", "horizon", "keystone", "mariadb", "memcached", "neutron", "nova",
          "placement", "rabbitmq"]


@pytest.fixture(scope="module")
def images_root() -> Path:
    why = available()
    if why:
        pytest.skip(why)
    root = Path(os.environ.get("OSUNITS_E2E_ROOTFS_ROOT", "/var/tmp/osunits-e2e/root"))
    res = CliRunner().invoke(app, ["rootfs", "build", *IMAGES, "--root", str(root)])
    assert res.exit_code == 0, res.output
    return root


def test_the_example_controller_starts_for_real(images_root: Path, tmp_path: Path) -> None:
    # Passwords as an operator gets them: random, from `secrets generate`; the services
    # reach mariadb and keystone only if every template agrees on them.
    env = {"OSUNITS_IMAGES_ROOT": str(images_root),
           "OSUNITS_SECRETS_DIR": str(tmp_path / "secrets")}
    res = CliRunner().invoke(app, ["secrets", "generate", "-d", str(EXAMPLE)], env=env)
    assert res.exit_code == 0 and "created  keystone-admin" in res.output, res.output
    res = CliRunner().invoke(app, ["try", "-H", "ctl01", "-d", str(EXAMPLE), "--timeout", "600"],
                             env=env)
    assert res.exit_code == 0, res.output
    for svc in CTL01:
        assert f"ok done       {svc}" in res.output
    assert "Taking your SQL requests now" in res.output  # mariadb's own READY=1 STATUS=
    assert "ready (http:http://127.0.0.1:5000/v3)" in res.output  # keystone serves
    assert "ready (notify)" in res.output  # nova-conductor's own sd_notify (oslo.service)
