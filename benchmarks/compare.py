"""Does the GRI selection earn its place? Selections × examples × seeds at an equal budget, one table.

    .venv/bin/python benchmarks/compare.py --sweep            # 1. the learning rate of each selection (tuning split)
    .venv/bin/python benchmarks/compare.py --out benchmarks/results/compare-A.jsonl   # 2. the comparison (resumes)
    .venv/bin/python benchmarks/compare.py --table benchmarks/results/compare-A.jsonl [more.jsonl ...]   # a table
    .venv/bin/python benchmarks/compare.py --quick --model DIR --examples dir:PATH       # a smoke run (tests)

The runs are grin_ui.selection_compare's (the code behind the dashboard's "Compare with baselines"): the default
objective and knobs, a fixed budget (``--steps``, stopping rule off), one learning rate per selection, seeds
``--seeds`` (each seed changes the random mask's draw, the noise and the batch order). Examples: the built-in ones
by name (fictitious-authors is taught first, cached), ``heldout:NAME``, ``dir:PATH``.

``--sweep`` runs every selection at four learning rates (1×, 2×, 4×, 8× the default's 2e-3, or 1e-5 for every weight:
the default's 80-step budget is cut to 24 steps here) on the **tuning split**: the world-capitals example with 8 of its neighbour capitals (a fixed draw)
as the forget set and the other neighbours as the kept check — capitals that are never forgotten in the comparison
itself. Per selection it keeps the learning rate with the best balance: kept (mean of retain and neighbours hit rate
as a fraction of before) minus the forget hit rate. (Taking the most kept among the rates that reach ≤ 10 % forget hit
rate, tried first, chose a rate that wiped out retain and neighbours for forget-only saliency, the only one of its rates
that forgot.) The choice goes to ``--lrs`` (JSON), which the comparison reads.

Every run appends one JSON line to ``--out``; a run already there (same example, selection, seed, steps, learning
rate) is skipped, so an interrupted comparison resumes and two processes (``OMP_NUM_THREADS=1``, different
``--seeds`` and ``--out``) can share the work. The table gives per (example, selection) the mean ± the half-width of
the 95 % interval over seeds (Student's t); ``--plot FILE.html`` draws the trade-off curves (forget vs kept answer
probability over the steps, mean over seeds).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune import ROOT, load_sets, model_for, records  # noqa: E402

FULL = "grin,grin-fisher,grin-sum-abs,random,forget-saliency,magnitude,none"
RESULTS = ROOT / "benchmarks" / "results"  # the measured results the README's tables come from (kept in the repo)
TUNING_EXAMPLE = "world-capitals"
SWEEP = (1.0, 2.0, 4.0, 8.0)  # × the base learning rate: the default's (2e-3), every weight 1e-5
SWEEP_BASE = {"none": 1e-5}


def tuning_split(sets: dict, n: int = 8, seed: int = 0) -> dict:
    """The tuning split of an example with neighbours: ``n`` of them (a fixed draw) become the forget set, the rest
    stay neighbours; retain and holdout unchanged."""
    nb = list(sets.get("neighbours") or [])
    if len(nb) <= n:
        raise SystemExit(f"the tuning split needs more than {n} neighbours; {TUNING_EXAMPLE} has {len(nb)}")
    idx = sorted(random.Random(seed).sample(range(len(nb)), n))
    return {**sets, "forget": [nb[i] for i in idx], "neighbours": [r for i, r in enumerate(nb) if i not in idx]}


def choose_lr(rows: list[dict]) -> float:
    """The sweep's rule (module docstring) over one selection's rows."""
    from grin_ui.selection_compare import balance

    rows = [r for r in rows if balance(r) is not None]
    if not rows:
        raise SystemExit("the sweep has no result to choose a learning rate from")
    return max(rows, key=balance)["lr"]


def sweep_table(rows: list[dict]) -> str:
    """The sweep's runs, one line per (selection, learning rate), the chosen rate marked."""
    from grin_ui.selection_compare import balance

    lines = ["| selection | learning rate | forget hit % | retain kept % | neighbours kept % | balance | chosen |",
             "|---|---|---|---|---|---|---|"]
    for sel in dict.fromkeys(r["selection"] for r in rows):
        mine = sorted((r for r in rows if r["selection"] == sel), key=lambda r: r["lr"])
        best = choose_lr(mine)
        for r in mine:
            lines.append(f"| {sel} | {r['lr']:g} | {100 * r['forget_hit']:.0f} | {100 * r['retain_kept']:.0f} | "
                         f"{100 * r['neighbours_kept']:.0f} | {balance(r):.2f} | "
                         f"{'✓' if r['lr'] == best else ''} |")
    return "\n".join(lines)


def read_rows(paths) -> list[dict]:
    rows = []
    for p in paths:
        p = Path(p)
        if p.is_file():
            rows += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return rows


def _key(r: dict) -> tuple:
    return r["example"], r.get("model", "default"), r["selection"], r["seed"], r["steps"], round(float(r["lr"]), 12)


