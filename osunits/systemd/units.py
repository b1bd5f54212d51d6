"""osunits' unit names, and reaching their journal: what needs no D-Bus (no pystemd)."""

from __future__ import annotations

import re

TARGET = "openstack.target"
UNIT_PREFIX = "systemd-nspawn@"
UNIT_SUFFIX = ".service"
# systemd.unit(5)'s unit types: a name ending in one is a unit already.
_UNIT_TYPES = (".service", ".socket", ".target", ".device", ".mount", ".automount", ".swap",
               ".path", ".timer", ".slice", ".scope")


def is_unit(name: str) -> bool:
    """A name that is a unit already (of the host: libvirtd.service), not a service's."""
    return name.endswith(_UNIT_TYPES)


def unit_of(service: str) -> str:
    """keystone → systemd-nspawn@keystone.service (a unit name is kept as it is)."""
    if is_unit(service):
        return service
    return f"{UNIT_PREFIX}{service}{UNIT_SUFFIX}"


def service_of(unit: str) -> str:
    """systemd-nspawn@keystone.service → keystone (other units unchanged)."""
    if unit.startswith(UNIT_PREFIX) and unit.endswith(UNIT_SUFFIX):
        return unit[len(UNIT_PREFIX):-len(UNIT_SUFFIX)]
    return unit


# The local system bus, by the addresses it is known under (sd-bus's default and the
# D-Bus specification's): its journal and files are the local ones.
LOCAL_BUSES = ("unix:path=/run/dbus/system_bus_socket",
               "unix:path=/var/run/dbus/system_bus_socket")


def root_of(address: str | None) -> str | None:
    """The root directory of the systemd behind ``address``, as this process reaches it: "/"
    for the system bus, /proc/PID/root for a container's bus reached through it, else None."""
    if address is None or address in LOCAL_BUSES:
        return "/"
    m = re.match(r"^unix:path=(/proc/\d+/root)/", address)
    return m.group(1) if m else None


def journal_args(address: str | None) -> list[str]:
    """journalctl arguments reaching the journal of the systemd behind ``address``: the
    local one, or a test host's (``unix:path=/proc/PID/root/...``: ``--root``).  Any other
    bus (another machine's, a socket elsewhere) is a LookupError: reading the local
    journal instead would show another systemd's logs as this one's."""
    root = root_of(address)
    if root is None:
        raise LookupError(f"cannot read the journal of the systemd on {address}: only the "
                          "local one or a test host's (unix:path=/proc/PID/root/...) can be "
                          "read; run journalctl on that host")
    return [] if root == "/" else ["--root", root]
