"""The host's apt sources: which mirror to debootstrap from, and what the image should use.

Images use the same mirror as the host that builds them (never a hard-coded
host): sources.list(5) one-line entries and deb822 ``.sources`` files are both
read.  Only ``deb`` entries whose suite is the image's suite or one of its
``SUITE-*`` companions (``-updates``, ``-security``) are carried into the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osunits.errors import Location, OsunitsError

APT_ETC = Path("/etc/apt")


class MirrorError(OsunitsError):
    """No usable Debian mirror in the host's apt sources."""


@dataclass(frozen=True, slots=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str = ""
    origin: Location = Location("")


def read_sources(apt_etc: Path = APT_ETC) -> list[AptSource]:
    """Every enabled ``deb`` entry of the host, in apt's file order."""
    out: list[AptSource] = []
    files = [apt_etc / "sources.list"]
    parts = apt_etc / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        out += parse_deb822(text, str(path)) if path.suffix == ".sources" else \
            parse_one_line(text, str(path))
    return out


def parse_one_line(text: str, origin: str) -> list[AptSource]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        signed_by = ""
        if words and words[0].startswith("["):  # [arch=amd64 signed-by=...]
            opts: list[str] = []
            while words:
                w = words.pop(0)
                opts.append(w.strip("[]"))
                if w.endswith("]"):
                    break
            for o in opts:
                if o.startswith("signed-by="):
                    signed_by = o.split("=", 1)[1]
        if len(words) >= 2:
            out.append(AptSource(words[0], (words[1],), tuple(words[2:]), signed_by,
                                 Location(origin, n)))
    return out


def parse_deb822(text: str, origin: str) -> list[AptSource]:
    out = []
    for line_no, stanza in _stanzas(text):
        if stanza.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in stanza.get("types", "").split():
            continue
        for uri in stanza.get("uris", "").split():
            out.append(AptSource(uri, tuple(stanza.get("suites", "").split()),
                                 tuple(stanza.get("components", "").split()),
                                 stanza.get("signed-by", "").strip(), Location(origin, line_no)))
    return out


def _stanzas(text: str) -> list[tuple[int, dict[str, str]]]:
    out: list[tuple[int, dict[str, str]]] = []
    cur: dict[str, str] = {}
    start = 0
    last = ""
    for n, raw in enumerate(text.splitlines() + [""], 1):
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if cur:
                out.append((start, cur))
            cur, last = {}, ""
            continue
        if raw[0] in " \t" and last:  # continuation line (e.g. an inline Signed-By key)
            cur[last] += "\n" + raw.strip()
            continue
        key, _, value = raw.partition(":")
        if not cur:
            start = n
        last = key.strip().lower()
        cur[last] = value.strip()
    return out


def _in_family(suite: str, family: str) -> bool:
    return suite == family or suite.startswith(family + "-") or suite.startswith(family + "/")


def pick_mirror(sources: list[AptSource], suite: str) -> str:
    """The URI the host uses for ``suite`` itself (not -security or -updates)."""
    for s in sources:
        if suite in s.suites:
            return s.uri
    raise MirrorError(
        f"no apt source for suite {suite!r} in the host's /etc/apt/sources.list(.d); "
        "pass mirror=URI (osunits rootfs build --mirror) or add one")


def image_sources(sources: list[AptSource], suite: str, components: tuple[str, ...],
                  have_keyring: set[str]) -> str:
    """deb822 text for the image's ``/etc/apt/sources.list.d/debian.sources``.

    ``have_keyring`` lists the Signed-By paths that exist inside the image; others
    are dropped (apt then falls back to the keys in trusted.gpg.d).
    """
    stanzas = []
    for s in sources:
        suites = [x for x in s.suites if _in_family(x, suite)]
        if not suites:
            continue
        lines = ["Types: deb", f"URIs: {s.uri}", f"Suites: {' '.join(suites)}",
                 f"Components: {' '.join(components)}"]
        if s.signed_by and s.signed_by in have_keyring:
            lines.append(f"Signed-By: {s.signed_by}")
        stanzas.append("\n".join(lines) + "\n")
    return "# Written by osunits from the build host's apt sources.\n\n" + "\n".join(stanzas)
