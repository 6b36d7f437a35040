"""Read uploaded data files into rows, within the limits of SPEC §6 / §9, before anything large is built.

    text = read_text(path, "forget.txt", limits)                     # bytes -> str: size, NUL, encoding checks
    rows = json_rows(text, "forget.jsonl", limits, lines=True)       # [(where, row), ...]
    rows = table_rows(text, "forget.csv", limits, delimiter=",")
    rows = parquet_rows(path, "forget.parquet", limits)
    check_row(row, "forget.jsonl, line 3", limits)                   # fields per record, field size, list lengths

What is bounded (grin_ui.config.DataLimits): the *uncompressed* content of a file (``max_file_bytes``: the bytes of
a text file; for parquet the decoded size of the columns used, read from the file's metadata before any page is
decoded, then measured again on the dictionary-encoded columns before they become Python strings, so that a few KB
of zstd cannot expand into hundreds of MB), the rows read (``max_rows``), the fields per record (``max_fields``),
the characters per field (``max_field_chars``) and the items per list (``max_list_items``). JSON is scanned for its
nesting depth and number of values before it is parsed. Every problem is a GrinError naming the file, the line or
row, and the limit; no file is written anywhere (parquet is read with pyarrow directly, not through the
``datasets`` cache).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from pathlib import Path

from grin_ui.config import DataLimits
from grin_ui.errors import GrinError

PAIRS = (("question", "answer"), ("prompt", "completion"), ("input", "output"))
SCALAR_FIELDS = ("question", "answer", "prompt", "completion", "input", "output", "text", "paraphrased_answer",
                 "attribute")
LIST_FIELDS = ("perturbed_answer", "perturbed_answers", "keywords")
KNOWN_FIELDS = SCALAR_FIELDS + LIST_FIELDS
MAX_JSON_DEPTH = 16  # a record is an object holding lists of texts: depth 3 inside a top-level list
_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF16_LE, "UTF-16"),
         (codecs.BOM_UTF16_BE, "UTF-16"))
_JSON_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_JSON_STRUCTURE = re.compile(r"[\[\]{}\n]")


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


# ---------------------------------------------------------------------------------------------- bytes -> text


def read_bytes(path: Path, source: str, limits: DataLimits) -> bytes:
    """The file's bytes, refused over ``max_file_bytes`` (read at most one byte past the limit)."""
    with open(path, "rb") as f:
        raw = f.read(limits.max_file_bytes + 1)
    if len(raw) > limits.max_file_bytes:
        raise GrinError(f"{source} is over {limits.max_file_bytes / 2**20:.0f} MB, the limit per file.")
    return raw