def run(example: str, sets: dict, jobs: list[tuple], base, out: Path, done: set, model_spec: str,
        tag: dict | None = None) -> list[dict]:
    """The (selection, seed, learning rate or None) ``jobs`` of one example not yet in ``done``: the model loaded,
    the original evaluated and the scores computed once; each row appended to ``out``."""
    from grin_ui import journey
    from grin_ui import selection_compare as SC

    cfgs = [SC.selection_config(base, n, s, lr) for n, s, lr in jobs]
    todo = [(n, c) for (n, _, _), c in zip(jobs, cfgs)
            if (example, model_spec, n, c.seed, c.unlearn.steps, round(c.unlearn.lr, 12)) not in done]
    if not todo:
        return []
    lm = model_for(example.split("#")[0], sets, model_spec)
    say = lambda m: print(f"[{example}] {m}", file=sys.stderr, flush=True)  # noqa: E731
    before = journey.evaluate(lm, sets, base, utility=False)
    bank = SC.score_bank(lm, sets, base, sorted({n for n, _ in todo}))
    rows = []
    for name, cfg in todo:
        row = SC.run_selection(lm, sets, cfg, before, scores=bank.get(cfg.score.statistic))
        row = {"example": example, "model": model_spec, "selection": name, "steps": cfg.unlearn.steps, **(tag or {}),
               **row}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        say(f"{name} seed {cfg.seed} lr {cfg.unlearn.lr:g}: forget {row['forget_hit']}, retain {row['retain_kept']}, "
            f"neighbours {row['neighbours_kept']}, changed {row['changed']:,}, {row['unlearn_s']} + {row['eval_s']} s")
        rows.append(row)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Trade-off curves: per example a panel, per selection the mean over seeds of (forget P̄, kept P̄) per step."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    from grin_ui.selection_compare import SELECTIONS

    examples = list(dict.fromkeys(r["example"] for r in rows))
    names = sorted({r["selection"] for r in rows}, key=lambda n: list(SELECTIONS).index(n) if n in SELECTIONS else 99)
    colour = {n: qualitative.Plotly[i % len(qualitative.Plotly)] for i, n in enumerate(names)}  # one per selection
    fig = make_subplots(rows=1, cols=len(examples), subplot_titles=examples)
    for c, ex in enumerate(examples, 1):
        for sel in [n for n in names if any(r["example"] == ex and r["selection"] == n for r in rows)]:
            curves = [r["curve"] for r in rows if r["example"] == ex and r["selection"] == sel and r["curve"]]
            n = min(len(cv) for cv in curves) if curves else 0
            xs = [sum(cv[i][1] for cv in curves) / len(curves) for i in range(n)]
            ys = [sum(cv[i][2] for cv in curves) / len(curves) for i in range(n)]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=sel, legendgroup=sel, showlegend=c == 1,
                                     line={"color": colour[sel]},
                                     text=[f"step {curves[0][i][0]}" for i in range(n)]), row=1, col=c)
        fig.update_xaxes(title_text="forget answer probability (fact tokens) ←", autorange="reversed", row=1, col=c)
        fig.update_yaxes(title_text="kept answer probability ↑", row=1, col=c)
    fig.update_layout(title="Forget vs keep over the steps, mean over seeds", height=460, width=420 * len(examples))
    fig.write_html(str(path))


def main(argv=None) -> int:
    from grin_ui import selection_compare as SC

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", default="real-knowledge,world-capitals,fictitious-authors")
    ap.add_argument("--selections", default=FULL, help=f"comma-separated, of: {', '.join(SC.SELECTIONS)}")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--steps", type=int, default=24, help="the budget of every run (updates)")
    ap.add_argument("--every", type=int, default=8, help="steps between points of the trade-off curve")
    ap.add_argument("--model", default="default")
    ap.add_argument("--sweep", action="store_true", help="choose each selection's learning rate on the tuning split")
    ap.add_argument("--lrs", default=str(RESULTS / "compare-lrs.json"),
                    help="selection -> learning rate (written by --sweep, read by the comparison)")
    ap.add_argument("--out", default=str(RESULTS / "compare-sweep.jsonl"),
                    help="results file (JSON lines; the default is the sweep's)")
    ap.add_argument("--plot", metavar="HTML", help="also write the trade-off curves")
    ap.add_argument("--table", nargs="+", metavar="JSONL", help="only print the table of result files")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 steps, short answers")
    args = ap.parse_args(argv)
    if args.table:
        rows = [r for r in read_rows(args.table) if not r.get("tuning")]
        print(SC.markdown_table(SC.aggregate(rows)))
        print()
        print(SC.versus_table(SC.versus(rows)))
        if args.plot:
            plot(rows, Path(args.plot))
        return 0

    names = args.selections.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    base = SC.protocol_config(steps=2 if args.quick else args.steps, record_every=1 if args.quick else args.every)
    if args.quick:
        base.eval.max_new_tokens = 8
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {_key(r) for r in read_rows([out])}
    lrs_path = Path(args.lrs)

    if args.sweep:
        sets = tuning_split(records(load_sets(TUNING_EXAMPLE)))
        jobs = [(n, seeds[0], f * SWEEP_BASE.get(n, base.unlearn.lr)) for n in names for f in SWEEP]
        run(TUNING_EXAMPLE + "#tuning", sets, jobs, base, out, done, args.model, tag={"tuning": True})
        rows = [r for r in read_rows([out]) if r.get("tuning")]
        rows = [r for r in rows if r["selection"] in names and r["steps"] == base.unlearn.steps]
        chosen = {n: choose_lr([r for r in rows if r["selection"] == n]) for n in names}
        lrs_path.parent.mkdir(parents=True, exist_ok=True)
        known = json.loads(lrs_path.read_text()) if lrs_path.is_file() else {}  # other selections' choices stay
        lrs_path.write_text(json.dumps({**known, **chosen}, indent=1))
        print(json.dumps(chosen))
        print(sweep_table(rows))
        return 0

    lrs = json.loads(lrs_path.read_text()) if lrs_path.is_file() and not args.quick else {}
    for ex in args.examples.split(","):
        run(ex, records(load_sets(ex)), [(n, s, lrs.get(n)) for n in names for s in seeds], base, out, done,
            args.model)
    rows = [r for r in read_rows([out]) if not r.get("tuning")]
    print(SC.markdown_table(SC.aggregate(rows)))
    if args.plot:
        plot(rows, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
