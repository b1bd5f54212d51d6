"""Fast tests of rootfs specs and the layer cache: no network, no debootstrap, no nspawn.

The builder's commands go through a fake runner that makes just enough of a tree
(``usr/bin/python3`` for the python3 package, a package list for dpkg-query) to
see which commands run, in which order, and what lands where.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osunits.cli import app
from osunits.errors import DeploymentError
from osunits.load import load_yaml
from osunits.rootfs import (
    MANIFEST,
    BuildError,
    ImageStatus,
    build,
    build_order,
    list_images,
    load_specs,
    prune,
)
from osunits.rootfs import apt as rootfs_apt
from osunits.rootfs.build import POLICY_RC_D, Store, nspawn_argv, remove_tree, resolve_in
from osunits.rootfs.spec import REQUIRED_PACKAGES, FileSpec, Spec, chain, layer_keys

REPO = Path(__file__).resolve().parent.parent
SPECS_DIR = REPO / "rootfs_specs"
EXAMPLE_SERVICES = REPO / "examples" / "openstack" / "services"

BASE = "base: {suite: bookworm, variant: minbase}\npackages: [python3, iproute2]\n"


def write_specs(d: Path, specs: dict[str, str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in specs.items():
        (d / f"{name}.yaml").write_text(text)
    return d


def problems_of(d: Path) -> list[str]:
    with pytest.raises(DeploymentError) as e:
        load_specs(d)
    return [str(p) for p in e.value.problems]


def test_a_deployments_own_specs_layer_on_and_replace_the_bundled(tmp_path: Path) -> None:
    own = write_specs(tmp_path / "dep/rootfs_specs", {
        "my-api": "base: keystone\npackages: [python3-my-api]\n",
        "memcached": "base: bookworm-minbase\npackages: [memcached, netcat-openbsd]\n",
    })
    specs = load_specs(SPECS_DIR, own, tmp_path / "absent")
    assert specs["my-api"].base == "keystone" and "keystone" in specs
    assert specs["memcached"].packages == ("memcached", "netcat-openbsd")
    assert load_specs(SPECS_DIR)["memcached"].packages == ("memcached",)
    res = CliRunner().invoke(app, ["rootfs", "list", "--deployment", str(tmp_path / "dep"),
                                   "--root", str(tmp_path / "root")])
    assert res.exit_code == 0, res.output
    assert any(line.split()[0] == "my-api" for line in res.output.splitlines())


# --- the bundled specs ------------------------------------------------------------


def test_bundled_specs_load_and_cover_the_example() -> None:
    specs = load_specs(SPECS_DIR)
    used = {load_yaml(p).entries["rootfs"].value for p in sorted(EXAMPLE_SERVICES.glob("*.yaml"))}
    assert used, "the example names its rootfs specs"
    assert used - set(specs) == set()
    assert "test-minimal" in specs


@pytest.mark.parametrize("name", sorted(p.stem for p in SPECS_DIR.glob("*.yaml")))
def test_every_bundled_image_has_the_required_packages(name: str) -> None:
    specs = load_specs(SPECS_DIR)
    have = {p for s in chain(name, specs) for p in s.packages}
    assert set(REQUIRED_PACKAGES) <= have


def test_test_minimal_is_its_own_debootstrap() -> None:
    specs = load_specs(SPECS_DIR)
    assert [s.name for s in chain("test-minimal", specs)] == ["test-minimal"]


# --- bad specs: each case names the file:line and the code -------------------------

BAD_SPECS = [
    # (file text, expected "line: severity[code]" and message fragment)
    (BASE + "pakages: [curl]\n", r"x\.yaml:3: error\[R002\]: pakages: unknown key.*\n"
     r"  hint: did you mean 'packages'\?"),
    ("description: no base\npackages: [python3, iproute2]\n", r"x\.yaml:1: error\[R004\]: base"),
    ("base: {suite: bookworm, varient: minbase}\npackages: [python3, iproute2]\n",
     r"x\.yaml:1: error\[R002\]: base\.varient: .*did you mean 'variant'"),
    ("base: {suite: bookworm, variant: tiny}\npackages: [python3, iproute2]\n",
     r"x\.yaml:1: error\[R003\]: base\.variant: unknown debootstrap variant 'tiny'"),
    ("base: {variant: minbase}\npackages: [python3, iproute2]\n",
     r"x\.yaml:1: error\[R004\]: base\.suite: missing"),
    ("base: [bookworm]\n", r"x\.yaml:1: error\[R003\]: base: expected a spec name"),
    ("base: {suite: bookworm}\npackages: python3\n",
     r"x\.yaml:2: error\[R003\]: packages: expected a list"),
    ("base: {suite: bookworm}\npackages:\n  - python3\n  - Keystone\n  - iproute2\n",
     r"x\.yaml:4: error\[R003\]: packages: 'Keystone' is not a valid Debian package name"),
    ("base: {suite: bookworm}\npackages:\n  - python3\n  - iproute2\n  - python3\n",
     r"x\.yaml:5: error\[R003\]: packages: 'python3' is listed twice"),
    (BASE + "run:\n  - echo hello\n",
     r"x\.yaml:4: error\[R003\]: run: a command must be an argv list\n  hint: write \[sh, -c"),
    (BASE + "run:\n  - []\n", r"x\.yaml:4: error\[R003\]: run: empty command"),
    (BASE + "files:\n  - {path: etc/motd, content: hi}\n",
     r"x\.yaml:4: error\[R003\]: files\.path: 'etc/motd' must be an absolute"),
    (BASE + "files:\n  - {path: /etc/motd}\n",
     r"x\.yaml:4: error\[R004\]: files: a file needs both path and content"),
    (BASE + "files:\n  - {path: /etc/motd, content: hi, mode: rwx}\n",
     r"x\.yaml:4: error\[R003\]: files\.mode: expected a file mode"),
    (BASE + "description: [a, b]\n", r"x\.yaml:3: error\[R003\]: description: expected a string"),
    ("base: {suite: bookworm}\npackages: [python3]\n",
     r"x\.yaml: error\[R012\]: packages: the image would lack iproute2\n  hint: every image"),
    ("base: bookworm-minbse\n",
     r"x\.yaml:1: error\[R010\]: base: unknown base spec 'bookworm-minbse'\n"
     r"  hint: did you mean 'bookworm-minbase'\?"),
    ("base: {suite: bookworm\n", r"x\.yaml:2: error\[E005\]: invalid YAML"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_SPECS,
                         ids=[f"case{i}" for i in range(len(BAD_SPECS))])
def test_bad_spec_is_reported_at_its_line(tmp_path: Path, text: str, expected: str) -> None:
    d = write_specs(tmp_path / "specs", {"bookworm-minbase": BASE, "x": text})
    found = problems_of(d)
    assert any(re.search(expected, p, re.DOTALL) for p in found), found


def test_all_problems_are_collected(tmp_path: Path) -> None:
    d = write_specs(tmp_path / "specs", {
        "a": BASE + "pakages: []\nrun: [ls]\n",
        "b": "base: nothing\n",
    })
    codes = sorted(re.findall(r"\[(R\d+)\]", "\n".join(problems_of(d))))
    assert codes == ["R002", "R003", "R010"]


def test_cycle_is_reported_as_a_path(tmp_path: Path) -> None:
    d = write_specs(tmp_path / "specs", {"a": "base: b\n", "b": "base: a\n"})
    assert any("R011" in p and ("a => b => a" in p or "b => a => b" in p)
               for p in problems_of(d))


def test_bad_file_name(tmp_path: Path) -> None:
    d = write_specs(tmp_path / "specs", {"Bad_Name": BASE})
    assert any("Bad_Name.yaml: error[R001]" in p for p in problems_of(d))


def test_missing_specs_dir(tmp_path: Path) -> None:
    assert "R000" in problems_of(tmp_path / "nope")[0]


def test_files_and_modes_parse(tmp_path: Path) -> None:
    d = write_specs(tmp_path / "specs", {"a": BASE + (
        "files:\n"
        "  - {path: /etc/motd, content: hi}\n"
        "  - {path: /usr/local/bin/x, content: \"#!/bin/sh\\n\", mode: 0755}\n"
        "  - {path: /etc/y, content: '', mode: '0600'}\n"
        "  - {path: /etc/z, content: '', mode: 755}\n")})  # octal as written, not decimal
    spec = load_specs(d)["a"]
    assert spec.files == (FileSpec("/etc/motd", "hi"), FileSpec("/usr/local/bin/x", "#!/bin/sh\n",
                          0o755), FileSpec("/etc/y", "", 0o600), FileSpec("/etc/z", "", 0o755))


def test_specs_load_from_a_fake_filesystem(fs: object) -> None:
    """Spec loading is plain file logic: pyfakefs, no disk."""
    d = write_specs(Path("/specs"), {"base": BASE, "app": "base: base\npackages: [curl]\n"})
    specs = load_specs(d)
    assert [s.name for s in chain("app", specs)] == ["base", "app"]
    assert str(specs["app"].source) == "/specs/app.yaml"


# --- keys and order ------------------------------------------------------------------


def _specs(tmp_path: Path, **extra: str) -> dict[str, Spec]:
    texts = {"base": BASE, "app": "description: an app\nbase: base\npackages: [curl]\n"}
    texts.update(extra)
    d = tmp_path / "specs"
    if d.exists():
        shutil.rmtree(d)
    return load_specs(write_specs(d, texts))


def test_key_ignores_description_but_not_content(tmp_path: Path) -> None:
    k0 = layer_keys("app", _specs(tmp_path))
    k1 = layer_keys("app", _specs(tmp_path, app="description: other\nbase: base\n"
                                               "packages: [curl]\n"))
    k2 = layer_keys("app", _specs(tmp_path, app="base: base\npackages: [curl, wget]\n"))
    assert k0 == k1
    assert k0["base"] == k2["base"] and k0["app"] != k2["app"]


def test_base_change_changes_every_key_above_it(tmp_path: Path) -> None:
    k0 = layer_keys("app", _specs(tmp_path))
    k1 = layer_keys("app", _specs(tmp_path, base=BASE.replace("iproute2", "iproute2, curl")))
    assert k0["base"] != k1["base"] and k0["app"] != k1["app"]
    assert list(k0) == ["base", "app"]  # bottom first


def test_build_order_puts_bases_first_and_is_stable(tmp_path: Path) -> None:
    d = write_specs(tmp_path / "specs", {
        "root": BASE, "mid": "base: root\n", "leaf2": "base: mid\n", "leaf1": "base: root\n"})
    specs = load_specs(d)
    order = build_order(specs, specs)
    assert order == build_order(reversed(list(specs)), specs)
    assert order.index("root") < order.index("mid") < order.index("leaf2")
    assert order.index("root") < order.index("leaf1")
    assert build_order(["leaf2"], specs) == ["root", "mid", "leaf2"]


# --- the builder, with a fake runner ------------------------------------------------


class FakeRunner:
    """Stands in for debootstrap, cp, systemd-nspawn and dpkg-query."""

    def __init__(self, fail: str = "") -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, argv: Sequence[str], *, capture: bool = False) -> str:
        argv = list(argv)
        self.calls.append(argv)
        if self.fail and self.fail in argv:
            raise BuildError(f"command failed: {self.fail}")
        if "debootstrap" in argv:
            tree = Path(argv[-2])
            for d in ("etc/apt", "var/lib/dpkg", "var/lib/apt/lists", "usr/bin"):
                (tree / d).mkdir(parents=True)
            (tree / "etc/apt/sources.list").write_text("deb x bookworm main\n")
            (tree / "etc/hostname").write_text("buildhost\n")
            (tree / "var/lib/dpkg/fake").write_text("base-files\n")
            (tree / "etc/machine-id").write_text("4e7da58389e14f77a15001b9975d386b\n")
            (tree / "var/lib/dbus").mkdir(parents=True)
            (tree / "var/lib/dbus/machine-id").write_text("0a1b2c3d4e5f60718293a4b5c6d7e8f9\n")
        elif argv[0] == "cp":
            shutil.copytree(argv[-2], argv[-1], symlinks=True)
        elif argv[0] == "systemd-nspawn":
            tree = Path(next(a for a in argv if a.startswith("--directory=")).split("=", 1)[1])
            cmd = argv[argv.index("--") + 1:]
            if cmd[:2] == ["apt-get", "install"]:
                assert (tree / POLICY_RC_D).read_text().endswith("exit 101\n")
                (tree / "var/lib/apt/lists/deb_Packages").write_text("x")
                pkgs = [a for a in cmd[2:] if not a.startswith("-")]
                with (tree / "var/lib/dpkg/fake").open("a") as f:
                    f.writelines(p + "\n" for p in pkgs)
                if "python3" in pkgs:
                    (tree / "usr/bin/python3").write_text("")
                if "iproute2" in pkgs:
                    (tree / "usr/bin/ip").write_text("")
        elif argv[0] == "dpkg-query":
            admin = Path(next(a for a in argv if a.startswith("--admindir=")).split("=", 1)[1])
            return "".join(f"{p}\t1.0-{i}\tii \n" for i, p in
                           enumerate((admin / "fake").read_text().split()))
        return ""

    def programs(self) -> list[str]:
        return [c[c.index("--") + 1] if c[0] == "systemd-nspawn" else
                "debootstrap" if "debootstrap" in c else c[0] for c in self.calls]


@pytest.fixture
def apt_etc(tmp_path: Path) -> Path:
    d = tmp_path / "etc-apt"
    (d / "sources.list.d").mkdir(parents=True)
    (d / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n")
    return d


def _build(tmp_path: Path, apt_etc: Path, name: str = "app", runner: FakeRunner | None = None,
           **kw: object) -> tuple[Path, FakeRunner]:
    runner = runner or FakeRunner()
    specs = load_specs(tmp_path / "specs")
    img = build(name, specs, root=tmp_path / "root", run=runner, apt_etc=apt_etc,
                log=lambda _m: None, **kw)  # type: ignore[arg-type]  # kw: cache/force
    return img, runner


def test_first_build_debootstraps_then_layers(tmp_path: Path, apt_etc: Path) -> None:
    _specs(tmp_path)
    img, runner = _build(tmp_path, apt_etc)
    assert runner.programs() == [
        "debootstrap", "apt-get", "apt-get", "dpkg-query",  # base: update, install
        "cp", "apt-get", "apt-get", "dpkg-query"]  # app copies base, installs curl
    assert "--variant=minbase" in runner.calls[0]
    assert runner.calls[0][-1] == "http://mirror.example/debian"  # the host's mirror
    assert runner.calls[0][:3] == ["unshare", "--mount", "--propagation=private"]
    install = runner.calls[6]
    assert install[install.index("--") + 1:] == [
        "apt-get", "install", "-y", "-q", "--no-install-recommends", "curl"]
    assert img == tmp_path / "root/var/lib/osunits/rootfs/app"
    assert img.is_symlink() and not os.path.isabs(os.readlink(img))
    tree = img.resolve()
    assert tree.parent == tmp_path / "root/var/cache/osunits/rootfs/layers"
    assert not (tree / POLICY_RC_D).exists()  # only during the build
    assert not (tree / "var/lib/apt/lists/deb_Packages").exists()  # apt lists cleaned
    assert not (tree / "etc/hostname").exists()
    assert not (tree / "etc/apt/sources.list").exists()
    sources = (tree / "etc/apt/sources.list.d/debian.sources").read_text()
    assert "bookworm-security" in sources and "http://mirror.example/debian\n" in sources
    manifest = json.loads((tree / MANIFEST).read_text())
    assert manifest["name"] == "app" and manifest["base"] == "base"
    assert manifest["key"] == layer_keys("app", load_specs(tmp_path / "specs"))["app"]
    assert manifest["packages"]["curl"].startswith("1.0-")
    assert (tmp_path / "root/var/lib/osunits/rootfs/base").is_symlink()  # each layer is an image
    assert sorted(p.name for p in tree.parent.iterdir()) == sorted(
        k[:16] for k in manifest_keys(tmp_path))


def manifest_keys(tmp_path: Path) -> list[str]:
    return list(layer_keys("app", load_specs(tmp_path / "specs")).values())


def test_unchanged_rebuild_runs_nothing(tmp_path: Path, apt_etc: Path) -> None:
    _specs(tmp_path)
    _build(tmp_path, apt_etc)
    img, runner = _build(tmp_path, apt_etc)
    assert runner.calls == []
    assert img.is_symlink()


def test_leaf_change_rebuilds_only_the_leaf(tmp_path: Path, apt_etc: Path) -> None:
    _specs(tmp_path)
    img, _ = _build(tmp_path, apt_etc)
    old = img.resolve()
    _specs(tmp_path, app="base: base\npackages: [curl, wget]\n")
    img, runner = _build(tmp_path, apt_etc)
    assert runner.programs() == ["cp", "apt-get", "apt-get", "dpkg-query"]
    assert img.resolve() != old and old.is_dir()  # the old layer stays for running machines
    statuses = {i.name: i.status for i in list_images(tmp_path / "root")}
    assert statuses == {"app": ImageStatus.BUILT, "base": ImageStatus.BUILT}
    assert [p.name for p in prune(root=tmp_path / "root", log=lambda _m: None)] == [old.name]
    assert img.resolve().is_dir()


def test_prune_keeps_a_layer_a_running_container_holds(tmp_path: Path, apt_etc: Path) -> None:
    """systemd-nspawn holds a shared OFD lock on .#LAYER.lck while a container runs on it
    (the container's overlay is in a mount namespace prune cannot see)."""
    import subprocess
    import sys

    _specs(tmp_path)
    img, _ = _build(tmp_path, apt_etc)
    old = img.resolve()
    _specs(tmp_path, app="base: base\npackages: [curl, wget]\n")
    _build(tmp_path, apt_etc)
    lck = old.with_name(f".#{old.name}.lck")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, struct, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack('hhqqi4x', fcntl.F_RDLCK, 0, 0, 0, 0))\n"
        "print('locked', flush=True)\ntime.sleep(60)\n"), str(lck)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        said: list[str] = []
        assert prune(root=tmp_path / "root", log=said.append) == []
        assert old.is_dir() and lck.exists()
        assert said == [f"rootfs: keeping {old}: a running container uses it"]
    finally:
        holder.kill()
        holder.wait()
    assert [p.name for p in prune(root=tmp_path / "root", log=lambda _m: None)] == [old.name]
    assert not lck.exists() and img.resolve().is_dir()


