"""bench.quality's variant runs: each variant gets its own folder, named by what it changes,
and the base run keeps its name (its recorded transcript is found by that name)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from bench.quality import parse_args, replay_sources, variant_config, variant_suffix


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
