"""Reading systemd syntax back: the inverse of escape.py, used by checks and tests."""

from __future__ import annotations

_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", '"': '"', "'": "'", "s": " "}


def split_words(s: str, *, cunescape: bool) -> list[str]:
    """Split like systemd's extract_first_word(EXTRACT_UNQUOTE [| EXTRACT_CUNESCAPE]).

    With ``cunescape=False`` this is EXTRACT_RETAIN_ESCAPE: backslashes are literal.
    """
    words: list[str] = []
    i, n = 0, len(s)
    while True:
        while i < n and s[i] in " \t\n":
            i += 1
        if i >= n:
            return words
        word: list[str] = []
        quote = ""
        while i < n:
            c = s[i]
            if quote:
                if c == quote:
                    quote = ""
                elif c == "\\" and cunescape and i + 1 < n:
                    i += 1
                    word.append(_ESCAPES.get(s[i], s[i]))
                else:
                    word.append(c)
            elif c in "'\"":
                quote = c
            elif c in " \t\n":
                break
            elif c == "\\" and cunescape and i + 1 < n:
                i += 1
                word.append(_ESCAPES.get(s[i], s[i]))
            else:
                word.append(c)
            i += 1
        if quote:
            raise ValueError(f"unbalanced quote in {s!r}")
        words.append("".join(word))


def unescape_specifiers(s: str) -> str:
    return s.replace("%%", "%")


def split_exec(line: str) -> list[str]:
    """An Exec line back to argv (specifiers and $$ undone)."""
    return [unescape_specifiers(w).replace("$$", "$") for w in split_words(line, cunescape=True)]
