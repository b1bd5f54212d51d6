"""Writing: ownership, stale removal, atomicity under SIGKILL, --diff exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from pyfakefs.fake_filesystem_unittest import Patcher
from typer.testing import CliRunner

from osunits import output
from osunits.cli import app
from osunits.errors import OutputError
from osunits.output import JOURNAL, MANIFEST, load_manifest, write_files
from osunits.plan import PlannedFile
from tests.conftest import EXAMPLE, REPO, snapshot, write_secret, write_tree


def pf(path: str, text: str = "", link: str = "") -> PlannedFile:
    return PlannedFile(PurePosixPath(path), text.encode(), 0o644, link)


def test_write_update_remove_with_fakefs() -> None:
    with Patcher():
        root = Path("/r")
        root.mkdir()
        res = write_files(root, (pf("/etc/a.conf", "one\n"), pf("/var/lib/machines/x", link="/img")))
        assert res.written and len(res.changes) == 2
        assert (root / "etc/a.conf").read_text() == "one\n"
        assert os.readlink(root / "var/lib/machines/x") == "/img"
        assert set(load_manifest(root).files) == {"/etc/a.conf", "/var/lib/machines/x"}
        # a rerun with the same plan changes nothing
        assert not write_files(root, (pf("/etc/a.conf", "one\n"),
                                      pf("/var/lib/machines/x", link="/img"))).changed
        # a file leaving the plan is removed; a changed one updated
        res = write_files(root, (pf("/etc/a.conf", "two\n"),))
        assert [(str(c.path), str(c.change)) for c in res.changes] == [
            ("/etc/a.conf", "update"), ("/var/lib/machines/x", "remove")]
        assert not (root / "var/lib/machines/x").is_symlink()
        assert (root / "etc/a.conf").read_text() == "two\n"


def test_refuses_unowned_and_edited_files_and_writes_nothing() -> None:
    with Patcher():
        root = Path("/r")
        (root / "etc").mkdir(parents=True)
        (root / "etc/theirs.conf").write_text("operator's\n")
        with pytest.raises(OutputError, match="theirs.conf: exists and is not osunits'"):
            write_files(root, (pf("/etc/new.conf", "x"), pf("/etc/theirs.conf", "ours")))
        assert not (root / "etc/new.conf").exists()
        assert (root / "etc/theirs.conf").read_text() == "operator's\n"
        (root / "etc/same.conf").write_text("ours")
        (root / "etc/same.conf").chmod(0o600)
        with pytest.raises(OutputError, match="its mode is 0600, not 0644"):
            write_files(root, (pf("/etc/same.conf", "ours"),), adopt=True)
        assert not (root / "var").exists()  # not even the lock: nothing was written
        (root / "var/lib/osunits/rootfs").mkdir(parents=True)  # as `rootfs build` leaves it
        with pytest.raises(OutputError, match="theirs.conf: exists and is not osunits'"):
            write_files(root, (pf("/etc/new.conf", "x"), pf("/etc/theirs.conf", "ours")))
        assert not (root / "var/lib/osunits/manifest.lock").exists()
        write_files(root, (pf("/etc/ours.conf", "v1"),))
        (root / "etc/ours.conf").write_text("edited by hand")
        with pytest.raises(OutputError, match="changed since osunits wrote it"):
            write_files(root, (pf("/etc/ours.conf", "v2"),))
        with pytest.raises(OutputError, match="osunits would remove it"):
            write_files(root, ())
        assert (root / "etc/ours.conf").read_text() == "edited by hand"


def test_unreadable_manifest_refuses_everything() -> None:
    with Patcher():
        root = Path("/r")
        m = root / str(MANIFEST).lstrip("/")
        m.parent.mkdir(parents=True)
        m.write_text("{not json")
        with pytest.raises(OutputError, match="unreadable ownership manifest"):
            write_files(root, (pf("/etc/a", "x"),))


# The child runs `generate`, SIGKILLing itself at its Nth file operation.
_KILLER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
n = int(sys.argv[1])
count = [0]
def hook(real):
    def wrapped(*a, **k):
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)
    return wrapped
import osunits.output as o
o.os.replace = hook(os.replace)
o.os.symlink = hook(os.symlink)
o.os.fsync = hook(os.fsync)
o._sync = hook(o._sync)
from osunits.cli import app
app(sys.argv[2:])
"""


def _generate_killed_at(n: int, dep: Path, root: Path) -> int:
    code = _KILLER.format(repo=str(REPO))
    res = subprocess.run([sys.executable, "-c", code, str(n), "generate", "-H", "ctl01", "-d",
                          str(dep), "--root", str(root), "--no-reload"],
                         capture_output=True, check=False)
    return res.returncode


