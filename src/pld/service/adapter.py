"""The service's classifier: a run directory's ``Rulebook`` answered by a student client.

The one module that knows how a run directory becomes predictions. It loads the run with
``Rulebook.load`` — the reader ``pld predict`` uses — and answers every batch with
``Rulebook.apredict``, the same call ``pld predict`` makes, so the exact prompt bytes and the
rulebook's decision settings (calibration, and whatever the rulebook learns to decide later)
are shared by construction, not copied. One difference that does not change a label: the
calibration prior (three content-free calls, ``Rulebook.aprior``) is computed once at warm-up
instead of once per batch. Those calls also put the system prompt into the engine's prefix
cache before the first request arrives.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pld import __version__
from pld.cache import Cache
from pld.models.client import ChatClient, Limits
from pld.models.registry import parse_spec, resolve_chat
from pld.phases.classify import CONTENT_FREE, CitePrior
from pld.predictions import Item, Prediction
from pld.rulebook import Rulebook
from pld.tasks.base import template_fields


def rulebook_version(version: int, system_prompt: str, user_template: str) -> str:
    """The instruction-set version plus a digest of the exact bytes the student sees, so two
    runs that both reached "version 3" are still told apart."""
    digest = hashlib.sha256(f"{system_prompt}\0{user_template}".encode()).hexdigest()
    return f"v{version}-{digest[:12]}"


def student_client(
    spec: str, *, concurrency: int | None = None, cache: Cache | None = None
) -> ChatClient:
    """The student as the service uses it: one ChatClient whose concurrency matches the
    engine's slots (``local:smollm2?slots=4`` gives 4), so batches fill every slot and never
    queue inside the engine."""
    model = resolve_chat(spec)
    if concurrency is None:
        engine = getattr(model, "engine", None)
        concurrency = int(getattr(getattr(engine, "cfg", None), "n_parallel", 4))
    return ChatClient(
        model, role="student", cache=cache, limits=Limits(max_concurrency=max(1, concurrency))
    )


class RunDirClassifier:
    """Implements ``pld.service.base.Classifier`` over a finished ``pld distill`` run (or a
    saved rulebook)."""

    def __init__(
        self, run_dir: str | Path | Rulebook, student: ChatClient, *, cite: bool = False
    ) -> None:
        self.rulebook = run_dir if isinstance(run_dir, Rulebook) else Rulebook.load(run_dir)
        self.student = student
        self.cite = cite
        self.fields = list(dict.fromkeys(template_fields(self.rulebook.user_template)))
        self.version = rulebook_version(
            self.rulebook.instructions.version,
            self.rulebook.system_prompt,
            self.rulebook.user_template,
        )
        self._prior: Mapping[str, float] | None = None
        self._cite_prior: CitePrior | None = None
        self._warm = False
        self._lock = asyncio.Lock()

    @classmethod
    def from_spec(
        cls,
        run_dir: str | Path,
        spec: str,
        *,
        concurrency: int | None = None,
        cache: Cache | None = None,
        cite: bool = False,
    ) -> RunDirClassifier:
        """Check the spec and the run directory (cheap) before loading the model (slow), so a
        typo fails in a moment, not after the engine has loaded. ``cite``: every answer
        carries the rule the student cites (one more constrained call per item)."""
        parse_spec(spec)
        rulebook = Rulebook.load(run_dir)
        client = student_client(spec, concurrency=concurrency, cache=cache)
        return cls(rulebook, client, cite=cite)

    async def warmup(self) -> None:
        async with self._lock:
            if self._warm:
                return
            self._prior = await self.rulebook.aprior(self.student)
            if self.cite:  # measured once, like the label prior, not once per micro-batch
                self._cite_prior = await self.rulebook.acite_prior(self.student)
            if not self.rulebook.calibrate:  # still one call, so the prompt is in the cache
                await self._predict([("warmup", dict.fromkeys(self.fields, CONTENT_FREE[0]), None)])
            self._warm = True

    async def _predict(self, items: list[Item]) -> list[Prediction]:
        return await self.rulebook.apredict(
            items, self.student, prior=self._prior, cite=self.cite, cite_prior=self._cite_prior
        )

    async def classify(self, inputs: Sequence[Mapping[str, str]]) -> list[Prediction]:
        if not self._warm:
            await self.warmup()
        return await self._predict([(str(k), x, None) for k, x in enumerate(inputs)])

    def info(self) -> dict[str, Any]:
        rb = self.rulebook
        return {
            "rulebook_version": self.version,
            "task": rb.task.name,
            "description": rb.task.description,
            "labels": list(rb.labels),
            "label_descriptions": dict(rb.task.label_descriptions),
            "input_fields": self.fields,
            "user_template": rb.user_template,
            "system_prompt": rb.system_prompt,
            "calibrated": rb.calibrate,
            "cites_rules": self.cite,
            "student": self.student.identity,
            "pld_version": __version__,
            "rules": [i.to_json() for i in rb.instructions.instructions],
        }
