"""Instructions and instruction sets: the auditable artifact pld produces.

An ``InstructionSet`` is immutable. Every edit (add / edit / remove / merge, ExpeL's operation
set) returns a new version, so each resolve round can be stored, diffed and reloaded. Every
instruction carries its provenance: the training examples whose rules formed it and the loop
edits that touched it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pld.errors import DataError

ANSWER_LINE = "Answer with exactly one label from: {labels}. Reply with the label only."


@dataclass(frozen=True)
class Instruction:
    """One rule of the rulebook, with where it came from (``sources``) and what changed it."""

    id: str
    topic: str
    text: str
    labels: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    history: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The instruction as instructions.json stores it."""
        return {
            "id": self.id,
            "topic": self.topic,
            "text": self.text,
            "labels": list(self.labels),
            "sources": list(self.sources),
            "history": list(self.history),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Instruction:
        """Back from instructions.json; a malformed record is a DataError."""
        try:
            return cls(
                id=str(d["id"]),
                topic=str(d["topic"]),
                text=str(d["text"]),
                labels=tuple(str(x) for x in d.get("labels", ())),
                sources=tuple(str(x) for x in d.get("sources", ())),
                history=tuple(str(x) for x in d.get("history", ())),
            )
        except (KeyError, TypeError) as e:
            raise DataError(f"invalid instruction record {dict(d)!r}: {e}") from e


@dataclass(frozen=True)
class Edit:
    """One operation on the rulebook: proposed by the teacher in the resolve loop, or made
    by a person with ``pld edit`` (``author`` "user"). Who wrote a rule is part of its
    provenance, so a non-teacher author is named in the instruction's history."""

    op: str  # add | edit | remove | merge
    id: str | None = None
    ids: tuple[str, ...] = ()
    topic: str | None = None
    text: str | None = None
    labels: tuple[str, ...] = ()
    author: str = "teacher"

    def to_json(self) -> dict[str, Any]:
        """The edit as the round records (rounds.jsonl) keep it. The teacher's edits are
        stored as before (no ``author`` key), so earlier records and their cache keys are
        unchanged."""
        d: dict[str, Any] = {
            "op": self.op,
            "id": self.id,
            "ids": list(self.ids),
            "topic": self.topic,
            "text": self.text,
            "labels": list(self.labels),
        }
        if self.author != "teacher":
            d["author"] = self.author
        return d


@dataclass(frozen=True)
class InstructionSet:
    """An immutable, versioned rulebook: every edit returns a new version."""

    instructions: tuple[Instruction, ...]
    version: int = 0
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        ids = [i.id for i in self.instructions]
        if len(set(ids)) != len(ids):
            raise DataError(f"instruction ids must be unique, got {ids}")

    def __len__(self) -> int:
        return len(self.instructions)

    def get(self, iid: str) -> Instruction | None:
        """The instruction with id ``iid``, if any."""
        return next((i for i in self.instructions if i.id == iid), None)

    def labels_covered(self) -> set[str]:
        """Labels some instruction decides (the coverage guard checks this)."""
        return {lab for i in self.instructions for lab in i.labels}

    def _next_id(self) -> str:
        nums = [int(i.id[1:]) for i in self.instructions if i.id[1:].isdigit()]
        return f"R{max(nums, default=0) + 1}"

    def apply(
        self, edits: Iterable[Edit], *, tag: str, labels: Sequence[str]
    ) -> tuple[InstructionSet, list[dict[str, Any]]]:
        """Apply edits in order; return the new version and one outcome per edit. An edit that
        names an unknown id or lacks text is skipped and reported, never guessed at."""
        cur = list(self.instructions)
        outcomes: list[dict[str, Any]] = []
        valid_labels = set(labels)

        def find(iid: str | None) -> int | None:
            return next((k for k, i in enumerate(cur) if i.id == iid), None)

        for e in edits:
            labs = tuple(dict.fromkeys(lab for lab in e.labels if lab in valid_labels))
            note = f"{tag}: {e.op}" + (f" (author: {e.author})" if e.author != "teacher" else "")
            if e.op == "add":
                if not (e.text or "").strip():
                    outcomes.append({"edit": e.to_json(), "applied": False, "why": "no text"})
                    continue
                tmp = InstructionSet(tuple(cur))
                new = Instruction(
                    tmp._next_id(),
                    (e.topic or "rule").strip(),
                    (e.text or "").strip(),
                    labs,
                    (),
                    (note,),
                )
                cur.append(new)
                outcomes.append({"edit": e.to_json(), "applied": True, "id": new.id})
            elif e.op == "edit":
                k = find(e.id)
                if k is None or not (e.text or "").strip():
                    why = "unknown id" if k is None else "no text"
                    outcomes.append({"edit": e.to_json(), "applied": False, "why": why})
                    continue
                old = cur[k]
                cur[k] = replace(
                    old,
                    topic=(e.topic or old.topic).strip(),
                    text=(e.text or "").strip(),
                    labels=labs or old.labels,
                    history=(*old.history, note),
                )
                outcomes.append({"edit": e.to_json(), "applied": True, "id": old.id})
            elif e.op == "remove":
                k = find(e.id)
                if k is None:
                    outcomes.append({"edit": e.to_json(), "applied": False, "why": "unknown id"})
                    continue
                cur.pop(k)
                outcomes.append({"edit": e.to_json(), "applied": True, "id": e.id})
            elif e.op == "merge":
                ks = [find(i) for i in e.ids]
                if len(e.ids) < 2 or any(k is None for k in ks) or not (e.text or "").strip():
                    outcomes.append(
                        {"edit": e.to_json(), "applied": False, "why": "needs >=2 known ids + text"}
                    )
                    continue
                olds = [cur[k] for k in ks if k is not None]
                merged = Instruction(
                    olds[0].id,
                    (e.topic or olds[0].topic).strip(),
                    (e.text or "").strip(),
                    labs or tuple(dict.fromkeys(lab for o in olds for lab in o.labels)),
                    tuple(dict.fromkeys(s for o in olds for s in o.sources)),
                    (*olds[0].history, f"{note} of {', '.join(o.id for o in olds)}"),
                )
                first = min(k for k in ks if k is not None)
                cur = [i for i in cur if i.id not in set(e.ids)]
                cur.insert(min(first, len(cur)), merged)
                outcomes.append({"edit": e.to_json(), "applied": True, "id": merged.id})
            else:
                outcomes.append({"edit": e.to_json(), "applied": False, "why": "unknown op"})
        return InstructionSet(tuple(cur), self.version + 1, self.notes), outcomes

    # -- serialisation -----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The set as instructions.json stores it."""
        return {
            "version": self.version,
            "notes": list(self.notes),
            "instructions": [i.to_json() for i in self.instructions],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> InstructionSet:
        """Back from instructions.json; anything else is a DataError."""
        if not isinstance(d, Mapping) or "instructions" not in d:
            raise DataError("not an instruction set: missing 'instructions'")
        return cls(
            tuple(Instruction.from_json(x) for x in d["instructions"]),
            int(d.get("version", 0)),
            tuple(str(x) for x in d.get("notes", ())),
        )

    def dumps(self) -> str:
        """instructions.json text (stable: indented, UTF-8, newline-terminated)."""
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"


def render_system_prompt(
    description: str,
    labels: Sequence[str],
    label_descriptions: Mapping[str, str],
    rules: InstructionSet | None,
) -> str:
    """The student's system prompt. Byte-identical for every item (so the engine's prefix
    cache holds it) and self-contained (so it works verbatim outside pld)."""
    lines = [description.strip(), "", "Labels:"]
    for lab in labels:
        d = label_descriptions.get(lab)
        lines.append(f"- {lab}: {d}" if d else f"- {lab}")
    if rules is not None and len(rules):
        lines += ["", "Decision rules (apply the first rule that fits):"]
        for k, ins in enumerate(rules.instructions, 1):
            tag = f" -> {', '.join(ins.labels)}" if ins.labels else ""
            lines.append(f"{k}. [{ins.id}] {ins.topic}{tag}: {ins.text}")
    lines += ["", ANSWER_LINE.format(labels=", ".join(labels))]
    return "\n".join(lines) + "\n"


def render_markdown(
    rules: InstructionSet,
    *,
    task_name: str,
    sources: Mapping[str, str] | None = None,
) -> str:
    """A readable rulebook with provenance, for reviewers."""
    out = [f"# Rulebook — {task_name}", "", f"Version {rules.version}, {len(rules)} rules.", ""]
    for ins in rules.instructions:
        out.append(f"## {ins.id}. {ins.topic}")
        out.append("")
        out.append(ins.text)
        out.append("")
        if ins.labels:
            out.append(f"- **Decides:** {', '.join(ins.labels)}")
        if ins.sources:
            shown = ", ".join(ins.sources[:20]) + (" …" if len(ins.sources) > 20 else "")
            out.append(f"- **Formed from {len(ins.sources)} training examples:** {shown}")
            if sources:
                for sid in ins.sources[:3]:
                    if sid in sources:
                        out.append(f"  - `{sid}`: {sources[sid][:200]}")
        for h in ins.history:
            out.append(f"- **Edit:** {h}")
        out.append("")
    return "\n".join(out)