def test_images_carry_no_machine_id_and_ignore_the_callers_umask(
        tmp_path: Path, apt_etc: Path) -> None:
    _specs(tmp_path, app="base: base\npackages: [curl]\nfiles:\n"
                         "  - {path: /etc/keystone/policy.d/x.yaml, content: x, mode: 644}\n")
    old = os.umask(0o077)
    try:
        img, _ = _build(tmp_path, apt_etc)
    finally:
        os.umask(old)
    tree = img.resolve()
    assert (tree / "etc/machine-id").read_text() == ""  # each machine gets its own at start
    assert not (tree / "var/lib/dbus/machine-id").exists()
    for d in ("etc/keystone", "etc/keystone/policy.d"):
        assert stat.S_IMODE((tree / d).stat().st_mode) == 0o755, d
    assert stat.S_IMODE((tree / "etc/keystone/policy.d/x.yaml").stat().st_mode) == 0o644
    assert os.umask(old) == old  # restored


def test_force_builds_a_shared_base_once_per_command(tmp_path: Path, apt_etc: Path) -> None:
    _specs(tmp_path, other="base: base\npackages: [wget]\n")
    specs = load_specs(tmp_path / "specs")
    runner = FakeRunner()
    done: set[str] = set()
    for name in ("app", "other"):
        build(name, specs, root=tmp_path / "root", run=runner, apt_etc=apt_etc,
              log=lambda _m: None, force=True, done=done)
    assert runner.programs().count("debootstrap") == 1
    assert runner.programs().count("cp") == 2


