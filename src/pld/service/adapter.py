"""Today's classifier for the service: a run directory's rulebook answered by a student client.

The one module that knows how a run directory becomes predictions, so moving the service to
``Rulebook.load(run_dir)`` / ``rulebook.apredict(items, student)`` changes this file only. It
loads the run exactly as ``pld predict`` does (``Distiller.load``: same task, labels, saved
``system_prompt.txt``/``user_template.txt`` byte for byte, same calibration setting) and makes
the same calls (``phases.classify``), with one difference that does not change a label: the
calibration prior — three content-free calls — is computed once at warm-up instead of once per
batch. Those calls also put the system prompt into the engine's prefix cache before the first
request arrives.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pld import __version__
from pld._async import gather_all
from pld.cache import Cache
from pld.distiller import Distiller
from pld.models.client import ChatClient, Limits
from pld.models.registry import parse_spec, resolve_chat
from pld.phases.classify import CONTENT_FREE, classify_one, label_prior
from pld.predictions import Prediction
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
    """Implements ``pld.service.base.Classifier`` over a finished ``pld distill`` run."""

    def __init__(self, run_dir: str | Path, student: ChatClient) -> None:
        self._d = Distiller.load(run_dir, student=student.model)
        self.student = student
        self.labels = tuple(self._d.task_.labels)
        self.system_prompt: str = self._d.system_prompt_
        self.user_template: str = self._d.user_template_
        # the rulebook's setting: its fitted decision when it has one, else the run's config
        self.calibrate = self._d.rulebook_.calibrate
        self.fields = list(dict.fromkeys(template_fields(self.user_template)))
        self.version = rulebook_version(
            self._d.instructions_.version, self.system_prompt, self.user_template
        )
        self._prior: Mapping[str, float] | None = None
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
    ) -> RunDirClassifier:
        """Check the spec and the run directory (cheap) before loading the model (slow), so a
        typo fails in a moment, not after the engine has loaded."""
        parse_spec(spec)
        Distiller.load(run_dir, student=spec)
        return cls(run_dir, student_client(spec, concurrency=concurrency, cache=cache))

    async def warmup(self) -> None:
        async with self._lock:
            if self._warm:
                return
            if self.calibrate:
                self._prior = await label_prior(
                    system_prompt=self.system_prompt,
                    user_template=self.user_template,
                    labels=self.labels,
                    student=self.student,
                )
            else:  # still one call, so the system prompt is in the prefix cache
                await self._one("warmup", dict.fromkeys(self.fields, CONTENT_FREE[0]))
            self._warm = True

    async def _one(self, item_id: str, fields: Mapping[str, str]) -> Prediction:
        return await classify_one(
            item_id,
            fields,
            system_prompt=self.system_prompt,
            user_template=self.user_template,
            labels=self.labels,
            student=self.student,
            prior=self._prior,
        )

    async def classify(self, inputs: list[Mapping[str, str]]) -> list[Prediction]:
        if not self._warm:
            await self.warmup()
        return await gather_all(self._one(str(k), x) for k, x in enumerate(inputs))

    def info(self) -> dict[str, Any]:
        t = self._d.task_
        return {
            "rulebook_version": self.version,
            "task": t.name,
            "description": t.description,
            "labels": list(self.labels),
            "label_descriptions": dict(t.label_descriptions),
            "input_fields": self.fields,
            "user_template": self.user_template,
            "system_prompt": self.system_prompt,
            "calibrated": self.calibrate,
            "student": self.student.identity,
            "pld_version": __version__,
            "rules": [i.to_json() for i in self._d.instructions_.instructions],
        }
