"""Does quantization undo unlearning? Gentle full fine-tuning vs GRIN on the bundled model (grin_ui.recovery_demo).

    .venv/bin/python benchmarks/recovery.py                                   # the built-in comparison, NF4/FP4/RTN4
    .venv/bin/python benchmarks/recovery.py --kinds "" \\
        --arm gd-1e-5=unlearn.objective=grad_diff+unlearn.lr=1e-5+unlearn.steps=20 \\
        --arm npo-3e-5=unlearn.objective=npo+unlearn.lr=3e-5+unlearn.steps=40    # screen gentle settings, no probes
    .venv/bin/python benchmarks/recovery.py --table runs/recovery.jsonl        # only print the table

``--arm NAME=OVERRIDES`` adds a gentle (unmasked, no noise, fixed budget) arm with ``section.field=value`` overrides
joined by '+'; ``--arm NAME=grin[+OVERRIDES]`` a GRIN arm (defaults, plus overrides). Without ``--arm``: the
built-in pair of ``grin_ui.recovery_demo.default_arms``. The model is loaded and the original evaluated once; each
result (one JSON object with every arm) is appended to ``--out`` (default runs/recovery.jsonl) and printed as a table.
The same comparison: ``grin-ui recovery-demo`` and the probe tab's "Does quantization undo it?" button.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _set(cfg, key: str, value: str) -> None:
    section, field = key.split(".")
    obj = getattr(cfg, section)
    cur = getattr(obj, field)
    setattr(obj, field, (value.lower() in ("1", "true", "yes")) if isinstance(cur, bool) else type(cur)(value))


def parse_arm(text: str, seed: int):
    """'NAME=grin+a.b=v' or 'NAME=a.b=v+c.d=w' -> (NAME, RunConfig)."""
    from grin_ui.recovery_demo import gentle_config, grin_config

    name, _, spec = text.partition("=")
    parts = [p for p in spec.split("+") if p]
    if parts and parts[0] == "grin":
        cfg, parts = grin_config(seed=seed), parts[1:]
    else:
        cfg = gentle_config(seed=seed)
    for p in parts:
        k, v = p.split("=")
        _set(cfg, k, v)
    return name, cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--example", default="real-knowledge", help="built-in example (default real-knowledge)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--arm", action="append", default=[], help="NAME=OVERRIDES (see the module docstring)")
    ap.add_argument("--kinds", default="nf4,fp4,rtn4", help="quantization probes ('' for none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--relearn", nargs="?", const="*", default="",
                    help="also run the relearning probe on each arm (or on the comma-separated arms named)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "recovery.jsonl"))
    ap.add_argument("--table", metavar="JSONL", help="only print the tables of an existing results file")
    args = ap.parse_args(argv)
    from grin_ui.recovery_demo import default_arms, table_lines

    if args.table:
        for line in Path(args.table).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                print(f"\n{r['model']} / {r['example']}:")
                print("\n".join(table_lines(r)))
        return 0
    from grin_ui.examples import load_example
    from grin_ui.models import load_model
    from grin_ui.recovery_demo import compare

    arms = dict(parse_arm(a, args.seed) for a in args.arm) if args.arm else default_arms(args.seed)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    sets = {k: list(v.records) for k, v in load_example(args.example).items() if len(v)}
    lm = load_model(args.model, device="cpu")
    t0 = time.perf_counter()
    partial = Path(args.out).with_suffix(".partial.json")
    res = compare(lm, sets, arms, kinds, progress=lambda m, f=None: print(
        f"[{time.perf_counter() - t0:6.0f} s] {m}", file=sys.stderr, flush=True),
                  relearn=True if args.relearn == "*" else [a for a in args.relearn.split(",") if a],
                  on_arm=lambda r: partial.write_text(json.dumps(r)))  # what is done so far, should a run be cut
    res.update(model=args.model, example=args.example, seconds=time.perf_counter() - t0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(res) + "\n")
    print("\n".join(table_lines(res)))
    if not kinds:
        for n, a in res["arms"].items():
            u = a["unlearned"]
            print(f"{n}: forget hit {u['answer_hit_rate']:.2f}, P(a|q) {u['answer_prob']:.3f}, "
                  f"retain hit {u.get('retain_hit_rate')}, {a['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
