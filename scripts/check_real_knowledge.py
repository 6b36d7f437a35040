"""Build (or verify) the built-in "real-knowledge" example set from facts the bundled model really knows.

    python scripts/check_real_knowledge.py            # ask the model every candidate, rewrite forget/retain.jsonl
    python scripts/check_real_knowledge.py --verify   # only check the committed files; exit 1 if one is missed

The candidates (scripts/real_knowledge_candidates.jsonl) are simple facts, each tagged with a theme in
``attribute``. The bundled SmolLM2-135M-Instruct answers each one greedily through its chat template; a candidate is
kept when the answer is a hit (``grin_ui.metrics.answer_hit``: the normalized reference answer or one of its
keywords occurs in the normalized answer), names none of the wrong options of its perturbed answers ("Mount
Everest, also known as K2" is not a clean answer), ends before the token limit and does not loop
(``grin_ui.fluency.loops``): a kept answer that never ends could not show whether unlearning broke the ending. The forget set is the kept facts of one theme (FORGET_THEME), so
that forgetting it is one coherent request; the retain set takes up to RETAIN_MAX kept facts of the other themes in
turn (so every theme is represented), leaving out any that mention a keyword of the forget set; the holdout set is
the candidates of the forget theme the model does *not* know (its answer misses): the level a forgotten fact should
fall to, and the non-members of membership inference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = Path(__file__).resolve().parent / "real_knowledge_candidates.jsonl"
OUT_DIR = ROOT / "assets" / "examples" / "real-knowledge"
FORGET_THEME = "European capitals"
FORGET_MAX = 8
RETAIN_MAX = 25
MAX_NEW_TOKENS = 48


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))


def wrong_options(record: dict) -> set[str]:
    """Normalized words (2+ characters) of the perturbed answers that are neither in the answer nor in the question."""
    from grin_ui.metrics import normalize

    own = set(normalize(record["answer"] + " " + record["question"]).split())
    words = {w for p in record.get("perturbed_answer") or [] for w in normalize(p).split()}
    return {w for w in words if len(w) > 1 and w not in own}


def verdict(prediction: str, record: dict, finished: bool = True) -> str:
    """The verdict on the model's answer to ``record``: "ok", "no hit", "names a wrong option (...)", "runs past the
    token limit" (``finished`` False) or "loops"."""
    from grin_ui.fluency import loops
    from grin_ui.metrics import answer_hit, normalize

    keywords = record.get("keywords") or []
    if not answer_hit(prediction, record["answer"], keywords):
        return "no hit"
    wrong = sorted(set(normalize(prediction).split()) & wrong_options(record) - {normalize(k) for k in keywords})
    if wrong:
        return f"names a wrong option ({', '.join(wrong)})"
    if not finished:
        return "runs past the token limit"
    return "loops" if loops(prediction) else "ok"


def is_correct(prediction: str, record: dict) -> bool:
    """An answer hit that names none of the record's wrong options."""
    return verdict(prediction, record) == "ok"


def ask(lm, records: list[dict], max_new_tokens: int = MAX_NEW_TOKENS) -> list[tuple[dict, str, str]]:
    """(record, the model's greedy answer, verdict) for every record, in order."""
    from grin_ui.data import prompt_ids
    from grin_ui.generation import generate_details

    tok = lm.tokenizer
    gens = generate_details(lm.model, tok, [prompt_ids(tok, r["question"]) for r in records], max_new_tokens)
    return [(r, g.text, verdict(g.text, r, g.finished)) for r, g in zip(records, gens)]


def split(results: list[tuple[dict, str, str]], theme: str = FORGET_THEME
          ) -> tuple[list[dict], list[dict], list[dict], list[str]]:
    """forget, retain, holdout, and one line per candidate left out (with the reason)."""
    from grin_ui.metrics import normalize

    forget = [r for r, _, v in results if v == "ok" and r["attribute"] == theme][:FORGET_MAX]
    forget_words = [normalize(k) for r in forget for k in r["keywords"]]
    notes: list[str] = []
    by_theme: dict[str, list[dict]] = {}
    for r, _, v in results:
        if v != "ok":
            notes.append(f"{v}: {r['question']}")
        elif r["attribute"] == theme:
            if r not in forget:
                notes.append(f"over FORGET_MAX: {r['question']}")
        else:
            text = f" {normalize(r['question'] + ' ' + r['answer'])} "
            clash = [w for w in forget_words if f" {w} " in text]
            if clash:
                notes.append(f"mentions a forget keyword ({', '.join(clash)}): {r['question']}")
            else:
                by_theme.setdefault(r["attribute"], []).append(r)
    picked: list[dict] = []  # one fact of each theme in turn, so that every theme is represented
    queues = list(by_theme.values())
    while len(picked) < RETAIN_MAX and any(queues):
        for q in queues:
            if q and len(picked) < RETAIN_MAX:
                picked.append(q.pop(0))
    notes += [f"over RETAIN_MAX: {r['question']}" for q in queues for r in q]
    order = {id(r): i for i, (r, _, _) in enumerate(results)}
    retain = sorted(picked, key=lambda r: order[id(r)])
    holdout = [r for r, _, v in results if v == "no hit" and r["attribute"] == theme]
    return forget, retain, holdout, notes


def print_results(results: list[tuple[dict, str, str]]) -> None:
    for r, answer, v in results:
        print(f"{'OK  ' if v == 'ok' else 'DROP'} [{r['attribute']}] {r['question']}\n       -> {answer!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verify", action="store_true", help="only check the committed forget/retain files")
    ap.add_argument("--out", default=str(OUT_DIR), help="output folder (default: %(default)s)")
    ap.add_argument("--model", default="default", help="model to ask (default: the bundled one)")
    args = ap.parse_args(argv)

    from grin_ui.models import load_model

    t0 = time.perf_counter()
    lm = load_model(args.model, device="cpu")
    t_load = time.perf_counter() - t0
    out = Path(args.out)

    if args.verify:
        records = read_jsonl(out / "forget.jsonl") + read_jsonl(out / "retain.jsonl")
        t0 = time.perf_counter()
        results = ask(lm, records)
        t_ask = time.perf_counter() - t0
        missed = [(r, a, v) for r, a, v in results if v != "ok"]
        for r, a, v in missed:
            print(f"FAIL ({v}) {r['question']}\n     -> {a!r}")
        print(f"{len(records) - len(missed)}/{len(records)} committed examples answered correctly "
              f"(load {t_load:.1f} s, generation {t_ask:.1f} s)")
        return 1 if missed else 0

    candidates = read_jsonl(CANDIDATES)
    t0 = time.perf_counter()
    results = ask(lm, candidates)
    t_ask = time.perf_counter() - t0
    print_results(results)
    forget, retain, holdout, notes = split(results)
    print("\nleft out:")
    for line in notes:
        print("  " + line)
    hits = sum(v == "ok" for _, _, v in results)
    print(f"\n{hits}/{len(candidates)} candidates answered correctly; forget {len(forget)} ({FORGET_THEME}), "
          f"retain {len(retain)}, holdout {len(holdout)}; load {t_load:.1f} s, generation {t_ask:.1f} s")
    if len(forget) < 4 or len(retain) < 10:
        print("too few known facts for a useful example set; files not written", file=sys.stderr)
        return 1
    write_jsonl(out / "forget.jsonl", forget)
    write_jsonl(out / "retain.jsonl", retain)
    write_jsonl(out / "holdout.jsonl", holdout)
    print(f"wrote {out / 'forget.jsonl'}, {out / 'retain.jsonl'} and {out / 'holdout.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