def test_a_full_disk_is_an_error_not_a_traceback(tmp_path: Path, apt_etc: Path) -> None:
    class DiskFull(FakeRunner):
        def __call__(self, argv: Sequence[str], *, capture: bool = False) -> str:
            if argv[0] == "cp":
                raise OSError(28, "No space left on device", argv[-1])
            return super().__call__(argv, capture=capture)

    _specs(tmp_path)
    with pytest.raises(BuildError, match="rootfs app: .*No space left on device; nothing"):
        _build(tmp_path, apt_etc, runner=DiskFull())


def test_failed_build_leaves_no_layer_and_no_temp(tmp_path: Path, apt_etc: Path) -> None:
    _specs(tmp_path)
    _build(tmp_path, apt_etc, name="base")
    with pytest.raises(BuildError):
        _build(tmp_path, apt_etc, runner=FakeRunner(fail="curl"))
    layers = tmp_path / "root/var/cache/osunits/rootfs/layers"
    assert len(list(layers.iterdir())) == 1  # the base only
    assert not (tmp_path / "root/var/lib/osunits/rootfs/app").exists()


def test_leftover_of_a_killed_build_is_removed(tmp_path: Path, apt_etc: Path) -> None:
    _specs(tmp_path)
    key = layer_keys("base", load_specs(tmp_path / "specs"))["base"]
    leftover = tmp_path / f"root/var/cache/osunits/rootfs/layers/.{key[:16]}.tmp"
    (leftover / "half").mkdir(parents=True)
    _build(tmp_path, apt_etc, name="base")
    assert not leftover.exists()
    assert (leftover.parent / key[:16] / MANIFEST).is_file()


