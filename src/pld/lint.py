"""The rulebook lint: what in a fitted rulebook a reviewer must look at before signing it off.

A rulebook is the classifier's whole logic in plain text, so it can be read, and the people who
sign a classifier off (compliance, legal review, trust and safety) need to know where to read
first. Each check below looks only at the rulebook and its training inputs — no model call,
except counting the prompt's tokens on the student's own tokenizer when one is at hand — so it
runs at the end of every distillation, in ``pld lint`` and ``pld edit``, and costs nothing.

Every finding is a warning with a stable code; nothing is removed or rewritten (report, never
censor). ``--strict`` (``DistillConfig.lint_strict``) makes any finding an error.

  * ``PLD-L001`` verbatim training text. A rule that repeats six or more consecutive words of
    a training input quotes the data instead of describing it: it memorises one example, can
    leak personal or confidential text into every prompt sent, and signals that the teacher
    copied rather than generalised. Extraction and resolve already refuse such rules against
    the input they were written from; the lint checks the final rules against *every*
    training input, so a copy that entered through consolidation or an edit is caught too.
  * ``PLD-L002`` protected-attribute logic. A rule whose condition names race, religion,
    gender, nationality, age, disability or sexual-orientation terms makes the classifier's
    decision depend on a protected attribute, which a reviewer must be able to justify. The
    word list is ``PROTECTED_TERMS``; a task label that is itself such a domain (StereoSet's
    bias domains) is named in the finding, since there the rules are expected to mention the
    domain — the finding still stands, for the reviewer to confirm.
  * ``PLD-L003`` prompt over budget. Every item pays for the prompt's size in latency
    (bench/RESULTS.md §1: the p50 latency grows with the system prompt even when it is
    prefix-cached) and a small student follows a long rulebook less well. The fixed prompt
    (system prompt plus user template) is counted on the student's tokenizer when one is
    given, else estimated as characters / 4 (``CHARS_PER_TOKEN``, English text on BPE
    tokenizers); the evidence says which.
  * ``PLD-L004`` a label no rule decides. The student can then reach that label only from the
    task description and the label list, so its recall there is whatever zero-shot gives.
  * ``PLD-L005`` a rule that names another label. A rule deciding ``a`` whose text mentions
    label ``b`` mixes two decisions in one rule: it may contradict the rule that decides
    ``b``, and the citation of such a rule says less than it seems.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pld.errors import PLDError
from pld.rulebook import Rulebook
from pld.rulecheck import COPY_NGRAM, shared_span, word_ngrams, words
from pld.rules import Instruction
from pld.tasks.base import Example

log = logging.getLogger(__name__)

LEAK = "PLD-L001"
PROTECTED = "PLD-L002"
BUDGET = "PLD-L003"
UNDECIDED = "PLD-L004"
OTHER_LABEL = "PLD-L005"
CODES: dict[str, str] = {
    LEAK: "verbatim training text",
    PROTECTED: "protected-attribute logic",
    BUDGET: "prompt over the token budget",
    UNDECIDED: "a label no rule decides",
    OTHER_LABEL: "a rule names another label",
}

DEFAULT_BUDGET_TOKENS = 1500
CHARS_PER_TOKEN = 4
MAX_IDS = 20  # example ids listed in a leak finding's evidence (all are counted)

# bench/RESULTS.md §1 (SmolLM2-135M via xllamacpp, 2-core CPU, commit c39354a): p50 ms per
# item by the size of the prefix-cached system prompt, in the engine's tokens. The lint
# interpolates the latency a prompt's size costs relative to the 75-token zero-shot prompt.
LATENCY_P50_MS: tuple[tuple[int, float], ...] = (
    (75, 153.0),
    (537, 181.0),
    (1520, 240.0),
    (4522, 391.0),
)
LATENCY_SOURCE = "bench/RESULTS.md section 1 (SmolLM2-135M, 2-core CPU, prompt prefix-cached)"


def _terms(single: str, *phrases: str) -> frozenset[str]:
    return frozenset([*single.split(), *phrases])


# Terms whose presence in a rule's condition makes the decision key on a protected attribute.
# Lower-case words or phrases of words (hyphens and punctuation count as spaces); a plural
# ending in -s, -es or -ies also matches its singular here.
PROTECTED_TERMS: dict[str, frozenset[str]] = {
    "race": _terms(
        "race racial racism racist ethnic ethnicity caucasian hispanic latino latina latinx "
        "asian arab aboriginal indigenous",
        "african american",
        "native american",
        "black people",
        "white people",
        "people of color",
        "person of color",
        "skin color",
        "skin colour",
    ),
    "religion": _terms(
        "religion religious christian christianity catholic protestant muslim islam islamic "
        "jew jewish judaism hindu hinduism buddhist buddhism sikh sikhism atheist atheism "
        "mormon church mosque synagogue bible quran koran torah priest imam rabbi"
    ),
    "gender": _terms(
        "gender sex male female man men woman women boy girl masculine feminine transgender "
        "nonbinary husband wife mother father mom dad son daughter sister brother gentleman "
        "gentlemen lady grandmother grandfather girlfriend boyfriend",
        "non binary",
    ),
    "nationality": _terms(
        "nationality citizenship immigrant immigration foreigner refugee american mexican "
        "canadian british irish french german italian spanish russian ukrainian polish chinese "
        "japanese korean vietnamese indian pakistani iranian iraqi afghan syrian turkish "
        "israeli palestinian saudi egyptian nigerian ethiopian somali kenyan african european "
        "brazilian colombian cuban haitian filipino",
        "national origin",
        "country of origin",
        "puerto rican",
    ),
    "age": _terms(
        "age aging ageing elderly senior teenager teen adolescent youth millennial boomer "
        "retiree child children kid",
        "old people",
        "older people",
        "old man",
        "old woman",
        "young people",
        "senior citizen",
    ),
    "disability": _terms(
        "disability disabled handicap handicapped blind deaf mute wheelchair autism autistic "
        "dyslexia dyslexic paralyzed paraplegic schizophrenia schizophrenic bipolar adhd",
        "mental illness",
        "mentally ill",
        "down syndrome",
        "special needs",
    ),
    "sexual orientation": _terms(
        "gay lesbian bisexual homosexual homosexuality heterosexual queer lgbt lgbtq lgbtqia",
        "sexual orientation",
        "same sex",
    ),
}

TokenCounter = Callable[[str], int]
TrainInputs = Sequence[Example] | Mapping[str, str] | None


@dataclass(frozen=True)
class Finding:
    """One lint finding: a stable ``code`` (see ``CODES``), the rule it is about (None for
    the rulebook as a whole), one sentence for people and the ``evidence`` behind it."""

    code: str
    severity: str
    rule_id: str | None
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        """The finding as lint.json (and ``pld lint --json``) stores it."""
        return {
            "code": self.code,
            "severity": self.severity,
            "rule_id": self.rule_id,
            "message": self.message,
            "evidence": dict(self.evidence),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Finding:
        """Back from lint.json."""
        rid = d.get("rule_id")
        return cls(
            code=str(d["code"]),
            severity=str(d.get("severity", "warning")),
            rule_id=None if rid is None else str(rid),
            message=str(d["message"]),
            evidence=dict(d.get("evidence") or {}),
        )


def _warn(code: str, rule_id: str | None, message: str, **evidence: Any) -> Finding:
    return Finding(code, "warning", rule_id, message, evidence)


@dataclass(frozen=True)
class PromptSize:
    """The fixed prompt's size and how it was counted."""

    tokens: int
    chars: int
    counted_with: str  # "student tokenizer" | "chars/4 estimate"


