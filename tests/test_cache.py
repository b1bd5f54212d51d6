"""The validated-model cache: a hit only when no input changed, and never a wrong model."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from osunits import cache, parallel, validate
from osunits.deployment import load_deployment
from osunits.errors import DeploymentError

from .conftest import EXAMPLE


@pytest.fixture
def dep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example, a private cache, and a clock late enough that it is not racy."""
    d = tmp_path / "deployment"
    shutil.copytree(EXAMPLE, d)
    monkeypatch.setenv("OSUNITS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache.time, "time_ns", lambda: time.clock_gettime_ns(
        time.CLOCK_REALTIME) + 10 * cache.RACY_NS)
    return d


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every real (uncached) load."""
    calls: list[Path] = []
    real = validate.build_deployment

    def counting(root: Path, *args):  # type: ignore[no-untyped-def]
        calls.append(root)
        return real(root, *args)

    monkeypatch.setattr(validate, "build_deployment", counting)
    return calls


def _models(tmp_path: Path) -> list[Path]:
    parallel.wait_background()  # the model is written by a child while the run goes on
    return sorted((tmp_path / "cache").glob("models-*/*.pickle"))


def _edit(path: Path, old: str, new: str) -> None:
    time.sleep(0.02)  # past the file system's timestamp tick: a real edit comes later still
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_second_load_is_a_hit(dep: Path, builds: list[Path], tmp_path: Path) -> None:
    first = load_deployment(dep)
    second = load_deployment(dep)
    assert len(builds) == 1
    assert second == first and second is not first
    assert repr(second) == repr(first)  # locations too: they do not take part in ==
    assert second.host("ctl01") == first.host("ctl01")  # indexes come back too
    assert len(_models(tmp_path)) == 1


def test_edit_same_size_invalidates(dep: Path, builds: list[Path]) -> None:
    before = load_deployment(dep)
    _edit(dep / "services/glance-api.yaml", "9292", "9393")
    after = load_deployment(dep)
    assert len(builds) == 2
    old = {s.name: s for s in before.services}["glance-api"]
    new = {s.name: s for s in after.services}["glance-api"]
    assert [p.port for p in old.ports] == [9292]
    assert [p.port for p in new.ports] == [9393]


def test_new_and_removed_service_files_invalidate(dep: Path, builds: list[Path]) -> None:
    load_deployment(dep)
    (dep / "services/extra.yaml").write_text("rootfs: base\nexec: [/bin/true]\n")
    load_deployment(dep)
    (dep / "services/extra.yaml").unlink()
    load_deployment(dep)
    assert len(builds) == 3


def test_racy_inputs_are_not_cached(dep: Path, builds: list[Path], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real clock: the copy was written just now
    monkeypatch.setenv("OSUNITS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(validate, "build_deployment", builds_counter := _Counter())
    load_deployment(dep)
    load_deployment(dep)
    assert builds_counter.n == 2
    assert _models(tmp_path) == []


class _Counter:
    def __init__(self) -> None:
        self.n = 0
        self.real = validate.build_deployment

    def __call__(self, root: Path, *args):  # type: ignore[no-untyped-def]
        self.n += 1
        return self.real(root, *args)


@pytest.mark.parametrize("spoil", ["truncate", "foreign", "writable"])
def test_bad_cache_files_are_misses(dep: Path, builds: list[Path], tmp_path: Path,
                                    spoil: str) -> None:
    good = load_deployment(dep)
    (model,) = _models(tmp_path)
    if spoil == "truncate":
        model.write_bytes(model.read_bytes()[:-100])
    elif spoil == "foreign":
        os.chown(model, 65534, -1) if os.geteuid() == 0 else pytest.skip("needs root")
    else:
        model.chmod(0o666)
    assert load_deployment(dep) == good
    assert len(builds) == 2


def test_errors_are_never_cached(dep: Path, builds: list[Path], tmp_path: Path) -> None:
    _edit(dep / "services/glance-api.yaml", "rootfs:", "rootfz:")
    for _ in range(2):
        with pytest.raises(DeploymentError):
            load_deployment(dep)
    assert len(builds) == 2 and _models(tmp_path) == []


def test_read_only_mode_writes_nothing(dep: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "read_only", True)
    load_deployment(dep)
    assert not (tmp_path / "cache").exists()


def test_init_bytecode_cached_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from osunits import plan

    monkeypatch.setenv("OSUNITS_CACHE_DIR", str(tmp_path / "cache"))
    plan._init_bytecode.cache_clear()
    fresh = plan._init_bytecode()
    (cached,) = (tmp_path / "cache").glob("pyc-*/init.*.pyc")
    assert cached.read_bytes() == fresh
    plan._init_bytecode.cache_clear()
    assert plan._init_bytecode() == fresh  # from the cache
    # a cache made from another init.py (its source hash differs) is not used
    cached.write_bytes(fresh[:8] + bytes(8) + b"stale code")
    plan._init_bytecode.cache_clear()
    assert plan._init_bytecode() == fresh
    assert cached.read_bytes() == fresh
    plan._init_bytecode.cache_clear()


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every YAML file validation reads."""
    seen: list[str] = []
    real = validate.load_yaml

    def recording(path: Path, **kw):  # type: ignore[no-untyped-def]
        seen.append(path.name)
        return real(path, **kw)

    monkeypatch.setattr(validate, "load_yaml", recording)
    return seen


