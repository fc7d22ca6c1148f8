"""Shared fixtures. Every test gets its own cache file (never ~/.cache). Fixtures that need
the real embedded model or a real HTTP server are session-scoped: loading is cheap, but
sharing keeps llama.cpp's prompt cache warm across tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis fails an example that takes over 200 ms by default: a timed assertion, which on a
# shared 2-core machine (a benchmark beside the suite) fails for load, not for a bug. The
# properties are checked, not their speed (bench/ measures speed).
settings.register_profile("pld", deadline=None)
settings.load_profile("pld")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLD_CACHE", str(tmp_path / "cache.sqlite"))


class ServerProcess:
    def __init__(self, extra: list[str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pld.serve", "--ctx", "4096", *(extra or [])],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.base_url = line.split(" ", 1)[1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="session")
def llama_server() -> Iterator[ServerProcess]:
    """A real llama.cpp OpenAI-compatible server on 127.0.0.1 serving SmolLM2."""
    s = ServerProcess()
    yield s
    s.kill()


@pytest.fixture()
def own_llama_server() -> Iterator[ServerProcess]:
    """A server this test may kill."""
    s = ServerProcess()
    yield s
    s.kill()


@pytest.fixture(scope="session")
def smollm2_chat():  # type: ignore[no-untyped-def]
    from pld.models.local import LocalChatModel

    return LocalChatModel("smollm2", n_ctx=4096)


@pytest.fixture(scope="session")
def smollm2_embedder():  # type: ignore[no-untyped-def]
    from pld.models.local import LocalEmbedder

    return LocalEmbedder("smollm2")
