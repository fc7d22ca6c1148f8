"""Helpers for the service tests: a run directory written by the real ``Distiller.save`` and a
classifier double whose every step a test can hold and release."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pld.errors import BackendResponseError
from pld.predictions import Prediction
from pld.rulebook import Rulebook
from pld.rules import Instruction, InstructionSet
from pld.service import Running, serve
from pld.tasks.base import Task
from tests.fakes import KEYWORDS


def synthetic_rules() -> InstructionSet:
    return InstructionSet(
        tuple(
            Instruction(
                f"R{k}",
                f"{lab} topic",
                f"If the text talks about {kw} things, the label is {lab}.",
                (lab,),
                (f"{lab}-00", f"{lab}-01"),
                ("round 1: add",),
            )
            for k, (lab, kw) in enumerate(KEYWORDS.items(), 1)
        ),
        version=2,
    )


def save_run_dir(path: Path, task: Task, rules: InstructionSet) -> Path:
    """The artifacts ``pld predict`` reads, written by the Distiller itself (no fit: the rules
    are given, so no teacher is needed)."""
    return Rulebook.build(task, rules).save(path)


def prediction(label: str | None, raw: str | None = None) -> Prediction:
    return Prediction(
        id="0",
        label=label,
        raw=raw if raw is not None else (label or "maybe"),
        confidence=0.9 if label else None,
        latency_s=0.0,
        prompt_tokens=10,
        completion_tokens=1,
        cached_prompt_tokens=8,
        cached=False,
        scores={label: 0.9} if label else None,
    )


class FakeClassifier:
    """Labels by keyword ("apple" fruit, "iron" metal, else an invalid output). ``gate`` (or
    ``thread_gate``) holds every call until set; ``failures`` are raised by the next calls."""

    def __init__(
        self, *, gate: asyncio.Event | None = None, thread_gate: threading.Event | None = None
    ) -> None:
        self.gate = gate
        self.thread_gate = thread_gate  # for a server running in another thread
        self.entered_thread = threading.Event()
        self.failures: list[Exception] = []
        self.calls: list[list[dict[str, str]]] = []
        self.entered = asyncio.Event()
        self.warmed = 0

    async def warmup(self) -> None:
        self.warmed += 1

    async def classify(self, inputs: Sequence[Mapping[str, str]]) -> list[Prediction]:
        self.calls.append([dict(x) for x in inputs])
        self.entered.set()
        self.entered_thread.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.thread_gate is not None:
            await asyncio.to_thread(self.thread_gate.wait)
        if self.failures:
            raise self.failures.pop(0)
        out = []
        for x in inputs:
            t = x["text"]
            out.append(prediction("fruit" if "apple" in t else "metal" if "iron" in t else None))
        return out

    def info(self) -> dict[str, Any]:
        return {
            "rulebook_version": "v2-test",
            "labels": ["fruit", "metal", "animal"],
            "input_fields": ["text"],
            "rules": [i.to_json() for i in synthetic_rules().instructions],
        }


def engine_error() -> BackendResponseError:
    return BackendResponseError("llama.cpp: slot crashed", status=500)


SUPPORT_RULES = {
    "billing": "If the ticket is about a charge, refund, invoice, price or payment method, "
    "the label is billing.",
    "technical": "If something in the product does not work (an error, crash, bug or "
    "slowness), the label is technical.",
    "account": "If the ticket is about logging in, passwords, the profile or access rights, "
    "the label is account.",
    "shipping": "If the ticket is about a delivery, tracking, a lost or damaged parcel or a "
    "return, the label is shipping.",
}


def support_rules() -> InstructionSet:
    """Hand-written rules for the built-in support-ticket task (no teacher needed)."""
    return InstructionSet(
        tuple(
            Instruction(f"R{k}", lab, text, (lab,), (f"{lab[:4]}-01",), ())
            for k, (lab, text) in enumerate(SUPPORT_RULES.items(), 1)
        ),
        version=1,
    )


def wait_for(cond: Callable[[], bool]) -> None:
    """Poll until ``cond`` holds; the deadline only stops a broken test from hanging."""
    deadline = time.monotonic() + 60
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        time.sleep(0.01)


def start(app: object) -> tuple[Running, threading.Thread]:
    ready: queue.Queue[Running] = queue.Queue()
    th = threading.Thread(
        target=serve,
        args=(app, "127.0.0.1", 0),
        kwargs={"on_ready": ready.put, "log_level": "warning"},
        daemon=True,
    )
    th.start()
    return ready.get(timeout=60), th
