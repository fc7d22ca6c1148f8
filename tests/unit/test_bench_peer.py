"""The peer benchmark's pure parts (bench.peer, bench.dspy_worker, bench.teacher_endpoint):
argument checks, GEPA's feedback and teacher-call budget, the transcript's honesty check and
cost, and the frontier table. No model, no DSPy (the worker's helpers are standard library)."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench.dspy_worker import (
    CacheRecording,
    CheckpointEvery,
    FailedCalls,
    Paused,
    TeacherCallBudget,
    Worker,
    feedback,
    usage_of,
)
from bench.peer import (
    carried_over,
    check_frontier_run,
    check_same_items,
    dspy_methods,
    gepa_budget,
    item_texts,
    lenient_label,
    mipro_at_budget,
    parse_args,
    quality_baselines,
    recorded_predictions,
    with_lenient_readings,
)
from bench.tables import peer_frontier
from bench.teacher_endpoint import TeacherEndpoint, check_no_test_items, transcript_cost
from pld.tasks.base import Example, Task


def test_feedback_names_both_labels_on_a_miss() -> None:
    assert feedback("race", "race") == (1.0, "Correct: the label is 'race'.")
    score, text = feedback("race", "gender")
    assert score == 0.0 and "'gender'" in text and "correct label is 'race'" in text
    score, text = feedback("race", None)
    assert score == 0.0 and "no valid label" in text


def test_teacher_call_budget_counts_earlier_processes() -> None:
    calls, checks = [1], []
    # a resumed search: 3 calls on record from a process that died, 1 in this one so far
    budget = TeacherCallBudget(5, 3, lambda: calls[0], lambda: checks.append(calls[0]))
    assert budget(None) is False and budget.used() == 4 and not budget.reached
    calls[0] = 2
    assert budget(None) is True and budget.reached
    assert checks == [1, 2]  # the worker's usage checkpoint ran at every check


def test_a_pause_file_pauses_the_search_with_its_calls_on_record(tmp_path: Path) -> None:
    calls, checks = [1], []
    pause = tmp_path / "PAUSE"
    budget = TeacherCallBudget(5, 0, lambda: calls[0], lambda: checks.append(calls[0]), pause)
    assert budget(None) is False  # no file: the search goes on
    calls[0] = 2
    pause.touch()
    with pytest.raises(Paused, match="at 2 of 5 teacher calls"):
        budget(None)
    assert checks == [1, 2]  # usage was recorded before the pause
    calls[0] = 5
    assert budget(None) is True  # a search that reached its budget finishes, paused or not


def _call(model: str, prompt_tokens: int = 0, out: str = "") -> dict[str, Any]:
    """One DSPy history entry as the worker reads it (no usage: a cache replay)."""
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 2} if prompt_tokens else {}
    return {"model": model, "usage": usage, "response": None, "outputs": [out]}


def test_usage_tells_calls_from_cache_replays_per_role() -> None:
    entries = [_call("openai/student", 100), _call("openai/student"), _call("openai/frontier", 50)]
    roles = {"openai/student": "student", "openai/frontier": "teacher"}
    assert usage_of(entries, roles) == {
        "student": {"calls": 1, "cache_hits": 1, "prompt_tokens": 100, "completion_tokens": 2},
        "teacher": {"calls": 1, "cache_hits": 0, "prompt_tokens": 50, "completion_tokens": 2},
    }


class _Item:
    def __init__(self, id: str, text: str) -> None:
        self.id, self.text = id, text

    def inputs(self) -> dict[str, str]:
        return {"text": self.text}


class _Program:
    """A compiled program: labels an item by its text, and cannot parse "??"."""

    def __init__(self, history: list[dict[str, Any]], instructions: str) -> None:
        self.history, self.saved_to = history, ""
        self.signature = type("Sig", (), {"instructions": instructions})()

    def __call__(self, text: str) -> Any:
        self.history.append(_call("openai/student", 10, out=f"label: {text}"))
        if text == "??":
            raise ValueError("no label field")
        return type("Pred", (), {"label": text})()

    def save(self, path: str) -> None:
        self.saved_to = path
        Path(path).write_text("{}")


def test_a_paused_search_stays_on_record_and_its_calls_count_when_it_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history: list[dict[str, Any]] = []
    roles = {"openai/student": "student", "openai/frontier": "teacher"}
    out, test = tmp_path / "raw.json", [_Item("a", "race"), _Item("b", "??")]

    def pausing(checkpoint: Any, earlier: list[dict[str, Any]]) -> Any:
        assert earlier == []
        history.extend([_call("openai/frontier", 50), _call("openai/student", 10)])
        checkpoint()
        raise Paused("paused by PAUSE at 1 of 5 teacher calls")

    w = Worker(out, history, roles)
    w.optimize("dspy-gepa", pausing, lambda p: None, test)
    assert w.paused == ["dspy-gepa"] and w.failed == [] and "dspy-gepa" not in w.out
    (rec,) = json.loads(out.read_text())["dspy-gepa-attempts"]  # on disk, not only in memory
    assert rec["error"].startswith("paused by") and rec["usage"]["teacher"]["calls"] == 1

    # the resumed process (a new Worker on the same file) sees the paused sitting as earlier
    history2: list[dict[str, Any]] = []
    program = _Program(history2, "Decide the label.")

    def finishing(checkpoint: Any, earlier: list[dict[str, Any]]) -> Any:
        assert [a["usage"]["teacher"]["calls"] for a in earlier] == [1]
        history2.append(_call("openai/frontier", 60))
        return program, {"stopped_by": "teacher-call budget"}

    def killed_in_the_test_pass(_program: Any, _items: Any) -> Any:
        raise KeyboardInterrupt

    w2 = Worker(out, history2, roles)
    monkeypatch.setattr(w2, "run", killed_in_the_test_pass)
    with pytest.raises(KeyboardInterrupt):
        w2.optimize("dspy-gepa", finishing, lambda p: None, test)
    # the finished compile is off the attempts on disk: its calls are counted once
    assert [a["error"][:9] for a in json.loads(out.read_text())["dspy-gepa-attempts"]] == [
        "paused by"
    ]
    w2 = Worker(out, history2, roles)
    w2.optimize("dspy-gepa", finishing, lambda p: program, test)  # loads; compiles nothing
    done = json.loads(out.read_text())
    info = done["dspy-gepa"]["compile"]
    assert info["usage"]["teacher"]["calls"] == 1 and info["stopped_by"] == "teacher-call budget"
    assert [a["error"][:9] for a in info["earlier_attempts"]] == ["paused by"]
    assert done["dspy-gepa-attempts"] == info["earlier_attempts"]  # the finished one moved out
    assert program.saved_to.endswith("dspy-gepa-program.json")
    preds = done["dspy-gepa"]["preds"]
    assert [(p["id"], p["label"]) for p in preds] == [("a", "race"), ("b", None)]
    assert preds[1]["error"].startswith("ValueError") and preds[1]["replies"] == ["label: ??"]
    assert done["dspy-gepa"]["usage"]["student"]["calls"] == 2  # the test pass, not the search
    assert done["dspy-gepa"]["instructions"] == "Decide the label."

    # a third run loads the saved program instead of compiling again, and skips a finished arm
    w3 = Worker(out, [], roles)
    w3.optimize("dspy-gepa", pausing, lambda p: pytest.fail("finished: nothing to load"), test)
    del w3.out["dspy-gepa"]
    loaded = _Program([], "Decide the label.")
    w3.optimize("dspy-gepa", pausing, lambda p: loaded, test)
    assert w3.out["dspy-gepa"]["compile"] == info


def test_a_search_without_a_hook_keeps_its_calls_on_record_while_it_runs(tmp_path: Path) -> None:
    """MIPROv2's case: no per-step hook, so the LM callback records usage as calls end; a
    process killed mid-search leaves what it paid for on disk, not ``usage: {}``."""
    history: list[dict[str, Any]] = []
    roles = {"openai/student": "student", "openai/frontier": "teacher"}
    out, now = tmp_path / "raw.json", [0.0]
    on_disk: list[dict[str, Any]] = []

    def killed_mid_search(checkpoint: Any, earlier: Any) -> Any:
        live = CheckpointEvery(checkpoint, seconds=30.0, clock=lambda: now[0])
        for t, model in (
            (10.0, "openai/frontier"),
            (31.0, "openai/student"),
            (40.0, "openai/student"),
        ):
            now[0] = t
            history.append(_call(model, 5))
            live.on_lm_start("id", None, {})
            live.on_lm_end("id", None)
            on_disk.append(json.loads(out.read_text())["dspy-miprov2-budget-attempts"][0])
        raise KeyboardInterrupt  # the sitting ends (SIGTERM, in the worker)

    w = Worker(out, history, roles, cache_entries_at_start=0)
    with pytest.raises(KeyboardInterrupt):
        w.optimize("dspy-miprov2-budget", killed_mid_search, lambda p: None, [])
    # only the call ending 30 s after the last save wrote the file; the others waited
    assert [r["usage"].get("student", {}).get("calls", 0) for r in on_disk] == [0, 1, 1]
    (rec,) = json.loads(out.read_text())["dspy-miprov2-budget-attempts"]
    assert rec["error"].endswith("(killed?)") and rec["started_utc"].endswith("+00:00")
    assert rec["cache_entries_at_start"] == 0  # a search started afresh (bench.tables)
    # a stop (not a SIGKILL) records the calls since the last save too
    assert rec["usage"]["teacher"]["calls"] == 1 and rec["usage"]["student"]["calls"] == 2


def test_a_call_that_raised_is_counted_where_it_happened(tmp_path: Path) -> None:
    """DSPy's history holds only the calls that returned and its optimizers go on after a
    timeout, so the callback puts each failed call there: counted in the span it happened in
    (the compile's usage or the test pass's), by role, and not read as a student's reply."""
    history: list[dict[str, Any]] = []
    roles = {"openai/student": "student", "openai/frontier": "teacher"}
    failures = FailedCalls(history)
    student, teacher = (type("LM", (), {"model": m})() for m in roles)

    def call(lm: Any, n: int, error: Exception | None = None) -> None:
        failures.on_lm_start(f"c{n}", lm, {})
        if error is None:
            history.append(_call(lm.model, 5, out="label: a"))
        failures.on_lm_end(f"c{n}", None, error)

    def search(checkpoint: Any, earlier: Any) -> Any:
        call(student, 1)
        call(student, 2, TimeoutError("read timed out waiting for headers: no bytes for 600s"))
        call(teacher, 3)
        return _Program(history, "Label."), {}

    w = Worker(tmp_path / "raw.json", history, roles)
    call(teacher, 0, ConnectionError("before the search"))  # in no span below
    w.optimize("dspy-miprov2", search, lambda p: None, [])
    info = json.loads((tmp_path / "dspy-miprov2-program.usage.json").read_text())
    assert info["usage"] == {
        "student": {"calls": 1, "cache_hits": 0, "prompt_tokens": 5, "completion_tokens": 2,
                    "failed_calls": 1},
        "teacher": {"calls": 1, "cache_hits": 0, "prompt_tokens": 5, "completion_tokens": 2},
    }  # fmt: skip
    assert history[2]["failed"].startswith("TimeoutError: read timed out")
    assert failures.model_of == {}  # every started call ended

    class Flaky:  # the test pass: one item's call times out, the program cannot answer
        signature = type("Sig", (), {"instructions": ""})()

        def __call__(self, text: str) -> Any:
            if text == "t":
                call(student, 9, TimeoutError("x"))
                raise RuntimeError("no reply")
            call(student, 8)
            return type("Pred", (), {"label": "a"})()

    r = w.run(Flaky(), [_Item("i0", "ok"), _Item("i1", "t")])
    assert r["usage"]["student"]["failed_calls"] == 1 and r["usage"]["student"]["calls"] == 1
    assert r["preds"][1]["label"] is None and r["preds"][1]["replies"] == []


