"""The HTTP service with a classifier double: validation, auth, overload, engine errors,
disconnects, micro-batching and the metrics page. No timing: every wait is on an event."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from pld.distiller import Distiller
from pld.errors import ConfigError, RunDirError
from pld.models.client import ChatClient
from pld.models.fake import ScriptedChatModel
from pld.predictions import as_items
from pld.rulebook import Rulebook
from pld.service import RunDirClassifier, create_app
from tests.fakes import LogprobStudent, make_student, make_task, student_reply
from tests.service_support import FakeClassifier, engine_error, save_run_dir, synthetic_rules

URL = "/v1/classify"


@asynccontextmanager
async def running(app: Starlette, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://svc", headers=headers
        ) as c:
            yield c


async def until(cond: Callable[[], bool]) -> None:
    """Let the event loop run until ``cond`` holds (bounded by steps, not by time)."""
    for _ in range(10_000):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def one(text: str, item_id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"text": text}
    if item_id is not None:
        item["id"] = item_id
    return {"input": item}


def metric(page: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in page.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        lname, _, lab = key.partition("{")
        got = ",".join(sorted(lab.rstrip("}").split(","))) if lab else ""
        if lname == name and got == want:
            return float(value)
    raise AssertionError(f"no sample {name}{{{want}}} in:\n{page}")


async def test_one_item_and_a_list() -> None:
    fake = FakeClassifier()
    app = create_app(fake)
    async with running(app) as c:
        r = await c.post(URL, json=one("an apple pie", "t1"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == "t1" and body["label"] == "fruit" and body["valid"] is True
        assert body["confidence"] == pytest.approx(0.9)
        assert body["cited_rule"] is None and body["rulebook_version"] == "v2-test"
        r = await c.post(URL, json={"inputs": [{"text": "iron bar"}, {"text": "apple", "id": 7}]})
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        assert [(x["id"], x["label"]) for x in res] == [("0", "metal"), ("7", "fruit")]
    assert fake.warmed == 1


async def test_invalid_output_is_reported_per_item_and_counted() -> None:
    app = create_app(FakeClassifier())
    async with running(app) as c:
        r = await c.post(URL, json={"inputs": [{"text": "apple"}, {"text": "a cloud"}]})
        assert r.status_code == 200
        body = r.json()
        assert body["invalid"] == 1
        bad = body["results"][1]
        assert bad["label"] is None and bad["valid"] is False
        assert bad["invalid_reason"] == "not_a_label" and bad["raw"] == "maybe"
        page = (await c.get("/metrics")).text
    assert metric(page, "pld_invalid_outputs_total") == 1
    assert metric(page, "pld_classify_items_total", outcome="valid") == 1
    assert metric(page, "pld_classify_items_total", outcome="invalid") == 1


BIG = b'{"input": {"text": "' + b"a" * (1 << 20) + b'"}}'


async def _chunks() -> AsyncIterator[bytes]:
    for k in range(0, len(BIG), 64 * 1024):
        yield BIG[k : k + 64 * 1024]


JSON = {"Content-Type": "application/json"}
BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str, str]] = [
    ("missing field", {"json": {"input": {"id": "a"}}}, 422, "missing_field", "'text'"),
    ("wrong type", {"json": {"input": {"text": 3}}}, 422, "invalid_field", "got number"),
    ("unknown field", {"json": {"input": {"txt": "x"}}}, 422, "unknown_field", "['txt']"),
    ("item not object", {"json": {"inputs": ["x"]}}, 422, "invalid_item", "inputs[0]"),
    ("body not object", {"json": ["x"]}, 422, "invalid_body", '{"input"'),
    ("inputs not list", {"json": {"inputs": {}}}, 422, "invalid_body", "array"),
    ("empty list", {"json": {"inputs": []}}, 422, "invalid_body", "empty"),
    ("both keys", {"json": {"input": {}, "inputs": []}}, 422, "invalid_body", "top-level"),
    ("bad id", {"json": {"input": {"text": "x", "id": [1]}}}, 422, "invalid_id", "array"),
    (
        "duplicate ids",
        {"json": {"inputs": [{"text": "a", "id": "x"}, {"text": "b", "id": "x"}]}},
        422,
        "duplicate_id",
        "['x']",
    ),
    ("malformed JSON", {"content": b'{"input": ', "headers": JSON}, 400, "malformed_json", "line"),
    ("not UTF-8", {"content": b'{"\xff": 1}', "headers": JSON}, 400, "malformed_json", "UTF-8"),
    ("no content type", {"content": b"{}"}, 415, "unsupported_media_type", "application/json"),
    ("1 MB body", {"content": BIG, "headers": JSON}, 413, "body_too_large", "bytes"),
    ("oversized input", {"json": one("x" * 20_001)}, 413, "input_too_large", "20001"),
    (
        "too many items",
        {"json": {"inputs": [{"text": "a"}] * 65}},
        413,
        "too_many_items",
        "limit is 64",
    ),
]


@pytest.mark.parametrize(
    ("why", "kwargs", "status", "code", "says"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
async def test_bad_input_is_a_clear_4xx_and_reaches_no_model(
    why: str, kwargs: dict[str, Any], status: int, code: str, says: str
) -> None:
    fake = FakeClassifier()
    app = create_app(fake, max_input_chars=20_000)
    async with running(app) as c:
        r = await c.post(URL, **kwargs)
        assert r.status_code == status, (why, r.text)
        err = r.json()["error"]
        assert err["code"] == code and says in err["message"], err
        assert (await c.post(URL, json=one("apple"))).status_code == 200  # still serving
    assert fake.calls == [[{"text": "apple"}]]


async def test_1mb_body_without_content_length_is_cut_off_at_the_limit() -> None:
    fake = FakeClassifier()
    app = create_app(fake)
    async with running(app) as c:
        r = await c.post(URL, content=_chunks(), headers=JSON)
        assert "content-length" not in r.request.headers
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert fake.calls == []


async def test_bearer_token() -> None:
    app = create_app(FakeClassifier(), token="s3cret-token")
    async with running(app) as c:
        r = await c.post(URL, json=one("apple"))
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = await c.post(URL, json=one("apple"), headers={"Authorization": "Bearer guess-123"})
        assert r.status_code == 401 and "guess-123" not in r.text and "s3cret" not in r.text
        r = await c.post(URL, json=one("apple"), headers={"Authorization": "Basic s3cret-token"})
        assert r.status_code == 401
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/v1/rulebook")).status_code == 401
        assert (await c.get("/healthz")).status_code == 200  # probes need no token
        auth = {"Authorization": "Bearer s3cret-token"}
        assert (await c.post(URL, json=one("apple"), headers=auth)).status_code == 200
        page = (await c.get("/metrics", headers=auth)).text
    assert metric(page, "pld_http_requests_total", route="/v1/classify", status="401") == 3
    assert "s3cret" not in page
    with pytest.raises(ValueError, match="empty"):
        create_app(FakeClassifier(), token=" ")


async def test_full_queue_answers_503_with_retry_after_and_admitted_work_completes() -> None:
    gate = asyncio.Event()
    fake = FakeClassifier(gate=gate)
    app = create_app(fake, max_queue=2, max_batch=1, workers=1)
    svc = app.state.service
    async with running(app) as c:
        a = asyncio.create_task(c.post(URL, json=one("apple", "a")))
        await fake.entered.wait()  # A holds the only worker
        b = asyncio.create_task(c.post(URL, json=one("iron", "b")))
        await until(lambda: svc.batcher.depth == 1)  # B waits; one place left
        r = await c.post(URL, json={"inputs": [{"text": "x"}, {"text": "y"}]})
        assert r.status_code == 503, r.text  # all or nothing: no half-queued list
        assert int(r.headers["Retry-After"]) >= 1
        assert "queue is full" in r.json()["error"]["message"]
        d = asyncio.create_task(c.post(URL, json=one("apple", "d")))
        await until(lambda: svc.batcher.depth == 2)  # the last place is taken
        r = await c.post(URL, json=one("apple", "e"))
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        gate.set()
        ra, rb, rd = await a, await b, await d
        assert (ra.status_code, ra.json()["id"], ra.json()["label"]) == (200, "a", "fruit")
        assert (rb.status_code, rb.json()["id"], rb.json()["label"]) == (200, "b", "metal")
        assert (rd.status_code, rd.json()["id"], rd.json()["label"]) == (200, "d", "fruit")
        page = (await c.get("/metrics")).text
    assert metric(page, "pld_queue_rejections_total") == 2
    assert metric(page, "pld_http_requests_total", route="/v1/classify", status="503") == 2
    assert [x["text"] for call in fake.calls for x in call] == ["apple", "iron", "apple"]


async def test_engine_error_fails_the_request_with_5xx_and_the_next_one_succeeds() -> None:
    fake = FakeClassifier()
    fake.failures.append(engine_error())
    app = create_app(fake)
    async with running(app) as c:
        r = await c.post(URL, json=one("apple"))
        assert r.status_code == 502
        err = r.json()["error"]
        assert err["code"] == "engine_error" and "slot crashed" not in err["message"]
        r = await c.post(URL, json=one("apple"))
        assert r.status_code == 200 and r.json()["label"] == "fruit"
        fake.failures.append(RuntimeError("bug"))
        assert (await c.post(URL, json=one("apple"))).status_code == 500
        assert (await c.post(URL, json=one("iron"))).status_code == 200
        page = (await c.get("/metrics")).text
    assert metric(page, "pld_engine_errors_total") == 2
    assert metric(page, "pld_http_requests_total", route="/v1/classify", status="502") == 1


async def test_items_from_concurrent_requests_share_a_micro_batch() -> None:
    gate = asyncio.Event()
    fake = FakeClassifier(gate=gate)
    app = create_app(fake, max_batch=8, workers=1)
    svc = app.state.service
    async with running(app) as c:
        first = asyncio.create_task(c.post(URL, json=one("apple")))
        await fake.entered.wait()
        two = {"inputs": [{"text": "apple"}, {"text": "iron"}]}
        rest = [asyncio.create_task(c.post(URL, json=two)) for _ in range(2)]
        await until(lambda: svc.batcher.depth == 4)
        gate.set()
        responses = [await first] + [await t for t in rest]
    assert all(r.status_code == 200 for r in responses)
    assert [len(call) for call in fake.calls] == [1, 4]
    for r in responses[1:]:
        assert [x["label"] for x in r.json()["results"]] == ["fruit", "metal"]


async def _raw_post(app: Starlette, body: bytes, gone: asyncio.Event, *, send_body: bool) -> int:
    """Drive the app as a server would, with a client that leaves when ``gone`` is set."""
    msgs = [{"type": "http.request", "body": body, "more_body": False}] if send_body else []
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        if msgs:
            return msgs.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(msg: Any) -> None:
        if msg["type"] == "http.response.start":
            status.append(msg["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": URL,
        "raw_path": URL.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("svc", 80),
    }
    await app(scope, receive, send)
    return status[0]


async def test_a_client_that_leaves_mid_request_costs_no_model_call() -> None:
    gate = asyncio.Event()
    fake = FakeClassifier(gate=gate)
    app = create_app(fake, max_batch=1, workers=1)
    svc = app.state.service
    async with running(app) as c:
        a = asyncio.create_task(c.post(URL, json=one("apple")))
        await fake.entered.wait()
        gone = asyncio.Event()
        b = asyncio.create_task(
            _raw_post(app, json.dumps(one("iron")).encode(), gone, send_body=True)
        )
        await until(lambda: svc.batcher.depth == 1)
        gone.set()
        assert await b == 499
        gone_early = asyncio.Event()
        gone_early.set()  # leaves before sending its body
        assert await _raw_post(app, b"", gone_early, send_body=False) == 499
        gate.set()
        assert (await a).status_code == 200
        r = await c.post(URL, json=one("apple pie"))
        assert r.status_code == 200
        page = (await c.get("/metrics")).text
    assert [x["text"] for call in fake.calls for x in call] == ["apple", "apple pie"]
    assert metric(page, "pld_client_disconnects_total") == 2


async def test_healthz_rulebook_and_not_ready_before_startup() -> None:
    fake = FakeClassifier()
    app = create_app(fake)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
        r = await c.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "starting"
        r = await c.post(URL, json=one("apple"))
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    async with running(app) as c:
        h = (await c.get("/healthz")).json()
        assert h == {
            "status": "ok",
            "rulebook_version": "v2-test",
            "queue_depth": 0,
            "in_flight": 0,
        }
        info = (await c.get("/v1/rulebook")).json()
        assert info["rules"][0]["sources"] == ["fruit-00", "fruit-01"]
        assert (await c.get("/nope")).status_code == 404
        assert (await c.get(URL)).status_code == 405


_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-z_]+="[^"]*",?)*\})? (-?[0-9.e+]+|\+Inf)$')


async def test_metrics_exposition_is_prometheus_text() -> None:
    app = create_app(FakeClassifier())
    async with running(app) as c:
        for t in ("apple", "iron", "cloud"):
            await c.post(URL, json=one(t))
        await c.post(URL, content=b"{", headers=JSON)
        r = await c.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    page = r.text
    for line in page.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or _SAMPLE.match(line), line
    assert metric(page, "pld_http_requests_total", route="/v1/classify", status="200") == 3
    assert metric(page, "pld_http_requests_total", route="/v1/classify", status="400") == 1
    assert metric(page, "pld_queue_depth_items") == 0
    count = metric(page, "pld_http_request_duration_seconds_count", route="/v1/classify")
    assert count == 4
    inf = metric(page, "pld_http_request_duration_seconds_bucket", route="/v1/classify", le="+Inf")
    assert inf == count
    buckets = [
        float(line.rpartition(" ")[2])
        for line in page.splitlines()
        if line.startswith('pld_http_request_duration_seconds_bucket{route="/v1/classify"')
    ]
    assert buckets == sorted(buckets)  # cumulative
    assert metric(page, "pld_batch_size_items_count") == 3
    assert "# TYPE pld_http_request_duration_seconds histogram" in page


async def test_run_dir_classifier_gives_the_labels_of_distiller_predict(tmp_path: Path) -> None:
    task = make_task(3)
    run = save_run_dir(tmp_path / "run", task, synthetic_rules())
    items = [dict(e.fields) for e in task.examples] + [{"text": "nothing to see"}]
    expected = await Distiller.load(run, student=make_student(), use_cache=False).apredict(items)
    clf = RunDirClassifier(run, ChatClient(make_student(), role="student"))
    info = clf.info()
    assert info["input_fields"] == ["text"] and info["labels"] == list(task.labels)
    assert re.fullmatch(r"v2-[0-9a-f]{12}", info["rulebook_version"])
    assert info["rules"][1]["sources"] == ["metal-00", "metal-01"]
    app = create_app(clf)
    async with running(app) as c:
        r = await c.post(URL, json={"inputs": items})
    assert r.status_code == 200, r.text
    got = [x["label"] for x in r.json()["results"]]
    assert got == [p.label for p in expected]
    assert got[:-1] == [e.label for e in task.examples]  # the rules decide, not the prior


def test_bad_run_dir_or_spec_fails_before_any_model_loads(tmp_path: Path) -> None:
    from pld.models import local

    engines = dict(local._ENGINES)
    with pytest.raises(RunDirError, match=r"no run\.json"):
        RunDirClassifier.from_spec(tmp_path / "none", "local:smollm2")
    run = save_run_dir(tmp_path / "run", make_task(1), synthetic_rules())
    with pytest.raises(ConfigError, match="unknown model spec"):
        RunDirClassifier.from_spec(run, "smollm2")
    assert engines == local._ENGINES  # nothing was loaded


async def test_run_dir_classifier_is_rulebook_apredict_with_the_prior_measured_once(
    tmp_path: Path,
) -> None:
    """The service answers through ``Rulebook.apredict`` (what ``pld predict`` runs): labels,
    confidences and scores equal, and the three content-free calls are made at warm-up only."""
    task = make_task(2)
    run = save_run_dir(tmp_path / "run", task, synthetic_rules())
    items = [dict(e.fields) for e in task.examples]
    expected = await Rulebook.load(run).apredict(
        as_items(items), ChatClient(LogprobStudent(), role="student")
    )
    student = LogprobStudent()
    clf = RunDirClassifier(run, ChatClient(student, role="student"))
    await clf.warmup()
    assert len(student.requests) == 3  # the prior, and the prompt is now in the prefix cache
    got = await clf.classify(items[:3]) + await clf.classify(items[3:])
    assert len(student.requests) == 3 + len(items)  # no prior per batch
    assert [(p.label, p.scores) for p in got] == [(p.label, p.scores) for p in expected]
    assert all(p.scores is not None for p in got)


async def test_uncalibrated_rulebook_warms_the_prefix_with_one_call(tmp_path: Path) -> None:
    task = make_task(1)
    rb = Rulebook.build(task, synthetic_rules(), calibrate=False)
    student = LogprobStudent()
    clf = RunDirClassifier(rb, ChatClient(student, role="student"))
    await clf.warmup()
    assert len(student.requests) == 1 and clf.info()["calibrated"] is False
    got = await clf.classify([dict(e.fields) for e in task.examples])
    expected = await rb.apredict(as_items(task.examples), ChatClient(LogprobStudent(), role="s"))
    assert [p.label for p in got] == [p.label for p in expected]


def test_predict_concurrency_is_the_number_of_requests_in_flight(tmp_path: Path) -> None:
    task = make_task(4)
    rb = Rulebook.build(task, synthetic_rules())
    for n in (1, 3):
        model = ScriptedChatModel(student_reply, name="student", delay_s=0.01)
        preds = rb.predict(task.examples, model, concurrency=n)
        assert model.max_in_flight == n
        assert [p.label for p in preds] == [e.label for e in task.examples]