def test_missing_required_binary_fails_the_build(tmp_path: Path, apt_etc: Path) -> None:
    class NoPython(FakeRunner):
        def __call__(self, argv: Sequence[str], *, capture: bool = False) -> str:
            out = super().__call__(argv, capture=capture)
            for p in Path(tmp_path).rglob("usr/bin/python3"):
                p.unlink()
            return out

    _specs(tmp_path)
    with pytest.raises(BuildError, match="lacks python3"):
        _build(tmp_path, apt_etc, name="base", runner=NoPython())


def test_force_rebuilds_and_keeps_the_old_tree_in_trash(tmp_path: Path, apt_etc: Path) -> None:
    _specs(tmp_path)
    img, _ = _build(tmp_path, apt_etc)
    _, runner = _build(tmp_path, apt_etc, force=True)
    assert runner.programs()[0] == "debootstrap"
    trash = tmp_path / "root/var/cache/osunits/rootfs/trash"
    assert len(list(trash.iterdir())) == 2
    assert (img.resolve() / MANIFEST).is_file()
    prune(root=tmp_path / "root", log=lambda _m: None)
    assert not trash.exists() or not list(trash.iterdir())


def test_files_and_commands_run_after_the_install(tmp_path: Path, apt_etc: Path) -> None:
    _specs(tmp_path, app=(
        "base: base\npackages: [curl]\nfiles:\n  - {path: /etc/app/x.conf, content: 'a=1'}\n"
        "run:\n  - [app-setup, --now]\n"))
    img, runner = _build(tmp_path, apt_etc)
    assert runner.programs()[-3:] == ["apt-get", "app-setup", "dpkg-query"]
    assert (img.resolve() / "etc/app/x.conf").read_text() == "a=1"


