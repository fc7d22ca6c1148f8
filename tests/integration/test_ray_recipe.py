"""The Ray recipe (``examples/ray_predict.py``) on a local Ray instance: Ray Data
``map_batches`` over a JSONL file, each actor calling the rulebook against a real llama.cpp
OpenAI-compatible server, gives the labels ``Rulebook.predict`` gives for the same items.
Skipped when Ray is not installed (it is the optional extra ``pld[ray]``)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pld.rulebook import Rulebook
from pld.tasks.base import stratified_sample
from pld.tasks.files import load_task
from tests.conftest import ROOT, ServerProcess
from tests.service_support import save_run_dir, support_rules

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None,
        reason="Ray is not installed: pip install 'pld[ray]' to run the Ray recipe test",
    ),
]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    s = ServerProcess(["--slots", "2", "--threads", "1"])
    yield s
    s.kill()


def test_ray_map_batches_gives_the_labels_of_rulebook_predict(
    server: ServerProcess, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    task = load_task("demo")
    run = save_run_dir(tmp_path / "run", task, support_rules())
    items = stratified_sample(task.examples, 5, seed=2)
    inputs = tmp_path / "items.jsonl"
    inputs.write_text("".join(json.dumps({"id": e.id, **e.fields}) + "\n" for e in items))
    spec = f"openai:smollm2@{server.base_url}?dialect=llamacpp"
    expected = {p.id: p.label for p in Rulebook.load(run).predict(items, spec)}

    out = tmp_path / "preds"
    args = ["--student", spec, "--out", str(out), "--actors", "1", "--concurrency", "2"]
    args += ["--batch-size", "2", "--num-cpus", "4"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RAY_AUTH_MODE": "disabled"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ray_predict.py"), str(run), str(inputs), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=540,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = pq.read_table(out).to_pylist()
    assert sorted(x["id"] for x in rows) == sorted(e.id for e in items)  # none lost or doubled
    assert {x["id"]: x["label"] for x in rows} == expected
    assert all(x["valid"] for x in rows)