def prompt_text(rb: Rulebook) -> str:
    """What every item's request carries besides the input: the system prompt and the user
    template (the ``rules_after_input`` layout puts the rules in the latter)."""
    return rb.system_prompt + "\n" + rb.user_template


def prompt_size(rb: Rulebook, count_tokens: TokenCounter | None = None) -> PromptSize:
    """The fixed prompt's tokens on ``count_tokens`` (the student's tokenizer), or the
    characters / 4 estimate when there is none or it fails (logged, and said in the result)."""
    text = prompt_text(rb)
    if count_tokens is not None:
        try:
            return PromptSize(int(count_tokens(text)), len(text), "student tokenizer")
        except (PLDError, OSError) as e:
            log.warning("could not count the prompt's tokens (%s); estimating chars/4", e)
    return PromptSize(math.ceil(len(text) / CHARS_PER_TOKEN), len(text), "chars/4 estimate")


def latency_ratio(tokens: int) -> float:
    """p50 latency per item with a prompt of ``tokens`` relative to the zero-shot prompt,
    interpolated (linearly, extrapolated past the last point) from ``LATENCY_P50_MS``."""
    pts = LATENCY_P50_MS
    base = pts[0][1]
    if tokens <= pts[0][0]:
        return 1.0
    for (t0, m0), (t1, m1) in itertools.pairwise(pts):
        if tokens <= t1 or (t1, m1) == pts[-1]:
            return (m0 + (m1 - m0) * (tokens - t0) / (t1 - t0)) / base
    return 1.0  # unreachable: the last segment extrapolates


