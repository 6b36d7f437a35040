import json

import pandas as pd
import pytest

from grin_ui.config import DataLimits
from grin_ui.data import Record, batches, encode, load_file, parse_text
from grin_ui.errors import GrinError


def write(tmp_path, name, content, mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


# ------------------------------------------------------------------ good inputs


def test_paste_qa_blocks():
    s = parse_text("Q: Who wrote Dune?\nA: Frank Herbert.\n\nQ: Capital of Peru?\nA: Lima,\nthe city of kings.")
    assert [(r.question, r.answer) for r in s.records] == [
        ("Who wrote Dune?", "Frank Herbert."), ("Capital of Peru?", "Lima, the city of kings.")]


def test_paste_lines_and_jsonl():
    s = parse_text("first line\n\nsecond line\n")
    assert [r.text for r in s.records] == ["first line", "second line"]
    s = parse_text('{"prompt": "p1", "completion": "c1", "keywords": ["k"]}\n{"input": "p2", "output": "c2"}')
    assert [(r.question, r.answer) for r in s.records] == [("p1", "c1"), ("p2", "c2")]
    assert s.records[0].keywords == ["k"]


def test_all_file_types(tmp_path):
    rows = [{"question": "q1", "answer": "a1", "perturbed_answer": ["x", "y"], "paraphrased_answer": "pa"},
            {"question": "q2", "answer": "a2", "attribute": "group-b"}]
    files = [
        write(tmp_path, "d.jsonl", "\n".join(json.dumps(r) for r in rows)),
        write(tmp_path, "d.json", json.dumps(rows)),
        write(tmp_path, "d.csv", 'question,answer,perturbed_answer,paraphrased_answer,attribute\n'
                                 'q1,a1,"[""x"", ""y""]",pa,\nq2,a2,,,group-b\n'),
        write(tmp_path, "d.tsv", "question\tanswer\tperturbed_answer\tparaphrased_answer\tattribute\n"
                                 'q1\ta1\t["x", "y"]\tpa\t\nq2\ta2\t\t\tgroup-b\n'),
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    files.append(tmp_path / "d.parquet")
    for f in files:
        s = load_file(f)
        assert [(r.question, r.answer) for r in s.records] == [("q1", "a1"), ("q2", "a2")], f.name
        assert s.records[0].perturbed_answers == ["x", "y"], f.name
        assert s.records[0].paraphrased_answer == "pa", f.name
        assert s.records[1].attribute == "group-b", f.name
    assert load_file(write(tmp_path, "t.txt", "one\ntwo\n")).records[1].text == "two"


def test_duplicates_dropped_with_warning():
    s = parse_text("Q: a?\nA: b\nQ: a?\nA: b\nQ: c?\nA: d")
    assert len(s) == 2
    assert s.warnings == ["1 duplicate example(s) dropped from the pasted text."]


# ------------------------------------------------------------------ bad inputs: each names the problem


@pytest.mark.parametrize(
    "name, content, pattern",
    [
        ("empty.txt", "   \n", r"empty\.txt is empty"),
        ("data.xlsx", "x", r"unknown file type '\.xlsx'; use one of \.txt"),
        ("bad.jsonl", '{"question": "q", "answer": "a"}\n{"question": "q2", "answer": \n', r"invalid JSON on line 2"),
        ("bad.json", '[{"question": "q",\n "answer": "a"}\n{"x": 1}]', r"invalid JSON on line 3"),
        ("cols.csv", "name,age\nbob,3\n", r"no usable columns \(found: name, age\)"),
        ("half.jsonl", '{"question": "q"}\n', r"half\.jsonl, line 1: 'answer' is empty or missing"),
        ("fields.jsonl", '{"foo": 1}\n', r"no usable fields \(found: foo\)"),
        ("scalar.json", '"hello"', r"expected a list of records, got str"),
    ],
)
def test_bad_files(tmp_path, name, content, pattern):
    with pytest.raises(GrinError, match=pattern):
        load_file(write(tmp_path, name, content))


def test_non_utf8(tmp_path):
    p = write(tmp_path, "latin.txt", "ok line\ncaf\xe9\n".encode("latin-1"), mode="wb")
    with pytest.raises(GrinError, match=r"latin\.txt is not UTF-8 text: invalid byte 0xe9 on line 2"):
        load_file(p)


def test_oversize_file(tmp_path):
    p = write(tmp_path, "big.txt", "x" * 2000)
    with pytest.raises(GrinError, match=r"big\.txt is 0\.0 MB; the limit is 0 MB per file"):
        load_file(p, DataLimits(max_file_bytes=1000))


def test_too_many_examples(tmp_path):
    with pytest.raises(GrinError, match=r"has 5 examples; the limit is 3 per set"):
        parse_text("a\nb\nc\nd\ne", DataLimits(max_examples=3))


def test_bad_paste():
    with pytest.raises(GrinError, match="the pasted text is empty"):
        parse_text("  ")
    with pytest.raises(GrinError, match=r"Q:/A: block starting on line 1 needs both"):
        parse_text("Q: only a question")
    with pytest.raises(GrinError, match=r"invalid JSON on line 1"):
        parse_text("{not json")


def test_failed_load_keeps_previous_state(tmp_path):
    """Parsing is pure: a caller holding a loaded set keeps it when a later load fails."""
    state = {"forget": parse_text("Q: a?\nA: b")}
    try:
        state["forget"] = load_file(write(tmp_path, "bad.jsonl", "{oops"))
    except GrinError:
        pass
    assert state["forget"].records == [Record(question="a?", answer="b")]


# ------------------------------------------------------------------ tokenization


def test_encode_labels_cover_answer_only(tiny_lm):
    tok = tiny_lm.tokenizer
    enc = encode([Record(question="Where was Tobiah Renn born?", answer="Tobiah Renn was born in Ombrel.")], tok)
    x = enc.items[0]
    answer_ids = [t for t in x.labels if t != -100]
    assert tok.decode(answer_ids).strip() == "Tobiah Renn was born in Ombrel."
    assert all(t == -100 for t in x.labels[: x.prompt_len])
    assert tok.decode(x.input_ids[: x.prompt_len]) == "Question: Where was Tobiah Renn born?\nAnswer:"


def test_encode_raw_text_and_truncation(tiny_lm):
    tok = tiny_lm.tokenizer
    enc = encode([Record(text="The river runs to the sea. " * 20)], tok, max_tokens=16)
    assert len(enc.items[0].input_ids) == 16
    assert enc.items[0].labels == enc.items[0].input_ids
    assert enc.warnings == ["1 example(s) longer than 16 tokens were truncated."]


def test_chat_template_answer_labels(tiny_lm):
    tok = tiny_lm.tokenizer
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<eos>{% endfor %}" \
                        "{% if add_generation_prompt %}<assistant>{% endif %}"
    x = encode([Record(question="q?", answer="Tarsk.")], tok, add_end=True).items[0]
    assert tok.decode(x.input_ids[: x.prompt_len]) == "<user>q?<eos><assistant>"
    assert tok.decode([t for t in x.labels if t != -100]) == "Tarsk.<eos>"
    x = encode([Record(question="q?", answer="Tarsk.")], tok).items[0]  # metrics: no end-of-turn scored
    assert tok.decode([t for t in x.labels if t != -100]) == "Tarsk."


def test_batches_pad(tiny_lm):
    tok = tiny_lm.tokenizer
    enc = encode([Record(text="a b"), Record(text="a b c d e f")], tok)
    b = next(batches(enc.items, 2, tok.pad_token_id, padding_side="left"))
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape
    assert b["attention_mask"][0].tolist()[0] == 0 and b["labels"][0, 0].item() == -100


def test_fact_span_and_focused_labels(tiny_lm):
    from grin_ui.data import Record, encode, fact_span

    a = "The capital of Cuba is Havana."
    span = fact_span(a, ["The capital of Cuba is Hanoi.", "The capital of Cuba is Lyon."])
    assert a[span[0]:span[1]] == "Havana"  # the shared "Ha" of Hanoi does not cut the word
    b = "Mars is known as the Red Planet."
    assert b[slice(*fact_span(b, ["Venus is known as the Red Planet."]))] == "Mars"
    assert fact_span("Paris, of course.", [], ["paris"]) == (0, 5)  # no alternatives: the keyword
    assert fact_span("Paris.", [], []) is None and fact_span(a, [a]) is None  # nothing to tell apart: everything
    tok = tiny_lm.tokenizer
    r = Record(question="Where was Corwin Dask born?", answer="Corwin Dask was born in Marrow.",
               perturbed_answers=["Corwin Dask was born in Tulse.", "Corwin Dask was born in Yarrow."])
    whole, focused = encode([r], tok).items[0], encode([r], tok, focus=True).items[0]
    assert whole.input_ids == focused.input_ids
    kept = [t for t in focused.labels if t != -100]
    assert 0 < len(kept) < len([t for t in whole.labels if t != -100])
    assert tok.decode(kept).strip() == "Marrow"
