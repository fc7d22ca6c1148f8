"""bench.quality's variant runs: each variant gets its own folder, named by what it changes,
and the base run keeps its name (its recorded transcript is found by that name)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import quality
from bench.quality import Bench, parse_args, replay_sources, variant_config, variant_suffix
from pld.tasks.base import Example, stratified_sample


def _args(monkeypatch: pytest.MonkeyPatch, *extra: str) -> argparse.Namespace:
    monkeypatch.setattr(sys, "argv", ["bench.quality", "--students", "qwen-1.5b", *extra])
    return parse_args()


def test_variant_folders_name_their_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert variant_suffix(_args(monkeypatch)) == ""
    assert variant_suffix(_args(monkeypatch, "--name-cues")) == "-cues"
    a = _args(
        monkeypatch,
        *("--n-train", "120", "--extract-max", "60", "--max-rounds", "15"),
        *("--resolve-candidates", "4", "--patience", "3"),
    )
    assert variant_suffix(a) == "-x60-r15c4p3"
    cfg = variant_config(a)
    assert (cfg.extract_max, cfg.max_rounds, cfg.resolve_candidates, cfg.patience) == (
        60,
        15,
        4,
        3,
    )
    # the bench's own resolve settings stay as the base run had them
    base = variant_config(_args(monkeypatch))
    assert cfg.resolve_failures == base.resolve_failures == 8
    assert cfg.resolve_max_tokens == base.resolve_max_tokens
    # a wider search alone, extracting from every example, names the full training set
    a = _args(monkeypatch, "--n-train", "120", "--resolve-candidates", "4")
    assert variant_suffix(a) == f"-x120-r2c4p{base.patience}"
    # synthesis candidates stack on the rest: the -x60 run's recorded requests replay
    a = _args(
        monkeypatch,
        *("--n-train", "120", "--extract-max", "60", "--max-rounds", "15"),
        *("--resolve-candidates", "4", "--patience", "3", "--synthesis-candidates", "4"),
    )
    assert variant_suffix(a) == "-x60-r15c4p3-s4"
    assert variant_config(a).synthesis_candidates == 4
    a = _args(
        monkeypatch, "--extract-max", "60", "--synthesis-candidates", "4", "--synthesis-pool", "60"
    )
    assert variant_suffix(a).endswith("-s4u60") and variant_config(a).synthesis_pool == 60


def test_a_variant_replays_the_base_then_its_siblings(tmp_path: Path) -> None:
    base = tmp_path / "ds-frontier"
    names = ("ds-frontier-x60-r15c4p3", "ds-frontier-cues", "ds-frontier-x60-r15c4p3-s4")
    for name in ("ds-frontier", *names, "ds-frontierless", "other-frontier-cues"):
        (tmp_path / name / "teacher").mkdir(parents=True)
    (tmp_path / "ds-frontier-nofolder").mkdir()
    me = tmp_path / names[2]
    assert replay_sources(base, base) == []
    assert replay_sources(base, me) == [
        base / "teacher",
        tmp_path / names[1] / "teacher",
        tmp_path / names[0] / "teacher",
    ]


def test_a_larger_test_set_rescores_what_was_scored_on_fewer_items(tmp_path: Path) -> None:
    """``--n-test 300`` after a 150-item run: the sample holds the earlier items (so they
    replay from the student cache) and every method scored on fewer is scored again; CoT,
    on record for as many items as it asks and all still in the test set, is not."""
    pool = [Example(f"i{k:03d}", {"text": str(k)}, "abc"[k % 3]) for k in range(600)]
    small, large = stratified_sample(pool, 150, 0), stratified_sample(pool, 300, 0)
    assert {e.id for e in small} < {e.id for e in large}
    calls: list[tuple[str, int]] = []

    def bench(test: list[Example], res: dict[str, Any]) -> Bench:
        b = Bench(argparse.Namespace(), res, tmp_path / "r.json", tmp_path, None, [], [], test)  # type: ignore[arg-type]

        def evaluate(*args: Any, items: list[Example] | None = None, **kw: Any) -> Any:
            scored = test if items is None else items
            calls.append((args[2], len(scored)))
            return {"_correct": {e.id: True for e in scored}}

        b.evaluate = evaluate  # type: ignore[method-assign]
        return b

    res: dict[str, Any] = {}
    st: dict[str, Any] = {"methods": {}}
    b = bench(small, res)
    b.method(st, "zero-shot", "spec", "s", "zero-shot")
    b.method(st, "cot", "spec", "s", "cot", items=small[:60])
    b = bench(large, res)
    assert b.method(st, "zero-shot", "spec", "s", "zero-shot")  # True: scored now
    b.method(st, "cot", "spec", "s", "cot", items=large[:60])
    assert not b.method(st, "zero-shot", "spec", "s", "zero-shot")  # on record for these 300
    assert calls == [("zero-shot", 150), ("cot", 60), ("zero-shot", 300)]
    assert b.scored(st, "zero-shot") and not b.scored(st, "pld")
    # a part whose items left the test set (another seed, a smaller set) is scored again
    b = bench(small[60:], res)
    b.method(st, "cot", "spec", "s", "cot", items=small[60:120])
    assert calls[-1] == ("cot", 60) and not b.scored(st, "zero-shot")


def test_a_larger_test_set_answers_only_the_items_it_adds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The items of the smaller run are carried over as the cache replays they stand for:
    only the added items and SPOT_CHECK recorded ones are asked, and every figure but latency
    is what answering all of them anew gives. A spot-checked item answered otherwise than on
    record and every item is asked again."""
    from pld.cache import Cache
    from tests.fakes import LogprobStudent, make_task

    task = make_task()
    small, large = stratified_sample(list(task.examples), 21, 0), list(task.examples)
    students: list[LogprobStudent] = []

    class Timed(LogprobStudent):  # every answer takes 0.25 s
        async def complete(self, messages: Any, options: Any) -> Any:
            return dataclasses.replace(await super().complete(messages, options), latency_s=0.25)

    def student(_spec: str) -> LogprobStudent:
        students.append(Timed())
        return students[-1]

    monkeypatch.setattr(quality, "resolve_chat", student)

    def run(items: list[Example], carried: dict[str, Any] | None, name: str) -> dict[str, Any]:
        c = Cache(tmp_path / f"{name}.sqlite")  # a fresh cache: every call is counted
        return quality.score(
            "spec", "s", "zero-shot", task, items, c, train=[], seed=0, carried=carried
        )

    def asked() -> set[str]:
        return {
            e.id
            for e in large
            for r in students[-1].requests
            if task.render(e) in r.messages[-1].content
        }

    first = run(small, None, "a")
    grown = run(large, first, "b")
    spot = {e.id for e in large if e.id in first["_pred"]}
    spot = set(sorted(spot, key=[e.id for e in large].index)[: quality.SPOT_CHECK])
    assert asked() == {e.id for e in large if e.id not in first["_pred"]} | spot
    assert grown["carried_over"]["items"] == len(small) - quality.SPOT_CHECK
    assert grown["latency_p50_s"] == 0.25  # the answered items' (the fake's), none carried
    # the same from the cache (as the -raw rows read it): the replays' latency, not the carried
    assert run(large, first, "b")["latency_p50_s"] == 0.25
    anew = run(large, None, "c")
    assert len(asked()) == len(large)
    for f in ("n", "macro_f1", "macro_f1_ci95", "accuracy", "confusion", "_pred", "_correct"):
        assert grown[f] == anew[f], f
    assert grown["prompt_tokens_per_item"] == pytest.approx(anew["prompt_tokens_per_item"])
    # a record the student no longer agrees with is not carried
    first_id = sorted(spot, key=[e.id for e in large].index)[0]
    wrong = next(lab for lab in task.labels if lab != first["_pred"][first_id])
    tampered = {**first, "_pred": {**first["_pred"], first_id: wrong}}
    again = run(large, tampered, "d")
    assert len(asked()) == len(large) and "carried_over" not in again
    assert again["_pred"] == anew["_pred"]


def test_a_finished_fit_on_record_is_loaded_not_refitted(tmp_path: Path) -> None:
    import json

    from pld.distiller import PHASES

    st: dict[str, Any] = {"methods": {}}
    assert not Bench.fit_on_record(st, tmp_path)  # no fit at all
    phases = {p: {"status": "done"} for p in PHASES}
    (tmp_path / "run.json").write_text(json.dumps({"phases": phases}))
    assert not Bench.fit_on_record(st, tmp_path)  # results.json has no distill record
    st["distill"] = {"rules": 90}
    assert Bench.fit_on_record(st, tmp_path)
    phases["decide"] = {"status": "running"}
    (tmp_path / "run.json").write_text(json.dumps({"phases": phases}))
    assert not Bench.fit_on_record(st, tmp_path)  # an unfinished fit resumes
