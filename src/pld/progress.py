"""The progress hook long operations report to (the CLI draws bars; the library shows
nothing by itself)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """``start`` a named bar (``total`` None when unknown), ``advance`` it, ``end`` it."""

    def start(self, phase: str, total: int | None) -> None:
        """Begin ``phase``."""

    def advance(self, phase: str, n: int = 1) -> None:
        """``n`` more units of ``phase`` are done."""

    def end(self, phase: str) -> None:
        """``phase`` is over."""


class NoProgress:
    """The default: report nowhere."""

    def start(self, phase: str, total: int | None) -> None:
        pass

    def advance(self, phase: str, n: int = 1) -> None:
        pass

    def end(self, phase: str) -> None:
        pass
