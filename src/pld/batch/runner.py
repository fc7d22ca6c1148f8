"""Answer a batch request file with any ``ChatModel``: what a provider's batch service (or
vLLM's ``run_batch``) does, on this machine. It is how the tests exercise the whole loop with
the embedded model, and how a user answers a batch with a local GGUF on a bigger box.

Resumable: the output file only ever grows by whole lines (each appended with one write and
fsynced); on a restart a torn last line and earlier error lines are dropped (rewritten
atomically) and those requests are answered again, while every successful line is kept.
A request that fails becomes an error line; it never stops the other requests.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pld._async import run_sync
from pld.batch.wire import (
    CHAT_URL,
    completion_body,
    dumps_line,
    error_line,
    output_line,
    request_from_body,
)
from pld.errors import DataError, PLDError
from pld.models.base import ChatModel
from pld.models.client import ChatClient, Limits
from pld.rundir import atomic_write

Progress = Callable[[int, int], None]


@dataclass
class RunReport:
    """What a local batch run did, for ``pld teacher run`` to report; ``skipped`` counts requests
    an earlier run of the same output file already answered, so a restart answers only the rest."""

    total: int = 0
    skipped: int = 0  # answered by an earlier run of the same output file
    answered: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def _read_requests(path: Path) -> list[tuple[int, str, dict[str, Any] | None, str]]:
    """(line number, custom_id, body or None, problem) per request line. A line without a
    usable custom_id makes the whole file unusable: no answer could be matched to it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the request file {path}: {e}") from e
    out: list[tuple[int, str, dict[str, Any] | None, str]] = []
    seen: set[str] = set()
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
            cid = d["custom_id"]
            if not isinstance(cid, str) or not cid:
                raise ValueError("custom_id is not a non-empty string")
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}:{i}: not a batch request line ({e}); is it damaged?") from e
        if cid in seen:
            raise DataError(f"{path}:{i}: custom_id {cid[:40]} repeats; custom_ids must be unique")
        seen.add(cid)
        problem = ""
        if d.get("method") != "POST" or d.get("url") not in (CHAT_URL, "/chat/completions"):
            problem = f"only POST {CHAT_URL} is supported, not {d.get('method')} {d.get('url')}"
        body = d.get("body")
        if not isinstance(body, dict):
            problem = problem or "body is not a JSON object"
            body = None
        out.append((i, cid, body, problem))
    if not out:
        raise DataError(f"{path} holds no requests")
    return out


def _done_ids(out_path: Path) -> set[str]:
    """custom_ids already answered with a 200 in ``out_path``; rewrite the file without its
    torn tail and error lines so the rerun appends cleanly."""
    if not out_path.exists():
        return set()
    keep: list[str] = []
    done: set[str] = set()
    for raw in out_path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            if not raw.endswith("\n"):
                raise ValueError("torn line")
            d = json.loads(raw)
            ok = d.get("error") is None and (d.get("response") or {}).get("status_code") == 200
        except (ValueError, AttributeError):
            continue
        if ok and d.get("custom_id") not in done:
            done.add(str(d["custom_id"]))
            keep.append(raw)
    atomic_write(out_path, "".join(keep))
    return done


async def arun_batch_file(
    requests_path: str | Path,
    chat_model: ChatModel,
    out_path: str | Path,
    progress: Progress | None = None,
    *,
    limits: Limits | None = None,
) -> RunReport:
    """Answer every request in ``requests_path`` with ``chat_model``, appending OpenAI Batch
    output lines to ``out_path``. ``progress(done, total)`` is called after each line.
    Retries and concurrency come from a cache-less ``ChatClient`` (``limits``)."""
    req_path, out = Path(requests_path), Path(out_path)
    requests = _read_requests(req_path)
    done = _done_ids(out)
    rep = RunReport(total=len(requests))
    todo = [r for r in requests if r[1] not in done]
    rep.skipped = rep.total - len(todo)
    client = ChatClient(chat_model, role="teacher", cache=None, limits=limits or Limits())
    sem = asyncio.Semaphore(client.limits.max_concurrency)
    lock = asyncio.Lock()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def one(line_no: int, cid: str, body: dict[str, Any] | None, problem: str) -> None:
        async with sem:
            line = await _answer(client, req_path, line_no, cid, body, problem, rep)
        async with lock:
            os.write(fd, dumps_line(line).encode("ascii"))
            os.fsync(fd)
            if progress is not None:
                progress(rep.skipped + rep.answered + len(rep.failed), rep.total)

    try:
        if progress is not None:
            progress(rep.skipped, rep.total)
        await asyncio.gather(*(one(*r) for r in todo))
    finally:
        os.close(fd)
    return rep


async def _answer(
    client: ChatClient,
    req_path: Path,
    line_no: int,
    cid: str,
    body: dict[str, Any] | None,
    problem: str,
    rep: RunReport,
) -> dict[str, Any]:
    code = "invalid_request"
    try:
        if problem or body is None:
            raise ValueError(problem)
        messages, options = request_from_body(body)
        code = "model_error"
        comp = await client.complete(messages, options)
    except (ValueError, PLDError) as e:
        msg = f"{req_path.name}:{line_no}: {e}"
        rep.failed[cid] = msg
        return error_line(cid, code, msg)
    rep.answered += 1
    return output_line(cid, completion_body(comp, model=client.identity, custom_id=cid))


def run_batch_file(
    requests_path: str | Path,
    chat_model: ChatModel,
    out_path: str | Path,
    progress: Progress | None = None,
    *,
    limits: Limits | None = None,
) -> RunReport:
    """Blocking form of :func:`arun_batch_file` (for the CLI and scripts)."""
    return run_sync(arun_batch_file(requests_path, chat_model, out_path, progress, limits=limits))
