"""The ``grin-ui`` commands that run a built-in comparison (grin_ui.cli registers them with :func:`add_demo_parsers`):

    grin-ui recovery-demo [--example real-knowledge] [--kinds nf4,fp4,rtn4]   # full fine-tuning vs GRIN
    grin-ui dynamics-demo [--lr LR --steps N --every K --seed S --out F]   # in- vs out-of-distribution forgetting
"""

from __future__ import annotations

import json
from pathlib import Path

from grin_ui.cli import SETS_HELP, _progress
from grin_ui.config import OBJECTIVES, GentleConfig
from grin_ui.errors import GrinError


def _write_json(path: str | None, res: dict) -> None:
    """The full result as JSON at ``path`` (its folder created), when one is given."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(res, indent=1))
        print(f"wrote {path}")


def _dynamics_demo(args) -> int:
    from grin_ui import distribution_demo as dd
    from grin_ui.models import load_model

    if args.steps < 1 or args.every < 1 or not args.lr > 0:
        raise GrinError("--steps and --every must be ≥ 1 and --lr > 0.")
    cfg = dd.preset_config(args.lr, args.steps, args.every, args.seed)
    lm = load_model(args.model, progress=_progress)
    res = dd.compare(lm, cfg, progress=_progress)
    print("\n".join(dd.table_lines(res)))
    _write_json(args.out, res)
    return 0


def _recovery_demo(args) -> int:
    from grin_ui import recovery_demo as rd
    from grin_ui.data import load_file
    from grin_ui.examples import SET_NAMES, load_example
    from grin_ui.models import load_model

    given = {n: getattr(args, n) for n in SET_NAMES if getattr(args, n, None)}
    if given and "forget" not in given:
        raise GrinError("Give the examples to forget with --forget FILE (or leave out every file for --example).")
    sets = {n: load_file(p) for n, p in given.items()} if given else load_example(args.example)
    sets = {n: list(s.records) for n, s in sets.items() if len(s)}
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = [k for k in kinds if k not in rd.PROBE_KINDS]
    if unknown:
        raise GrinError(f"Unknown quantization probe '{unknown[0]}'; choose from {', '.join(rd.PROBE_KINDS)}.")
    arms = {rd.GENTLE: rd.gentle_config(args.gentle_objective, args.gentle_lr, args.gentle_steps, args.seed),
            rd.GRIN: rd.grin_config(args.seed)}
    lm = load_model(args.model, progress=_progress)
    res = rd.compare(lm, sets, arms, kinds, progress=_progress)
    print("\n".join(rd.table_lines(res)))
    _write_json(args.out, res)
    return 0


def add_demo_parsers(sub) -> None:
    """Register recovery-demo and dynamics-demo on the ``grin-ui`` subcommand parsers ``sub``."""
    from grin_ui import distribution_demo as dd

    d = sub.add_parser("recovery-demo", help="does quantization undo unlearning? gentle full fine-tuning vs GRIN, "
                       "both probed under NF4 / FP4 / RTN int4 (grin_ui.recovery_demo)")
    d.add_argument("--model", default="default", help="default, a hub id or a directory")
    d.add_argument("--example", default="real-knowledge", help="built-in example used when no file is given")
    for name in ("forget", "retain", "holdout"):
        d.add_argument(f"--{name}", metavar="FILE", help=SETS_HELP[name])
    d.add_argument("--kinds", default="nf4,fp4,rtn4", help="quantization probes (default nf4,fp4,rtn4)")
    g = GentleConfig()
    d.add_argument("--gentle-objective", choices=OBJECTIVES, default=g.objective,
                   help=f"objective of the full fine-tuning arm (default {g.objective})")
    d.add_argument("--gentle-lr", type=float, default=g.lr, help=f"its learning rate (default {g.lr:g})")
    d.add_argument("--gentle-steps", type=int, default=g.steps,
                   help=f"its fixed number of steps, stop-when-forgotten off (default {g.steps})")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", help="write the full result as JSON here")
    d.set_defaults(func=_recovery_demo)

    y = sub.add_parser("dynamics-demo", help="in- vs out-of-distribution forget sets under gradient ascent at the "
                       "same budget, per-example dynamics side by side (grin_ui.distribution_demo)")
    y.add_argument("--model", default="default", help="default, a hub id or a directory")
    y.add_argument("--lr", type=float, default=dd.LR, help=f"learning rate of both arms (default {dd.LR:g})")
    y.add_argument("--steps", type=int, default=dd.STEPS, help=f"fixed budget of both arms (default {dd.STEPS})")
    y.add_argument("--every", type=int, default=dd.EVERY, help=f"record the dynamics every K steps (default {dd.EVERY})")
    y.add_argument("--seed", type=int, default=0)
    y.add_argument("--out", help="write the full result (both arms' dynamics) as JSON here")
    y.set_defaults(func=_dynamics_demo)
