"""Tasks: what to classify, into which labels, and the labeled examples.

An example's input is a set of named fields rendered through the task's ``input_template``
(``{field}`` markers replaced in one pass, so braces inside the data are left alone).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pld.errors import DataError

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def template_fields(template: str) -> list[str]:
    """The ``{field}`` names a template uses, in order (repeats kept): what every example and every
    service request must supply."""
    return _FIELD.findall(template)


def render_template(template: str, fields: Mapping[str, str]) -> str:
    """Replace ``{name}`` markers by field values in one pass (values are never re-scanned)."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in fields:
            raise DataError(f"template field {{{name}}} has no value; fields: {sorted(fields)}")
        return str(fields[name])

    return _FIELD.sub(sub, template)


@dataclass(frozen=True)
class Example:
    """One labelled input as named fields; ``group`` keeps related examples (one document, one
    cluster) in one split, so no split leaks into another."""

    id: str
    fields: Mapping[str, str]
    label: str
    group: str | None = None  # examples sharing a group never straddle a split


@dataclass(frozen=True)
class Task:
    """What to classify, into which labels, and the examples. Checked whole at construction, so a
    bad task fails when loaded with one DataError, never halfway through a paid run."""

    name: str
    description: str
    labels: tuple[str, ...]
    examples: tuple[Example, ...] = ()
    input_template: str = "{text}"
    label_descriptions: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what a loader changed (e.g. how many inputs it shortened)

    def __post_init__(self) -> None:
        if not self.description.strip():
            raise DataError(f"task {self.name!r}: the description is empty; describe the task")
        if len(self.labels) < 2:
            raise DataError(
                f"task {self.name!r}: a classification task needs at least 2 labels, "
                f"got {list(self.labels)}"
            )
        if len(set(self.labels)) != len(self.labels):
            raise DataError(f"task {self.name!r}: duplicate labels in {list(self.labels)}")
        if not template_fields(self.input_template):
            raise DataError(
                f"task {self.name!r}: input_template {self.input_template!r} has no {{field}}"
            )
        validate_examples(self.examples, self.labels, template_fields(self.input_template))

    def render(self, ex: Example) -> str:
        """The example's text exactly as teacher and student see it."""
        return render_template(self.input_template, ex.fields)

    def with_examples(self, examples: Iterable[Example]) -> Task:
        """The same task with other examples (a split), validated again like any new task."""
        return Task(
            self.name,
            self.description,
            self.labels,
            tuple(examples),
            self.input_template,
            self.label_descriptions,
            self.notes,
        )


def validate_examples(
    examples: Sequence[Example], labels: Sequence[str], needed: Sequence[str]
) -> None:
    """Refuse duplicate ids, labels outside the label set and missing or empty fields, naming the
    example, before any model sees the data."""
    seen: set[str] = set()
    label_set = set(labels)
    for ex in examples:
        if ex.id in seen:
            raise DataError(f"duplicate example id {ex.id!r}; ids must be unique")
        seen.add(ex.id)
        if ex.label not in label_set:
            raise DataError(
                f"example {ex.id!r}: label {ex.label!r} is not in the label set {list(labels)}"
            )
        for f in needed:
            v = ex.fields.get(f)
            if v is None or not str(v).strip():
                raise DataError(f"example {ex.id!r}: field {f!r} is missing or empty")


@dataclass(frozen=True)
class Split:
    """Train, validation and test examples as ``stratified_split`` deals them: disjoint, with every
    group whole in one part."""

    train: tuple[Example, ...]
    val: tuple[Example, ...]
    test: tuple[Example, ...]


def stratified_split(
    examples: Sequence[Example],
    *,
    fractions: tuple[float, float, float] = (0.5, 0.25, 0.25),
    seed: int = 0,
    stratify: Callable[[Example], str] | None = None,
) -> Split:
    """Seeded split, stratified per label (or per ``stratify`` key), keeping groups whole.

    Groups (e.g. a StereoSet cluster, a Contract-NLI document) are assigned as units; each
    stratum's groups are shuffled and dealt to train/val/test so every split gets its share.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or any(f < 0 for f in fractions):
        raise DataError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    key = stratify or (lambda e: e.label)
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.group if ex.group is not None else f"__id:{ex.id}"].append(ex)
    strata: dict[str, list[str]] = defaultdict(list)
    for g, members in groups.items():
        strata[key(members[0])].append(g)
    rng = random.Random(seed)
    parts: tuple[list[Example], list[Example], list[Example]] = ([], [], [])
    for s in sorted(strata):
        gs = sorted(strata[s])
        rng.shuffle(gs)
        n = len(gs)
        n_train = round(n * fractions[0])
        n_val = round(n * fractions[1])
        if fractions[1] > 0 and n_val == 0 and n - n_train > 1:
            n_val = 1
        for i, g in enumerate(gs):
            idx = 0 if i < n_train else (1 if i < n_train + n_val else 2)
            parts[idx].extend(groups[g])
    out = tuple(tuple(sorted(p, key=lambda e: e.id)) for p in parts)
    return Split(out[0], out[1], out[2])


def require_all_labels(examples: Sequence[Example], labels: Sequence[str], what: str) -> None:
    """Refuse a split that lacks a label: rules cannot be learned, nor a decision fitted, for a
    label the split never shows."""
    present = {e.label for e in examples}
    missing = [lab for lab in labels if lab not in present]
    if missing:
        raise DataError(
            f"the {what} split has no example of label(s) {missing}; add examples or change "
            "the split fractions / seed"
        )


def stratified_sample(examples: Sequence[Example], n: int, seed: int) -> list[Example]:
    """A seeded, label-stratified subsample of ``n`` examples (round-robin over labels)."""
    if len(examples) <= n:
        return list(examples)
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = {}
    for e in sorted(examples, key=lambda e: e.id):
        by_label.setdefault(e.label, []).append(e)
    for v in by_label.values():
        rng.shuffle(v)
    out: list[Example] = []
    while len(out) < n:
        for lab in sorted(by_label):
            if by_label[lab] and len(out) < n:
                out.append(by_label[lab].pop())
    return sorted(out, key=lambda e: e.id)