def test_a_larger_test_set_scores_the_saved_program_again(tmp_path: Path) -> None:
    """bench.quality's ``--n-test`` grew: the saved program answers the new test set (the
    items answered before replay from DSPy's cache), with no second search; a test set
    already on record is not run again."""
    history: list[dict[str, Any]] = []
    w = Worker(tmp_path / "raw.json", history, {"openai/student": "student"})
    prog, searches = _Program(history, "Label."), []

    def search(checkpoint: Any, earlier: Any) -> Any:
        searches.append(1)
        return prog, {"num_trials": 3}

    small, large = [_Item("i0", "a")], [_Item("i0", "a"), _Item("i1", "b")]
    for test in (small, small, large):
        w.optimize("dspy-miprov2", search, lambda p: prog, test)
    r = json.loads((tmp_path / "raw.json").read_text())["dspy-miprov2"]
    assert searches == [1] and len(history) == 3  # 1 item, then 2: nothing twice
    assert [p["id"] for p in r["preds"]] == ["i0", "i1"] and r["compile"]["num_trials"] == 3


def test_the_cache_recording_resumes_a_search_on_a_fresh_machine(tmp_path: Path) -> None:
    """A sitting's DSPy cache is written to the committed file as it grows; a fresh checkout
    (empty cache) gets every recorded entry back, and a line torn by a kill costs one call."""
    path = tmp_path / "cache.jsonl"
    sitting: dict[str, Any] = {}
    rec = CacheRecording(sitting, path)
    assert rec.restore() == 0 and rec.record() == 0 and not path.exists()
    sitting["k1"] = {"outputs": ["[[ ## label ## ]]\nrace"], "usage": {"prompt_tokens": 9}}
    sitting["k2"] = {"outputs": ["x"], "usage": {}}
    assert rec.record() == 2 and rec.record() == 0  # each entry written once
    with path.open("a") as f:
        f.write('{"key": "k3", "val')  # killed mid-line
    sitting["k4"] = {"outputs": ["y"]}
    assert rec.record() == 1  # starts on a line of its own

    fresh: dict[str, Any] = {}
    again = CacheRecording(fresh, path)
    assert again.restore() == 3
    assert fresh == {k: sitting[k] for k in ("k1", "k2", "k4")}
    assert again.record() == 0  # nothing new to write back
    fresh["k2"] = {"outputs": ["changed"]}
    assert CacheRecording(fresh, path).restore() == 0
    assert fresh["k2"] == {"outputs": ["changed"]}  # an entry on disk wins


