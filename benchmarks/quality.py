"""Quality of the default walkthrough on the bundled model: GRIN against its baselines, before / after / after
quantization. Produces the README's quality table.

    .venv/bin/python benchmarks/quality.py                                   # both examples, all methods
    .venv/bin/python benchmarks/quality.py --example real-knowledge --methods grin,random --json out.json

For each built-in example (fictitious authors are taught to the model first, cached on disk) and each method
(``grin`` = the defaults; ``random`` / ``forget-saliency`` = the same budget with another selection; ``none`` = no
mask, every weight trainable, same learning rate; ``none-small-lr`` = no mask with learning rate 1e-5, the setting
of Zhang et al.'s quantization experiment) it runs the whole journey (grin_ui.journey.run_journey) with the probes given and
prints one markdown row per run.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from grin_ui.config import MaskConfig, RunConfig
from grin_ui.examples import load_example
from grin_ui.journey import run_journey, teach
from grin_ui.models import load_model

METHODS = ("grin", "random", "forget-saliency", "none", "none-small-lr")
SMALL_LR = 1e-5  # the unmasked fine-tuning scale of Zhang et al.'s quantization experiment


def method_config(method: str, base: RunConfig) -> RunConfig:
    cfg = replace(base, mask=replace(base.mask), noise=replace(base.noise), unlearn=replace(base.unlearn))
    if method == "grin":
        return cfg
    if method in ("random", "forget-saliency"):
        cfg.mask = replace(cfg.mask, selector=method)
        return cfg
    if method in ("none", "none-small-lr"):
        cfg.mask = MaskConfig(selector="none", sparsity=1.0, scope="global")
        cfg.noise = replace(cfg.noise, scale=0.0)
        if method == "none-small-lr":
            cfg.unlearn = replace(cfg.unlearn, lr=SMALL_LR)
        return cfg
    raise SystemExit(f"unknown method {method}; choose from {', '.join(METHODS)}")


def pct(v) -> str:
    return "—" if v is None else f"{100 * v:.0f} %"


def rec(v) -> str:
    return "—" if v is None else f"{v:.0f} %"


def row(example: str, method: str, rep: dict, probes: list[str], seconds: float) -> str:
    ev = rep["eval"]
    o, u = ev["original"], ev["unlearned"]
    cells = [example, method, f"{rep['mask']['selected']:,}",
             f"{pct(o['forget']['answer_hit_rate'])} → {pct(u['forget']['answer_hit_rate'])}",
             f"{pct(o['retain']['answer_hit_rate'])} → {pct(u['retain']['answer_hit_rate'])}",
             f"{o['forget']['rougeL_recall']:.2f} → {u['forget']['rougeL_recall']:.2f}"]
    for p in probes:
        q = ev["probes"][p]["unlearned"]
        r = rep["recovery"][p]
        cells.append(f"{pct(q['forget']['answer_hit_rate'])} / {pct(q['retain']['answer_hit_rate'])} "
                     f"(rec. {rec(r.get('answer_hit_rate'))}, ROUGE {rec(r.get('rougeL_recall'))})")
    cells.append(f"{seconds:.0f} s")
    return "| " + " | ".join(cells) + " |"


def header(probes: list[str]) -> str:
    cols = ["example", "method", "weights changed", "forget hit", "retain hit", "forget ROUGE-L"]
    cols += [f"after {p}: forget / retain hit (recovery)" for p in probes] + ["time"]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--example", action="append", help="built-in example (repeatable); default: both")
    ap.add_argument("--methods", default=",".join(METHODS[:2] + METHODS[3:]))
    ap.add_argument("--probes", default="nf4,rtn4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--taught", help="fictitious-authors: use this taught model directory (from `grin-ui teach`) "
                                     "instead of teaching (cached) here")
    ap.add_argument("--json", help="write every report here (one JSON object keyed example/method)")
    args = ap.parse_args()
    examples = args.example or ["real-knowledge", "fictitious-authors"]
    methods = [m for m in args.methods.split(",") if m]
    probes = [p for p in args.probes.split(",") if p]
    base = RunConfig(probes=tuple(probes), utility=False, seed=args.seed)
    out: dict = {}
    print(header(probes), flush=True)
    for example in examples:
        lm = load_model(args.model)
        sets = {k: v.records for k, v in load_example(example).items()}
        if example == "fictitious-authors" and args.taught:
            lm = load_model(args.taught)
        elif example == "fictitious-authors":
            t0 = time.perf_counter()
            path, res = teach(lm, sets)
            print(f"<!-- taught {example}: forget hit {pct(res.before['forget'])} → {pct(res.after['forget'])}, "
                  f"retain {pct(res.before['retain'])} → {pct(res.after['retain'])} in {res.epochs} epochs, "
                  f"{res.seconds:.0f} s (cached: {res.cached}, {time.perf_counter() - t0:.0f} s now) -->", flush=True)
            lm = load_model(str(path))
        original = None
        for method in methods:
            cfg = method_config(method, base)
            t0 = time.perf_counter()
            rep, _ = run_journey(lm, sets, cfg, original_eval=original)
            original = rep["eval"]["original"]
            print(row(example, method, rep, probes, time.perf_counter() - t0), flush=True)
            out[f"{example}/{method}"] = rep
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
