"""Teacher batch mode: the teacher's calls go out as an OpenAI Batch API file and come back as
a results file, instead of live calls (issue #12). Half price at the big providers, a user's
own GPU box through vLLM's ``run_batch``, or ``pld teacher run`` with any model spec.

Design
------
The cache is the only channel. A request's ``custom_id`` is ``pld-<cache key>``; importing a
result stores the reply under that key in the same Completion shape a live call stores
(``openai_compat.completion_from_body`` parses both), so the resumed run *hits the cache* and
cannot tell a batch reply from a live one. That is what makes a batch run produce the same
rulebook as a live run with the same model: the same code asks the same questions in the
same order and gets the same answers.

How it plugs into a run (wired in a later change; see the report on issue #12):

1. ``BatchCollector.attach(teacher_client, DIR, run_id=...)`` sets ``ChatClient.on_miss``.
   A cache hit is served as always. A miss records the request (once per key) and raises
   ``TeacherDeferred`` instead of calling.
2. Phases already run their items through ``gather_all`` (``return_exceptions``): every item
   runs until it has either finished from the cache or deferred, so the phase's *whole* set of
   missing requests is recorded before the first ``TeacherDeferred`` propagates (a real error
   outranks a deferral). Multi-step items (re-asks, resolve rounds) simply defer at their
   first missing step; the next batch holds the next step.
3. At the phase boundary the run catches ``TeacherDeferred``, calls
   ``collector.flush(phase)`` → ``DIR/requests-<phase>-<n>.jsonl`` + manifest, saves
   run.json, and raises ``TeacherBatchPending(batch_file.next_steps(run_dir))``; the CLI
   prints it and exits with ``EXIT_BATCH_PENDING`` = 75 (EX_TEMPFAIL, "try again later":
   not an error, and distinct from 1 = failure and 2 = usage).
4. ``pld teacher import RUN_DIR FILE...`` → ``import_results``; ``pld distill --resume`` then
   replays the phase from the cache and continues to the next phase or the next batch.
5. A reply that fails pld's schema is handled by the phase exactly as live: its re-ask is a
   different request (new messages, ``sample=attempt``), hence a new cache miss, hence a line
   in the next batch; the phase's ``max_attempts`` bounds it as in live mode. A request the
   provider failed stays a miss and goes out again, at most ``max_exports`` times (then
   ``BackendResponseError``, like a live call that ran out of retries).
6. Usage: a cache hit costs nothing live, so imported replies' usage (from the results'
   ``usage`` fields) is logged in ``DIR/imports.jsonl``; ``BatchDir.usage()`` sums it for
   run.json (``usage_teacher_batch``).
"""

from __future__ import annotations

from pld.batch.collect import BatchCollector, BatchDir, BatchFile, Manifest
from pld.batch.importer import ImportReport, import_results
from pld.batch.runner import RunReport, arun_batch_file, run_batch_file
from pld.batch.wire import (
    BatchTarget,
    custom_id_for,
    input_line,
    key_of,
    request_from_body,
)
from pld.errors import TeacherBatchPending

EXIT_BATCH_PENDING = TeacherBatchPending.exit_code

__all__ = [
    "EXIT_BATCH_PENDING",
    "BatchCollector",
    "BatchDir",
    "BatchFile",
    "BatchTarget",
    "ImportReport",
    "Manifest",
    "RunReport",
    "arun_batch_file",
    "custom_id_for",
    "import_results",
    "input_line",
    "key_of",
    "request_from_body",
    "run_batch_file",
]