def decode_text(raw: bytes, source: str) -> str:
    """UTF-8 text (a UTF-8 BOM is dropped); binary files and other encodings get a message naming the problem."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raise GrinError(f"{source} is {name} text; save it as UTF-8 and upload it again.")
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise GrinError(f"{source} looks like a binary file (a NUL byte on line {line}); upload UTF-8 text.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        if e.reason == "unexpected end of data":
            raise GrinError(f"{source} ends in the middle of a UTF-8 character on line {line}: is the file "
                            "truncated, or not UTF-8 text?") from None
        raise GrinError(f"{source} is not UTF-8 text: invalid byte 0x{raw[e.start]:02x} on line {line} (save it "
                        "as UTF-8).") from None


def read_text(path: Path, source: str, limits: DataLimits) -> str:
    text = decode_text(read_bytes(path, source, limits), source)
    if not text.strip():
        raise GrinError(f"{source} is empty.")
    return text


def check_text_size(text: str, source: str, limits: DataLimits) -> None:
    """Pasted text is held to the per-file limit too."""
    if len(text) > limits.max_file_bytes // 4 and len(text.encode("utf-8", "replace")) > limits.max_file_bytes:
        raise GrinError(f"{source} is over {limits.max_file_bytes / 2**20:.0f} MB, the limit per file.")


def check_line_count(lines: int, source: str, limits: DataLimits, what: str = "non-empty lines") -> None:
    if lines > limits.max_rows:
        raise GrinError(f"{source} has {lines:,} {what}; the limit is {limits.max_rows:,} per file.")


# ---------------------------------------------------------------------------------------------- records


def _kind(value) -> str:
    return "an object" if isinstance(value, dict) else "a list" if isinstance(value, (list, tuple)) else \
        type(value).__name__


def _check_text(value, where: str, name: str, limits: DataLimits) -> None:
    if isinstance(value, (dict, list, tuple)):
        raise GrinError(f"{where}: '{name}' should be text, got {_kind(value)}.")
    if isinstance(value, (str, bytes)) and len(value) > limits.max_field_chars:
        raise GrinError(f"{where}: '{name}' has {len(value):,} characters; the limit is {limits.max_field_chars:,} "
                        "per field.")


def check_row(row: dict, where: str, limits: DataLimits) -> None:
    """Fields per record, characters per field, items per list; a text field holding a list or an object."""
    if len(row) > limits.max_fields:
        raise GrinError(f"{where} has {len(row):,} fields; the limit is {limits.max_fields} per record.")
    for name in SCALAR_FIELDS:
        if name in row:
            _check_text(row[name], where, name, limits)
    for name in LIST_FIELDS:
        value = row.get(name)
        if isinstance(value, dict):
            raise GrinError(f"{where}: '{name}' should be a list of texts, got an object.")
        if isinstance(value, (list, tuple)):
            if len(value) > limits.max_list_items:
                raise GrinError(f"{where}: '{name}' has {len(value):,} items; the limit is {limits.max_list_items} "
                                "per list.")
            for item in value:
                _check_item(item, where, name, limits)
        elif value is not None:
            _check_text(value, where, name, limits)


def _check_item(item, where: str, name: str, limits: DataLimits) -> None:
    if isinstance(item, (dict, list, tuple)):
        raise GrinError(f"{where}: '{name}' should be a list of texts, but holds {_kind(item)}.")
    if isinstance(item, str) and len(item) > limits.max_field_chars:
        raise GrinError(f"{where}: an item of '{name}' has {len(item):,} characters; the limit is "
                        f"{limits.max_field_chars:,} per field.")


def check_columns(columns: list[str], source: str) -> None:
    cols = set(columns)
    if "text" in cols or any(q in cols and a in cols for q, a in PAIRS):
        return
    shown = ", ".join(columns[:20]) + (f", … ({len(columns)} in all)" if len(columns) > 20 else "")
    raise GrinError(
        f"{source} has no usable columns (found: {shown or 'none'}); need question+answer "
        "(or prompt/completion, input/output) or text."
    )


# ---------------------------------------------------------------------------------------------- JSON


def scan_json(text: str, source: str, limits: DataLimits, lines: bool) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH or holding more values than ``max_rows * max_fields``, from
    a scan of its brackets and commas (strings removed), before json builds any object."""
    bare = _JSON_STRING.sub('""', text)
    values = bare.count(",") + bare.count("[") + bare.count("{")
    cap = limits.max_rows * limits.max_fields
    if values > cap:
        raise GrinError(f"{source} holds {values:,} JSON values; a file within the limits ({limits.max_rows:,} "
                        f"records of at most {limits.max_fields} fields) holds at most {cap:,}.")
    depth, line = 0, 1
    for m in _JSON_STRUCTURE.finditer(bare):
        c = m.group()
        if c == "\n":
            line += 1
            if lines:
                depth = 0
        elif c in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise GrinError(f"{source}: the JSON on line {line} is nested more than {MAX_JSON_DEPTH} levels "
                                "deep; a record is an object of texts and lists of texts.")
        else:
            depth = max(0, depth - 1)


def _loads(text: str, source: str, line: int | None):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        n = line if line is not None else e.lineno
        raise GrinError(f"{source}: invalid JSON on line {n}: {e.msg} (column {e.colno}).") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4,300 digits; nesting
        where = f"line {line}" if line is not None else "the file"
        why = "a number has too many digits" if "digits" in str(e) else _first_line(e)
        raise GrinError(f"{source}: unreadable JSON on {where}: {why}.") from None


def json_rows(text: str, source: str, limits: DataLimits, lines: bool) -> list[tuple[str, object]]:
    """JSON lines (``lines``: one record per non-empty line) or one JSON document holding a list of records (or an
    object holding one list). Returns (where, row) pairs; rows are checked by the caller (record_from_dict)."""
    scan_json(text, source, limits, lines)
    if lines:
        numbered = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        check_line_count(len(numbered), source, limits)
        return [(f"{source}, line {n}", _loads(line, source, n)) for n, line in numbered]
    data = _loads(text, source, None)
    if isinstance(data, dict):
        found = [v for v in data.values() if isinstance(v, list)]
        if len(found) != 1:
            raise GrinError(f"{source}: expected a list of records (or an object holding one list).")
        data = found[0]
    if not isinstance(data, list):
        raise GrinError(f"{source}: expected a list of records, got {type(data).__name__}.")
    check_line_count(len(data), source, limits, "records")
    return [(f"{source}, record {i + 1}", row) for i, row in enumerate(data)]


# ---------------------------------------------------------------------------------------------- CSV / TSV


