"""osunits: OpenStack services in systemd-nspawn containers, ordered by systemd."""

__version__ = "0.1.0"