def test_cache_dir_is_configurable(tmp_path: Path, apt_etc: Path) -> None:
    _specs(tmp_path)
    img, _ = _build(tmp_path, apt_etc, cache=tmp_path / "elsewhere")
    assert img.resolve().parent == tmp_path / "elsewhere/layers"


def test_unknown_spec_name(tmp_path: Path, apt_etc: Path) -> None:
    _specs(tmp_path)
    with pytest.raises(BuildError, match="no rootfs spec named 'nope'"):
        _build(tmp_path, apt_etc, name="nope")


def test_nspawn_runs_without_machined(tmp_path: Path) -> None:
    argv = nspawn_argv(tmp_path / "t", "x", Store(tmp_path))
    assert {"--register=no", "--keep-unit", "--pipe"} <= set(argv)
    assert "--setenv=DEBIAN_FRONTEND=noninteractive" in argv
    assert argv[-1] == "--"


def test_image_in_the_way_is_not_clobbered(tmp_path: Path, apt_etc: Path) -> None:
    _specs(tmp_path)
    (tmp_path / "root/var/lib/osunits/rootfs/base").mkdir(parents=True)
    with pytest.raises(BuildError, match="not a symlink"):
        _build(tmp_path, apt_etc, name="base")


# --- image listing, on a fake filesystem ----------------------------------------------