def token_counter(model: object) -> TokenCounter | None:
    """The student's own token counter, when its backend exposes a tokenizer (the embedded
    llama.cpp engine does); None otherwise (the lint then estimates)."""
    engine = getattr(model, "engine", None)
    tokenize = getattr(engine, "tokenize", None)
    if not callable(tokenize):
        return None
    return lambda text: len(tokenize(text))


# -- the checks ------------------------------------------------------------------------------
def _inputs(rb: Rulebook, train: TrainInputs) -> dict[str, str]:
    if train is None:
        return {k: v["input"] for k, v in rb.sources.items()}
    if isinstance(train, Mapping):
        return {str(k): str(v) for k, v in train.items()}
    return {e.id: rb.task.render(e) for e in train}


def check_leaks(rules: Sequence[Instruction], inputs: Mapping[str, str]) -> list[Finding]:
    """``PLD-L001``: rules sharing a run of ``COPY_NGRAM`` words with any training input."""
    grams = {k: word_ngrams(v, COPY_NGRAM) for k, v in inputs.items()}
    out = []
    for ins in rules:
        hits = [(k, sp) for k, g in grams.items() if (sp := shared_span(ins.text, g)) is not None]
        if not hits:
            continue
        ids = [k for k, _ in hits]
        span = hits[0][1]
        out.append(
            _warn(
                LEAK,
                ins.id,
                f'{ins.id} repeats training text verbatim ("{span}", in {len(ids)} input(s), '
                f"e.g. {ids[0]}): a rule should describe inputs, not quote them",
                ngram=span,
                n=COPY_NGRAM,
                example_ids=ids[:MAX_IDS],
                n_examples=len(ids),
            )
        )
    return out


def _forms(word: str) -> set[str]:
    forms = {word}
    if len(word) > 3 and word.endswith("s"):
        forms.add(word[:-1])
        if word.endswith("es"):
            forms.add(word[:-2])
        if word.endswith("ies"):
            forms.add(word[:-3] + "y")
    return forms


def terms_in(text: str, terms: Iterable[str]) -> list[str]:
    """The ``terms`` (words or phrases) that occur in ``text``, as whole words."""
    ws = words(text)
    single = {f for w in ws for f in _forms(w)}
    joined = " " + " ".join(ws) + " "
    return sorted(t for t in terms if (t in single if " " not in t else f" {t} " in joined))


def label_domains(labels: Sequence[str]) -> dict[str, str]:
    """The task's labels that are themselves protected domains, with their domain (a label
    named after the domain, or one of its terms: StereoSet's ``race``, ``religion`` ...)."""
    out = {}
    for lab in labels:
        for dom, terms in PROTECTED_TERMS.items():
            if terms_in(lab, {dom, *terms}):
                out[lab] = dom
                break
    return out


def check_protected(rules: Sequence[Instruction], labels: Sequence[str]) -> list[Finding]:
    """``PLD-L002``: rules whose topic or text names protected-attribute terms."""
    by_label = label_domains(labels)
    out = []
    for ins in rules:
        text = f"{ins.topic}. {ins.text}"
        found = {
            dom: hits
            for dom, terms in PROTECTED_TERMS.items()
            if (hits := terms_in(text, terms | {lab for lab, d in by_label.items() if d == dom}))
        }
        if not found:
            continue
        task_doms = sorted({lab for lab, d in by_label.items() if d in found})
        said = "; ".join(f"{dom}: {', '.join(h)}" for dom, h in found.items())
        note = (
            f" (the task's label(s) {', '.join(task_doms)} name this domain: expected here, "
            "still for review)"
            if task_doms
            else ""
        )
        out.append(
            _warn(
                PROTECTED,
                ins.id,
                f"{ins.id} keys on protected-attribute terms ({said}){note}",
                domains=sorted(found),
                terms={k: list(v) for k, v in found.items()},
                task_labels_in_domain=task_doms,
            )
        )
    return out


def check_budget(size: PromptSize, budget_tokens: int) -> list[Finding]:
    """``PLD-L003``: the fixed prompt is over ``budget_tokens``."""
    if size.tokens <= budget_tokens:
        return []
    ratio = latency_ratio(size.tokens)
    return [
        _warn(
            BUDGET,
            None,
            f"the prompt is {size.tokens} tokens ({size.counted_with}), over the "
            f"{budget_tokens}-token budget; on the benchmark machine a prompt this size costs "
            f"about {ratio:.2f}x the zero-shot p50 latency per item",
            tokens=size.tokens,
            budget_tokens=budget_tokens,
            chars=size.chars,
            counted_with=size.counted_with,
            p50_latency_vs_zero_shot=round(ratio, 2),
            latency_source=LATENCY_SOURCE,
        )
    ]


