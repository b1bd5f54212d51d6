"""The one place where values become systemd syntax.

Every value a template writes passes through one of these functions; the
renderer refuses anything else (see ``render.py``).  The rules differ by file
and key, per systemd.unit(5), systemd.service(5) and systemd.nspawn(5):

* unit files expand specifiers (``%``) in almost every value;
* Exec lines also expand ``$VAR`` and split words with C-style quoting;
* ``Environment=`` in a unit splits words with C-style quoting;
* ``.nspawn`` files expand nothing, but ``Parameters=`` and ``Environment=``
  are split into words by quotes with backslashes kept literally.

A newline in a value would start a new key: it is always an error.
"""

from __future__ import annotations

import re


class Escaped(str):
    """A string already in systemd syntax: the only kind a template may print."""

    __slots__ = ()


class EscapeError(ValueError):
    pass


_PLAIN_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def _no_newline(s: str) -> str:
    if "\n" in s or "\r" in s or "\0" in s:
        raise EscapeError(f"value {s!r} spans lines or holds NUL")
    return s


def specifiers(s: str) -> str:
    """Escape ``%`` so systemd does not expand specifiers (systemd.unit(5) SPECIFIERS)."""
    return s.replace("%", "%%")


def unit_value(s: str | int) -> Escaped:
    """A single-line value in a unit file (Description=, After=, MemoryMax=, ...)."""
    s = _no_newline(str(s))
    if s != s.strip():
        raise EscapeError(f"value {s!r} has leading or trailing whitespace")
    if s.endswith("\\"):
        raise EscapeError(f"value {s!r} ends in a backslash (line continuation)")
    return Escaped(specifiers(s))


def _c_quote(word: str) -> str:
    # systemd unquotes with EXTRACT_CUNESCAPE: backslash and double quote need escaping.
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_word(word: str) -> str:
    """One argument of an Exec*= line."""
    _no_newline(word)
    word = specifiers(word).replace("$", "$$")
    if _PLAIN_WORD.match(word):  # prefixes (-@:+!) matter only on the program: absolute
        return word
    return _c_quote(word)


def exec_line(argv: list[str] | tuple[str, ...]) -> Escaped:
    """A whole command line for ExecStart= and friends (systemd.service(5) COMMAND LINES)."""
    if not argv:
        raise EscapeError("empty command line")
    if not argv[0].startswith("/"):
        raise EscapeError(f"{argv[0]!r}: the program must be an absolute path")
    return Escaped(" ".join(exec_word(w) for w in argv))


def unit_environment(key: str, value: str) -> Escaped:
    """One ``Environment=`` assignment in a unit file."""
    _no_newline(value)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
        raise EscapeError(f"{key!r} is not an environment variable name")
    return Escaped(_c_quote(specifiers(f"{key}={value}")))


def nspawn_word(word: str) -> Escaped:
    """One word of a .nspawn strv key (Parameters=, Environment=).

    systemd parses these with EXTRACT_UNQUOTE|EXTRACT_RETAIN_ESCAPE: quotes
    group (also mid-word), backslashes are literal (verified, docs/readiness.md).
    """
    _no_newline(word)
    if word and not re.search(r"[\s'\"]", word):
        return Escaped(word)
    if '"' not in word:
        return Escaped(f'"{word}"')
    if "'" not in word:
        return Escaped(f"'{word}'")
    # Adjacent quoted pieces join into one word: "it's "'"x"' is  it's "x"
    pieces = []
    i = 0
    while i < len(word):
        q = "'" if word[i] == '"' else '"'
        j = word.find(q, i)
        j = len(word) if j < 0 else j
        pieces.append(f"{q}{word[i:j]}{q}")
        i = j
    return Escaped("".join(pieces))


def nspawn_words(words: list[str] | tuple[str, ...]) -> Escaped:
    return Escaped(" ".join(nspawn_word(w) for w in words))


def nspawn_value(s: str | int) -> Escaped:
    """A plain single-value key in a .nspawn file (no specifiers there)."""
    s = _no_newline(str(s))
    if s != s.strip():
        raise EscapeError(f"value {s!r} has leading or trailing whitespace")
    return Escaped(s)


def nspawn_bind(source: str, dest: str) -> Escaped:
    """``Bind=SOURCE:DEST``: paths are validated to hold no ':' or whitespace."""
    for p in (source, dest):
        _no_newline(p)
        if ":" in p or re.search(r"\s", p) or not p.startswith("/"):
            raise EscapeError(f"{p!r}: bind paths must be absolute, without ':' or spaces")
    return Escaped(source if source == dest else f"{source}:{dest}")


def unit_name_escape(s: str) -> str:
    """systemd-escape(1) for a string used inside a unit name."""
    out = []
    for i, ch in enumerate(s):
        if ch == "/":
            out.append("-")
        elif ch.isascii() and (ch.isalnum() or ch in ":_" or (ch == "." and i > 0)):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)