def test_list_images_statuses(fs: object) -> None:
    specs = load_specs(write_specs(Path("/specs"), {
        "base": BASE, "app": "base: base\n", "new": "base: base\n", "gone": "base: base\n"}))
    images, layers = Path("/r/var/lib/osunits/rootfs"), Path("/r/var/cache/osunits/rootfs/layers")
    images.mkdir(parents=True)
    for name, key in (("base", layer_keys("base", specs)["base"]), ("app", "0" * 64)):
        (layers / key[:16] / MANIFEST).parent.mkdir(parents=True)
        (layers / key[:16] / MANIFEST).write_text(json.dumps(
            {"key": key, "packages": {"python3": "3.11"}, "description": name}))
        (images / name).symlink_to(f"../../../cache/osunits/rootfs/layers/{key[:16]}")
    (images / "gone").symlink_to("../../../cache/osunits/rootfs/layers/missing")
    got = {i.name: i for i in list_images(Path("/r"), specs)}
    assert {n: i.status for n, i in got.items()} == {
        "base": ImageStatus.CURRENT, "app": ImageStatus.STALE, "new": ImageStatus.UNBUILT,
        "gone": ImageStatus.BROKEN}
    assert got["base"].packages == 1


# --- apt sources ------------------------------------------------------------------------