def table_rows(text: str, source: str, limits: DataLimits, delimiter: str) -> list[tuple[str, dict]]:
    """CSV/TSV with a header row; ``perturbed_answer`` may hold a JSON list, ``keywords`` ';'-separated words."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    out: list[tuple[str, dict]] = []
    header: list[str] | None = None
    try:
        for cells in reader:
            if header is None:
                if len(cells) > limits.max_fields:
                    raise GrinError(f"{source} has {len(cells):,} columns; the limit is {limits.max_fields}.")
                header = [c.strip() for c in cells]
                check_columns(header, source)
                continue
            if not any(c.strip() for c in cells):
                continue
            where = f"{source}, line {reader.line_num}"
            if len(cells) > limits.max_fields:
                raise GrinError(f"{where} has {len(cells):,} fields; the limit is {limits.max_fields} per record.")
            if len(out) >= limits.max_rows:
                check_line_count(len(out) + 1, source, limits, "rows or more")
            row = dict(zip(header, cells))
            for name in ("perturbed_answer", "perturbed_answers"):
                value = row.get(name)
                if value and value.startswith("[") and len(value) <= limits.max_field_chars:
                    scan_json(value, where, limits, lines=False)
                    try:
                        row[name] = json.loads(value)
                    except (ValueError, RecursionError):
                        pass  # kept as one text
            if row.get("keywords"):
                row["keywords"] = [k.strip() for k in row["keywords"].split(";")]
            out.append((where, row))
    except csv.Error as e:
        line = reader.line_num
        if "field larger than field limit" in str(e):
            raise GrinError(f"{source}, line {line}: a field is longer than {csv.field_size_limit():,} characters "
                            f"(the limit is {limits.max_field_chars:,} per field).") from None
        raise GrinError(f"{source}, line {line} is not valid {'TSV' if delimiter == chr(9) else 'CSV'}: "
                        f"{_first_line(e)}.") from None
    if header is None:
        check_columns([], source)
    return out


# ---------------------------------------------------------------------------------------------- parquet


def _allowed_type(t, as_list: bool) -> bool:
    import pyarrow as pa

    scalar = (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
              or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t)
              or (pa.types.is_dictionary(t) and pa.types.is_string(t.value_type)))
    if scalar or not as_list:
        return scalar
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _allowed_type(t.value_type, False)


def _decoded_bytes(arr, where: str, name: str, limits: DataLimits) -> int:
    """Bytes ``arr`` would take as Python strings (dictionary-encoded values counted once per use), checking list
    lengths on the way."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        return sum(_decoded_bytes(c, where, name, limits) for c in arr.chunks)
    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        longest = pc.max(pc.list_value_length(arr)).as_py() or 0
        if longest > limits.max_list_items:
            raise GrinError(f"{where}: column '{name}' has a list of {longest:,} items; the limit is "
                            f"{limits.max_list_items} per list.")
        return _decoded_bytes(arr.flatten(), where, name, limits)
    if pa.types.is_dictionary(t):
        lengths = pc.binary_length(arr.dictionary)
        return int(pc.sum(pc.take(lengths, arr.indices)).as_py() or 0)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return int(pc.sum(pc.binary_length(arr)).as_py() or 0)
    return arr.nbytes


def parquet_rows(path: Path, source: str, limits: DataLimits) -> list[tuple[str, dict]]:
    """Rows of the usable columns of a parquet file. Refused from the footer alone when it has too many rows or
    columns, an unusable column type, or more than ``max_file_bytes`` of uncompressed column data; then each row
    group is read dictionary-encoded and its decoded size checked before it becomes Python objects."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
        schema = meta.schema.to_arrow_schema()
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a corrupt or truncated file
        raise GrinError(f"{source} is not a readable parquet file ({_first_line(e)}).") from None
    names = list(schema.names)
    if len(names) > limits.max_fields:
        raise GrinError(f"{source} has {len(names):,} columns; the limit is {limits.max_fields}.")
    check_columns(names, source)
    if meta.num_rows > limits.max_rows:
        raise GrinError(f"{source} has {meta.num_rows:,} rows; the limit is {limits.max_rows:,} per file.")
    used = [n for n in names if n in KNOWN_FIELDS]
    for n in used:
        if not _allowed_type(schema.field(n).type, n in LIST_FIELDS):
            kind = "text or a list of texts" if n in LIST_FIELDS else "text"
            raise GrinError(f"{source}: column '{n}' has type {schema.field(n).type}; it should hold {kind}.")
    size = 0
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        for j in range(rg.num_columns):
            col = rg.column(j)
            if col.path_in_schema.split(".")[0] in used:
                size += max(col.total_uncompressed_size, 0)
    if size > limits.max_file_bytes:
        raise GrinError(f"{source} holds {_mb(size)} of uncompressed data; the limit is "
                        f"{limits.max_file_bytes / 2**20:.0f} MB per file.")
    dict_cols = []  # string columns are read dictionary-encoded: a repeated value is held once
    for n in used:
        t = schema.field(n).type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            dict_cols.append(n)
        elif t.num_fields == 1 and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
            dict_cols.append(f"{n}.list.element")
    out: list[tuple[str, dict]] = []
    decoded = 0
    try:
        pf = pq.ParquetFile(path, read_dictionary=dict_cols)
        for i in range(meta.num_row_groups):
            table = pf.read_row_group(i, columns=used)
            for n in used:
                decoded += _decoded_bytes(table.column(n), source, n, limits)
            if decoded > limits.max_file_bytes:
                raise GrinError(f"{source} expands to over {_mb(decoded)} when decoded; the limit is "
                                f"{limits.max_file_bytes / 2**20:.0f} MB per file.")
            base = len(out)
            out += [(f"{source}, row {base + k + 1}", row) for k, row in enumerate(table.to_pylist())]
    except GrinError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt pages, inconsistent metadata
        raise GrinError(f"{source} is not a readable parquet file ({_first_line(e)}).") from None
    if len(out) > limits.max_rows:
        raise GrinError(f"{source} has {len(out):,} rows; the limit is {limits.max_rows:,} per file.")
    return out