def check_undecided(rules: Sequence[Instruction], labels: Sequence[str]) -> list[Finding]:
    """``PLD-L004``: labels no rule decides."""
    covered = {lab for i in rules for lab in i.labels}
    return [
        _warn(
            UNDECIDED,
            None,
            f"no rule decides label {lab!r}: the student reaches it only from the task "
            "description and the label list",
            label=lab,
            decided=sorted(covered),
        )
        for lab in labels
        if lab not in covered
    ]


def check_other_labels(rules: Sequence[Instruction], labels: Sequence[str]) -> list[Finding]:
    """``PLD-L005``: a rule whose text names a label it does not decide."""
    out = []
    for ins in rules:
        if not ins.labels:
            continue
        others = [
            lab for lab in labels if lab not in ins.labels and terms_in(ins.text, [_phrase(lab)])
        ]
        if others:
            out.append(
                _warn(
                    OTHER_LABEL,
                    ins.id,
                    f"{ins.id} decides {', '.join(ins.labels)} but its text names "
                    f"{', '.join(others)}",
                    rule_labels=list(ins.labels),
                    named=others,
                )
            )
    return out


def _phrase(label: str) -> str:
    return " ".join(words(label))


def lint(
    rulebook: Rulebook,
    train_examples: TrainInputs,
    *,
    budget_tokens: int = DEFAULT_BUDGET_TOKENS,
    count_tokens: TokenCounter | None = None,
) -> list[Finding]:
    """Every finding on ``rulebook``, in code order then rule order. ``train_examples`` are
    the training inputs the leak check compares rules with: examples (rendered through the
    task), a mapping of id to rendered input, or None for the rulebook's own saved training
    inputs (examples_train.jsonl). ``count_tokens`` counts on the student's tokenizer (see
    ``token_counter``); without it the prompt size is estimated."""
    return _lint(rulebook, train_examples, budget_tokens, prompt_size(rulebook, count_tokens))


def _lint(rb: Rulebook, train: TrainInputs, budget: int, size: PromptSize) -> list[Finding]:
    rules, labels = rb.instructions.instructions, rb.labels
    return [
        *check_leaks(rules, _inputs(rb, train)),
        *check_protected(rules, labels),
        *check_budget(size, budget),
        *check_undecided(rules, labels),
        *check_other_labels(rules, labels),
    ]


def lint_record(
    rulebook: Rulebook,
    train_examples: TrainInputs,
    *,
    budget_tokens: int = DEFAULT_BUDGET_TOKENS,
    count_tokens: TokenCounter | None = None,
) -> dict[str, Any]:
    """lint.json: the findings with the prompt's measured size and the budget they used."""
    size = prompt_size(rulebook, count_tokens)
    found = _lint(rulebook, train_examples, budget_tokens, size)
    return {
        "budget_tokens": budget_tokens,
        "prompt_tokens": size.tokens,
        "counted_with": size.counted_with,
        "codes": dict(sorted({f.code: CODES[f.code] for f in found}.items())),
        "findings": [f.to_json() for f in found],
    }


def run_budget(rb: Rulebook) -> int:
    """The token budget ``rb`` was fitted with (``DEFAULT_BUDGET_TOKENS`` for runs before
    the lint, and for rulebooks fitted in memory)."""
    cfg = rb.run_info.get("config") or {}
    return int(cfg.get("lint_budget_tokens", DEFAULT_BUDGET_TOKENS))


def findings_of(record: Mapping[str, Any] | None) -> list[Finding]:
    """The findings of a lint.json record (none when there is no record)."""
    return [Finding.from_json(f) for f in (record or {}).get("findings", [])]


def strict_message(findings: Sequence[Finding], where: str, *, saved: bool = False) -> str:
    """The one-line error of strict lint: the codes, per rule, and what to do."""
    named = ", ".join(f"{f.code} ({f.rule_id})" if f.rule_id else f.code for f in findings)
    done = "; the run is complete and saved (lint.json lists them)" if saved else ""
    return (
        f"strict lint: {len(findings)} finding(s) in {where}: {named}{done}; fix the rules with "
        "pld edit, or drop --strict to accept them"
    )
