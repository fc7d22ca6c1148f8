"""Batch mode's import side: validate a results file completely, then file every reply in the
cache under the key its custom_id names, in one transaction.

Rules (each bad line is reported as ``FILE:LINE: problem``):
  * a line that is not JSON, has no pld custom_id, names a request this run never exported
    (results for another run), has neither a 200 response nor an error, or whose body is not a
    chat completion with a first choice — is a problem;
  * a provider-side failure (``error`` set, or a non-200 status) is a problem too: that request
    gets no reply now and goes out again in the next batch;
  * duplicate lines for one custom_id are tolerated when they carry the same reply (providers
    and concatenated downloads repeat lines); different replies are a conflict;
  * a request of an exported batch the file covers, with no line and no cached reply, is
    missing (usually: the provider's error file was not given);
  * a reply differing from one already in the cache is a conflict: the run may have used the
    cached one, so it stays.
Any problem → nothing is imported and ``BatchImportError`` lists them all, unless
``partial=True``: then the good lines are imported and the bad ones stay pending (their
errors are logged, so the next export knows how often a request already failed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pld.batch.collect import IMPORT_LOG, BatchDir, Manifest, sha256_file
from pld.batch.wire import custom_id_for, key_of
from pld.cache import Cache
from pld.errors import BackendResponseError, BatchImportError
from pld.models.base import Completion, GenOptions, Usage
from pld.models.client import Price
from pld.models.openai_compat import completion_from_body
from pld.rundir import atomic_write

_MAX_LISTED = 50


@dataclass(frozen=True)
class _Known:
    manifest: Manifest
    logprobs: bool


@dataclass(frozen=True)
class _Outcome:
    where: str
    key: str
    completion: Completion | None  # None: the provider reports a failure
    error: str = ""

    def fingerprint(self) -> tuple[str, ...]:
        c = self.completion
        return ("ok", c.text, c.finish_reason) if c is not None else ("failed", self.error)


@dataclass
class ImportReport:
    """What an import did, line by line, so the CLI can report it and ``imports.jsonl`` log it."""

    imported: int = 0
    already: int = 0
    duplicates: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    pending: int = 0

    def summary(self) -> str:
        """The one line the CLI prints after an import."""
        return (
            f"imported {self.imported} teacher replies ({self.already} already in the cache, "
            f"{self.duplicates} identical duplicate lines ignored); {len(self.problems)} "
            f"problem lines skipped; {self.pending} requests of this run still wait for a "
            f"reply; usage {self.usage.prompt_tokens} prompt + {self.usage.completion_tokens} "
            f"completion tokens, ${self.cost_usd:.4f}"
        )


def _known_requests(
    bdir: BatchDir, run_id: str | None, model_identity: str | None
) -> dict[str, _Known]:
    """Every request this run exported, from the manifests; the request files must be the
    bytes that were exported (else we cannot know what a reply answers)."""
    known: dict[str, _Known] = {}
    manifests = bdir.manifests()
    if not manifests:
        raise BatchImportError(
            f"{bdir.path} holds no exported requests (no requests-*.manifest.json); "
            "import into the run that wrote the request file"
        )
    for m in manifests:
        if run_id is not None and m.run_id != run_id:
            raise BatchImportError(f"{m.path} belongs to run {m.run_id}, not this run {run_id}")
        if model_identity is not None and m.model_identity != model_identity:
            raise BatchImportError(
                f"{m.path} was exported for teacher {m.model_identity}, but this run's "
                f"teacher is {model_identity}"
            )
        if not m.requests_file.exists() or sha256_file(m.requests_file) != m.sha256:
            raise BatchImportError(
                f"{m.requests_file} is missing or changed since it was exported; restore it "
                "(its replies cannot be matched otherwise)"
            )
        for raw in m.requests_file.read_text(encoding="utf-8").splitlines():
            line = json.loads(raw)
            key = key_of(str(line["custom_id"]))
            if key is not None:
                known[key] = _Known(m, bool(line["body"].get("logprobs", False)))
    return known


def _failure(d: Mapping[str, Any]) -> str | None:
    """The provider's reason when the line is a failed request; None when it is a 200."""
    err = d.get("error")
    if err is not None:
        if not isinstance(err, Mapping):
            return f"error: {err!r}"
        return f"{err.get('code') or 'error'}: {err.get('message') or '(no message)'}"
    resp = d.get("response")
    if not isinstance(resp, Mapping):
        raise ValueError("neither a response object nor an error")
    status = resp.get("status_code")
    if not isinstance(status, int):
        raise ValueError(f"response.status_code is {status!r}, not an integer")
    if status != 200:
        body = resp.get("body")
        msg = ""
        if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
            msg = str(body["error"].get("message") or "")
        return f"HTTP {status}: {msg or '(no message)'}"
    return None