def test_a_failed_append_is_written_again(tmp_path: Path) -> None:
    rec = CacheRecording({"k1": {"outputs": ["a"]}}, tmp_path / "missing" / "cache.jsonl")
    with pytest.raises(FileNotFoundError):
        rec.record()
    rec.path.parent.mkdir()
    assert rec.record() == 1 and rec.record() == 0


def test_a_failed_optimizer_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    w = Worker(tmp_path / "raw.json", [], {})

    def broken(checkpoint: Any, earlier: Any) -> Any:
        raise RuntimeError("teacher endpoint gone")

    w.optimize("dspy-miprov2", broken, lambda p: None, [])
    assert w.failed == ["dspy-miprov2"] and w.paused == []
    (rec,) = w.out["dspy-miprov2-attempts"]
    assert rec["error"] == "RuntimeError: teacher endpoint gone" and "wall_s" in rec


def _request(root: Path, name: str, content: Any) -> None:
    (root / "requests").mkdir(parents=True, exist_ok=True)
    body = {"model": "frontier", "messages": [{"role": "user", "content": content}]}
    (root / "requests" / f"{name}.json").write_text(json.dumps(body))


def test_check_no_test_items_sees_quotes_in_any_layout(tmp_path: Path) -> None:
    test_item = 'The nurse said "no" to   the doctor.'
    # DSPy's reflection prompt embeds examples as JSON: the quotes arrive escaped
    _request(tmp_path, "a", json.dumps([{"sentence": test_item, "feedback": "Wrong"}]))
    # OpenAI content parts, different case and line breaks
    _request(tmp_path, "b", [{"type": "text", "text": "THE NURSE SAID NO\nto the doctor"}])
    _request(tmp_path, "c", "[[ ## sentence ## ]]\nA train sentence that is long enough.")
    _request(tmp_path, "d", "no test text here; only a short one: the nurse")
    r = check_no_test_items(tmp_path, [test_item, "the nurse"])
    assert r["quoting_test_items"] == ["a.json", "b.json"]
    assert r["requests"] == 4
    # a test text the train/val items also contain is no evidence of a leak
    shared = "A train sentence that is long enough."
    assert check_no_test_items(tmp_path, [shared])["quoting_test_items"] == ["c.json"]
    assert check_no_test_items(tmp_path, [shared], seen=[shared])["quoting_test_items"] == []
    # ... or contain within a longer item (a test context that is part of a training one)
    part = "A train sentence that is long"
    assert check_no_test_items(tmp_path, [part])["quoting_test_items"] == ["c.json"]
    assert check_no_test_items(tmp_path, [part], seen=[shared])["quoting_test_items"] == []
    # but a seen text inside a longer test text does not excuse the test text
    longer = "A train sentence that is long enough. And a test tail."
    _request(tmp_path, "e", longer)
    assert check_no_test_items(tmp_path, [longer], seen=[shared])["quoting_test_items"] == [
        "e.json"
    ]


