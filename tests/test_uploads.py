"""Malformed uploads (SPEC §6, §9): each is loaded or refused with a GrinError naming the problem, never another
exception, and without building more than the limits allow (a parquet file of a few hundred bytes that decodes to
hundreds of MB is refused before it is decoded)."""

from __future__ import annotations

import json
import random
import resource

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grin_ui.config import DataLimits
from grin_ui.data import ExampleSet, load_file, parse_text
from grin_ui.errors import GrinError

ROWS = [{"question": f"Where was author {i} born?", "answer": f"Author {i} was born in Town {i}.",
         "perturbed_answer": [f"Author {i} was born in Town {i + 1}.", f"Author {i} was born in Town {i + 2}."],
         "keywords": [f"Town {i}"]} for i in range(12)]


def _valid_files() -> dict[str, bytes]:
    jsonl = "\n".join(json.dumps(r) for r in ROWS)
    csv = "question,answer,perturbed_answer,keywords\n" + "\n".join(
        f'"{r["question"]}","{r["answer"]}","{json.dumps(r["perturbed_answer"]).replace(chr(34), chr(34) * 2)}",'
        f'{r["keywords"][0]}' for r in ROWS)
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(ROWS), buf, compression="zstd")
    return {".jsonl": jsonl.encode(), ".json": json.dumps(ROWS).encode(), ".csv": csv.encode(),
            ".tsv": csv.replace(",", "\t").encode(),
            ".txt": "\n\n".join(f"Q: {r['question']}\nA: {r['answer']}" for r in ROWS).encode(),
            ".parquet": buf.getvalue().to_pybytes()}


def _parquet(table: pa.Table) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue().to_pybytes()


def _malformed(rng: random.Random) -> list[tuple[str, bytes]]:
    """A few hundred broken uploads: truncated, bytes flipped, other encodings, giant fields, deep nesting, huge
    lists, decompression bombs, binary junk."""
    valid = _valid_files()
    out: list[tuple[str, bytes]] = []
    for ext, data in valid.items():
        for _ in range(16):  # truncated anywhere
            out.append((ext, data[: rng.randrange(len(data))]))
        for _ in range(16):  # a few bytes flipped
            b = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            out.append((ext, bytes(b)))
        if ext != ".parquet":
            text = data.decode()
            for enc in ("utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "utf-8-sig"):
                out.append((ext, (text + " café ü").encode(enc)))
            out.append((ext, data[:-3] + "é".encode()[:1]))  # cut inside a UTF-8 character
        for size in (16, 4096):  # binary junk
            out.append((ext, rng.randbytes(size)))
        out.append((ext, b""))
    giant = "x" * 200_000
    out += [
        (".csv", f"question,answer\nq,{giant}\n".encode()),
        (".tsv", f"question\tanswer\nq\t{giant}\n".encode()),
        (".csv", f'question,answer\nq,"{giant}\n'.encode()),  # unterminated quote
        (".jsonl", json.dumps({"question": "q", "answer": giant}).encode()),
        (".json", json.dumps([{"text": giant}]).encode()),
        (".txt", giant.encode()),
        (".txt", b"a\n" * 30_000),
        (".csv", b"question,answer\n" + b"q,a\n" * 12_000),
        (".csv", ",".join(f"c{i}" for i in range(500)).encode()),
        (".csv", b"question,answer\nq,a" + b"," * 50_000),
        (".jsonl", json.dumps({"question": "q", "answer": "a", "perturbed_answer": ["p"] * 1000}).encode()),
        (".jsonl", json.dumps({"question": "q", "answer": "a", "keywords": [[["deep"]]]}).encode()),
        (".jsonl", json.dumps({"question": {"nested": "object"}, "answer": "a"}).encode()),
        (".jsonl", json.dumps({f"f{i}": "v" for i in range(500)}).encode()),
        (".json", b"[" + b"1," * 1_000_000 + b"1]"),
        (".json", b'[{"question": 1' + b"1" * 5000 + b', "answer": "a"}]'),
        (".json", b'{"a": [], "b": []}'),
        (".json", b'"just a string"'),
    ]
    for depth in (20, 1000, 100_000):
        out.append((".json", b"[" * depth + b"]" * depth))
        out.append((".jsonl", b'{"question": "q", "answer": ' + b"[" * depth + b"]" * depth + b"}"))
        out.append((".json", b"[" * depth))  # and truncated
    out += [
        (".parquet", _parquet(pa.table({"question": ["x" * 200] * 1_000_000, "answer": ["y"] * 1_000_000}))),
        (".parquet", _parquet(pa.table({"question": ["x" * 20_000] * 9_000, "answer": ["y"] * 9_000}))),
        (".parquet", _parquet(pa.table({"question": [f"q{i}" for i in range(50)], "answer": ["a"] * 50,
                                        "perturbed_answer": [["p"] * 500] * 50}))),
        (".parquet", _parquet(pa.table({"question": [{"a": 1}] * 5, "answer": ["y"] * 5}))),
        (".parquet", _parquet(pa.table({"question": [[1.5]] * 5, "answer": ["y"] * 5}))),
        (".parquet", _parquet(pa.table({f"c{i}": [1] for i in range(200)}))),
        (".parquet", _parquet(pa.table({"nothing": ["here"]}))),
        (".parquet", _parquet(pa.table({"question": ["q" * 100_000], "answer": ["a"]}))),
    ]
    return out


def test_fuzzed_uploads_are_loaded_or_refused_with_a_message(tmp_path):
    rng = random.Random(1234)
    cases = _malformed(rng)
    assert len(cases) >= 250
    outcomes = {"loaded": 0, "refused": 0}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i, (ext, data) in enumerate(cases):
        path = tmp_path / f"upload{i}{ext}"
        path.write_bytes(data)
        try:
            result = load_file(path, name=f"upload{ext}")
        except GrinError as e:
            msg = str(e)
            assert msg and "\n" not in msg and len(msg) < 400, (i, msg)
            assert str(tmp_path) not in msg, msg  # names the upload, never the server-side path
            outcomes["refused"] += 1
        else:
            assert isinstance(result, ExampleSet) and len(result) > 0
            outcomes["loaded"] += 1
        if ext != ".parquet" and len(data) < 300_000:
            try:
                parse_text(data.decode("utf-8", "replace"))  # the same bytes pasted
            except GrinError:
                pass
        path.unlink()
    assert outcomes["refused"] > 200 and outcomes["loaded"] > 0, outcomes
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown_mb < 150, f"reading the uploads raised the peak memory by {grown_mb:.0f} MB"


@pytest.mark.parametrize("rows,value,pattern", [
    (1_000_000, "x" * 200, r"has 1,000,000 rows; the limit is 10,000"),
    (9_000, "x" * 20_000, r"expands to over .* MB when decoded; the limit is 10 MB"),
])
def test_parquet_bombs_refused_before_decoding(tmp_path, rows, value, pattern):
    path = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"question": [value] * rows, "answer": ["y"] * rows}), path, compression="zstd")
    assert path.stat().st_size < 50_000  # a few KB on disk, over 100 MB as Python strings
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(GrinError, match=pattern):
        load_file(path)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 60


