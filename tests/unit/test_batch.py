"""Teacher batch mode with fakes: the wire format, export, the local runner, and import
validation (every bad-file case reported per line, nothing half-imported)."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pld._async import gather_all
from pld.batch import (
    EXIT_BATCH_PENDING,
    BatchCollector,
    BatchDir,
    BatchTarget,
    import_results,
    key_of,
    request_from_body,
    run_batch_file,
)
from pld.batch.wire import completion_body, error_line, output_line
from pld.cache import Cache
from pld.errors import (
    BackendResponseError,
    BatchImportError,
    ConfigError,
    DataError,
    RunDirError,
    TeacherDeferred,
)
from pld.models.base import Completion, GenOptions, Message, Usage
from pld.models.client import ChatClient, Limits, Price
from pld.models.fake import ScriptedChatModel
from pld.models.openai_compat import OpenAIChatModel, request_body

SCHEMA = {"type": "object", "properties": {"rule": {"type": "string"}}, "required": ["rule"]}
OPTS = GenOptions(max_tokens=64, temperature=0.0, seed=0, json_schema=SCHEMA)


def msgs(i: int) -> list[Message]:
    return [Message("system", "You write rules."), Message("user", f"example number {i}")]


def answer(messages: Sequence[Message], options: GenOptions) -> str:
    return json.dumps({"rule": "rule for " + messages[-1].content})


def teacher(cache: Cache | None, name: str = "t") -> tuple[ScriptedChatModel, ChatClient]:
    model = ScriptedChatModel(answer, name=name)
    return model, ChatClient(model, role="teacher", cache=cache)


async def defer_all(client: ChatClient, items: Sequence[int]) -> None:
    with pytest.raises(TeacherDeferred):
        await gather_all(client.complete(msgs(i), OPTS) for i in items)


def export(tmp_path: Path, items: Sequence[int] = (0, 1, 2), run_id: str = "run-A") -> Any:
    cache = Cache(tmp_path / "cache.sqlite")
    model, client = teacher(cache)
    coll = BatchCollector.attach(client, tmp_path / "batch", run_id=run_id)
    asyncio.run(defer_all(client, items))
    bf = coll.flush("extract")
    return cache, model, client, bf


def results_for(bf: Any, tmp_path: Path, name: str = "results.jsonl") -> Path:
    out = tmp_path / name
    rep = run_batch_file(bf.path, ScriptedChatModel(answer, name="t"), out)
    assert rep.answered == bf.n_requests
    return out


def lines(p: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def write_lines(p: Path, rows: Sequence[Any]) -> Path:
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


# -- wire format ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opts",
    [
        OPTS,
        GenOptions(max_tokens=9, temperature=0.7, seed=None, stop=("\n", "END")),
        GenOptions(logprobs=True, seed=3),
    ],
)
def test_body_inverts_to_the_same_request(opts: GenOptions) -> None:
    body = request_body("m", msgs(1), opts)
    assert request_from_body(body) == (msgs(1), opts)


def test_vllm_body_carries_guided_choice_and_runner_refuses_what_it_cannot_honour() -> None:
    opts = GenOptions(choices=("a", "b"))
    assert request_from_body(request_body("m", msgs(1), opts, "vllm"))[1] == opts
    with pytest.raises(ValueError, match="grammar cannot be honoured"):
        request_from_body(request_body("m", msgs(1), opts, "llamacpp"))
    with pytest.raises(ValueError, match="top_p"):
        request_from_body({**request_body("m", msgs(1), OPTS), "top_p": 0.5})


class _Stub(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        n = int(self.headers["Content-Length"])
        _Stub.bodies.append(json.loads(self.rfile.read(n)))
        comp = Completion('{"rule": "x"}', "stop", Usage(7, 3, 2), 0.0)
        out = json.dumps(completion_body(comp, model="served", custom_id="c")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a: Any) -> None:
        pass


@pytest.fixture()
def stub_url() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("dialect", ["openai", "llamacpp", "vllm"])
def test_exported_body_is_byte_for_byte_what_the_live_backend_sends(
    stub_url: str, dialect: str
) -> None:
    _Stub.bodies.clear()
    model = OpenAIChatModel("gpt-x", base_url=stub_url, dialect=dialect)
    comp = asyncio.run(model.complete(msgs(1), OPTS))
    assert (comp.text, comp.usage) == ('{"rule": "x"}', Usage(7, 3, 2))
    target = BatchTarget.for_model(model)
    assert target == BatchTarget("gpt-x", dialect)
    assert _Stub.bodies == [request_body(target.model, msgs(1), OPTS, target.dialect)]


# -- export ---------------------------------------------------------------------------------


def test_batch_mode_defers_every_miss_of_a_phase_and_writes_one_file(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache.sqlite")
    model, client = teacher(cache)
    asyncio.run(client.complete(msgs(0), OPTS))  # cached before batch mode: served as a hit
    coll = BatchCollector.attach(client, tmp_path / "b", run_id="r1")

    async def phase() -> None:
        await gather_all([*(client.complete(msgs(i), OPTS) for i in (0, 1, 2, 1))])

    with pytest.raises(TeacherDeferred):
        asyncio.run(phase())
    assert len(model.requests) == 1  # only the pre-batch live call
    assert len(coll.pending) == 2  # 1 and 2; the repeated 1 deduplicated
    bf = coll.flush("extract")
    assert (bf.path.name, bf.n_requests, bf.reused) == ("requests-extract-1.jsonl", 2, False)
    rows = lines(bf.path)
    keys = {client.key(msgs(i), OPTS, 0) for i in (1, 2)}
    assert {key_of(r["custom_id"]) for r in rows} == keys
    assert all(r["method"] == "POST" and r["url"] == "/v1/chat/completions" for r in rows)
    assert rows[0]["body"]["model"] == "fake:t"
    man = json.loads(bf.manifest.read_text())
    assert (man["run_id"], man["model_identity"], man["n_requests"]) == ("r1", "fake:t", 2)
    assert set(man["keys"]) == keys
    assert "pld teacher run" in bf.next_steps("RUN") and "--resume RUN" in bf.next_steps("RUN")
    assert EXIT_BATCH_PENDING == 75


def test_resume_before_import_points_at_the_same_file(tmp_path: Path) -> None:
    cache, _, _, bf = export(tmp_path)
    _, client = teacher(cache)
    coll = BatchCollector.attach(client, tmp_path / "batch", run_id="run-A")
    asyncio.run(defer_all(client, (2, 1, 0)))
    again = coll.flush("extract")
    assert again.reused and again.path == bf.path
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == [
        "requests-extract-1.jsonl",
        "requests-extract-1.manifest.json",
    ]


def test_batch_mode_refuses_no_cache_and_a_folder_of_another_run(tmp_path: Path) -> None:
    _, client = teacher(None)
    with pytest.raises(ConfigError, match="needs the cache"):
        BatchCollector.attach(client, tmp_path / "b", run_id="r")
    export(tmp_path, run_id="run-A")
    _, client = teacher(Cache(tmp_path / "c2.sqlite"))
    with pytest.raises(RunDirError, match="belongs to run run-A"):
        BatchCollector.attach(client, tmp_path / "batch", run_id="run-B")


def test_gather_all_lets_a_real_error_outrank_deferrals() -> None:
    async def deferred() -> None:
        raise TeacherDeferred("waits", key="k")

    async def broken() -> None:
        raise BackendResponseError("boom", status=400)

    with pytest.raises(BackendResponseError, match="boom"):
        asyncio.run(gather_all([deferred(), broken(), deferred()]))


# -- the whole loop with fakes --------------------------------------------------------------


def test_export_run_import_then_the_client_hits_the_cache(tmp_path: Path) -> None:
    cache, _, _, bf = export(tmp_path)
    out = results_for(bf, tmp_path)
    rep = import_results(tmp_path / "batch", [out], cache, run_id="run-A", price=Price(1.0, 2.0))
    assert (rep.imported, rep.already, rep.pending, rep.problems) == (3, 0, 0, [])
    expect = [asyncio.run(teacher(None)[1].complete(msgs(i), OPTS)) for i in range(3)]
    total = sum((e.usage for e in expect), Usage())
    assert rep.usage == total and total.prompt_tokens > 0 and total.completion_tokens > 0
    assert rep.cost_usd == pytest.approx(
        (total.prompt_tokens * 1.0 + total.completion_tokens * 2.0) / 1e6
    )
    assert BatchDir(tmp_path / "batch").usage()["replies"] == 3
    # the same client, batch mode off: every reply is a hit, no model call
    live_model, live = teacher(cache)
    got = asyncio.run(gather_all(live.complete(msgs(i), OPTS) for i in range(3)))
    assert live_model.requests == [] and all(c.cached for c in got)
    assert [(c.text, c.finish_reason, c.model) for c in got] == [
        (e.text, e.finish_reason, e.model) for e in expect
    ]
    assert got[0].extra["batch"]["file"] == "requests-extract-1.jsonl"
    # importing the same file again changes nothing and counts no usage twice
    rep2 = import_results(tmp_path / "batch", [out], cache, run_id="run-A")
    assert (rep2.imported, rep2.already, rep2.usage) == (0, 3, Usage())
    assert BatchDir(tmp_path / "batch").usage()["prompt_tokens"] == total.prompt_tokens


# -- import validation ----------------------------------------------------------------------


def _reject(tmp_path: Path, cache: Cache, files: Sequence[Path], *needles: str) -> None:
    before = cache.stats()["completions"]
    with pytest.raises(BatchImportError) as ei:
        import_results(tmp_path / "batch", files, cache, run_id="run-A")
    for n in needles:
        assert n in str(ei.value), str(ei.value)
    assert cache.stats()["completions"] == before  # nothing half-imported
    assert not (tmp_path / "batch" / "imports.jsonl").exists()


def test_damaged_file_is_reported_per_line(tmp_path: Path) -> None:
    cache, _, _, bf = export(tmp_path)
    out = results_for(bf, tmp_path)
    text = out.read_text().splitlines()
    write_lines(out, [text[0], "{not json", text[1], text[2][: len(text[2]) // 2]])
    _reject(tmp_path, cache, [out], f"{out}:2: not valid JSON", f"{out}:4: not valid JSON")


def test_results_for_another_run_are_refused(tmp_path: Path) -> None:
    cache, _, _, _ = export(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, _, _, bf_other = export(other, items=(7, 8))
    out = results_for(bf_other, tmp_path, "other-results.jsonl")
    _reject(tmp_path, cache, [out], f"{out}:1: custom_id pld-", "results for another run")
    foreign = write_lines(tmp_path / "f.jsonl", [{**lines(out)[0], "custom_id": "request-1"}])
    _reject(tmp_path, cache, [foreign], f"{foreign}:1: custom_id 'request-1' is not a pld")


def test_identical_duplicates_are_tolerated_conflicting_ones_are_not(tmp_path: Path) -> None:
    cache, _, _, bf = export(tmp_path)
    out = results_for(bf, tmp_path)
    rows = lines(out)
    dup = write_lines(tmp_path / "dup.jsonl", [*rows, {**rows[1], "id": "batch_req_again"}])
    bad = json.loads(json.dumps(rows[1]))
    bad["response"]["body"]["choices"][0]["message"]["content"] = '{"rule": "other"}'
    conflict = write_lines(tmp_path / "conflict.jsonl", [*rows, bad])
    _reject(tmp_path, cache, [conflict], f"{conflict}:4: conflicts with {conflict}:2")
    rep = import_results(tmp_path / "batch", [dup], cache, run_id="run-A")
    assert (rep.imported, rep.duplicates) == (3, 1)


def test_missing_line_is_reported_and_partial_imports_the_rest(tmp_path: Path) -> None:
    cache, _, _, bf = export(tmp_path)
    out = results_for(bf, tmp_path)
    rows = lines(out)
    cut = write_lines(tmp_path / "cut.jsonl", rows[:2])
    _reject(tmp_path, cache, [cut], "no result line for 1 of the 3 requests", "error files")
    rep = import_results(tmp_path / "batch", [cut], cache, run_id="run-A", partial=True)
    assert (rep.imported, rep.pending, len(rep.problems)) == (2, 1, 1)


def test_provider_failures_and_malformed_bodies(tmp_path: Path) -> None:
    cache, _, _, bf = export(tmp_path)
    rows = lines(results_for(bf, tmp_path))
    failed = json.loads(json.dumps(rows[0]))
    failed["response"] = {"status_code": 500, "body": {"error": {"message": "overloaded"}}}
    expired = error_line(rows[1]["custom_id"], "batch_expired", "not done in 24h")
    no_choices = json.loads(json.dumps(rows[2]))
    no_choices["response"]["body"]["choices"] = []
    f = write_lines(tmp_path / "f.jsonl", [failed, expired, no_choices])
    _reject(
        tmp_path,
        cache,
        [f],
        f"{f}:1: the provider reports a failure: HTTP 500: overloaded",
        f"{f}:2: the provider reports a failure: batch_expired: not done in 24h",
        f"{f}:3: malformed body",
        "3 problem(s)",
    )
    assert "no result line" not in str(_problems(tmp_path, cache, f))


def _problems(tmp_path: Path, cache: Cache, f: Path) -> list[str]:
    try:
        import_results(tmp_path / "batch", [f], cache, run_id="run-A")
    except BatchImportError as e:
        return list(e.problems)
    return []


def test_a_request_failing_in_every_batch_stops_like_a_live_call_out_of_retries(
    tmp_path: Path,
) -> None:
    cache, _, _, bf = export(tmp_path, items=(0,))
    cid = lines(bf.path)[0]["custom_id"]
    fail = write_lines(tmp_path / "e.jsonl", [error_line(cid, "server_error", "down")])
    for n in range(1, 4):
        rep = import_results(tmp_path / "batch", [fail], cache, run_id="run-A", partial=True)
        assert rep.failed == {cid: "server_error: down"} and rep.imported == 0
        _, client = teacher(cache)
        coll = BatchCollector.attach(client, tmp_path / "batch", run_id="run-A")
        if n < 3:
            asyncio.run(defer_all(client, (0,)))
            assert coll.flush("extract").path.name == f"requests-extract-{n + 1}.jsonl"
    with pytest.raises(BackendResponseError, match=r"went out in 3 batches .*server_error: down"):
        asyncio.run(client.complete(msgs(0), OPTS))


def test_a_different_cached_reply_wins_and_a_changed_request_file_is_refused(
    tmp_path: Path,
) -> None:
    cache, _, _, bf = export(tmp_path)
    out = results_for(bf, tmp_path)
    key = key_of(lines(out)[0]["custom_id"])
    assert key is not None
    cache.put_completion(key, Completion("live answer", "stop", Usage(), 0.1).to_json())
    _reject(tmp_path, cache, [out], f"{out}:1: the cache already holds a different reply")
    cache.delete_completion(key)
    bf.path.write_text(bf.path.read_text().replace("example", "EXAMPLE"))
    _reject(tmp_path, cache, [out], "missing or changed since it was exported")


# -- the local runner -----------------------------------------------------------------------


def test_runner_writes_errors_per_line_and_resumes(tmp_path: Path) -> None:
    _, _, _, bf = export(tmp_path)
    req = sorted(lines(bf.path), key=lambda r: r["body"]["messages"][-1]["content"])
    req[2]["body"]["grammar"] = "root ::= x"  # example number 2: a constraint it cannot honour
    reqs = write_lines(tmp_path / "reqs.jsonl", req)
    calls: list[str] = []

    def flaky(m: Sequence[Message], o: GenOptions) -> str | Exception:
        calls.append(m[-1].content)
        if m[-1].content.endswith("1") and len(calls) < 3:  # example number 1 fails once
            return BackendResponseError("bad request", status=400)
        return answer(m, o)

    out = tmp_path / "out.jsonl"
    seen: list[tuple[int, int]] = []
    rep = run_batch_file(
        reqs, ScriptedChatModel(flaky), out, lambda d, t: seen.append((d, t)), limits=Limits()
    )
    assert (rep.total, rep.answered, len(rep.failed)) == (3, 1, 2)
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)
    got = {r["custom_id"]: r for r in lines(out)}
    assert got[req[2]["custom_id"]]["error"]["code"] == "invalid_request"
    assert "grammar cannot be honoured" in got[req[2]["custom_id"]]["error"]["message"]
    assert got[req[1]["custom_id"]]["error"]["code"] == "model_error"
    assert got[req[0]["custom_id"]]["response"]["status_code"] == 200
    with out.open("a") as f:  # a crash mid-append leaves a torn line
        f.write('{"id": "batch_req_torn", "custom_')
    rep2 = run_batch_file(reqs, ScriptedChatModel(flaky), out)
    assert (rep2.skipped, rep2.answered, len(rep2.failed)) == (1, 1, 1)
    final = {r["custom_id"]: r for r in lines(out)}
    assert len(final) == 3 and len(lines(out)) == 3
    assert final[req[1]["custom_id"]]["response"]["status_code"] == 200


def test_runner_rejects_a_request_file_it_cannot_match(tmp_path: Path) -> None:
    bad = write_lines(tmp_path / "r.jsonl", [{"method": "POST", "body": {}}])
    with pytest.raises(DataError, match=r"r.jsonl:1: not a batch request line"):
        run_batch_file(bad, ScriptedChatModel(answer), tmp_path / "o.jsonl")
    body = request_body("m", msgs(1), OPTS)
    twice = write_lines(tmp_path / "t.jsonl", [{"custom_id": "a", "body": body}] * 2)
    with pytest.raises(DataError, match="repeats"):
        run_batch_file(twice, ScriptedChatModel(answer), tmp_path / "o.jsonl")


def test_output_and_error_lines_have_the_openai_shape() -> None:
    comp = Completion("hi", "length", Usage(5, 2, 1), 0.0)
    line = output_line("pld-x", completion_body(comp, model="m", custom_id="pld-x"))
    assert line["error"] is None and line["response"]["status_code"] == 200
    body = line["response"]["body"]
    assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 1},
    }
    err = error_line("pld-x", "c", "m")
    assert err["response"] is None and err["error"] == {"code": "c", "message": "m"}


def test_an_exported_batch_holds_no_key_and_no_base_url(tmp_path: Path) -> None:
    model = OpenAIChatModel("gpt-x", base_url="http://user:pw@127.0.0.1:1/v1", api_key="sk-SECRET")
    client = ChatClient(model, role="teacher", cache=Cache(tmp_path / "c.sqlite"))
    coll = BatchCollector.attach(client, tmp_path / "b", run_id="r")
    asyncio.run(defer_all(client, (0,)))
    bf = coll.flush("extract")
    for p in (bf.path, bf.manifest):
        text = p.read_text()
        assert "SECRET" not in text and "127.0.0.1" not in text and "pw" not in text
    assert lines(bf.path)[0]["body"]["model"] == "gpt-x"