def test_check_no_test_items_flags_replies_longer_than_max_tokens(tmp_path: Path) -> None:
    answers = tmp_path / "answers"
    answers.mkdir()
    for name, limit, reply in [("a", 10, "x" * 41), ("b", 10, "x" * 40), ("c", None, "x" * 999)]:
        _request(tmp_path, name, "a request")
        if limit is not None:
            body = json.loads((tmp_path / "requests" / f"{name}.json").read_text())
            (tmp_path / "requests" / f"{name}.json").write_text(
                json.dumps(body | {"max_tokens": limit})
            )
        (answers / f"{name}.txt").write_text(reply)
    _request(tmp_path, "d", "pending, no answer yet")
    r = check_no_test_items(tmp_path, [])
    # 41 characters is over 10 tokens at 4 characters each; 40 is not; no limit, no flag
    assert r["replies_over_max_tokens"] == ["a.json"]
    assert (r["requests"], r["answers"]) == (4, 3)


def test_transcript_cost_counts_each_request_once(tmp_path: Path) -> None:
    lines = [
        {"key": "k1", "prompt_tokens": 10, "completion_tokens": 4},
        {"key": "k2", "prompt_tokens": 20, "completion_tokens": 6},
        {"key": "k1", "prompt_tokens": 10, "completion_tokens": 4},  # a replay
    ]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert transcript_cost(tmp_path) == {
        "requests": 2,
        "replies_logged": 3,
        "prompt_tokens_est": 30,
        "completion_tokens_est": 10,
    }
    assert transcript_cost(tmp_path / "none")["requests"] == 0


