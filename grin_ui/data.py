"""Parse pasted or uploaded data into records, and tokenize records with answer-only labels (SPEC §6).

    s = parse_text("Q: Who wrote Dune?\\nA: Frank Herbert")       # -> ExampleSet with one Record
    s = load_file("forget.jsonl")                                  # .txt .jsonl .json .csv .tsv .parquet
    enc = encode(s.records, tokenizer, max_tokens=256)             # -> Encoded (ids, labels, prompt_len)
    for batch in batches(enc.items, 8, tokenizer.pad_token_id): ... # dict of padded tensors

Every problem a user can cause raises :class:`GrinError` with a message that names it (line number, columns found,
limit); parsing never touches state, so whatever the caller loaded before stays loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from grin_ui.config import DataLimits
from grin_ui.errors import GrinError
from grin_ui.readers import (PAIRS, check_line_count, check_row, check_text_size, json_rows, parquet_rows,
                             read_text, table_rows)

EXTENSIONS = (".txt", ".jsonl", ".json", ".csv", ".tsv", ".parquet")
_ALIASES = PAIRS
PLAIN_PROMPT = "Question: {question}\nAnswer:"


@dataclass
class Record:
    """One example: a question/answer pair, or raw text (``question`` and ``answer`` None)."""

    question: str | None = None
    answer: str | None = None
    text: str | None = None
    paraphrased_answer: str | None = None
    perturbed_answers: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    attribute: str | None = None

    @property
    def is_qa(self) -> bool:
        return self.question is not None

    def key(self) -> tuple:
        return (self.question, self.answer, self.text)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, [])}


@dataclass
class ExampleSet:
    """Records parsed from one source, with the warnings a user should see."""

    records: list[Record]
    source: str
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def sha256(self) -> str:
        """Content hash of the records (for the audit report)."""
        blob = json.dumps([r.to_dict() for r in self.records], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def preview(self, n: int = 20) -> list[list[str]]:
        """Rows [question-or-text, answer] for a preview table."""
        return [[r.question if r.is_qa else r.text, r.answer or ""] for r in self.records[:n]]


# ---------------------------------------------------------------------------------------------- records


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None and str(v).strip()]
    return [str(value)]


def _clean(value) -> str | None:
    if value is None:
        return None
    try:
        if value != value:  # NaN from a table
            return None
    except (TypeError, ValueError):
        pass
    text = str(value).strip()
    return text or None


def record_from_dict(row: dict, where: str, limits: DataLimits | None = None) -> Record | None:
    """Build a Record from a mapping with question/answer (or an alias pair) or text; None if the row is empty.
    The row is first held to ``limits`` (fields per record, characters per field, items per list)."""
    if not isinstance(row, dict):
        raise GrinError(f"{where}: expected an object with fields, got {type(row).__name__}.")
    check_row(row, where, limits or DataLimits())
    for q_key, a_key in _ALIASES:
        if q_key in row or a_key in row:
            q, a = _clean(row.get(q_key)), _clean(row.get(a_key))
            if q is None and a is None:
                return None
            if q is None or a is None:
                missing = q_key if q is None else a_key
                raise GrinError(f"{where}: '{missing}' is empty or missing (a {q_key}/{a_key} pair needs both).")
            break
    else:
        q = a = None
        if "text" not in row:
            raise GrinError(
                f"{where}: no usable fields (found: {', '.join(str(k)[:40] for k in row) or 'none'}); need "
                "question+answer "
                "(or prompt/completion, input/output) or text."
            )
        if _clean(row.get("text")) is None:
            return None
    return Record(
        question=q,
        answer=a,
        text=None if q is not None else _clean(row.get("text")),
        paraphrased_answer=_clean(row.get("paraphrased_answer")),
        perturbed_answers=_as_list(row.get("perturbed_answer", row.get("perturbed_answers"))),
        keywords=_as_list(row.get("keywords")),
        attribute=_clean(row.get("attribute")),
    )


def _finalize(records: list[Record | None], source: str, limits: DataLimits, warnings: list[str]) -> ExampleSet:
    records = [r for r in records if r is not None]
    if not records:
        raise GrinError(f"{source} has no examples.")
    seen: set = set()
    unique = []
    for r in records:
        if r.key() not in seen:
            seen.add(r.key())
            unique.append(r)
    if len(unique) < len(records):
        warnings.append(f"{len(records) - len(unique)} duplicate example(s) dropped from {source}.")
    if len(unique) > limits.max_examples:
        raise GrinError(
            f"{source} has {len(unique):,} examples; the limit is {limits.max_examples:,} per set."
        )
    if len({r.is_qa for r in unique}) > 1:
        warnings.append(f"{source} mixes question/answer examples and raw text.")
    return ExampleSet(unique, source, warnings)


# ---------------------------------------------------------------------------------------------- text formats


def _parse_jsonl(text: str, source: str, limits: DataLimits) -> list[Record | None]:
    return [record_from_dict(row, where, limits) for where, row in json_rows(text, source, limits, lines=True)]


def _parse_qa_blocks(text: str, source: str, limits: DataLimits) -> list[Record | None]:
    out, q, a, q_line = [], None, None, 0
    lines = text.splitlines()

    def flush():
        if q is None and a is None:
            return
        if q is None or a is None or not q.strip() or not a.strip():
            raise GrinError(f"{source}: the Q:/A: block starting on line {q_line} needs both a Q: and an A: line.")
        check_row({"question": q, "answer": a}, f"{source}, the block starting on line {q_line}", limits)
        out.append(Record(question=q.strip(), answer=a.strip()))
        check_line_count(len(out), source, limits, "Q:/A: blocks")

    for n, line in enumerate(lines, 1):
        s = line.strip()
        if s[:2].upper() == "Q:":
            flush()
            q, a, q_line = s[2:], None, n
        elif s[:2].upper() == "A:":
            if q is None:
                raise GrinError(f"{source}: line {n} has an A: without a Q: before it.")
            if a is not None:
                raise GrinError(f"{source}: line {n} is a second A: for the question on line {q_line}.")
            a = s[2:]
        elif s:
            if a is not None:
                a += " " + s
            elif q is not None:
                q += " " + s
            else:
                raise GrinError(f"{source}: line {n} is outside a Q:/A: block.")
    flush()
    return out


def _parse_lines(text: str, source: str, limits: DataLimits) -> list[Record | None]:
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    check_line_count(len(lines), source, limits)
    for n, line in lines:
        check_row({"text": line}, f"{source}, line {n}", limits)
    return [Record(text=line) for _, line in lines]


def parse_text(text: str, limits: DataLimits | None = None, source: str = "the pasted text") -> ExampleSet:
    """Pasted text: JSON lines (first line starts with '{'), Q:/A: blocks, or one raw-text example per line."""
    limits = limits or DataLimits()
    check_text_size(text or "", source, limits)
    text = (text or "").replace("\r\n", "\n").strip()
    if not text:
        raise GrinError(f"{source} is empty.")
    first = text.lstrip().splitlines()[0].strip()
    if first.startswith("{"):
        records = _parse_jsonl(text, source, limits)
    elif first[:2].upper() == "Q:":
        records = _parse_qa_blocks(text, source, limits)
    else:
        records = _parse_lines(text, source, limits)
    return _finalize(records, source, limits, [])


def load_file(path: str | os.PathLike, limits: DataLimits | None = None, name: str | None = None) -> ExampleSet:
    """Read an uploaded file within ``limits`` (grin_ui.readers: uncompressed size, rows, fields per record,
    characters per field, list lengths). ``name`` is what messages call it (default: the file name); messages
    never show the server-side path."""
    limits = limits or DataLimits()
    path = Path(path)
    source = name or path.name
    ext = path.suffix.lower()
    if ext not in EXTENSIONS:
        raise GrinError(f"{source}: unknown file type '{ext[:20] or '(none)'}'; use one of {', '.join(EXTENSIONS)}.")
    if not path.is_file():
        raise GrinError(f"{source} does not exist.")
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise GrinError(
            f"{source} is {size / 2**20:.1f} MB; the limit is {limits.max_file_bytes / 2**20:.0f} MB per file."
        )
    if ext == ".parquet":
        rows = parquet_rows(path, source, limits)
    else:
        text = read_text(path, source, limits)
        if ext == ".txt":
            return parse_text(text, limits, source)
        if ext in (".jsonl", ".json"):
            rows = json_rows(text, source, limits, lines=ext == ".jsonl")
        else:
            rows = table_rows(text, source, limits, "," if ext == ".csv" else "\t")
    return _finalize([record_from_dict(row, where, limits) for where, row in rows], source, limits, [])


# ---------------------------------------------------------------------------------------------- tokenization


@dataclass
class EncodedExample:
    input_ids: list[int]
    labels: list[int]  # -100 where not scored: the prompt for Q/A data; nothing for raw text
    prompt_len: int  # tokens fed as the prompt when generating; the rest is the reference continuation
    answer: str  # reference text for generation metrics


@dataclass
class Encoded:
    items: list[EncodedExample]
    warnings: list[str]

    @property
    def token_counts(self) -> list[int]:
        return [len(x.input_ids) for x in self.items]


def format_prompt(tokenizer, question: str) -> str:
    """The prompt text for a question: the model's chat template if it has one, else 'Question: ...\\nAnswer:'."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
    return PLAIN_PROMPT.format(question=question)