def test_sigkill_at_any_point_keeps_a_consistent_unit_set(example: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert CliRunner().invoke(app, ["generate", "-H", "ctl01", "-d", str(example),
                                    "--root", str(root)]).exit_code == 0
    old = snapshot(root)
    # the change: keystone gets a new environment variable, horizon leaves the host
    ks = example / "services/keystone.yaml"
    ks.write_text(ks.read_text() + "environment: {DEBUG: '1'}\n")
    dep_yaml = example / "deployment.yaml"
    dep_yaml.write_text(dep_yaml.read_text().replace("neutron-server, horizon]", "neutron-server]"))
    new_root = tmp_path / "new"
    assert CliRunner().invoke(app, ["generate", "-H", "ctl01", "-d", str(example),
                                    "--root", str(new_root)]).exit_code == 0
    new = snapshot(new_root)
    assert old != new
    killed = 0
    for n in range(1, 400):
        trial = tmp_path / f"t{n}"
        subprocess.run(["cp", "-a", str(root), str(trial)], check=True)
        rc = _generate_killed_at(n, example, trial)
        if rc == 0:
            break  # n is past the last file operation
        assert rc == -signal.SIGKILL
        killed += 1
        state = snapshot(trial)
        journal = trial / str(JOURNAL).lstrip("/")
        if journal.exists() and '"committing"' in journal.read_text():
            pass  # killed mid-commit: the next run must roll forward
        else:
            # killed while staging: the previous set is intact (ignoring staging leftovers)
            assert {k: v for k, v in state.items() if ".osunits-new" not in k
                    and "manifest.journal" not in k} == old
        # the next run recovers, and ends with exactly the new set
        res = CliRunner().invoke(app, ["generate", "-H", "ctl01", "-d", str(example),
                                       "--root", str(trial)])
        assert res.exit_code == 0, res.output
        assert snapshot(trial) == new
    assert killed >= 8  # every fsync, rename and symlink of this change


def test_diff_and_dry_run_exit_codes(example: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    r = CliRunner()
    res = r.invoke(app, ["generate", "-H", "ctl01", "-d", str(example), "--root", str(root),
                         "--dry-run"])
    assert res.exit_code == 1 and "+ /etc/systemd/system/openstack.target" in res.output
    assert not root.exists() or not any(root.iterdir())
    assert r.invoke(app, ["generate", "-H", "ctl01", "-d", str(example),
                          "--root", str(root)]).exit_code == 0
    res = r.invoke(app, ["generate", "-H", "ctl01", "-d", str(example), "--root", str(root),
                         "--diff"])
    assert res.exit_code == 0 and res.output == ""
    ks = example / "services/keystone.yaml"
    ks.write_text(ks.read_text().replace("OpenStack Identity (keystone)", "Identity"))
    before = snapshot(root)
    res = r.invoke(app, ["generate", "-H", "ctl01", "-d", str(example), "--root", str(root),
                         "--diff"])
    assert res.exit_code == 1
    assert "-Description=keystone: OpenStack Identity (keystone)" in res.output
    assert "+Description=keystone: Identity" in res.output
    assert snapshot(root) == before


def test_service_leaving_host_removes_only_its_files(example: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    r = CliRunner()
    theirs = root / "etc/systemd/system/unrelated.service"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("[Service]\nExecStart=/bin/true\n")
    assert r.invoke(app, ["generate", "-H", "ctl01", "-d", str(example),
                          "--root", str(root)]).exit_code == 0
    assert (root / "etc/systemd/nspawn/horizon.nspawn").exists()
    dep_yaml = example / "deployment.yaml"
    dep_yaml.write_text(dep_yaml.read_text().replace("neutron-server, horizon]", "neutron-server]"))
    res = r.invoke(app, ["generate", "-H", "ctl01", "-d", str(example), "--root", str(root)])
    assert res.exit_code == 0, res.output
    assert not (root / "etc/systemd/nspawn/horizon.nspawn").exists()
    assert not (root / "etc/systemd/system/systemd-nspawn@horizon.service.d").exists()
    assert not (root / "var/lib/machines/horizon").is_symlink()
    assert not (root / "var/lib/osunits/config/horizon").exists()
    assert theirs.read_text() == "[Service]\nExecStart=/bin/true\n"
    assert (root / "etc/systemd/nspawn/keystone.nspawn").exists()


def test_deployment_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OSUNITS_DEPLOYMENT", str(EXAMPLE))
    res = CliRunner().invoke(app, ["generate", "-H", "net01", "--root", str(tmp_path),
                                   "--dry-run"])
    assert res.exit_code == 1
    assert "neutron-l3-agent.nspawn" in res.output
    monkeypatch.setenv("OSUNITS_DEPLOYMENT", str(tmp_path / "nope"))
    res = CliRunner().invoke(app, ["generate", "-H", "net01", "--root", str(tmp_path)])
    assert res.exit_code == 2 and "deployment directory not found" in res.output


def test_the_host_comes_from_one_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--host, else $OSUNITS_HOST, else DIR/host, else the host name (as the generator)."""
    import shutil

    from osunits import deployment

    dep = tmp_path / "dep"
    shutil.copytree(EXAMPLE, dep)
    monkeypatch.delenv("OSUNITS_HOST", raising=False)
    monkeypatch.setattr(deployment, "short_hostname", lambda: "vm")

    def generated(*argv: str) -> tuple[int, str]:
        res = CliRunner().invoke(app, ["generate", "-d", str(dep), "--root",
                                       str(tmp_path / "root"), "--dry-run", *argv])
        return res.exit_code, res.output

    code, out = generated()
    assert code == 2
    assert "error[E120]: this machine's host name: unknown host 'vm'" in out
    (dep / "host").write_text("cmp01\n")
    code, out = generated()
    assert code == 1 and "nova-compute.nspawn" in out and "keystone" not in out
    (dep / "host").write_text("nope\n")
    code, out = generated()
    assert code == 2 and f"error[E120]: {dep / 'host'}: unknown host 'nope'" in out
    monkeypatch.setenv("OSUNITS_HOST", "net01")
    code, out = generated()
    assert code == 1 and "neutron-l3-agent.nspawn" in out
    code, out = generated("-H", "ctl01")
    assert code == 1 and "keystone.nspawn" in out
    assert deployment.this_host(dep) == ("net01", "$OSUNITS_HOST")
    monkeypatch.delenv("OSUNITS_HOST")
    (dep / "host").write_text("  \n")  # empty: as if there were none
    assert deployment.this_host(dep) == ("vm", "this machine's host name")


def test_a_root_holding_another_hosts_units_is_refused(tmp_path: Path) -> None:
    r = CliRunner()
    root = tmp_path / "root"
    assert r.invoke(app, ["generate", "-H", "ctl01", "-d", str(EXAMPLE),
                          "--root", str(root)]).exit_code == 0
    before = snapshot(root)
    res = r.invoke(app, ["generate", "-H", "cmp01", "-d", str(EXAMPLE), "--root", str(root)])
    assert res.exit_code == 2
    assert "this root holds the units of host ctl01, not cmp01" in res.output
    assert snapshot(root) == before
    res = r.invoke(app, ["generate", "-H", "cmp01", "-d", str(EXAMPLE), "--root", str(root),
                         "--adopt"])  # ctl01 is still in the inventory: not a renamed host
    assert res.exit_code == 2 and "the inventory still has ctl01" in res.output
    assert snapshot(root) == before
    assert r.invoke(app, ["generate", "-H", "ctl01", "-d", str(EXAMPLE),
                          "--root", str(root)]).exit_code == 0


def test_a_manifest_without_a_host_gets_it_on_the_next_run(tmp_path: Path) -> None:
    """A root written before manifests named their host, or by an interrupted older run."""
    import json

    r = CliRunner()
    root = tmp_path / "root"
    gen = ["generate", "-d", str(EXAMPLE), "--root", str(root)]
    assert r.invoke(app, [*gen, "-H", "ctl01"]).exit_code == 0
    manifest = root / str(MANIFEST).lstrip("/")
    data = json.loads(manifest.read_text())
    del data["host"]
    manifest.write_text(json.dumps(data))
    res = r.invoke(app, [*gen, "-H", "ctl01"])
    assert res.exit_code == 0 and "0 changed" in res.output
    assert load_manifest(root).host == "ctl01"
    before = snapshot(root)
    res = r.invoke(app, [*gen, "-H", "cmp01"])
    assert res.exit_code == 2 and "holds the units of host ctl01" in res.output
    assert snapshot(root) == before


def test_a_renamed_host_takes_its_root_over_with_adopt(tmp_path: Path) -> None:
    import shutil

    dep = tmp_path / "dep"
    shutil.copytree(EXAMPLE, dep)
    r = CliRunner()
    root = tmp_path / "root"
    assert r.invoke(app, ["generate", "-H", "net01", "-d", str(dep), "--root",
                          str(root)]).exit_code == 0
    y = dep / "deployment.yaml"
    y.write_text(y.read_text().replace("  net01:", "  net-a:"))
    gen = ["generate", "-H", "net-a", "-d", str(dep), "--root", str(root)]
    res = r.invoke(app, gen)
    assert res.exit_code == 2 and "if the host was renamed, --adopt" in res.output
    res = r.invoke(app, [*gen, "--adopt"])
    assert res.exit_code == 0, res.output
    assert load_manifest(root).host == "net-a"
    assert r.invoke(app, gen).exit_code == 0


def test_adopt_takes_over_exactly_what_would_be_written(tmp_path: Path) -> None:
    r = CliRunner()
    root = tmp_path / "root"
    gen = ["generate", "-H", "net01", "-d", str(EXAMPLE), "--root", str(root)]
    assert r.invoke(app, gen).exit_code == 0
    manifest = root / str(MANIFEST).lstrip("/")
    owned = load_manifest(root).files
    manifest.unlink()  # lost: every file is now someone else's
    edited = root / "etc/systemd/nspawn/neutron-l3-agent.nspawn"
    edited.write_text(edited.read_text() + "# a local edit\n")
    before = snapshot(root)
    res = r.invoke(app, gen)
    assert res.exit_code == 2 and "--adopt takes it over" in res.output
    res = r.invoke(app, [*gen, "--adopt"])
    assert res.exit_code == 2 and f"{edited}: exists and is not osunits' to overwrite" in res.output
    assert snapshot(root) == before
    edited.unlink()
    res = r.invoke(app, [*gen, "--adopt", "--dry-run"])
    assert res.exit_code == 1
    assert "= /etc/systemd/system/openstack.target" in res.output
    assert "+ /etc/systemd/nspawn/neutron-l3-agent.nspawn" in res.output
    image = root / "var/lib/machines/neutron-l3-agent"  # planned as a symlink
    link = os.readlink(image)
    image.unlink()
    image.write_text(f"->{link}")  # a file whose bytes look like the link: not the same
    res = r.invoke(app, [*gen, "--adopt"])
    assert res.exit_code == 2 and f"{image}: exists and is not osunits' to overwrite" in res.output
    image.unlink()
    image.symlink_to(link)
    res = r.invoke(app, [*gen, "--adopt"])
    assert res.exit_code == 0, res.output
    assert f"net01: {len(owned)} files, 1 changed, {len(owned) - 1} adopted" in res.output
    assert load_manifest(root).files == owned
    assert load_manifest(root).host == "net01"
    res = r.invoke(app, gen)
    assert res.exit_code == 0 and "0 changed" in res.output


def test_generate_says_when_the_target_does_not_start_at_boot(tmp_path: Path) -> None:
    root = tmp_path / "root"
    gen = ["generate", "-H", "ctl01", "-d", str(EXAMPLE), "--root", str(root)]
    res = CliRunner().invoke(app, gen)
    assert res.exit_code == 0
    assert f"note: openstack.target does not start at boot: `systemctl enable " \
        f"openstack.target --root {root}`" in res.output
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir()
    (wants / "openstack.target").symlink_to("../openstack.target")  # what enable makes
    res = CliRunner().invoke(app, gen)
    assert res.exit_code == 0 and "note:" not in res.output


def test_generate_says_which_running_services_need_a_restart_or_a_stop(
        tmp_path: Path) -> None:
    import shutil

    dep = tmp_path / "dep"
    shutil.copytree(EXAMPLE, dep)
    r = CliRunner()
    gen = ["generate", "-H", "ctl01", "-d", str(dep), "--root", str(tmp_path / "root")]
    res = r.invoke(app, gen)
    assert res.exit_code == 0 and "restart" not in res.output  # nothing ran before
    tmpl = dep / "templates/glance/glance-api.conf.j2"
    tmpl.write_text(tmpl.read_text() + "# tuned\n")
    y = dep / "deployment.yaml"
    y.write_text(y.read_text().replace("neutron-server, horizon]", "neutron-server]"))
    res = r.invoke(app, gen)
    assert res.exit_code == 0, res.output
    # glance-api's config changed; the /etc/hosts of every container lost horizon, which
    # a running container sees without a restart (its init links it into a bound directory)
    hosts = tmp_path / "root/var/lib/osunits/hosts/private/hosts"
    assert "horizon" not in hosts.read_text() and "keystone" in hosts.read_text()
    restart = next(ln for ln in res.output.splitlines() if "osunits restart" in ln)
    assert restart.split()[-1:] == ["glance-api"]
    assert ("note: horizon left this host; a running container stops only when told to: "
            "systemctl stop systemd-nspawn@horizon.service") in res.output
    res = r.invoke(app, gen)
    assert res.exit_code == 0 and "note: " not in res.output.replace("note: openstack", "")
    y.write_text(y.read_text().replace("neutron-server]", "neutron-server, horizon]"))
    res = r.invoke(app, gen)  # horizon is back: not running yet, nothing to restart
    assert res.exit_code == 0 and "horizon" in hosts.read_text()
    assert "restart" not in res.output


def test_hosts_file_is_live_for_the_init_and_bound_as_of_the_start_for_a_booted_one(
        tmp_path: Path) -> None:
    dep = write_tree(tmp_path / "dep", {
        "deployment.yaml": "defaults: {rootfs: base}\n"
                           "hosts:\n  h1: {address: 192.0.2.1, services: [app, vm]}\n"
                           "  h2: {address: 192.0.2.2, services: [far]}\n",
        "services/app.yaml": "exec: [/bin/sleep, infinity]\n",
        "services/vm.yaml": "boot: true\n",
        "services/far.yaml": "exec: [/bin/sleep, infinity]\n"})
    root = tmp_path / "root"
    gen = ["generate", "-H", "h1", "-d", str(dep), "--root", str(root)]
    r = CliRunner()
    assert r.invoke(app, gen).exit_code == 0
    nspawn = root / "etc/systemd/nspawn"
    app_binds = [ln for ln in (nspawn / "app.nspawn").read_text().splitlines() if "Bind" in ln]
    vm_binds = [ln for ln in (nspawn / "vm.nspawn").read_text().splitlines() if "Bind" in ln]
    assert "BindReadOnly=/var/lib/osunits/hosts/private:/run/osunits/hosts" in app_binds
    assert not any("/etc/hosts" in ln for ln in app_binds)
    assert vm_binds == ["BindReadOnly=/var/lib/osunits/hosts/private/hosts:/etc/hosts"]
    hosts = root / "var/lib/osunits/hosts/private/hosts"
    assert "192.0.2.2\tfar h2" in hosts.read_text()
    y = dep / "deployment.yaml"
    y.write_text(y.read_text().replace("192.0.2.2", "192.0.2.9"))
    res = r.invoke(app, gen)
    assert res.exit_code == 0, res.output
    assert "192.0.2.9\tfar h2" in hosts.read_text()
    # only the booted container reads the file it was started with
    restart = next(ln for ln in res.output.splitlines() if "osunits restart" in ln)
    assert restart.split()[-1:] == ["vm"]


def test_diff_names_a_file_holding_a_secret_but_never_shows_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, example_secrets: Path) -> None:
    import shutil

    dep = tmp_path / "dep"
    shutil.copytree(EXAMPLE, dep)
    # horizon's settings hold no secret in the example: this test's alone
    tmpl = dep / "templates/horizon/local_settings.py.j2"
    tmpl.write_text(tmpl.read_text() + "DB = '{{ secret('test-db') | urlencode }}'\n")
    monkeypatch.setenv("OSUNITS_SECRETS_DIR", str(tmp_path / "vault"))
    shutil.copytree(example_secrets, tmp_path / "vault")
    pw = write_secret(tmp_path / "vault", "test-db", "first-PASS@WORD")
    r = CliRunner()
    gen = ["generate", "-H", "ctl01", "-d", str(dep), "--root", str(tmp_path / "root")]
    assert r.invoke(app, gen).exit_code == 0
    pw.write_text("second-PASS@WORD\n")
    res = r.invoke(app, [*gen, "--diff"])
    assert res.exit_code == 1
    assert "local_settings.py\n(holds secrets: not shown)" in res.output
    assert "PASS" not in res.output  # neither the old value nor the new, raw or encoded
    config = tmp_path / "root/var/lib/osunits/config/horizon/etc/openstack-dashboard/" \
        "local_settings.py"
    assert "DB = 'first-PASS%40WORD'" in config.read_text()
    # the world-readable drop-in's config hash does not change with the secret
    dropin = "etc/systemd/system/systemd-nspawn@horizon.service.d/50-osunits.conf"
    assert dropin not in res.output
    # a template that stops using secret(): its old lines held one, so still not shown
    tmpl.write_text(tmpl.read_text().replace("{{ secret('test-db') | urlencode }}", "none"))
    res = r.invoke(app, [*gen, "--diff"])
    assert "(holds secrets: not shown)" in res.output and "PASS" not in res.output
    assert config.stat().st_mode & 0o777 == 0o600
    # the manifest holds the file's digest: root's alone, as the file is
    assert (tmp_path / "root" / str(MANIFEST).lstrip("/")).stat().st_mode & 0o777 == 0o600


def test_decommission_removes_what_osunits_wrote_and_nothing_else(tmp_path: Path) -> None:
    r = CliRunner()
    root = tmp_path / "root"
    assert r.invoke(app, ["generate", "-H", "net01", "-d", str(EXAMPLE), "--root",
                          str(root)]).exit_code == 0
    owned = load_manifest(root).files
    theirs = root / "etc/systemd/system/local.service"
    theirs.write_text("[Service]\nExecStart=/bin/true\n")
    nspawn = root / "etc/systemd/nspawn/neutron-l3-agent.nspawn"
    nspawn.write_text(nspawn.read_text() + "# edited\n")
    before = snapshot(root)
    res = r.invoke(app, ["decommission", "--root", str(root)])
    assert res.exit_code == 2 and f"{nspawn}: osunits would remove it, but it changed" in res.output
    assert snapshot(root) == before
    nspawn.unlink()
    before = snapshot(root)
    res = r.invoke(app, ["decommission", "--root", str(root), "--dry-run"])
    assert res.exit_code == 1 and "- /var/lib/osunits/lib/init.py" in res.output
    assert snapshot(root) == before
    res = r.invoke(app, ["decommission", "--root", str(root)])
    assert res.exit_code == 0, res.output
    assert f"{len(owned) - 1} files removed" in res.output
    assert not any((root / p.lstrip("/")).exists() or (root / p.lstrip("/")).is_symlink()
                   for p in owned)
    assert theirs.read_text() == "[Service]\nExecStart=/bin/true\n"
    assert load_manifest(root).files == {}
    res = r.invoke(app, ["decommission", "--root", str(root)])
    assert res.exit_code == 0 and "nothing of osunits'" in res.output
    afile = tmp_path / "afile"
    afile.write_text("x")
    res = r.invoke(app, ["decommission", "--root", str(afile)])
    assert res.exit_code == 2 and "not a directory" in res.output
    assert r.invoke(app, ["generate", "-H", "cmp01", "-d", str(EXAMPLE), "--root",
                          str(root)]).exit_code == 0  # the root is free for any host now


def test_files_in_absent_directories_are_not_looked_up_one_by_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    paths = [f"/{d}/{n}" for d in ("etc/a", "etc/a/sub", "etc/b", "etc/file", "etc/gone",
                                    "etc/link", "var/lib/x/y") for n in ("1", "2", "3")]

    def reads() -> tuple[list[object], int]:
        calls = 0
        real = os.lstat

        def lstat(p: str) -> os.stat_result:
            nonlocal calls
            calls += 1
            return real(p)

        monkeypatch.setattr(os, "lstat", lstat)
        lookups = output._Lookups(output._prefix(root))
        got = [lookups.read(output._disk(output._prefix(root), p)) for p in paths]
        monkeypatch.undo()
        return got, calls

    def expected() -> list[object]:
        return [output._read_current(output._disk(output._prefix(root), p)) for p in paths]

    got, calls = reads()  # a root not made yet: one lookup in all
    assert got == expected() == [None] * len(paths) and calls == 1
    (root / "etc/a").mkdir(parents=True)
    (root / "etc/a/1").write_text("one")
    (root / "etc/file").write_text("a file, not a directory")
    (root / "etc/gone").symlink_to(tmp_path / "nowhere")
    (root / "etc/link").symlink_to(root / "etc/a")
    got, calls = reads()
    assert got == expected()
    assert got[0] is not None and got[0][0] == b"one" and got[15] == got[0]  # via etc/link
    assert got[9] == (b"<a parent is not a directory>", 0)
    assert calls == 13  # not in etc/a/sub, etc/gone and var/lib/x/y after their first


def test_a_root_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    for extra in ([], ["--dry-run"]):
        res = CliRunner().invoke(app, ["generate", "-H", "ctl01", "-d", str(EXAMPLE),
                                       "--root", str(afile), *extra])
        assert res.exit_code == 2 and f"{afile}: not a directory" in res.output
        assert "Traceback" not in res.output
    assert afile.read_text() == "mine\n"


def test_a_writeback_error_stops_before_any_rename(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes
    import errno

    from osunits import output

    root = tmp_path / "root"
    write_files(root, (pf("/etc/a.conf", "v1\n"),))

    class FailingLibc:  # syncfs(2) reporting a write-back error, as Linux 5.8+ does
        def syncfs(self, fd: int) -> int:
            ctypes.set_errno(errno.EIO)
            return -1

    monkeypatch.setattr(output, "_libc", FailingLibc())
    with pytest.raises(OutputError, match="Input/output error"):
        write_files(root, (pf("/etc/a.conf", "v2\n"), pf("/etc/b.conf", "new\n")))
    assert (root / "etc/a.conf").read_text() == "v1\n"
    assert not (root / "etc/b.conf").exists()
    monkeypatch.undo()
    write_files(root, (pf("/etc/a.conf", "v2\n"), pf("/etc/b.conf", "new\n")))  # rolls back, redoes
    assert (root / "etc/a.conf").read_text() == "v2\n"
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["a.conf", "b.conf"]


def test_a_second_writer_waits_for_the_first(tmp_path: Path) -> None:
    import fcntl
    import threading

    root = tmp_path / "root"
    write_files(root, (pf("/etc/a.conf", "v1\n"),))
    lock = root / str(MANIFEST.with_name("manifest.lock")).lstrip("/")
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a run in progress
    t = threading.Thread(target=write_files, args=(root, (pf("/etc/a.conf", "v2\n"),)))
    t.start()
    t.join(0.3)
    try:
        assert t.is_alive(), "the second writer did not wait for the lock"
        assert (root / "etc/a.conf").read_text() == "v1\n"
    finally:
        os.close(fd)
    t.join(10)
    assert not t.is_alive()
    assert (root / "etc/a.conf").read_text() == "v2\n"


def test_a_staged_file_gone_before_its_rename_is_an_error(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from osunits import output

    root = tmp_path / "root"
    real = output._commit

    def commit_after_a_removal(root: Path, renames, *a, **kw):  # type: ignore[no-untyped-def]
        os.unlink(renames[0][0])
        return real(root, renames, *a, **kw)

    monkeypatch.setattr(output, "_commit", commit_after_a_removal)
    with pytest.raises(OutputError, match="No such file"):
        write_files(root, (pf("/etc/a.conf", "v1\n"),))


def test_an_unwritable_root_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "var").write_text("a file where a directory should be\\n")
    res = CliRunner().invoke(app, ["generate", "-H", "ctl01", "-d", str(EXAMPLE), "--root",
                                   str(root)])
    assert res.exit_code == 2, res.output
    assert "nothing was written" in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in root.iterdir()) == ["var"]


def test_directories_are_0755_whatever_the_umask(tmp_path: Path) -> None:
    """Services in a container read the hosts file through its bound directory."""
    old = os.umask(0o077)
    try:
        res = CliRunner().invoke(app, ["generate", "-H", "ctl01", "-d", str(EXAMPLE),
                                       "--root", str(tmp_path / "root")])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    hosts = tmp_path / "root/var/lib/osunits/hosts/private"
    for d in (hosts, hosts.parent, tmp_path / "root/etc/systemd/nspawn"):
        assert oct(d.stat().st_mode & 0o777) == oct(0o755), d
    assert oct((hosts / "hosts").stat().st_mode & 0o777) == oct(0o644)
    assert os.umask(old) == old  # restored


def test_a_vet_refusal_is_said_by_dry_run_too(tmp_path: Path) -> None:
    """--dry-run answers as the run would: a refused change is exit 2, not "pending"."""
    def refuse(changes: list) -> None:  # type: ignore[type-arg]
        raise OutputError("refused: " + " ".join(str(c.path) for c in changes))

    with pytest.raises(OutputError, match="refused: /etc/a"):
        write_files(tmp_path, (pf("/etc/a", "x"),), dry_run=True, vet=refuse)
    assert not (tmp_path / "etc").exists()


def test_a_first_run_plans_again_when_another_wrote_while_it_waited(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first run plans before taking the lock (to refuse before creating it); a run that
    wrote meanwhile makes that plan stale: its files must be seen, and removed."""
    from osunits import output

    root = tmp_path / "root"
    real = output._locked
    other = True

    @contextlib.contextmanager
    def another_run_first(path: Path):  # type: ignore[no-untyped-def]
        nonlocal other
        if other:
            other = False
            write_files(root, (pf("/etc/b.conf", "theirs\n"),))
        with real(path):
            yield

    monkeypatch.setattr(output, "_locked", another_run_first)
    write_files(root, (pf("/etc/a.conf", "ours\n"),))
    assert not other
    assert (root / "etc/a.conf").read_text() == "ours\n"
    assert not (root / "etc/b.conf").exists()
    manifest = json.loads((root / str(MANIFEST).lstrip("/")).read_text())
    assert sorted(manifest["files"]) == ["/etc/a.conf"]


def test_files_get_their_exact_modes_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        modes = {"/etc/a": 0o644, "/etc/b": 0o600, "/etc/c": 0o664, "/etc/d": 0o777,
                 "/etc/e": 0o400}
        write_files(tmp_path, tuple(PlannedFile(PurePosixPath(p), b"x", m)
                                    for p, m in modes.items()))
    finally:
        os.umask(old)
    assert {p: (tmp_path / p[1:]).stat().st_mode & 0o7777 for p in modes} == modes


def test_two_files_at_one_path_are_refused_before_anything_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation refuses the inputs that lead there; should one get through, the writer
    must not commit half of the set and stop at a file that is also a directory."""
    from osunits import plan

    real = plan._plan_service

    def with_a_clash(dep, host, svc, *a, **kw):  # type: ignore[no-untyped-def]
        files = real(dep, host, svc, *a, **kw)
        if svc.name == "keystone":
            first = files[0]
            files.append(PlannedFile(first.path / "x", b"x", source="a clash"))
            files.append(PlannedFile(PurePosixPath("/etc/twice"), b"1"))
            files.append(PlannedFile(PurePosixPath("/etc/twice"), b"2"))
            files.append(PlannedFile(PurePosixPath("/etc/twice-not"), b"3"))
        return files

    monkeypatch.setattr(plan, "_plan_service", with_a_clash)
    root = tmp_path / "root"
    res = CliRunner().invoke(app, ["generate", "-H", "ctl01", "-d", str(EXAMPLE),
                                   "--root", str(root)])
    assert res.exit_code == 2, res.output
    assert "error[P002]: /etc/twice: planned from osunits, and /etc/twice from osunits" in res.output
    assert "/x: planned from a clash, and " in res.output
    assert res.output.count("P002") == 2
    assert not root.exists()


def test_a_file_where_a_directory_goes_is_named_once(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/units").write_text("not a directory\n")
    with pytest.raises(OutputError) as e:
        write_files(tmp_path, (pf("/etc/units/a.service"), pf("/etc/units/b.service"),
                               pf("/etc/units/sub/c.conf")))
    assert str(e.value).splitlines()[1:] == [
        f"  {tmp_path}/etc/units: not a directory, and osunits writes files under it"]
    assert (tmp_path / "etc/units").read_text() == "not a directory\n"


def test_a_copied_root_completes_its_own_interrupted_run_not_the_originals(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from osunits import output

    original = tmp_path / "original"
    write_files(original, (pf("/etc/a.conf", "v1\n"),))

    def killed(*a, **kw):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # as a kill: staged and journaled, nothing renamed

    monkeypatch.setattr(output, "_commit", killed)
    with pytest.raises(KeyboardInterrupt):
        write_files(original, (pf("/etc/a.conf", "v2\n"), pf("/etc/b.conf", "new\n")))
    monkeypatch.undo()
    copy = tmp_path / "copy"
    shutil.copytree(original, copy, symlinks=True)
    before = snapshot(original)
    write_files(copy, (pf("/etc/a.conf", "v2\n"), pf("/etc/b.conf", "new\n")))
    assert snapshot(original) == before  # its run is still pending, its own to complete
    assert (copy / "etc/a.conf").read_text() == "v2\n"
    assert (copy / "etc/b.conf").read_text() == "new\n"
    assert not list(copy.rglob("*.osunits-new")) and not (copy / JOURNAL.relative_to("/")).exists()
    write_files(original, (pf("/etc/a.conf", "v2\n"), pf("/etc/b.conf", "new\n")))
    assert (original / "etc/a.conf").read_text() == "v2\n"


def test_a_journal_of_an_earlier_osunits_with_absolute_paths_is_still_completed(
        tmp_path: Path) -> None:
    write_files(tmp_path, (pf("/etc/a.conf", "v1\n"),))
    tmp = tmp_path / "etc/.a.conf.osunits-new"
    tmp.write_text("v2\n")
    import hashlib
    manifest = {"/etc/a.conf": hashlib.sha256(b"v2\n").hexdigest()}
    (tmp_path / str(JOURNAL).lstrip("/")).write_text(json.dumps({
        "state": "committing", "renames": [[str(tmp), str(tmp_path / "etc/a.conf")]],
        "removals": [], "manifest": manifest, "host": "", "secrets": []}))
    write_files(tmp_path, (pf("/etc/a.conf", "v2\n"),))  # completes it, then finds no change
    assert (tmp_path / "etc/a.conf").read_text() == "v2\n"
    assert not tmp.exists() and not (tmp_path / str(JOURNAL).lstrip("/")).exists()
