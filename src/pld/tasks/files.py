"""Generic JSONL / CSV loaders and TOML task files, with errors that name file and line."""

from __future__ import annotations

import csv
import io
import json
import tomllib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pld.errors import DataError
from pld.tasks.base import Example, Task, template_fields

BUILTIN = {"demo": "support_tickets.toml"}


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); re-save the file as UTF-8"
        ) from e


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    text = _read_text(path)
    suffix = path.suffix.lower()
    rows: list[tuple[int, dict[str, Any]]] = []
    if suffix in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{n}: malformed JSON ({e.msg}); fix or remove the line"
                ) from e
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            rows.append((n, obj))
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        if reader.fieldnames is None:
            raise DataError(f"{path}: empty file; a header row is required")
        for row in reader:
            n = reader.line_num
            if None in row:
                raise DataError(f"{path}:{n}: more cells than header columns; quote the field")
            rows.append((n, dict(row)))
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .jsonl or .csv")
    return rows


def label_text(value: object, where: str) -> str:
    """A label as written in the data. Strings, and JSON integers (0/1 labels are common; 1 is
    read as "1"), are labels; anything else is an error rather than its Python repr: ``true``
    would become "True" and ``["positive"]`` "['positive']", labels nobody wrote."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    kind = {
        bool: "a boolean",
        list: "a list",
        dict: "an object",
        float: "a decimal number",
    }.get(type(value), type(value).__name__)
    raise DataError(
        f"{where} is {kind} ({json.dumps(value)[:40]}), not a label; write the label as a "
        'string, e.g. "positive" (integers such as 0/1 are accepted)'
    )


def load_records(
    path: str | Path,
    *,
    text_fields: Sequence[str] = ("text",),
    label_field: str = "label",
    id_field: str | None = "id",
    labels: Sequence[str] | None = None,
    require_label: bool = True,
) -> list[Example]:
    """Read examples from JSONL or CSV. Rows are checked as they are read, so the error names
    the line: empty inputs, unknown labels, duplicate ids, missing fields."""
    p = Path(path)
    out: list[Example] = []
    seen: dict[str, int] = {}
    label_set = set(labels) if labels is not None else None
    for n, row in _rows(p):
        fields: dict[str, str] = {}
        for f in text_fields:
            if f not in row:
                raise DataError(
                    f"{p}:{n}: missing field {f!r} (have {sorted(row)}); "
                    "pass --text-field with the right name"
                )
            v = row[f]
            if not isinstance(v, str | int | float) or not str(v).strip():
                raise DataError(f"{p}:{n}: field {f!r} is empty; remove the row or fill it")
            fields[f] = str(v)
        ex_id = str(row[id_field]) if id_field and row.get(id_field) not in (None, "") else f"L{n}"
        if ex_id in seen:
            raise DataError(f"{p}:{n}: duplicate id {ex_id!r} (first on line {seen[ex_id]})")
        seen[ex_id] = n
        label = row.get(label_field)
        if label is None or str(label).strip() == "":
            if require_label:
                raise DataError(
                    f"{p}:{n}: missing label field {label_field!r}; "
                    "pass --label-field with the right name"
                )
            label = ""
        label = label_text(label, f"{p}:{n}: label field {label_field!r}")
        if label and label_set is not None and label not in label_set:
            raise DataError(
                f"{p}:{n}: label {label!r} is not in the label set {sorted(label_set)}; "
                "fix the row or declare the label"
            )
        out.append(Example(ex_id, fields, label))
    if not out:
        raise DataError(f"{p}: no rows")
    return out


def load_task_file(path: str | Path) -> Task:
    """A TOML (or YAML) task file: name, description, input_template, [labels]
    (label = description), [data] path/text_fields/label_field/id_field (path relative to the
    task file)."""
    p = Path(path)
    text = _read_text(p)
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            cfg = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise DataError(f"{p}: invalid YAML: {e}") from e
        if not isinstance(cfg, dict):
            raise DataError(f"{p}: expected a mapping at the top level")
    else:
        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise DataError(f"{p}: invalid TOML: {e}") from e
    known = {"name", "description", "input_template", "labels", "data"}
    unknown = set(cfg) - known
    if unknown:
        raise DataError(f"{p}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    for k in ("description", "labels", "data"):
        if k not in cfg:
            raise DataError(f"{p}: missing [{k}]")
    labels_cfg = cfg["labels"]
    if isinstance(labels_cfg, list):
        labels = tuple(label_text(x, f"{p}: [labels] entry") for x in labels_cfg)
        descs = {}
    else:
        labels, descs = tuple(labels_cfg), {k: str(v) for k, v in labels_cfg.items()}
    template = str(cfg.get("input_template", "{text}"))
    data = cfg["data"]
    text_fields = data.get("text_fields") or template_fields(template)
    examples = load_records(
        (p.parent / str(data["path"])).resolve(),
        text_fields=text_fields,
        label_field=str(data.get("label_field", "label")),
        id_field=data.get("id_field", "id"),
        labels=labels,
    )
    return Task(
        name=str(cfg.get("name", p.stem)),
        description=str(cfg["description"]),
        labels=labels,
        examples=tuple(examples),
        input_template=template,
        label_descriptions=descs,
    )


DATASETS = {"stereoset", "contract-nli", "logiqa"}
TASK_HELP = (
    "a task is: demo; a task .toml/.yaml file; a .jsonl/.csv file (with --description); or "
    "stereoset@PATH?variant=intrasentence&scheme=stereotype, contract-nli@PATH?max_chars=N&"
    "strategy=retrieve, logiqa@PATH"
)


def load_task(
    ref: str,
    *,
    description: str | None = None,
    text_fields: Sequence[str] = ("text",),
    label_field: str = "label",
    labels: Sequence[str] | None = None,
) -> Task:
    """Resolve a task reference (see ``TASK_HELP``)."""
    from urllib.parse import parse_qsl

    if ref in BUILTIN:
        res = resources.files("pld") / "data" / BUILTIN[ref]
        with resources.as_file(res) as p:
            return load_task_file(p)
    name, _, rest = ref.partition("@")
    if name in DATASETS and rest:
        from pld.tasks import datasets as ds

        path, _, query = rest.partition("?")
        opts = dict(parse_qsl(query, strict_parsing=bool(query)))
        allowed = {
            "stereoset": {"variant", "scheme"},
            "contract-nli": {"max_chars", "strategy"},
            "logiqa": set(),
        }[name]
        unknown = set(opts) - allowed
        if unknown:
            raise DataError(
                f"unknown option(s) {sorted(unknown)} for {name}; "
                f"allowed: {sorted(allowed) or 'none'}"
            )
        if name == "stereoset":
            return ds.load_stereoset(
                path,
                variant=opts.get("variant", "intrasentence"),
                scheme=opts.get("scheme", "stereotype"),
            )
        if name == "contract-nli":
            mc = opts.get("max_chars")
            return ds.load_contract_nli(
                path,
                max_premise_chars=int(mc) if mc else None,
                strategy=opts.get("strategy", "retrieve"),
            )
        return ds.load_logiqa(path)
    p = Path(ref)
    if p.suffix.lower() in (".toml", ".yaml", ".yml"):
        return load_task_file(p)
    if p.suffix.lower() in (".jsonl", ".ndjson", ".csv", ".tsv"):
        if not description:
            raise DataError(f"{p}: a data file needs --description (what is being classified)")
        ex = load_records(p, text_fields=text_fields, label_field=label_field, labels=labels)
        labs = tuple(labels) if labels else tuple(sorted({e.label for e in ex}))
        template = (
            "\n".join(f"{f}: {{{f}}}" for f in text_fields)
            if len(text_fields) > 1
            else f"{{{text_fields[0]}}}"
        )
        return Task(p.stem, description, labs, tuple(ex), template)
    raise DataError(f"unknown task {ref!r}: {TASK_HELP}")
