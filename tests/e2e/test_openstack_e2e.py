"""The bundled example's controller started for real, and used (`make e2e`, slow).

Builds (or reuses, cached by content) the real Debian images the example's ctl01 names,
then rehearses ctl01 (what `osunits try --host ctl01` runs) on the example itself: all
eleven services — mariadb, rabbitmq, memcached, keystone, glance-api, placement-api,
nova-api, nova-scheduler, nova-conductor, neutron-server, horizon — each in its own
container and network namespace, must become ready in dependency order: mariadb by its
own sd_notify through the container init, keystone once its catalog is registered, the
other APIs by answering HTTP after creating their schemas against mariadb, reached by name.

Then, while they run, the cloud must work as a client inside the cloud sees it: from
nova-api's container, a token for the admin account (password from `secrets generate`),
whose catalog gives the URL of each API, and each API answers that token (so each
validated it with its own service account); nova reaches glance through the catalog
(`GET /v2.1/images`, a proxy of microversion 2.1) and placement (`nova-status`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osunits.cli import app
from osunits.deployment import load_deployment
from osunits.rehearse import rehearse
from osunits.testbed import Testbed, available
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.e2e
CTL01 = ["glance-api", "horizon", "keystone", "mariadb", "memcached", "neutron-server",
         "nova-api", "nova-scheduler", "nova-conductor", "placement-api", "rabbitmq"]
IMAGES = ["glance", "horizon", "keystone", "mariadb", "memcached", "neutron", "nova",
          "placement", "rabbitmq"]

# Run by the container's python3 (stdlib only), the admin password on stdin (never on a
# command line); prints {"catalog": {TYPE: public URL}, "calls": {NAME: [status, body]}}.
CLIENT = r"""
import json, sys, urllib.error, urllib.request

def call(method, url, body=None, headers=()):
    req = urllib.request.Request(url, method=method, headers=dict(headers),
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode(errors="replace")

admin = {"name": "admin", "domain": {"name": "Default"}, "password": sys.stdin.read()}
status, headers, body = call("POST", "http://keystone:5000/v3/auth/tokens", {"auth": {
    "identity": {"methods": ["password"], "password": {"user": admin}},
    "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}})
if status != 201:
    sys.exit(f"token: {status} {body}")
token = headers["X-Subject-Token"]
catalog = {s["type"]: e["url"].rstrip("/") for s in json.loads(body)["token"]["catalog"]
           for e in s["endpoints"] if e["interface"] == "public"}
calls = {}
for name, kind, path, extra in [
        ("images", "image", "/v2/images", {}),
        ("resource_providers", "placement", "/resource_providers",
         {"OpenStack-API-Version": "placement 1.6"}),
        ("servers", "compute", "/servers", {}),
        ("os-services", "compute", "/os-services", {}),
        ("nova images", "compute", "/images", {"OpenStack-API-Version": "compute 2.1"}),
        ("networks", "network", "/v2.0/networks", {})]:
    if kind in catalog:
        status, _, body = call("GET", catalog[kind] + path,
                               headers={"X-Auth-Token": token, **extra})
        calls[name] = [status, body]
print(json.dumps({"catalog": catalog, "calls": calls}))
"""

# (catalog type, public URL), (call, the key its JSON object must hold a list under)
CATALOG = {"identity": "http://keystone:5000/v3", "image": "http://glance-api:9292",
           "placement": "http://placement-api:8778",
           "compute": "http://nova-api:8774/v2.1", "network": "http://neutron-server:9696"}
CALLS = {"images": "images", "resource_providers": "resource_providers",
         "servers": "servers", "os-services": "services", "nova images": "images",
         "networks": "networks"}


@pytest.fixture(scope="module")
def images_root() -> Path:
    why = available()
    if why:
        pytest.skip(why)
    root = Path(os.environ.get("OSUNITS_E2E_ROOTFS_ROOT", "/var/tmp/osunits-e2e/root"))
    res = CliRunner().invoke(app, ["rootfs", "build", *IMAGES, "--root", str(root)])
    assert res.exit_code == 0, res.output
    return root


def in_container(tb: Testbed, service: str, argv: list[str], input: str | None = None,
                 ) -> tuple[int, str]:
    """Run argv in SERVICE's container (its root and network), inside the test host."""
    leader = tb.run(["/usr/bin/machinectl", "show", service, "-p", "Leader",
                     "--value"]).stdout.strip()
    res = tb.run(["/usr/bin/nsenter", "-t", leader, "-m", "-n", *argv], check=False,
                 input=input)
    return res.returncode, res.stdout + res.stderr


def test_the_example_controller_starts_and_serves_for_real(
        images_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Passwords as an operator gets them: random, from `secrets generate`; the services
    # reach mariadb and keystone only if every template agrees on them.
    secrets = tmp_path / "secrets"
    monkeypatch.setenv("OSUNITS_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("OSUNITS_IMAGES_ROOT", str(images_root))
    res = CliRunner().invoke(app, ["secrets", "generate", "-d", str(EXAMPLE)])
    assert res.exit_code == 0 and "created  keystone-admin" in res.output, res.output
    admin_password = (secrets / "keystone-admin").read_text().rstrip("\n")
    seen: dict[str, tuple[int, str]] = {}

    def use_the_cloud(tb: Testbed) -> None:
        seen["client"] = in_container(tb, "nova-api", ["/usr/bin/python3", "-c", CLIENT],
                                      input=admin_password)
        seen["nova-status"] = in_container(
            tb, "nova-api", ["/usr/bin/nova-status", "--config-file", "/etc/nova/nova.conf",
                             "upgrade", "check"])

    lines: list[str] = []
    ok = rehearse(load_deployment(EXAMPLE), "ctl01", out=lines.append, timeout=600,
                  images_root=images_root, while_up=use_the_cloud)
    output = "\n".join(lines)
    assert ok, output
    for svc in CTL01:
        assert f"ok done       {svc}" in output
    assert "Taking your SQL requests now" in output  # mariadb's own READY=1 STATUS=
    assert "ready (command:/usr/bin/python3 /etc/keystone/osunits-catalog.py)" in output
    assert "ready (notify)" in output  # nova-conductor's own sd_notify (oslo.service)

    code, out = seen["client"]
    assert code == 0, out
    got = json.loads(out)
    assert got["catalog"] == CATALOG, out
    assert sorted(got["calls"]) == sorted(CALLS), out
    for name, key in CALLS.items():
        status, body = got["calls"][name]
        assert status == 200, f"{name}: {status} {body}"
        assert isinstance(json.loads(body).get(key), list), f"{name}: {body}"
    services = {s["binary"]: s["state"] for s in json.loads(got["calls"]["os-services"][1])[
        "services"]}
    assert services == {"nova-conductor": "up", "nova-scheduler": "up"}, services

    # nova's placement client finds placement in the catalog and logs in as nova (the
    # other checks may warn: no compute node in this rehearsal)
    code, out = seen["nova-status"]
    check = out.split("Check: Placement API", 1)[-1].split("Check:", 1)[0]
    assert "Result: Success" in check, out