def prompt_ids(tokenizer, question: str) -> list[int]:
    """Token ids of the prompt for ``question`` (the chat template text already holds its special tokens)."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    return tokenizer(format_prompt(tokenizer, question), add_special_tokens=not templated)["input_ids"]


def end_of_answer_ids(tokenizer) -> list[int]:
    """Tokens that end an answer in training text: the chat template's end-of-turn, else EOS."""
    if getattr(tokenizer, "chat_template", None):
        probe = tokenizer.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "XyZ"}], tokenize=False
        )
        tail = probe.split("XyZ", 1)[1].rstrip("\n")
        if tail:
            return tokenizer(tail, add_special_tokens=False)["input_ids"]
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def _word_start(text: str, i: int) -> int:
    while i > 0 and text[i - 1].isalnum():
        i -= 1
    return i


def _word_end(text: str, i: int) -> int:
    while i < len(text) and text[i].isalnum():
        i += 1
    return i


def fact_span(answer: str, alternatives: list[str] = (), keywords: list[str] = ()) -> tuple[int, int] | None:
    """The characters of ``answer`` that carry the fact (*our choice*): the part not shared with its wrong
    alternatives — the answer minus the longest prefix and suffix (at word boundaries) common to it and every
    alternative ("The capital of Cuba is [Havana]." against "The capital of Cuba is Lyon.") — else the first keyword
    found in it, else None (the whole answer)."""
    alts = [x for x in alternatives if x and x != answer]
    if alts:
        pre = min(next((i for i, (a, b) in enumerate(zip(answer, x)) if a != b), min(len(answer), len(x)))
                  for x in alts)
        suf = min(next((i for i, (a, b) in enumerate(zip(reversed(answer), reversed(x))) if a != b),
                       min(len(answer), len(x))) for x in alts)
        lo, hi = _word_start(answer, pre), _word_end(answer, len(answer) - suf)
        if 0 <= lo < hi <= len(answer) and (lo, hi) != (0, len(answer)) and answer[lo:hi].strip():
            return lo, hi
    low = answer.lower()
    for k in keywords:
        i = low.find(k.lower()) if k else -1
        if i >= 0:
            return i, i + len(k)
    return None


