"""Classify a dataset too large for one machine: Ray Data ``map_batches`` over JSONL or Parquet,
each worker calling the same rulebook against an OpenAI-compatible student (vLLM, SGLang, or
``pld engine serve``).

    pip install 'pld[ray]'
    python examples/ray_predict.py runs/r1 'data/*.parquet' \\
        --student 'openai:Qwen/Qwen2.5-1.5B-Instruct@http://gpu-box:8000/v1?dialect=vllm' \\
        --out preds/ --actors 8 --concurrency 32

Each actor loads the rulebook once (``Rulebook.load``: the exact saved prompt bytes and decision
settings ``pld predict`` uses), measures the calibration prior once (``Rulebook.aprior``) and
then answers every batch with ``Rulebook.apredict`` — the call ``pld predict`` and ``pld
serve`` make — keeping ``--concurrency`` requests in flight, so ``--actors`` x
``--concurrency`` requests reach the engine at once and its prefix cache keeps the shared
system prompt warm. Input rows need the rulebook's template fields (e.g. ``text``) and may carry
an ``id``; the output (Parquet, or JSONL with ``--format json``) is the input columns plus
``label``, ``confidence`` and ``valid``. On a cluster, run it on the head node with ``ray
job submit``; here ``ray.init`` starts a local instance.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import numpy as np

from pld._async import run_sync
from pld.predictions import Item
from pld.rulebook import Rulebook
from pld.tasks.base import template_fields


class RulebookPredictor:
    """One per Ray actor: the rulebook, one student client and its prior, reused by every
    batch the actor is given."""

    def __init__(self, run_dir: str, student: str, concurrency: int) -> None:
        self.rulebook = Rulebook.load(run_dir)
        self.fields = list(dict.fromkeys(template_fields(self.rulebook.user_template)))
        self.student = self.rulebook.student_client(student, concurrency=concurrency)
        self.prior = run_sync(self.rulebook.aprior(self.student))

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [f for f in self.fields if f not in batch]
        if missing:
            raise ValueError(f"the input rows lack the rulebook's fields {missing}")
        n = len(batch[self.fields[0]])
        ids = batch["id"] if "id" in batch else np.arange(n)
        items: list[Item] = [
            (str(ids[k]), {f: str(batch[f][k]) for f in self.fields}, None) for k in range(n)
        ]
        preds = run_sync(self.rulebook.apredict(items, self.student, prior=self.prior))
        return {
            **batch,
            "label": np.array([p.label or "" for p in preds], dtype=object),
            "confidence": np.array(
                [np.nan if p.confidence is None else p.confidence for p in preds]
            ),
            "valid": np.array([p.label is not None for p in preds]),
        }


def predict_dataset(
    run_dir: str,
    inputs: str,
    student: str,
    out: str,
    *,
    actors: int = 2,
    concurrency: int = 8,
    batch_size: int = 64,
    out_format: str = "parquet",
) -> None:
    """Read ``inputs`` (JSONL or Parquet, by extension), classify every row, write ``out``."""
    import ray.data

    Rulebook.load(run_dir)  # a bad run directory fails here, before any Ray work
    if inputs.endswith(".parquet"):
        ds = ray.data.read_parquet(inputs)
    else:
        ds = ray.data.read_json(inputs, lines=True)
    preds = ds.map_batches(
        RulebookPredictor,
        fn_constructor_kwargs={"run_dir": run_dir, "student": student, "concurrency": concurrency},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=0.5,  # an actor mostly waits on the engine
    )
    if out_format == "json":
        preds.write_json(out)
    else:
        preds.write_parquet(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("inputs", help="a .jsonl/.parquet file, a directory or a glob Ray can read")
    ap.add_argument("--student", required=True, help="openai:NAME@URL?dialect=vllm (vLLM, SGLang)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--format", choices=("parquet", "json"), default="parquet")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight per actor")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="logical CPUs of a local Ray instance (>= 2: reading, predicting and writing "
        "each hold one)",
    )
    a = ap.parse_args(argv)

    import ray

    init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if a.num_cpus is not None:
        init["num_cpus"] = a.num_cpus
    ray.init(**init)
    try:
        predict_dataset(
            a.run_dir,
            a.inputs,
            a.student,
            a.out,
            actors=a.actors,
            concurrency=a.concurrency,
            batch_size=a.batch_size,
            out_format=a.format,
        )
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
