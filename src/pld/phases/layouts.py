"""Student prompt layouts: the same task, labels and rules, arranged differently.

The wording and format of the student's prompt move a small model's answers as much as the
rules do (bench/RESULTS.md, "Peer: DSPy": DSPy's typed-field prompt beat pld's on the same
1.5B student). No one arrangement is best for every student, so the ``decide`` stage scores a
few on the validation split and keeps the best (``pld.decide``). Each layout is a pure
function of (task, rules): its system prompt and user template are rendered once and saved as
the bytes the student is sent.

- ``default``: pld's original prompt (task, labels, "apply the first rule that fits", answer
  line), byte-identical to ``pld.prompts.system_prompt_for``; the input alone as user turn.
- ``fields``: DSPy's ChatAdapter style — input and output named as typed fields delimited by
  ``[[ ## name ## ]]`` markers, the label a ``Literal[...]`` output field, task and rules as the
  "objective". The reply is still the bare label (one decoded token on the local engine).
- ``rules_after_input``: task and labels as system prompt; the rules follow the input in the
  user turn (nearer to where the answer is read; the rules leave the cached prefix).
- ``weigh_all``: ``default`` with "weigh every rule that applies" in place of "apply the first
  rule that fits" (rule order stops being a priority order).
"""

from __future__ import annotations

from collections.abc import Sequence

from pld.config import LAYOUT_NAMES
from pld.errors import ConfigError
from pld.prompts import Prompt
from pld.rules import ANSWER_LINE, InstructionSet
from pld.tasks.base import Task, template_fields

DEFAULT_LAYOUT = "default"
LAYOUTS = LAYOUT_NAMES
FIRST_FITS = "Decision rules (apply the first rule that fits):"
WEIGH_ALL = (
    "Decision rules (weigh every rule that applies; when rules disagree, follow the most "
    "specific one):"
)


def check_layouts(names: Sequence[str]) -> None:
    """Refuse an unknown layout name, naming the valid ones."""
    unknown = [n for n in names if n not in LAYOUTS]
    if unknown:
        raise ConfigError(f"unknown prompt layout(s) {unknown}; choose from {', '.join(LAYOUTS)}")


def _label_lines(task: Task) -> list[str]:
    out = []
    for lab in task.labels:
        d = task.label_descriptions.get(lab)
        out.append(f"- {lab}: {d}" if d else f"- {lab}")
    return out


def _rule_lines(rules: InstructionSet | None, header: str) -> list[str]:
    if rules is None or not len(rules):
        return []
    lines = ["", header]
    for k, ins in enumerate(rules.instructions, 1):
        tag = f" -> {', '.join(ins.labels)}" if ins.labels else ""
        lines.append(f"{k}. [{ins.id}] {ins.topic}{tag}: {ins.text}")
    return lines


def _answer(task: Task) -> str:
    return ANSWER_LINE.format(labels=", ".join(task.labels))


def _classic(task: Task, rules: InstructionSet | None, header: str) -> Prompt:
    lines = [task.description.strip(), "", "Labels:", *_label_lines(task)]
    lines += [*_rule_lines(rules, header), "", _answer(task)]
    return Prompt("\n".join(lines) + "\n", task.input_template)


def _no_markers(text: str) -> str:
    """Rule text placed in a user template must not contain ``{name}`` markers (they would be
    read as input fields): braces become parentheses there."""
    return text.replace("{", "(").replace("}", ")")


def _rules_after_input(task: Task, rules: InstructionSet | None) -> Prompt:
    system = "\n".join([task.description.strip(), "", "Labels:", *_label_lines(task)]) + "\n"
    tail = _rule_lines(rules, FIRST_FITS)
    if not tail:
        return _classic(task, None, FIRST_FITS)
    user = "\n".join([task.input_template, *(_no_markers(x) for x in tail), "", _answer(task)])
    return Prompt(system, user)


def _fields(task: Task, rules: InstructionSet | None) -> Prompt:
    names = list(dict.fromkeys(template_fields(task.input_template))) or ["text"]
    choices = "; ".join(task.labels)
    literal = "Literal[" + ", ".join(repr(lab) for lab in task.labels) + "]"
    system = [
        "Your input fields are:",
        *(f"{k}. `{n}` (str)" for k, n in enumerate(names, 1)),
        "Your output fields are:",
        f"1. `label` ({literal})",
        "All interactions will be structured in the following way, with the appropriate "
        "values filled in.",
        "",
        *(f"[[ ## {n} ## ]]\n{{{n}}}\n" for n in names),
        "[[ ## label ## ]]",
        "{label}        # note: the value you produce must exactly match (no extra "
        f"characters) one of: {choices}",
        "",
        "[[ ## completed ## ]]",
        "In adhering to this structure, your objective is: ",
        f"        {task.description.strip()}",
        "",
        "Labels:",
        *_label_lines(task),
        *_rule_lines(rules, FIRST_FITS),
    ]
    user = "\n\n".join(f"[[ ## {n} ## ]]\n{{{n}}}" for n in names)
    user += (
        f"\n\nRespond with the value of the output field `label` only: exactly one of: {choices}."
    )
    return Prompt("\n".join(system) + "\n", user)


def render_layout(layout: str, task: Task, rules: InstructionSet | None) -> Prompt:
    """The system prompt and user template of ``layout`` for ``task`` with ``rules`` (the
    zero-shot prompt when ``rules`` is None)."""
    check_layouts([layout])
    if layout == "default":
        return _classic(task, rules, FIRST_FITS)
    if layout == "weigh_all":
        return _classic(task, rules, WEIGH_ALL)
    if layout == "rules_after_input":
        return _rules_after_input(task, rules)
    return _fields(task, rules)