def test_parquet_uncompressed_limit_from_metadata(tmp_path):
    path = tmp_path / "big.parquet"
    rng = random.Random(0)
    texts = ["".join(rng.choice("ab") for _ in range(1000)) for _ in range(300)]  # ~8x smaller compressed
    pq.write_table(pa.table({"question": texts, "answer": ["a"] * 300}), path, compression="zstd")
    assert path.stat().st_size < 200_000
    with pytest.raises(GrinError, match=r"holds 0\.\d MB of uncompressed data; the limit is 0 MB"):
        load_file(path, DataLimits(max_file_bytes=200_000))
    assert len(load_file(path)) == 300


@pytest.mark.parametrize("name,content,pattern", [
    ("f.csv", b"question,answer\nq," + b"x" * 140_000 + b"\n", r"f\.csv, line 2: a field is longer than 131,072"),
    ("f.csv", b"question,answer\nq," + b"x" * 70_000 + b"\n", r"'answer' has 70,000 characters; the limit is 65,536"),
    ("f.json", b"[" * 50_000 + b"]" * 50_000, r"nested more than 16 levels deep"),
    ("f.jsonl", b'{"question": "q", "answer": "a", "keywords": ' + json.dumps(["k"] * 65).encode() + b"}",
     r"f\.jsonl, line 1: 'keywords' has 65 items; the limit is 64 per list"),
    ("f.jsonl", json.dumps({"question": ["a", "b"], "answer": "c"}).encode(), r"'question' should be text, got a list"),
    ("f.csv", "question,answer\nq,a\n".encode("utf-16"), r"f\.csv is UTF-16 text; save it as UTF-8"),
    ("f.txt", "café au lait".encode("latin-1"), r"not UTF-8 text: invalid byte 0xe9 on line 1"),
    ("f.txt", "ok\ncafé".encode()[:-1], r"ends in the middle of a UTF-8 character on line 2: is the file truncated"),
    ("f.jsonl", b'{"question": "q", "answer": "a"}\n{"question": "q2", "ans', r"invalid JSON on line 2"),
    ("f.parquet", b"PAR1" + b"\x00" * 100, r"f\.parquet is not a readable parquet file"),
    ("f.csv", b"question,answer\n\x00\x01\x02", r"looks like a binary file \(a NUL byte on line 2\)"),
    ("f.txt", b"line\n" * 10_001, r"f\.txt has 10,001 non-empty lines; the limit is 10,000"),
    ("f.csv", b"question,answer\nq,a" + b",x" * 100 + b"\n", r"line 2 has 102 fields; the limit is 64 per record"),
])
def test_malformed_files_get_clear_messages(tmp_path, name, content, pattern):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(GrinError, match=pattern):
        load_file(path)


def test_limits_are_configurable(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))
    assert len(load_file(path)) == 12
    with pytest.raises(GrinError, match="'perturbed_answer' has 2 items; the limit is 1 per list"):
        load_file(path, DataLimits(max_list_items=1))
    with pytest.raises(GrinError, match="has 12 non-empty lines; the limit is 5 per file"):
        load_file(path, DataLimits(max_rows=5))
    with pytest.raises(GrinError, match="'question' has 2[0-9] characters; the limit is 10 per field"):
        load_file(path, DataLimits(max_field_chars=10))
    with pytest.raises(GrinError, match="has 4 fields; the limit is 3 per record"):
        load_file(path, DataLimits(max_fields=3))


def test_cli_exit_2_on_malformed_upload(tmp_path, capsys):
    from grin_ui.cli import main

    bad = tmp_path / "forget.json"
    bad.write_bytes(b"[" * 100_000)
    assert main(["run", "--forget", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "forget.json: the JSON on line 1 is nested more than 16 levels deep" in err[0]
