"""Split–unlearn–merge vs one unsplit run at equal total budget (SPEC §3.7, grin_ui.spunge).

For every seed and selection (GRIN mask, no mask): one unsplit run of STEPS steps, and SPUNGE with each of the K
attribute subsets given STEPS // K steps, merged by average and by TIES. The stop-when-forgotten rule is off, so
every variant spends its whole budget. Each variant is evaluated on forget / retain / neighbours (answer hit rate,
ROUGE-L recall, answer NLL); the table prints mean ± std over seeds, and --out writes every number as JSON.

    OMP_NUM_THREADS=1 python benchmarks/spunge_compare.py --example world-capitals --seeds 0 1 2 --out spunge.json
    OMP_NUM_THREADS=1 python benchmarks/spunge_compare.py --model <tiny dir> --steps 24 --seeds 0   # a quick look

The full grid (3 seeds × 2 selections × 3 variants) on the bundled model takes long on 2 CPU cores; --selectors and
--seeds cut it down. Unmasked runs use --lr-none (a full-model update needs a far smaller rate).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace

from grin_ui.config import RunConfig, SpungeConfig
from grin_ui.examples import load_example
from grin_ui.journey import evaluate, unlearn
from grin_ui.models import load_model
from grin_ui.spunge import split_by

METRICS = ("answer_hit_rate", "rougeL_recall", "nll")


def variants(cfg: RunConfig, k: int) -> dict[str, RunConfig]:
    per = replace(cfg.unlearn, steps=max(1, cfg.unlearn.steps // k))
    return {"unsplit": cfg,
            "spunge-average": replace(cfg, unlearn=per, spunge=SpungeConfig("attribute", "average")),
            "spunge-ties": replace(cfg, unlearn=per, spunge=SpungeConfig("attribute", "ties"))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--example", default="world-capitals", help="built-in example (its forget set needs attributes)")
    p.add_argument("--steps", type=int, default=RunConfig().unlearn.steps, help="total step budget per variant")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--selectors", nargs="+", default=["grin", "none"])
    p.add_argument("--lr-none", type=float, default=2e-5, help="learning rate of the unmasked runs")
    p.add_argument("--out", help="write every number here as JSON")
    a = p.parse_args(argv)
    lm = load_model(a.model)
    sets = {n: s.records for n, s in load_example(a.example).items()}
    k = len(split_by(sets["forget"]))
    base_eval = evaluate(lm, sets, RunConfig(utility=False), utility=False)
    rows = []
    for selector in a.selectors:
        for seed in a.seeds:
            cfg = RunConfig(seed=seed, utility=False, probes=())
            cfg.mask.selector = selector
            cfg.unlearn.steps = a.steps
            cfg.unlearn.stop_when_forgotten = False
            if selector == "none":
                cfg.unlearn.lr = a.lr_none
            for name, c in variants(cfg, k).items():
                t0 = time.perf_counter()
                res = unlearn(lm, sets, c)
                ev = evaluate(lm, sets, c, delta=res.delta, utility=False)
                row = {"selector": selector, "seed": seed, "variant": name, "seconds": time.perf_counter() - t0,
                       "changed": res.delta.changed(), "steps_per_run": c.unlearn.steps,
                       **{f"{s}.{m}": ev[s][m] for s in ("forget", "retain", "neighbours") if s in ev
                          for m in METRICS}}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    keys = [k_ for k_ in rows[0] if "." in k_]
    print(f"{'selector':<9}{'variant':<16}" + "".join(f"{k_:>26}" for k_ in keys))
    for selector in a.selectors:
        for name in ("unsplit", "spunge-average", "spunge-ties"):
            rs = [r for r in rows if r["selector"] == selector and r["variant"] == name]
            cells = []
            for k_ in keys:
                v = [r[k_] for r in rs]
                sd = statistics.stdev(v) if len(v) > 1 else 0.0
                cells.append(f"{statistics.mean(v):.3f} ± {sd:.3f}")
            print(f"{selector:<9}{name:<16}" + "".join(f"{c:>26}" for c in cells))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"model": a.model, "example": a.example, "steps": a.steps, "subsets": k,
                       "original": {s: {m: base_eval[s][m] for m in METRICS} for s in base_eval if s in sets},
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
