"""Tune and check the unlearning defaults: settings × examples × seeds on the bundled model, one table.

    .venv/bin/python benchmarks/tune.py --settings default --seeds 0,1,2            # the built-in examples
    .venv/bin/python benchmarks/tune.py --settings default,idk --examples world-capitals --seeds 0
    .venv/bin/python benchmarks/tune.py --examples heldout:cities --settings default    # the set kept out of tuning
    .venv/bin/python benchmarks/tune.py --table runs/tune.jsonl                     # only print the table

Every run appends one JSON line to ``--out`` (default ``runs/tune.jsonl``); a (example, setting, seed) already in
the file is skipped, so an interrupted sweep resumes. Per example the model is loaded once (fictitious authors: the
taught model, cached by ``grin_ui.teach.teach_cached``), the original model is evaluated once and the GRI scores are
computed once (cached under ``runs/tune-cache/`` until the library's code changes, grin_ui.evalcache.code_stamp); each run
then unlearns with ``grin_ui.pipeline.unlearn_pipeline`` (stop-when-forgotten with the example's holdout set, when
it has one), evaluates the unlearned model on every set (no utility metrics), scores the
answers' fluency against the original model, and undoes the delta.

Columns (median over seeds, min–max in brackets): forget hit rate after; retain and neighbours hit rate after as %
of before; share of retain + neighbour answers that end before the token limit and that loop; forget answers that
loop or are gibberish (``grin_ui.fluency``); membership-inference AUC (LOSS) forget vs holdout; steps run.
Targets (issue "precise unlearning", SPEC §8): forget ≤ 10 %, retain ≥ 90 %, neighbours ≥ 85 %, ends ≥ 90 %, no
loops, no gibberish, AUC 0.3–0.7.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# named settings: overrides of RunConfig as "section.field": value
SETTINGS: dict[str, dict] = {
    "default": {},
    "no-stop": {"unlearn.stop_when_forgotten": False},
    "idk": {"unlearn.objective": "idk"},
    "npo-lr5e-3": {"unlearn.lr": 5e-3},
    "npo-lr3e-3": {"unlearn.lr": 3e-3},
    "npo-a4": {"unlearn.alpha": 4.0},
    "npo-40": {"unlearn.steps": 40},
    "simnpo": {"unlearn.objective": "simnpo"},
    "random": {"mask.selector": "random"},
}


def configure(name: str, extra: list[str]):
    from grin_ui.config import RunConfig

    cfg = RunConfig(probes=(), utility=False)
    cfg = replace(cfg, mask=replace(cfg.mask), noise=replace(cfg.noise), unlearn=replace(cfg.unlearn),
                  eval=replace(cfg.eval, truth_ratio=False, generate_holdout=False))
    over = dict(SETTINGS[name]) if name in SETTINGS else {}
    if name not in SETTINGS:
        for part in name.split("+"):  # ad-hoc: "unlearn.lr=3e-3+unlearn.alpha=4"
            k, v = part.split("=")
            over[k] = v
    for item in extra:
        k, v = item.split("=")
        over[k] = v
    if any(k.startswith("score.") for k in over):
        raise SystemExit("tune.py computes the GRI scores once per example with the default score settings; compare "
                         "score settings with benchmarks/compare.py")
    for key, value in over.items():
        section, field = key.split(".")
        obj = getattr(cfg, section)
        cur = getattr(obj, field)
        if isinstance(value, str):
            if value.lower() == "none":
                value = None
            elif isinstance(cur, bool):
                value = value.lower() in ("1", "true", "yes")
            elif cur is None:  # a field whose default is None takes a number: "3" an int, "0.5" a float
                value = json.loads(value)
            else:
                value = type(cur)(value)
        setattr(obj, field, value)
    return cfg


def load_sets(example: str) -> dict:
    """A built-in example by name, ``heldout:NAME`` (benchmarks/heldout/NAME) or ``dir:PATH`` (a folder of
    forget/retain/holdout/neighbours .jsonl files)."""
    from grin_ui.data import load_file
    from grin_ui.examples import SET_NAMES, load_example

    if example.startswith(("heldout:", "dir:")):
        kind, name = example.split(":", 1)
        folder = ROOT / "benchmarks" / "heldout" / name if kind == "heldout" else Path(name)
        return {n: load_file(folder / f"{n}.jsonl") for n in SET_NAMES if (folder / f"{n}.jsonl").is_file()
                and (folder / f"{n}.jsonl").stat().st_size}
    return load_example(example)


def records(sets: dict) -> dict:
    return {k: list(v.records) for k, v in sets.items() if len(v)}


def summarize(ev: dict, before: dict) -> dict:
    """The comparison's metrics (grin_ui.selection_compare.summarize), each set's hit rate before and after, and a
    few generations to read."""
    from grin_ui.selection_compare import summarize as compare_metrics

    out = compare_metrics(ev, before)
    for name in ("retain", "neighbours", "holdout"):  # holdout: no hit rate unless its generations were asked for
        if name in ev:
            out[f"{name}_hit"] = ev[name].get("answer_hit_rate")
            out[f"{name}_hit_before"] = before[name].get("answer_hit_rate")
    out["forget_samples"] = [e["generation"][:80] for e in ev["forget"]["examples"][:4]]
    out["forget_gibberish_nll"] = [e.get("gibberish_nll") for e in ev["forget"]["examples"]]
    out["kept_samples"] = [e["generation"][:80] for name in ("neighbours", "retain") if name in ev
                           for e in ev[name]["examples"][:2]]
    return out


def model_for(example: str, sets: dict, spec: str = "default"):
    """The model an example is unlearned from: ``spec``, or for fictitious-authors the model taught its facts
    (grin_ui.teach.teach_cached: taught once, then loaded from the cache)."""
    from grin_ui.models import load_model

    lm = load_model(spec, device="cpu")
    if example == "fictitious-authors":
        from grin_ui.teach import teach_cached

        path, _ = teach_cached(lm, sets["forget"], sets.get("retain", []),
                               progress=lambda f, m: print(f"[teach] {m}", file=sys.stderr))
        lm = load_model(str(path), device="cpu")
    return lm


def run_example(example: str, settings: list[str], seeds: list[int], extra: list[str], out: Path, done: set):
    import torch

    from grin_ui.evalcache import code_stamp
    from grin_ui.evaluate import add_gibberish, evaluate_sets
    from grin_ui.influence import Scores, compute_scores
    from grin_ui.pipeline import unlearn_pipeline

    todo = [(s, seed) for s in settings for seed in seeds if (example, s, seed) not in done]
    if not todo:
        return
    sets = records(load_sets(example))
    lm = model_for(example, sets)
    model, tok = lm.model, lm.tokenizer
    base = configure("default", [])
    cache = ROOT / "runs" / "tune-cache" / example.replace(":", "-")  # large (GRI scores): not beside the results
    stamp, cached = code_stamp(), (cache / "scores.pt").is_file()
    fresh = cached and (cache / "stamp.txt").is_file() and (cache / "stamp.txt").read_text() == stamp
    if cached and not fresh:
        print(f"[{example}] the library changed since the cache was made: evaluating and scoring again",
              file=sys.stderr)
    if fresh:  # the original model's evaluation and GRI scores do not depend on settings
        before = json.loads((cache / "before.json").read_text())
        scores = Scores(scores=torch.load(cache / "scores.pt"))
    else:
        t0 = time.perf_counter()
        before = evaluate_sets(model, tok, sets, base.eval, utility=False)
        print(f"[{example}] original evaluated in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        scores = compute_scores(model, tok, sets["forget"], sets["retain"], base.score,
                                max_tokens=base.limits.max_tokens)
        cache.mkdir(parents=True, exist_ok=True)
        add_gibberish(model, tok, before)
        (cache / "before.json").write_text(json.dumps(before))
        torch.save(scores.scores, cache / "scores.pt")
        (cache / "stamp.txt").write_text(stamp)
    for name, seed in todo:
        cfg = configure(name, extra)
        cfg.seed = seed
        t0 = time.perf_counter()
        res = unlearn_pipeline(lm, sets["forget"], sets["retain"], cfg, scores=scores, holdout=sets.get("holdout"))
        t_unlearn = time.perf_counter() - t0
        try:
            after = evaluate_sets(model, tok, sets, cfg.eval, utility=False)
        finally:
            res.delta.undo(model)
        add_gibberish(model, tok, before, after)
        row = {"example": example, "setting": name, "seed": seed, "extra": extra,
               "steps_run": res.stats.get("steps_run"), "stopped_at": (res.stopping or {}).get("stopped_at"),
               "changed": res.delta.changed(), "unlearn_s": round(t_unlearn, 1),
               "eval_s": round(time.perf_counter() - t0 - t_unlearn, 1), **summarize(after, before),
               "checks": [{k: round(v, 3) if isinstance(v, float) else v for k, v in c.items()}
                          for c in (res.stopping or {}).get("checks", [])]}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if "samples" not in k and "nll" not in k
                           and k != "checks"}), file=sys.stderr,
              flush=True)
        print("   forget answers:", row["forget_samples"], row["forget_gibberish_nll"], file=sys.stderr, flush=True)
        print("   kept answers:", row["kept_samples"], file=sys.stderr, flush=True)
    del lm, model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None


def _fmt(vals, pct=True, ints=False):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "—"
    f = (lambda v: f"{round(v)}") if ints else (lambda v: f"{100 * v:.0f}") if pct else (lambda v: f"{v:.2f}")
    med = statistics.median(vals)
    return f"{f(med)} ({f(min(vals))}–{f(max(vals))})" if len(vals) > 1 else f(med)


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["example"], r["setting"], tuple(r.get("extra") or [])), []).append(r)
    head = ("| example | setting | seeds | forget hit % | retain kept % | neighbours kept % | kept answers end % | "
            "kept loop % | forget loop % | forget gibberish % | MIA AUC | steps run |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def kept(r, name):
        b = r.get(f"{name}_hit_before")
        return None if not b else r[f"{name}_hit"] / b

    for (ex, s, extra), rs in groups.items():
        label = s + (" " + " ".join(extra) if extra else "")
        lines.append("| " + " | ".join([
            ex, label, ",".join(str(r["seed"]) for r in rs),
            _fmt([r["forget_hit"] for r in rs]), _fmt([kept(r, "retain") for r in rs]),
            _fmt([kept(r, "neighbours") for r in rs]), _fmt([r["kept_ends"] for r in rs]),
            _fmt([r["kept_loops"] for r in rs]), _fmt([r["forget_loops"] for r in rs]),
            _fmt([r["forget_gibberish"] for r in rs]), _fmt([r["mia_auc"] for r in rs], pct=False),
            _fmt([r["steps_run"] for r in rs], pct=False, ints=True)]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", default="real-knowledge,world-capitals,fictitious-authors",
                    help="built-in example names, or heldout:NAME for benchmarks/heldout/NAME")
    ap.add_argument("--settings", default="default", help=f"comma-separated names ({', '.join(SETTINGS)}) or "
                    "ad-hoc overrides joined by '+', e.g. unlearn.lr=3e-3+unlearn.alpha=4")
    ap.add_argument("--set", action="append", default=[], help="extra override section.field=value for every run")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=str(ROOT / "runs" / "tune.jsonl"))
    ap.add_argument("--table", metavar="JSONL", help="only print the table of an existing results file")
    args = ap.parse_args(argv)
    if args.table:
        print(table(Path(args.table)))
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.is_file():
        for line in out.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if (r.get("extra") or []) == args.set:
                    done.add((r["example"], r["setting"], r["seed"]))
    seeds = [int(s) for s in args.seeds.split(",")]
    for ex in args.examples.split(","):
        run_example(ex, args.settings.split(","), seeds, args.set, out, done)
    print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
