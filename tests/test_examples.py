"""The built-in example sets: they parse cleanly, the generator is reproducible, the splits are sound, and the
bundled model still knows every real-knowledge fact (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grin_ui.data import load_file
from grin_ui.examples import examples_dir, list_examples, load_example
from tests.helpers import load_script

AUTHORS = examples_dir() / "fictitious-authors"
REAL = examples_dir() / "real-knowledge"


def _script(name: str):
    return load_script(f"scripts/{name}.py")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _example_files() -> list[Path]:
    return sorted(examples_dir().glob("*/*.jsonl"))


def test_the_built_in_examples_are_listed():
    names = list_examples()
    assert {"fictitious-authors", "real-knowledge", "world-capitals"} <= set(names)
    sets = load_example("fictitious-authors")
    assert set(sets) == {"forget", "retain", "holdout"}
    assert set(load_example("real-knowledge")) == {"forget", "retain", "holdout"}
    assert set(load_example("world-capitals")) == {"forget", "retain", "neighbours", "holdout"}


def test_world_capitals_is_a_near_neighbour_split():
    sets = {k: _rows(examples_dir() / "world-capitals" / f"{k}.jsonl")
            for k in ("forget", "retain", "neighbours", "holdout")}
    kind = lambda r: r["question"].startswith("What is the capital of")  # noqa: E731
    assert len(sets["forget"]) == 8 and all(kind(r) for r in sets["forget"])
    same_kind = [r for r in sets["retain"] if kind(r)]
    # about half of the other known capitals are trained on, the other half only evaluated (neighbours)
    assert abs(len(same_kind) - len(sets["neighbours"])) <= 1 and len(sets["neighbours"]) >= 15
    assert all(kind(r) for r in sets["neighbours"]) and len(sets["retain"]) > len(same_kind)  # + unrelated facts
    assert all(kind(r) for r in sets["holdout"]) and len(sets["holdout"]) >= 10
    questions = [{r["question"] for r in rs} for rs in sets.values()]
    assert sum(map(len, questions)) == len(set().union(*questions))  # disjoint
    forget_words = {k.lower() for r in sets["forget"] for k in r["keywords"]}
    assert not any(forget_words & set(r["answer"].lower().rstrip(".").split()) for r in sets["neighbours"])


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_file_parses_without_warnings(path):
    rows = _rows(path)
    s = load_file(path)
    assert s.warnings == []
    assert len(s) == len(rows) > 0
    for r in s.records:
        assert r.is_qa and r.answer and r.paraphrased_answer and r.keywords and r.attribute
        assert len(r.perturbed_answers) == 3
        assert r.answer not in r.perturbed_answers and len(set(r.perturbed_answers)) == 3
        assert r.paraphrased_answer != r.answer
        assert r.keywords[0].lower() in r.answer.lower(), (r.answer, r.keywords)


def test_fictitious_authors_sizes_and_disjoint_splits():
    names = ("forget", "retain", "holdout")
    authors = {name: {r["attribute"] for r in _rows(AUTHORS / f"{name}.jsonl")} for name in names}
    assert {k: len(v) for k, v in authors.items()} == {"forget": 2, "retain": 14, "holdout": 4}
    assert not authors["forget"] & authors["retain"]
    assert not authors["forget"] & authors["holdout"]
    assert not authors["retain"] & authors["holdout"]
    counts = {name: len(_rows(AUTHORS / f"{name}.jsonl")) for name in authors}
    assert counts == {"forget": 10, "retain": 70, "holdout": 20}


def test_fictitious_keywords_belong_to_one_author():
    """A forget author's distinctive facts are nobody else's, so forgetting them cannot hit another author's answer."""
    rows = [r for name in ("forget", "retain", "holdout") for r in _rows(AUTHORS / f"{name}.jsonl")]
    for r in rows:
        for k in r["keywords"]:
            owners = {o["attribute"] for o in rows if k.lower() in o["answer"].lower()}
            assert owners == {r["attribute"]}, (k, owners)


def test_fictitious_generator_is_deterministic(tmp_path):
    gen = _script("make_fictitious_authors")
    gen.main(["--out", str(tmp_path)])
    for name in ("forget", "retain", "holdout"):
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (AUTHORS / f"{name}.jsonl").read_bytes(), name
    other = gen.build(seed=gen.SEED + 1)
    assert other["forget"] != gen.build()["forget"]  # the seed is what fixes the output


def test_real_knowledge_forget_is_one_theme_and_disjoint_from_retain():
    forget, retain = _rows(REAL / "forget.jsonl"), _rows(REAL / "retain.jsonl")
    assert 5 <= len(forget) <= 10 and 20 <= len(retain) <= 30
    assert len({r["attribute"] for r in forget}) == 1
    assert not {r["attribute"] for r in forget} & {r["attribute"] for r in retain}
    assert not {r["question"] for r in forget} & {r["question"] for r in retain}
    forget_words = {k.lower() for r in forget for k in r["keywords"]}
    for r in retain:
        assert not any(w in r["answer"].lower().split() for w in forget_words), r["answer"]


def test_real_knowledge_examples_come_from_the_candidate_list():
    check = _script("check_real_knowledge")
    candidates = {r["question"]: r for r in check.read_jsonl(check.CANDIDATES)}
    for name in ("forget", "retain"):
        for r in _rows(REAL / f"{name}.jsonl"):
            assert candidates[r["question"]] == r


def test_verdict_rejects_answers_that_name_a_wrong_option():
    check = _script("check_real_knowledge")
    record = {"question": "What is the tallest mountain in the world?",
              "answer": "Mount Everest is the tallest mountain in the world.",
              "perturbed_answer": ["K2 is the tallest mountain in the world.",
                                   "Mont Blanc is the tallest mountain in the world.",
                                   "Kilimanjaro is the tallest mountain in the world."],
              "keywords": ["Everest"]}
    assert check.verdict("It is Mount Everest.", record) == "ok"
    assert check.verdict("Mount Everest, also known as K2.", record).startswith("names a wrong option")
    assert check.verdict("It is Kilimanjaro.", record) == "no hit"


@pytest.mark.slow
def test_bundled_model_still_knows_every_world_capitals_fact(default_lm):
    make = _script("make_neighbour_examples")
    folder = make.KINDS["world-capitals"]["dir"]
    recs = [r for name in ("forget", "retain", "neighbours") for r in make.read_jsonl(folder / f"{name}.jsonl")]
    verdicts = make.judge(default_lm, recs)
    assert [r["question"] for r, v in zip(recs, verdicts) if v != "ok"] == []
    holdout = make.read_jsonl(folder / "holdout.jsonl")
    assert all(v == "no hit" for v in make.judge(default_lm, holdout))


@pytest.mark.slow
def test_bundled_model_still_knows_every_real_knowledge_example(default_lm):
    check = _script("check_real_knowledge")
    records = _rows(REAL / "forget.jsonl") + _rows(REAL / "retain.jsonl")
    wrong = [(r["question"], a, v) for r, a, v in check.ask(default_lm, records) if v != "ok"]
    assert wrong == []