def test_gepa_budget_is_at_least_plds() -> None:
    assert gepa_budget(None, 126) == 126
    assert gepa_budget(200, 126) == 200
    with pytest.raises(SystemExit, match="below pld's 126"):
        gepa_budget(100, 126)


def test_mipro_at_budget_spends_at_least_plds_budget_on_candidates() -> None:
    for budget in (1, 98, 126, 127, 300):
        m = mipro_at_budget(budget)
        # the per-candidate calls alone reach the budget, and not by a whole candidate more
        assert m["num_candidates"] * 3 >= budget > (m["num_candidates"] - 1) * 3
        assert m["teacher_call_budget"] == budget
    assert mipro_at_budget(126) == {
        "teacher_call_budget": 126,
        "num_candidates": 42,
        "num_trials": 63,
    }
    assert mipro_at_budget(1)["num_trials"] == 1  # DSPy's max(2·log2 N, 1.5·N) at N = 1


def test_frontier_arguments() -> None:
    a = parse_args(["--teacher", "frontier"])
    assert a.teacher_max_tokens == 2000 and a.gepa_budget is None
    assert parse_args([]).teacher_max_tokens == 600
    for bad in (["--gepa-budget", "130"], ["--teacher", "frontier", "--pld-only"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_arms_stage_a_frontier_run() -> None:
    assert parse_args(["--teacher", "frontier"]).arms == [
        "predict",
        "miprov2",
        "gepa",
        "miprov2-budget",
    ]
    a = parse_args(["--teacher", "frontier", "--arms", "predict, miprov2"])
    assert a.arms == ["predict", "miprov2"]
    for bad in (
        ["--teacher", "frontier", "--arms", "predict,mipro"],
        ["--teacher", "frontier", "--arms", ","],
        ["--arms", "predict"],
    ):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_check_frontier_run_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    ok: dict[str, Any] = {
        "args": {"teacher": "frontier", "students": "qwen-1.5b", "dataset": "d"},
        "students": {"qwen-1.5b": {"distill": {}, "methods": {"pld": {"_correct": {}}}}},
    }
    check_frontier_run(ok, "qwen-1.5b", path)
    with pytest.raises(SystemExit, match="not a --teacher frontier run"):
        check_frontier_run({**ok, "args": {**ok["args"], "teacher": "qwen-1.5b"}}, "q", path)
    with pytest.raises(SystemExit, match="no student"):
        check_frontier_run(ok, "smollm2", path)
    unfinished = {**ok, "students": {"qwen-1.5b": {"methods": {}}}}
    with pytest.raises(SystemExit, match="rerun `python -m bench"):
        check_frontier_run(unfinished, "qwen-1.5b", path)


def test_no_comparison_with_a_pld_row_on_other_items(tmp_path: Path) -> None:
    """The DSPy arms answered a grown test set; pld's row is still on the smaller one."""
    q, raw = tmp_path / "results.json", tmp_path / "raw.json"
    check_same_items({"a": True, "b": False}, ["b", "a"], q, raw, "d", "m")
    with pytest.raises(SystemExit, match=r"is on 1 items, the test set on 2.*--n-test 2"):
        check_same_items({"a": True}, ["a", "b"], q, raw, "d", "m")


def _task() -> tuple[Task, list[Example]]:
    items = [Example(f"i{k}", {"sentence": f"sentence number {k} here"}, lab) for k, lab in
             enumerate(["a", "b", "a", "b", "a", "b"])]  # fmt: skip
    return Task("t", "Pick a or b.", ("a", "b"), (), "Sentence: {sentence}"), items


def test_item_texts_hold_the_render_and_each_field() -> None:
    task, items = _task()
    assert item_texts(task, items[:1]) == ["Sentence: sentence number 0 here", *[
        "sentence number 0 here"]]  # fmt: skip


def test_frontier_table_renders_what_peer_writes() -> None:
    task, test = _task()
    gold = {e.id: e.label for e in test}
    pld_pred = {e.id: e.label for e in test}  # pld right everywhere
    pld_preds = recorded_predictions(pld_pred, gold)
    stat = {"macro_f1_ci95": [0.5, 0.9], "latency_p50_s": 0.5, "invalid": 0, "accuracy": 1.0}
    qres: dict[str, Any] = {
        "students": {
            "s": {
                "methods": {
                    "pld": {"_correct": {i: True for i in gold}},
                    "cot": {**stat, "n": 2, "macro_f1": 0.5, "_pred": {"i0": "b", "i1": "b"},
                            "_correct": {"i0": False, "i1": True}},
                }
            }
        }
    }  # fmt: skip
    usage = {"teacher": {"calls": 3, "prompt_tokens": 90, "completion_tokens": 30}}
    compile_info = {
        "wall_s": 12.0,
        "usage": usage,
        "earlier_attempts": [],
        "stopped_by": "teacher-call budget",
        "teacher_calls_all_processes": 3,
        "teacher_call_budget": 3,
        "metric_calls": 40,
        "candidates": 2,
    }
    preds = [{"id": e.id, "label": "a", "error": "", "latency_s": 0.1} for e in test]
    mb_usage = {
        "teacher": {"calls": 100, "cache_hits": 28, "prompt_tokens": 9, "completion_tokens": 9}
    }
    mb_info = {
        "wall_s": 5.0,
        "usage": mb_usage,
        "earlier_attempts": [],
        "teacher_call_budget": 126,
        "num_candidates": 42,
        "num_trials": 63,
    }
    raw = {
        "dspy-gepa": {"preds": preds, "wall_s": 1.0, "usage": {}, "compile": compile_info,
                      "instructions": "Answer a."},
        "dspy-gepa-attempts": [],
        "dspy-miprov2-budget": {"preds": preds, "wall_s": 1.0, "usage": {}, "compile": mb_info,
                                "instructions": "Label a."},
    }  # fmt: skip
    methods = dspy_methods(raw, task, test, {"pld": qres["students"]["s"]["methods"]["pld"]
                                             ["_correct"]}, pld_preds)  # fmt: skip
    assert methods["dspy-gepa"]["pld_minus_this"]["diff"] > 0
    teacher = {"requests": 126, "prompt_tokens_est": 1, "completion_tokens_est": 2}
    d = {
        "args": {"model": "s"},
        "quality_args": {"n_train": 2, "n_val": 2, "n_test": 6},
        "dspy": "3.4.1",
        "machine": {"date": "today"},
        "pld_frontier": {**stat, "n": 6, "macro_f1": 1.0, "teacher": teacher,
                         "per_class": {lab: {"f1": 1.0} for lab in task.labels},
                         "distill_usage": {"student": {"calls": 5, "cache_hits": 1}}},
        "quality_baselines": quality_baselines(qres, "s", task.labels, pld_preds),
        "methods": methods,
        "dspy_teacher_transcript": {"cost": {"requests": 3}, "answers": 3,
                                    "quoting_test_items": []},
        "failed_attempts": [],
        "lost_attempts": [{"optimizer": "dspy-gepa", "wall_s": 9.0, "lost": "gone",
                           "usage": {"teacher": {"calls": 4, "prompt_tokens": 40},
                                     "student": {"calls": 7, "prompt_tokens": 70}}}],
    }  # fmt: skip
    text = "\n".join(peer_frontier("x-frontier", d))
    assert "A dspy-gepa attempt of 9 s (4 teacher and 7 student calls, not counted" in text
    assert "| dspy-gepa | 6 |" in text and "| 3 | 90 + 30 |" in text
    assert "| cot | 2 |" in text and "| pld (frontier run's rulebook) | 6 |" in text
    assert "GEPA stopped by its teacher-call budget after 3 teacher calls (budget 3)" in text
    assert "0 quoting a test item; pld's: 126" in text
    assert 'dspy-gepa\'s instruction, verbatim: "Answer a."' in text
    assert "| dspy-miprov2-budget | 6 |" in text and "| 100 | 9 + 9 |" in text
    assert (
        "42 instruction candidates and 63 trials for a budget of 126 teacher calls; it used "
        "128 teacher replies (100 asked by its processes on record, 28 replayed" in text
    )
    assert "killed process" not in text
    # a killed process from before live recording left ``usage: {}``: said, not hidden
    mb_info["earlier_attempts"] = [{"error": "the process ended during the compile (killed?)",
                                    "wall_s": 0.0, "usage": {}}]  # fmt: skip
    text = "\n".join(peer_frontier("x-frontier", d))
    assert "28 replayed from DSPy's cache" in text and "or by 1 killed process(es)" in text
    assert "| 100 + unrecorded | 9 + 9 + unrecorded |" in text
    # the search restarted from an empty cache (a fresh machine): the processes before that
    # are void (paid, shown, outside the row), whatever they recorded
    lost_search: dict[str, Any] = {
        "error": "the process ended during the compile (killed?)",
        "wall_s": 60.0,
        "usage": {
            "teacher": {"calls": 50, "prompt_tokens": 5},
            "student": {"calls": 70, "prompt_tokens": 7},
        },
    }
    restart: dict[str, Any] = {
        "error": "the process ended during the compile (killed?)",
        "wall_s": 2.0,
        "cache_entries_at_start": 0,
        "usage": {"student": {"calls": 11, "prompt_tokens": 1}},
    }
    killed: dict[str, Any] = {"error": "the process ended during the compile (killed?)",
                              "wall_s": 0.0, "usage": {}}  # fmt: skip
    mb_info["earlier_attempts"] = [killed, lost_search, restart]
    d["failed_attempts"] = [{"optimizer": "dspy-miprov2-budget", **a}
                            for a in (killed, lost_search, restart)]  # fmt: skip
    text = "\n".join(peer_frontier("x-frontier", d))
    assert "| 100 | 9 + 9 | 11 | 7 |" in text  # the restart and the finishing process only
    assert "(calls not recorded, not counted in any row) is void: a later process" in text
    assert "(50 teacher and 70 student calls, not counted in any row) is void" in text
    assert text.count("dspy-miprov2-budget attempt failed after 2 s and was resumed") == 1
    assert "failed after 60 s" not in text and "killed process" not in text
    # GEPA resumes from its own checkpoint, not the cache: a fresh machine voids nothing
    compile_info["earlier_attempts"] = [restart]
    text = "\n".join(peer_frontier("x-frontier", d))
    assert "| 3 | 90 + 30 | 11 | 14 |" in text and "dspy-gepa attempt of 2 s" not in text
    assert 'dspy-miprov2-budget\'s instruction, verbatim: "Label a."' in text
    # per class: pld and GEPA (which answered "a" on all six items; pld was right on all)
    gepa_f1 = " | ".join(
        f"{methods['dspy-gepa']['per_class'][lab]['f1']:.2f}" for lab in task.labels
    )
    assert f"| dspy-gepa | {gepa_f1} | 0 | 3 |" in text
    # a row with no compile (dspy.Predict) has no unrecorded cost, and a -lenient row (the
    # same compile, reread) does not list the void processes a second time
    methods["dspy-predict"] = {k: v for k, v in methods["dspy-gepa"].items() if k != "compile"}
    methods["dspy-miprov2-budget-lenient"] = methods["dspy-miprov2-budget"]
    lines = "\n".join(peer_frontier("x-frontier", d)).splitlines()
    (predict,) = [x for x in lines if x.startswith("| dspy-predict | 6 |")]
    assert "unrecorded" not in predict and "| 0 | 0 + 0 | 0 | 0 |" in predict
    assert sum("is void: a later process" in x for x in lines) == 2
    # a model call that raised is shown in its role's cell, search and test pass together;
    # a void process's failure is not the row's
    restart["usage"]["student"]["failed_calls"] = 1
    lost_search["usage"]["student"]["failed_calls"] = 5
    methods["dspy-miprov2-budget"]["usage"] = {"student": {"failed_calls": 2}}
    text = "\n".join(peer_frontier("x-frontier", d))
    assert "| 100 | 9 + 9 | 11 (3 failed) | 7 |" in text
    assert "| 100 (" not in text
    # a resumed process that asked fewer requests than the search paid for (its bootstrap
    # came out differently, so some proposals were not made again): no negative replay count
    restart["usage"]["teacher"] = {"calls": 100, "prompt_tokens": 9, "completion_tokens": 9}
    mb_usage["teacher"] = {"calls": 0, "cache_hits": 90, "prompt_tokens": 0, "completion_tokens": 0}
    text = "\n".join(peer_frontier("x-frontier", d))
    assert "it used 90 teacher replies (100 asked by its processes on record, 10 of them" in text
    assert "-10 replayed" not in text


def test_a_lost_worker_state_keeps_finished_rows_and_voids_the_unfinished_search() -> None:
    """A fresh checkout without raw.json: the scored rows of the last record stay, the paused
    search's attempts become lost (paid, outside the restarted search), and once raw.json
    holds the new search, nothing is carried twice."""
    paused = {"optimizer": "dspy-gepa", "error": "paused: …", "wall_s": 1.0, "usage": {}}
    prev = {"methods": {"dspy-predict": {"macro_f1": 0.6}, "dspy-miprov2": {"macro_f1": 0.5}},
            "failed_attempts": [paused], "lost_attempts": []}  # fmt: skip
    kept, lost = carried_over(prev, {})
    assert set(kept) == {"dspy-predict", "dspy-miprov2"}
    assert [a["optimizer"] for a in lost] == ["dspy-gepa"] and "restarted" in lost[0]["lost"]
    # the next run: the worker's state now holds predict and the restarted search
    again = {"methods": kept, "failed_attempts": [paused], "lost_attempts": lost}
    kept2, lost2 = carried_over(again, {"dspy-predict": {}, "dspy-gepa-attempts": [paused]})
    assert set(kept2) == {"dspy-miprov2"} and lost2 == lost


LABELS = ["stereotype", "anti-stereotype", "unrelated"]


def test_lenient_label_reads_what_the_student_meant_and_nothing_else() -> None:
    chat = "[[ ## label ## ]]\n= anti-stereotype\n\n[[ ## completed ## ]]"
    assert lenient_label([chat], LABELS) == "anti-stereotype"
    assert lenient_label(['{"label": "= unrelated"}'], LABELS) == "unrelated"
    # the first reply carries no label, DSPy's JSON fallback does
    assert lenient_label(["[[ ## label ## ]]\nmaybe", '{"label": "stereotype"}'], LABELS) == (
        "stereotype"
    )
    assert lenient_label(["[[ ## label ## ]]\nneutral\n"], LABELS) is None
    assert lenient_label(["= unrelated"], LABELS) is None  # no label field: not guessed


def test_lenient_row_only_where_dspy_dropped_a_readable_reply() -> None:
    ok = {"id": "a", "label": "unrelated", "error": "", "latency_s": 1.0, "replies": []}
    bad = {
        "id": "b",
        "label": None,
        "error": "AdapterParseError: ...",
        "latency_s": 1.0,
        "replies": ["[[ ## label ## ]]\n= stereotype\n"],
    }
    clean = {"dspy-predict": {"preds": [ok], "wall_s": 1.0, "usage": {}}}
    assert [n for n, _ in with_lenient_readings(clean, LABELS)] == ["dspy-predict"]
    raw = {"dspy-predict": {"preds": [ok, bad], "wall_s": 1.0, "usage": {}}, "x-attempts": []}
    rows = dict(with_lenient_readings(raw, LABELS))
    assert list(rows) == ["dspy-predict", "dspy-predict-lenient"]
    assert rows["dspy-predict"]["preds"][1]["label"] is None  # DSPy's own score untouched
    assert rows["dspy-predict-lenient"]["preds"][1]["label"] == "stereotype"


def _chat(url: str, content: str) -> str:
    body = {"model": "frontier", "messages": [{"role": "user", "content": content}]}
    req = urllib.request.Request(
        url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(json.loads(r.read())["choices"][0]["message"]["content"])


def test_teacher_endpoint_replays_a_base_runs_recorded_reply(tmp_path: Path) -> None:
    base, variant = tmp_path / "base", tmp_path / "variant"
    with TeacherEndpoint(base) as ep:  # record: answer the pending request as the helper would

        def answer() -> None:
            pending = base / "pending"
            while not list(pending.glob("*.md")):
                threading.Event().wait(0.05)
            key = next(pending.glob("*.md")).stem
            (base / "answers" / f"{key}.txt").write_text("the recorded reply")

        threading.Thread(target=answer, daemon=True).start()
        assert _chat(ep.base_url, "shared request") == "the recorded reply"
    # the variant asks the same request: answered at once from the base, copied into its own
    # transcript; the base is not touched
    with TeacherEndpoint(variant, replay_from=[base]) as ep:
        assert _chat(ep.base_url, "shared request") == "the recorded reply"
    key = next((base / "answers").glob("*.txt")).stem
    assert (variant / "answers" / f"{key}.txt").read_text() == "the recorded reply"
    assert (variant / "requests" / f"{key}.json").exists()
    assert transcript_cost(variant)["requests"] == 1
