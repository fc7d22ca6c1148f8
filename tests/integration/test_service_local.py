"""``POST /v1/classify`` over real HTTP with the embedded SmolLM2 answers with the labels that
``pld predict`` (``Distiller.load(...).predict``) gives for the same items and run directory."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pld.distiller import Distiller
from pld.models.client import ChatClient
from pld.models.local import LocalChatModel
from pld.service import RunDirClassifier, create_app
from pld.tasks.base import Example, stratified_sample
from pld.tasks.files import load_task
from tests.service_support import save_run_dir, start, support_rules

pytestmark = pytest.mark.integration


def test_served_labels_equal_pld_predict(tmp_path: Path, smollm2_chat: LocalChatModel) -> None:
    task = load_task("demo")
    run = save_run_dir(tmp_path / "run", task, support_rules())
    items = stratified_sample(task.examples, 10, seed=3)
    d = Distiller.load(run, student=smollm2_chat, use_cache=False)
    expected = d.predict([Example(e.id, e.fields, e.label) for e in items])

    clf = RunDirClassifier(run, ChatClient(smollm2_chat, role="student"))
    app = create_app(clf, max_batch=4)
    running, th = start(app)
    try:
        with httpx.Client(base_url=running.url, timeout=300) as c:
            r = c.post(
                "/v1/classify", json={"inputs": [{"id": e.id, **e.fields} for e in items[:6]]}
            )
            assert r.status_code == 200, r.text
            got = {x["id"]: x for x in r.json()["results"]}
            for e in items[6:]:
                one = c.post("/v1/classify", json={"input": {"id": e.id, **e.fields}})
                assert one.status_code == 200, one.text
                got[e.id] = one.json()
            info = c.get("/v1/rulebook").json()
            page = c.get("/metrics").text
    finally:
        running.stop()
        th.join(120)
    assert list(got) == [e.id for e in items]
    assert [got[p.id]["label"] for p in expected] == [p.label for p in expected]
    for p in expected:
        assert got[p.id]["confidence"] == pytest.approx(p.confidence, rel=1e-6)
        assert got[p.id]["rulebook_version"] == info["rulebook_version"]
    assert info["calibrated"] is True and [r["id"] for r in info["rules"]] == [
        "R1",
        "R2",
        "R3",
        "R4",
    ]
    assert 'pld_classify_items_total{outcome="valid"} 10' in page
    assert all(p.label is not None for p in expected)