def test_host_sources_one_line_and_deb822(fs: object) -> None:
    etc = Path("/etc/apt")
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(
        "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n"
        "deb-src http://m.example/debian bookworm main\n")
    (etc / "sources.list.d/a.sources").write_text(
        "Types: deb\nURIs: http://m.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nEnabled: no\nURIs: http://off.example\nSuites: bookworm\nComponents: main\n")
    (etc / "sources.list.d/cloud.list").write_text(
        "deb https://cloud.example/apt cloud-sdk-bookworm main\n")
    (etc / "sources.list.d/x.list.disabled").write_text("deb http://no.example bookworm main\n")
    sources = rootfs_apt.read_sources(etc)
    assert [s.uri for s in sources] == [
        "http://m.example/debian", "http://m.example/debian-security", "https://cloud.example/apt"]
    assert sources[0].signed_by == "/k.gpg" and str(sources[0].origin) == "/etc/apt/sources.list:2"
    assert rootfs_apt.pick_mirror(sources, "bookworm") == "http://m.example/debian"
    text = rootfs_apt.image_sources(sources, "bookworm", ("main",),
                                    {"/usr/share/keyrings/debian-archive-keyring.gpg"})
    assert "cloud" not in text and "Signed-By: /k.gpg" not in text
    assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in text
    with pytest.raises(rootfs_apt.MirrorError):
        rootfs_apt.pick_mirror(sources, "trixie")


# --- paths inside the image ------------------------------------------------------------


def test_resolve_in_keeps_absolute_symlinks_inside_the_tree(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/etc").mkdir(parents=True)
    (tree / "etc").symlink_to("/usr/etc")  # absolute: would be the host's /usr/etc
    (tree / "lib").symlink_to("usr/lib")
    assert resolve_in(tree, "/etc/motd") == tree / "usr/etc/motd"
    assert resolve_in(tree, "/lib/../../x") == tree / "x"
    (tree / "loop").symlink_to("loop")
    with pytest.raises(BuildError, match="too many symlinks"):
        resolve_in(tree, "/loop/x")


def test_remove_tree_handles_files_links_and_absence(tmp_path: Path) -> None:
    remove_tree(tmp_path / "absent")
    (tmp_path / "d/e").mkdir(parents=True)
    (tmp_path / "l").symlink_to(tmp_path / "d")
    remove_tree(tmp_path / "l")
    assert (tmp_path / "d/e").is_dir()
    remove_tree(tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_a_cached_base_from_another_mirror_is_said(tmp_path: Path, apt_etc: Path) -> None:
    _specs(tmp_path)
    _build(tmp_path, apt_etc, name="base")
    said: list[str] = []
    specs = load_specs(tmp_path / "specs")
    build("base", specs, root=tmp_path / "root", run=FakeRunner(), apt_etc=apt_etc,
          log=said.append, mirror="http://apt-cache.internal.example/debian")
    assert any("built from another mirror than http://apt-cache.internal.example/debian"
               in m for m in said), said


def test_prune_of_one_root_keeps_what_another_roots_images_use(
        tmp_path: Path, apt_etc: Path) -> None:
    """A cache shared by two roots (--cache): pruning one must not empty the other's images."""
    _specs(tmp_path)
    shared = tmp_path / "shared-cache"
    specs = load_specs(tmp_path / "specs")
    img = build("app", specs, root=tmp_path / "a", cache=shared, run=FakeRunner(),
                apt_etc=apt_etc, log=lambda _m: None)
    layer = img.resolve()
    assert prune(root=tmp_path / "b", cache=shared, log=lambda _m: None) == []
    assert (layer / MANIFEST).is_file()
    img.unlink()  # a's app image goes: its layer goes too, the base it still links stays
    assert [p.name for p in prune(root=tmp_path / "b", cache=shared, log=lambda _m: None)] \
        == [layer.name]
