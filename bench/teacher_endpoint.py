"""The frontier teacher for the benchmarks: ``../shared/tools/answer_endpoint.py`` in-process,
keeping a copy of every request it receives.

No API is reachable from these machines, so a frontier LLM answers the teacher's requests as
files: the endpoint writes each request to ``DIR/pending/KEY.md`` and holds the HTTP call open
until ``DIR/answers/KEY.txt`` appears (a helper that sees only ``pending/`` writes it). The
shared tool deletes a request once answered; the benchmarks must keep the teacher's whole
transcript, so this wrapper also writes each request body to ``DIR/requests/KEY.json`` before
handing it on. A rerun with unchanged prompts is a replay: every key is already answered, and
nothing new is asked.

``check_no_test_items`` is the honesty check of the transcript: no request may quote a test
item (the teacher sees training examples only), and it lists the replies longer than their
request's ``max_tokens`` (a file-answering teacher is not cut off, an API model would be).
``transcript_cost`` counts what the teacher answered, the same way for every optimizer that
used it (pld, DSPy).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import re
import threading
from collections.abc import Iterable, Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import ROOT
from pld.rundir import atomic_write

TOOL = ROOT.parent / "shared" / "tools" / "answer_endpoint.py"


def _tool() -> Any:
    spec = importlib.util.spec_from_file_location("answer_endpoint", TOOL)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{TOOL} is missing: the frontier teacher needs ../shared/tools")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def request_key(body: dict[str, Any], fields: Iterable[str]) -> str:
    """The endpoint's own key: sha256 of the canonical body's keyed fields (first 24 hex)."""
    canon = {k: body[k] for k in fields if k in body}
    return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:24]


class TeacherEndpoint:
    """Serve ``root`` on an ephemeral 127.0.0.1 port in a daemon thread (``with`` block).

    ``replay_from`` are other runs' transcript folders: a request one of them already answered
    (the same key, so the same request) gets that recorded reply (the first folder's that has
    it), copied into ``root`` so this transcript stays complete on its own. A variant run
    replays its base run's shared requests this way."""

    def __init__(self, root: Path, replay_from: Sequence[Path] = ()) -> None:
        self.root = root
        tool = _tool()
        base = tool.make_handler(root)
        requests = root / "requests"
        requests.mkdir(parents=True, exist_ok=True)
        fields = tool.KEY_FIELDS

        class Capturing(base):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:
                raw = self.rfile.read(  # type: ignore[has-type]
                    int(self.headers.get("Content-Length", 0))
                )
                try:
                    body = json.loads(raw)
                    key = request_key(body, fields)
                    path = requests / f"{key}.json"
                    if not path.exists():
                        # the recorded transcript's bytes: indent 1, no final newline
                        atomic_write(path, json.dumps(body, indent=1))
                    _replay(key, replay_from, root)
                except (ValueError, TypeError):
                    pass  # the base handler answers 400
                self.rfile = io.BytesIO(raw)
                super().do_POST()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Capturing)
        self.port = self.server.server_address[1]

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (for clients other than pld, e.g. DSPy)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def spec(self) -> str:
        return f"openai:frontier@{self.base_url}?timeout=7200"

    def __enter__(self) -> TeacherEndpoint:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _replay(key: str, sources: Sequence[Path], root: Path) -> None:
    """Copy the first of ``sources``' recorded replies to this request into ``root``."""
    mine = root / "answers" / f"{key}.txt"
    for source in sources:
        recorded = source / "answers" / f"{key}.txt"
        if recorded.exists() and not mine.exists():
            mine.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(mine, recorded.read_text())
            return


_WORD = re.compile(r"\w+")


def _words(text: str) -> str:
    """Lower-case words joined by single spaces, padded: a quote survives any layout a client
    gives it (pld renders the input template, DSPy one field per block, JSON escapes quotes)."""
    return " " + " ".join(_WORD.findall(text.lower())) + " "


def check_no_test_items(
    root: Path, test_texts: Iterable[str], seen: Iterable[str] = ()
) -> dict[str, Any]:
    """Count requests in ``root/requests`` that quote any test item's text (must be 0).

    ``test_texts`` may hold whole rendered items and single field values; texts shorter than
    12 characters, and texts that also occur in ``seen`` (the training and validation items,
    which the teacher may quote: ContractNLI repeats its hypotheses across items), whole or
    inside one of them (StereoSet's test context "The delivery man was BLANK." is part of a
    training context "The delivery man was BLANK with his delivery"), are not evidence of a
    leak and are skipped. Matching is on whole words, case and punctuation ignored."""
    allowed = " | ".join({_words(t) for t in seen})
    texts = [w for w in {_words(t) for t in test_texts if len(t.strip()) >= 12} if w not in allowed]
    leaks: list[str] = []
    files = sorted((root / "requests").glob("*.json"))
    for f in files:
        messages = json.loads(f.read_text()).get("messages", [])
        content = _words(" ".join(_content_text(m.get("content", "")) for m in messages))
        if any(t in content for t in texts):
            leaks.append(f.name)
    answers = len(list((root / "answers").glob("*.txt")))
    return {
        "requests": len(files),
        "answers": answers,
        "quoting_test_items": leaks,
        "replies_over_max_tokens": [f"{k}.json" for k in replies_over_max_tokens(root)],
    }


def replies_over_max_tokens(root: Path) -> dict[str, tuple[int, int]]:
    """Replies longer than their request allowed: key -> (max_tokens, estimated tokens), the
    estimate as the endpoint counts (characters / 4). The endpoint does not enforce
    ``max_tokens``: a file-answering teacher writes what it writes, where an API model would
    stop (and the client re-ask). Flagged, not cut: cutting would change recorded replays;
    every optimizer's teacher is checked the same way, so the tables can say how many replies
    had that advantage."""
    out: dict[str, tuple[int, int]] = {}
    for f in sorted((root / "requests").glob("*.json")):
        body = json.loads(f.read_text())
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        answer = root / "answers" / f"{f.stem}.txt"
        if isinstance(limit, int) and answer.exists():
            chars = len(answer.read_text())
            if chars / 4 > limit:
                out[f.stem] = (limit, chars // 4)
    return out


def _content_text(content: object) -> str:
    """A message's text, whether a string or OpenAI's list of content parts."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def transcript_cost(root: Path) -> dict[str, int]:
    """What the teacher answered in ``root``: distinct requests and their tokens as the
    endpoint estimates them (characters / 4, the only count a file-answering teacher has).
    The endpoint logs every reply, replays included; each request is counted once."""
    log = root / "log.jsonl"
    first: dict[str, dict[str, Any]] = {}
    lines = log.read_text().splitlines() if log.exists() else []
    for line in lines:
        if line.strip():
            r = json.loads(line)
            first.setdefault(str(r["key"]), r)
    return {
        "requests": len(first),
        "replies_logged": sum(1 for x in lines if x.strip()),
        "prompt_tokens_est": sum(int(r.get("prompt_tokens", 0)) for r in first.values()),
        "completion_tokens_est": sum(int(r.get("completion_tokens", 0)) for r in first.values()),
    }
