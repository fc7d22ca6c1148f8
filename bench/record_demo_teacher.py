"""Rebuild ``src/pld/data/demo_teacher.jsonl``: the demo teacher's recorded replies, as an
OpenAI Batch results file whose custom_ids are pld cache keys.

The replies come from a folder of ``answers/KEY.txt`` files written for
``/work/shared/tools/answer_endpoint.py`` (KEY: the first 24 hex of the sha256 of the
canonical chat request body, exactly as that endpoint computes it). This script runs the
demo's fit with its teacher in batch mode — the same path ``pld demo`` takes — and answers
each exported request file from that folder by the same key, so it invents nothing: a request
without a recorded answer is written to ``DIR/pending/KEY.md`` (readable) and ``KEY.json``
(raw body), listed, and the script exits 1. Once someone writes the missing
``answers/KEY.txt``, rerun it.

    python -m bench.record_demo_teacher /work/rec/demo-teacher  # [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from pld.batch.wire import dumps_line
from pld.cache import Cache
from pld.demo import DEMO_TEACHER, Answerer, Unanswered, demo_distiller, fit_batched
from pld.distiller import Distiller
from pld.rundir import atomic_write

# answer_endpoint.py's KEY_FIELDS and key function, reproduced byte for byte
KEY_FIELDS = (
    "model",
    "messages",
    "response_format",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "n",
    "seed",
    "stop",
)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "pld" / "data" / "demo_teacher.jsonl"


def endpoint_key(body: dict[str, Any]) -> str:
    canon = {k: body[k] for k in KEY_FIELDS if k in body}
    return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:24]


def render(body: dict[str, Any]) -> str:
    parts = [f"### {m.get('role')}\n\n{m.get('content')}\n" for m in body.get("messages", [])]
    if body.get("response_format"):
        parts.append(
            "### required reply format (reply with JSON only, matching this schema)\n\n"
            "```json\n" + json.dumps(body["response_format"], indent=1) + "\n```\n"
        )
    parts.append(
        f"(max_tokens: {body.get('max_tokens')}, temperature: {body.get('temperature')})\n"
    )
    return "\n".join(parts)


def result_line(custom_id: str, key: str, body: dict[str, Any], text: str) -> dict[str, Any]:
    """The reply as a provider's batch output line; usage as the endpoint reported it
    (characters / 4), ids derived from the key so a rerun writes the same bytes."""
    ptok = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4
    ctok = max(1, len(text) // 4)
    return {
        "id": f"batch_req_{key}",
        "custom_id": custom_id,
        "response": {
            "status_code": 200,
            "request_id": key,
            "body": {
                "id": f"answered-{key}",
                "object": "chat.completion",
                "model": body.get("model", "answered"),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": {
                    "prompt_tokens": ptok,
                    "completion_tokens": ctok,
                    "total_tokens": ptok + ctok,
                },
            },
        },
        "error": None,
    }


def folder_answerer(root: Path, recorded: dict[str, dict[str, Any]]) -> Answerer:
    """Answer from ``root/answers``; write what is missing to ``root/pending``."""

    def answer(requests_file: Path, results: Path) -> list[str]:
        lines, missing = [], []
        for raw in requests_file.read_text(encoding="utf-8").splitlines():
            req = json.loads(raw)
            key = endpoint_key(req["body"])
            reply = root / "answers" / f"{key}.txt"
            if not reply.exists():
                missing.append(req["custom_id"])
                (root / "pending").mkdir(parents=True, exist_ok=True)
                atomic_write(root / "pending" / f"{key}.md", render(req["body"]))
                atomic_write(root / "pending" / f"{key}.json", json.dumps(req["body"], indent=1))
                print(f"missing: {root / 'pending' / key}.md ({requests_file.name})")
                continue
            line = result_line(req["custom_id"], key, req["body"], reply.read_text())
            recorded[req["custom_id"]] = line
            lines.append(dumps_line(line))
        atomic_write(results, "".join(lines))
        return missing

    return answer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="folder with answers/KEY.txt")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--student", default="local:smollm2")
    ap.add_argument("--max-rounds", type=int, default=2)
    a = ap.parse_args()
    recorded: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="pld-record-") as tmp:
        cache = Cache(Path(tmp) / "cache.sqlite")

        def make() -> Distiller:
            return demo_distiller(DEMO_TEACHER, a.student, a.max_rounds, cache, batch=True)

        got = fit_batched(make, Path(tmp) / "run", folder_answerer(a.root, recorded))
    body = "".join(dumps_line(line) for line in recorded.values())
    if isinstance(got, Unanswered):
        print(
            f"{len(got.custom_ids)} {got.phase} requests have no recorded answer (listed "
            f"above); write {a.root}/answers/KEY.txt for each and rerun",
            file=sys.stderr,
        )
        if got.phase != "resolve":
            return 1
        print(f"wrote the {len(recorded)} replies recorded so far (the demo keeps its best "
              "rulebook when a resolve round is not covered)", file=sys.stderr)  # fmt: skip
        atomic_write(a.out, body)
        return 1
    atomic_write(a.out, body)
    print(f"wrote {len(recorded)} recorded replies to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