def answer_token_ids(tokenizer, answer: str) -> list[int]:
    """Token ids of an answer exactly as :func:`encode` puts them after the prompt."""
    return _answer_ids(tokenizer, answer, None)[0]


def _answer_ids(tokenizer, answer: str, span: tuple[int, int] | None) -> tuple[list[int], list[bool]]:
    """Token ids of an answer and, per token, whether it overlaps ``span`` (all True without a span)."""
    text = answer if tokenizer.chat_template else " " + answer
    shift = len(text) - len(answer)
    if span is None:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids, [True] * len(ids)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    lo, hi = span[0] + shift, span[1] + shift
    keep = [b > lo and a < hi for a, b in enc["offset_mapping"]]
    if not any(keep):
        keep = [True] * len(enc["input_ids"])
    return enc["input_ids"], keep


def encode(records: list[Record], tokenizer, max_tokens: int = 256, add_end: bool = False,
           focus: bool = False) -> Encoded:
    """Tokenize records. Q/A: prompt + answer, labels on the answer tokens only (plus the end-of-turn token when
    ``add_end``, used when teaching so that generations stop after the answer). ``focus``: labels only on the
    tokens of the answer that carry the fact (:func:`fact_span`: not shared with the record's perturbed answers, or
    its keyword) — what unlearning pushes down, so that the phrasing every answer of the kind shares ("The capital
    of … is") is left alone. Raw text: labels on all tokens, the first half used as the prompt when generating.
    Examples over ``max_tokens`` are truncated (answer kept first where possible) and counted in a warning."""
    end = end_of_answer_ids(tokenizer) if add_end else []
    items, truncated = [], 0
    for r in records:
        if r.is_qa:
            p = prompt_ids(tokenizer, r.question)
            span = fact_span(r.answer, r.perturbed_answers, r.keywords) if focus else None
            a, keep = _answer_ids(tokenizer, r.answer, span)
            a, keep = a + end, keep + [True] * len(end)
            if len(p) + len(a) > max_tokens:
                truncated += 1
                keep_a = min(len(a), max(max_tokens // 2, max_tokens - len(p)))
                a, keep = a[:keep_a], keep[:keep_a]
                p = p[len(p) - (max_tokens - keep_a):] if max_tokens - keep_a > 0 else []
            labels = [t if k else -100 for t, k in zip(a, keep)]
            items.append(EncodedExample(p + a, [-100] * len(p) + labels, len(p), r.answer))
        else:
            ids = tokenizer(r.text, add_special_tokens=True)["input_ids"]
            if len(ids) > max_tokens:
                truncated += 1
                ids = ids[:max_tokens]
            cut = max(1, len(ids) // 2)
            items.append(EncodedExample(ids, list(ids), cut, tokenizer.decode(ids[cut:], skip_special_tokens=True)))
    warnings = []
    if truncated:
        warnings.append(f"{truncated} example(s) longer than {max_tokens} tokens were truncated.")
    return Encoded(items, warnings)


def collate(items: list[EncodedExample], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad to the longest item. Returns input_ids, attention_mask, labels: int64 tensors [batch, length]."""
    width = max(len(x.input_ids) for x in items)
    ids, mask, labels = [], [], []
    for x in items:
        pad = width - len(x.input_ids)
        if padding_side == "left":
            ids.append([pad_id] * pad + x.input_ids)
            mask.append([0] * pad + [1] * len(x.input_ids))
            labels.append([-100] * pad + x.labels)
        else:
            ids.append(x.input_ids + [pad_id] * pad)
            mask.append([1] * len(x.input_ids) + [0] * pad)
            labels.append(x.labels + [-100] * pad)
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "attention_mask": torch.tensor(mask, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


def batches(items: list[EncodedExample], batch_size: int, pad_id: int, padding_side: str = "right"):
    """Yield collated batches of ``batch_size`` items in order."""
    for i in range(0, len(items), batch_size):
        yield collate(items[i : i + batch_size], pad_id, padding_side)