def test_one_edited_service_rebuilds_only_what_it_must(dep: Path, loads: list[str]) -> None:
    load_deployment(dep)
    assert len(loads) == 17  # deployment.yaml and 16 services
    loads.clear()
    _edit(dep / "services/glance-api.yaml", "9292", "9393")
    incremental = load_deployment(dep)
    assert sorted(loads) == ["deployment.yaml", "glance-api.yaml"]
    assert repr(incremental) == repr(validate.build_deployment(dep))


@pytest.mark.parametrize("edited", ["nova-compute", "neutron-openvswitch-agent"])
def test_an_edited_service_gets_its_overrides_again(dep: Path, loads: list[str],
                                                    edited: str) -> None:
    load_deployment(dep)
    loads.clear()
    _edit(dep / f"services/{edited}.yaml", "description: ", "description: Edited. ")
    incremental = load_deployment(dep)
    assert sorted(loads) == ["deployment.yaml", f"{edited}.yaml"]
    assert repr(incremental) == repr(validate.build_deployment(dep))
    for h in incremental.hosts:
        svc = h.service(edited)
        if svc is not None:
            assert svc.description.startswith("Edited. ")
    cmp02 = incremental.host("cmp02")
    assert cmp02 is not None
    nova = cmp02.service("nova-compute")
    assert nova is not None and nova.limits.memory_max == 4 << 30  # the host override holds
    agent = cmp02.service("neutron-openvswitch-agent")
    assert agent is not None and ("NEUTRON_NODE_KIND", "compute") in agent.environment


@pytest.mark.parametrize(("old", "new", "restart_sec"), [
    ("restart_sec: 5s", "restart_sec: 7s", 7),  # an edited value
    # the same values, one line lower: locations that point into the defaults have moved
    ("defaults:", "# a comment\ndefaults:", 5),
], ids=["edited", "moved"])
def test_changed_defaults_rebuild_everything(dep: Path, loads: list[str], old: str, new: str,
                                             restart_sec: int) -> None:
    load_deployment(dep)
    loads.clear()
    _edit(dep / "deployment.yaml", old, new)
    incremental = load_deployment(dep)
    assert len(loads) == 17
    assert {s.restart_sec for s in incremental.services} == {restart_sec}
    assert repr(incremental) == repr(validate.build_deployment(dep))


def test_an_inventory_edit_rereads_only_overridden_services(dep: Path, loads: list[str]) -> None:
    load_deployment(dep)
    loads.clear()
    _edit(dep / "deployment.yaml", "address: 192.0.2.32", "address: 192.0.2.33")
    incremental = load_deployment(dep)
    # The services with overrides are read again to apply them; no other service file is.
    assert sorted(loads) == ["deployment.yaml", "neutron-openvswitch-agent.yaml",
                             "nova-compute.yaml"]
    assert repr(incremental) == repr(validate.build_deployment(dep))
    cmp02 = incremental.host("cmp02")
    assert cmp02 is not None and cmp02.address == "192.0.2.33"


def test_a_second_definition_of_a_reused_service_is_refused(dep: Path) -> None:
    load_deployment(dep)
    shutil.copy(dep / "services/horizon.yaml", dep / "services/horizon.yml")
    with pytest.raises(DeploymentError) as e:
        load_deployment(dep)
    assert [p.code for p in e.value.problems] == ["E105"]
    assert "horizon" in str(e.value)


def test_compiled_templates_follow_the_cache_rules(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import jinja2

    from osunits import __version__, render

    monkeypatch.setenv("OSUNITS_CACHE_DIR", str(tmp_path))
    d = tmp_path / f"jinja2-{__version__}"

    def env() -> jinja2.Environment:
        return jinja2.Environment(loader=jinja2.DictLoader({"t": "{{ 1 + 1 }}"}),
                                  bytecode_cache=render._bytecode_cache())

    d.mkdir()
    monkeypatch.setattr(cache, "read_only", True)  # the generator: nothing written
    assert env().get_template("t").render() == "2"
    assert list(d.iterdir()) == []
    monkeypatch.setattr(cache, "read_only", False)
    assert env().get_template("t").render() == "2"
    (f,) = d.iterdir()
    assert f.stat().st_mode & 0o777 == 0o600
    # Forge the file: other code under the right source checksum.
    e = env()
    checksum = render._BytecodeCache(d).get_source_checksum("{{ 1 + 1 }}")
    bucket = jinja2.bccache.Bucket(e, "", checksum)
    bucket.bytecode_from_string(f.read_bytes())
    assert bucket.code is not None  # the file holds this source's code
    bucket.code = e.compile("forged")
    forged = bucket.bytecode_to_string()
    f.write_bytes(forged)
    f.chmod(0o666)  # anyone could have written it: not loaded
    assert env().get_template("t").render() == "2"
    f.write_bytes(forged)
    f.chmod(0o600)  # our own: loaded (so the check above is what refused it)
    assert env().get_template("t").render() == "forged"


def test_an_empty_cache_dir_setting_means_no_cache(dep: Path, builds: list[Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSUNITS_CACHE_DIR", "")
    load_deployment(dep)
    load_deployment(dep)
    assert len(builds) == 2
    assert cache.directory("models") is None
