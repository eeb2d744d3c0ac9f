"""What a scenario hands back: a table, its targets (pass/fail) and notes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import Pinning
from .profile import Summary


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    goal: str
    passed: bool

    def mark(self) -> str:
        return "PASS" if self.passed else "FAIL"


@dataclass
class Section:
    key: str
    title: str
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profiles: list[Summary] = field(default_factory=list)
    extra_tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)


@dataclass
class Context:
    quick: bool
    pin: Pinning
    workdir: Path
    profile: bool
    shared: dict[str, Any] = field(default_factory=dict)  # figures one scenario lends another


def ms(value: float) -> str:
    return f"{value:.2f} ms"


def rate(value: float) -> str:
    return f"{value:,.0f}/s"


def ratio(value: float) -> str:
    return f"{value:.2f}x"