class _Bad(ValueError):
    """A problem line; ``key`` when the line at least names a request of this run."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _parse_line(raw: str, where: str, known: Mapping[str, _Known]) -> _Outcome:
    """One results line → an outcome; raises ``_Bad`` with the problem."""
    try:
        d = json.loads(raw)
    except ValueError as e:
        raise _Bad(f"not valid JSON ({e}); the file is damaged or truncated") from e
    if not isinstance(d, dict):
        raise _Bad("not a JSON object")
    cid = d.get("custom_id")
    if not isinstance(cid, str):
        raise _Bad("has no custom_id")
    key = key_of(cid)
    if key is None:
        raise _Bad(f"custom_id {cid[:80]!r} is not a pld request id (pld-<64 hex>)")
    if key not in known:
        raise _Bad(
            f"custom_id {cid[:20]}… is not a request of this run: the file holds results "
            "for another run (or another batch folder)"
        )
    try:
        reason = _failure(d)
    except ValueError as e:
        raise _Bad(str(e), key) from e
    if reason is not None:
        return _Outcome(where, key, None, reason)
    body = d["response"].get("body")
    if not isinstance(body, Mapping):
        raise _Bad("response.body is not a JSON object", key)
    k = known[key]
    try:
        comp = completion_from_body(
            body,
            options=GenOptions(logprobs=k.logprobs),
            identity=k.manifest.model_identity,
            latency_s=0.0,
        )
    except BackendResponseError as e:
        raise _Bad(f"malformed body: {e}", key) from e
    provenance = {
        "file": k.manifest.requests_file.name,
        "result_id": str(d.get("id", "")),
        "served_model": str(body.get("model", "")),
    }
    return _Outcome(where, key, _with_extra(comp, {"batch": provenance}))


def _with_extra(comp: Completion, extra: dict[str, Any]) -> Completion:
    return Completion.from_json({**comp.to_json(), "extra": {**comp.extra, **extra}})


def _read_results(
    files: Sequence[Path], known: Mapping[str, _Known], rep: ImportReport
) -> tuple[dict[str, _Outcome], set[str]]:
    """Parse every line of every file; keep one outcome per key; record problems. Also
    returns every key some line named (bad or not): those requests are not *missing*."""
    chosen: dict[str, _Outcome] = {}
    named: set[str] = set()
    conflicted: set[str] = set()
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            rep.problems.append(f"{path}: cannot read ({e})")
            continue
        if not any(x.strip() for x in lines):
            rep.problems.append(f"{path}: holds no result lines")
        for i, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            where = f"{path}:{i}"
            try:
                out = _parse_line(raw, where, known)
            except _Bad as e:
                rep.problems.append(f"{where}: {e}")
                if e.key is not None:
                    named.add(e.key)
                continue
            named.add(out.key)
            prev = chosen.get(out.key)
            if prev is None:
                chosen[out.key] = out
            elif prev.fingerprint() == out.fingerprint():
                rep.duplicates += 1
            else:
                rep.problems.append(
                    f"{where}: conflicts with {prev.where} (same custom_id, different reply)"
                )
                conflicted.add(out.key)
    for k in conflicted:
        chosen.pop(k, None)
    return chosen, named


def _check_against_cache(
    chosen: dict[str, _Outcome], cache: Cache, rep: ImportReport
) -> list[tuple[str, Completion]]:
    new: list[tuple[str, Completion]] = []
    for key, out in chosen.items():
        hit = cache.get_completion(key)
        if out.completion is None:
            if hit is None:
                rep.failed[custom_id_for(key)] = out.error
                rep.problems.append(f"{out.where}: the provider reports a failure: {out.error}")
            continue
        if hit is None:
            new.append((key, out.completion))
        elif (hit.get("text"), hit.get("finish_reason")) == (
            out.completion.text,
            out.completion.finish_reason,
        ):
            rep.already += 1
        else:
            rep.problems.append(
                f"{out.where}: the cache already holds a different reply for this request "
                "(imported earlier or answered live); the run may have used it, so it stays"
            )
    return new


def _missing(
    files: Sequence[Path], known: Mapping[str, _Known], named: set[str], cache: Cache
) -> list[str]:
    """Requests of every exported batch the files touch that got no line at all."""
    touched = {known[k].manifest.path: known[k].manifest for k in named}
    out = []
    for m in touched.values():
        gone = [k for k in m.keys if k not in named and cache.get_completion(k) is None]
        if gone:
            out.append(
                f"{files[0]}: no result line for {len(gone)} of the {len(m.keys)} requests in "
                f"{m.requests_file.name} (first: {custom_id_for(gone[0])}); give the "
                "provider's output AND error files, or pass --partial to import what is here"
            )
    return out


def import_results(
    batch_dir: str | Path,
    results: Sequence[str | Path],
    cache: Cache,
    *,
    run_id: str | None = None,
    model_identity: str | None = None,
    price: Price | None = None,
    partial: bool = False,
) -> ImportReport:
    """Validate ``results`` (OpenAI Batch output and/or error JSONL files) against the
    requests exported to ``batch_dir``, then store every reply in ``cache`` exactly where a
    live call would have stored it. Raises ``BatchImportError`` listing every problem and
    imports nothing, unless ``partial``."""
    bdir = BatchDir(batch_dir)
    known = _known_requests(bdir, run_id, model_identity)
    files = [Path(p) for p in results]
    if not files:
        raise BatchImportError("give at least one results file")
    rep = ImportReport()
    chosen, named = _read_results(files, known, rep)
    new = _check_against_cache(chosen, cache, rep)
    rep.problems.extend(_missing(files, known, named, cache))
    if rep.problems and not partial:
        shown = rep.problems[:_MAX_LISTED]
        more = len(rep.problems) - len(shown)
        raise BatchImportError(
            f"{len(rep.problems)} problem(s) in the results; nothing was imported "
            "(fix the file, or pass --partial to import the good lines):\n"
            + "\n".join(shown)
            + (f"\n… and {more} more" if more else ""),
            problems=tuple(rep.problems),
        )
    cache.put_completions([(k, c.to_json()) for k, c in new])
    rep.imported = len(new)
    for _, c in new:
        rep.usage = rep.usage + c.usage
    rep.cost_usd = (price or Price()).cost(rep.usage)
    rep.pending = sum(1 for k in known if cache.get_completion(k) is None)
    batches = sorted({known[k].manifest.requests_file.name for k in named})
    _log(bdir, files, batches, rep)
    return rep


def _log(bdir: BatchDir, files: Sequence[Path], batches: list[str], rep: ImportReport) -> None:
    rec = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": [str(p) for p in files],
        "batches": batches,
        "imported": rep.imported,
        "already": rep.already,
        "problems": len(rep.problems),
        "errors": rep.failed,
        "usage": {
            "prompt_tokens": rep.usage.prompt_tokens,
            "completion_tokens": rep.usage.completion_tokens,
            "cached_prompt_tokens": rep.usage.cached_prompt_tokens,
        },
        "cost_usd": rep.cost_usd,
    }
    old = [json.dumps(r, ensure_ascii=False) + "\n" for r in bdir.imports()]
    atomic_write(bdir.path / IMPORT_LOG, "".join(old) + json.dumps(rec, ensure_ascii=False) + "\n")
