"""Problems found in a deployment, and the exception that carries them.

Every problem names where it comes from (file and line when known), a stable
code, the key involved and what is wrong.  The library collects problems and
raises once; only the CLI prints and exits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Location(NamedTuple):
    """Where a value came from.  A tuple: half a million are made for a big deployment."""

    path: str
    line: int = 0  # 1-based; 0 when unknown
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}"
        return self.path


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    message: str
    location: Location | None = None
    key: str = ""
    hint: str = ""
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        key = f"{self.key}: " if self.key else ""
        text = f"{where}{self.severity}[{self.code}]: {key}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": str(self.severity),
            "path": self.location.path if self.location else None,
            "line": self.location.line if self.location else None,
            "key": self.key or None,
            "message": self.message,
            "hint": self.hint or None,
        }


class OsunitsError(Exception):
    """Base for errors the CLI reports without a traceback."""

    exit_code = 2


class DeploymentError(OsunitsError):
    """The deployment could not be read or is invalid."""

    def __init__(self, problems: list[Problem]) -> None:
        # One bad value in `defaults` is found again in every service it reaches: once.
        self.problems = sorted(dict.fromkeys(problems), key=_problem_order)
        super().__init__("\n".join(str(p) for p in self.problems))


class OutputError(OsunitsError):
    """Writing the generated files would lose or clobber something."""


def _problem_order(p: Problem) -> tuple[Location, str, str]:
    return (p.location or Location(""), p.code, p.message)


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name most like ``name``, for a "did you mean" hint; None if none is."""
    import difflib  # only on errors: not worth its import time on every run

    close = difflib.get_close_matches(name, list(known), n=1)
    return close[0] if close else None


def unknown_name(what: str, name: str, known: list[str], loc: Location | None,
                 key: str, *, code: str = "E120", where: str = "",
                 severity: Severity = Severity.ERROR) -> Problem:
    """E120 (or ``code``): a name that is not defined, with the closest known one as a hint."""
    close = closest(name, known)
    hint = (f"did you mean {close!r}?" if close
            else f"known: {', '.join(sorted(known))}" if 0 < len(known) <= 12 else "")
    return Problem(code, f"unknown {what} {name!r}" + (f" {where}" if where else ""), loc,
                   key, hint, severity)
