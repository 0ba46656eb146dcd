"""The diagnostic model shared by the static linter and the runtime mode."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple


class Applicability(str, enum.Enum):
    """How safe a fix is to apply without a human looking at it (Ruff's terms)."""

    SAFE = "safe"  # keeps the program's meaning; applied by `--fix`
    UNSAFE = "unsafe"  # may change behaviour; needs `--unsafe-fixes`


@dataclass(frozen=True, order=True)
class Location:
    """1-based row, 1-based column (in characters)."""

    row: int
    column: int

    def to_json(self) -> Dict[str, int]:
        return {"row": self.row, "column": self.column}


@dataclass(frozen=True)
class Edit:
    """Replace the text between two locations (end exclusive) with `content`.

    `content` uses "\\n" for new lines; the fixer turns it into the file's own line ending.
    """

    content: str
    location: Location
    end_location: Location

    def to_json(self) -> Dict[str, Any]:
        return {
            "content": self.content,
            "location": self.location.to_json(),
            "end_location": self.end_location.to_json(),
        }


@dataclass(frozen=True)
class Fix:
    applicability: Applicability
    message: str
    edits: Tuple[Edit, ...]

    def to_json(self) -> Dict[str, Any]:
        return {
            "applicability": self.applicability.value,
            "message": self.message,
            "edits": [e.to_json() for e in self.edits],
        }


@dataclass
class Diagnostic:
    code: str
    name: str
    message: str
    filename: str
    location: Location
    end_location: Location
    severity: str = "error"  # "error" | "warning"
    fix: Optional[Fix] = None
    cell: Optional[int] = None
    # Runtime findings only: step, epoch, evidence, confirms.
    runtime: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        from trainlint.codes import rule_url

        return rule_url(self.code)

    def sort_key(self):
        return (self.filename, self.cell or 0, self.location, self.code)

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "code": self.code,
            "name": self.name,
            "message": self.message,
            "severity": self.severity,
            "filename": self.filename,
            "cell": self.cell,
            "location": self.location.to_json(),
            "end_location": self.end_location.to_json(),
            "fix": self.fix.to_json() if self.fix else None,
            "url": self.url,
        }
        if self.runtime is not None:
            out["step"] = self.runtime.get("step")
            out["epoch"] = self.runtime.get("epoch")
            out["evidence"] = self.runtime.get("evidence", {})
            out["confirms"] = self.runtime.get("confirms")
        return out

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Diagnostic":
        """Inverse of to_json (used by the cache)."""
        fix = None
        if data.get("fix"):
            f = data["fix"]
            fix = Fix(
                Applicability(f["applicability"]),
                f["message"],
                tuple(
                    Edit(
                        e["content"],
                        Location(**e["location"]),
                        Location(**e["end_location"]),
                    )
                    for e in f["edits"]
                ),
            )
        runtime = None
        if "step" in data:
            runtime = {k: data.get(k) for k in ("step", "epoch", "evidence", "confirms")}
        return cls(
            code=data["code"],
            name=data["name"],
            message=data["message"],
            filename=data["filename"],
            location=Location(**data["location"]),
            end_location=Location(**data["end_location"]),
            severity=data.get("severity", "error"),
            fix=fix,
            cell=data.get("cell"),
            runtime=runtime,
        )


_BREAK = re.compile(r"(?P<before>[(\[{,]?)[ \t]*(?:#[^\r\n]*)?(?:\\?\r?\n|\r)\s*(?P<after>[)\]}]?)")
_QUOTED = re.compile(r"`([^`]+)`")
MAX_QUOTE = 60  # longer quoted code is shortened with `...`


def _join_break(m: "re.Match[str]") -> str:
    before, after = m.group("before"), m.group("after")
    if after:  # `f(\n    a,\n)` -> `f(a)`: no space before a closing bracket, no trailing comma
        return ("" if before == "," else before) + after
    if before in ("(", "[", "{"):
        return before
    return before + " "


def one_line(message: str) -> str:
    """A finding's message on one line (`path:row:col: CODE message` is one line per finding): line
    breaks of quoted multi-line code collapse to one space (none inside brackets), and quoted code
    longer than MAX_QUOTE characters is shortened with `...`."""
    if "\n" in message or "\r" in message:
        message = _BREAK.sub(_join_break, message)

    def shorten(m: "re.Match[str]") -> str:
        code = m.group(1)
        if len(code) <= MAX_QUOTE:
            return m.group(0)
        return "`" + code[: MAX_QUOTE - 3].rstrip() + "...`"

    return _QUOTED.sub(shorten, message)
