"""DSPy side of the peer benchmark. Runs inside the separate DSPy environment (``.venv-dspy``),
never in pld's: it imports only the standard library and ``dspy``, reads the split that
``bench.peer`` wrote, talks to the llama.cpp server ``bench.peer`` started, and writes per-item
predictions plus call and token counts for pld to score with its own metrics.

    .venv-dspy/bin/python bench/dspy_worker.py SPEC.json OUT.json

Resumable: DSPy's own disk cache lives next to the results, and the optimized program is saved
as soon as the optimizer returns, so a rerun repeats no model call.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Literal


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out_path = Path(sys.argv[2])
    out: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}

    import dspy
    from dspy.clients.base_lm import GLOBAL_HISTORY

    dspy.configure_cache(
        enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=spec["cache_dir"]
    )
    base = {"api_base": spec["base_url"], "api_key": "local", "num_retries": 3}
    # Two names on one server so the history can tell the roles apart; llama.cpp ignores it.
    student = dspy.LM("openai/student", temperature=0.0, max_tokens=64, **base)
    teacher = dspy.LM(
        "openai/teacher", temperature=0.0, max_tokens=spec["teacher_max_tokens"], **base
    )
    dspy.configure(lm=student, adapter=dspy.ChatAdapter())

    label_type = Literal[tuple(spec["labels"])]  # type: ignore[valid-type]
    fields: dict[str, Any] = {f: (str, dspy.InputField()) for f in spec["input_fields"]}
    fields["label"] = (label_type, dspy.OutputField())
    signature = dspy.make_signature(fields, spec["description"])

    def examples(rows: list[dict[str, Any]]) -> list[Any]:
        return [
            dspy.Example(**r["fields"], label=r["label"], id=r["id"]).with_inputs(
                *spec["input_fields"]
            )
            for r in rows
        ]

    train, val, test = (examples(spec[k]) for k in ("train", "val", "test"))

    def usage(start: int) -> dict[str, dict[str, int]]:
        acc: dict[str, dict[str, int]] = {}
        for e in GLOBAL_HISTORY[start:]:
            role = str(e["model"]).split("/")[-1]
            a = acc.setdefault(
                role, {"calls": 0, "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 0}
            )
            u = e.get("usage") or {}
            # DSPy 3.4.1 does not always flag a disk-cache replay as a hit; a replay carries
            # no usage, while every call the server answers reports its prompt tokens.
            if getattr(e["response"], "cache_hit", False) or not u.get("prompt_tokens"):
                a["cache_hits"] += 1
                continue
            a["calls"] += 1
            a["prompt_tokens"] += int(u.get("prompt_tokens") or 0)
            a["completion_tokens"] += int(u.get("completion_tokens") or 0)
        return acc

    def run(program: Any, items: list[Any]) -> dict[str, Any]:
        start, t0 = len(GLOBAL_HISTORY), time.perf_counter()
        preds = []
        for ex in items:
            t = time.perf_counter()
            try:
                label: str | None = str(program(**ex.inputs()).label)
                err = ""
            except Exception as e:  # a reply DSPy cannot parse: invalid, scored wrong
                label, err = None, f"{type(e).__name__}: {str(e)[:200]}"
            preds.append(
                {"id": ex.id, "label": label, "error": err, "latency_s": time.perf_counter() - t}
            )
        return {"preds": preds, "wall_s": time.perf_counter() - t0, "usage": usage(start)}

    def save() -> None:
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=2) + "\n")
        tmp.replace(out_path)

    zero = dspy.Predict(signature)
    if "dspy-predict" not in out:
        out["dspy-predict"] = run(zero, test)
        save()
        print("dspy-predict done", flush=True)

    # Attempts that died (say, a missing optional dependency) paid for calls a rerun then takes
    # from the cache: they stay on record and count toward the optimizer's cost.
    attempts: list[dict[str, Any]] = out.setdefault("dspy-miprov2-attempts", [])
    if "dspy-miprov2" not in out:
        saved = out_path.with_name("dspy-miprov2-program.json")
        compile_info: dict[str, Any]
        if saved.exists():
            optimized = dspy.Predict(signature)
            optimized.load(str(saved))
            compile_info = json.loads(saved.with_suffix(".usage.json").read_text())
        else:
            start, t0 = len(GLOBAL_HISTORY), time.perf_counter()
            opt = dspy.MIPROv2(
                metric=lambda ex, pred, trace=None: str(pred.label) == ex.label,
                prompt_model=teacher,
                task_model=student,
                auto="light",
                # Instructions only, no demonstrations: the same zero-shot form PLD produces.
                max_bootstrapped_demos=0,
                max_labeled_demos=0,
                num_threads=1,
                seed=spec["seed"],
            )
            try:
                optimized = opt.compile(zero.deepcopy(), trainset=train, valset=val)
            except Exception as e:  # reported, not hidden: the optimizer's own failure
                attempts.append(
                    {
                        "error": f"{type(e).__name__}: {str(e)[:500]}",
                        "wall_s": time.perf_counter() - t0,
                        "usage": usage(start),
                    }
                )
                save()
                raise
            compile_info = {
                "wall_s": time.perf_counter() - t0,
                "usage": usage(start),
                "earlier_attempts": attempts,
            }
            optimized.save(str(saved))
            saved.with_suffix(".usage.json").write_text(json.dumps(compile_info, indent=2))
        r = run(optimized, test)
        r["compile"] = compile_info
        r["instructions"] = optimized.signature.instructions
        out["dspy-miprov2"] = r
        save()
        print("dspy-miprov2 done", flush=True)


if __name__ == "__main__":
    main()
