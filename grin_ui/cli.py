"""The ``grin-ui`` command line (SPEC §10).

    grin-ui serve [--host H] [--port P]
    grin-ui run --model M --forget F [--retain F] [--holdout F] --out DIR [...]
    grin-ui teach --model M --data F --out DIR

Exit status: 0 success, 2 bad input (one line on stderr), 1 internal failure.
"""

from __future__ import annotations

import argparse
import sys

from grin_ui.config import OBJECTIVES, SELECTORS
from grin_ui.errors import GrinError


def _serve(args) -> int:
    from grin_ui.ui.app import launch

    launch(host=args.host, port=args.port, model=args.model)
    return 0


def _progress(fraction: float, message: str) -> None:
    print(f"[{100 * fraction:5.1f}%] {message}", file=sys.stderr, flush=True)


def _teach(args) -> int:
    import json
    from dataclasses import asdict
    from pathlib import Path

    from grin_ui.config import TeachConfig
    from grin_ui.data import load_file
    from grin_ui.models import load_model
    from grin_ui.teach import teach

    data = load_file(args.data).records
    retain = load_file(args.retain).records if args.retain else []
    cfg = TeachConfig(**{k: v for k, v in (("lr", args.lr), ("max_epochs", args.epochs),
                                           ("batch_size", args.batch_size), ("seed", args.seed)) if v is not None})
    lm = load_model(args.model, progress=lambda m: _progress(0.0, m))
    result = teach(lm, data, retain, cfg, progress=_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lm.model.save_pretrained(out)
    lm.tokenizer.save_pretrained(out)
    (out / "teach.json").write_text(json.dumps(asdict(result), indent=1))
    print(f"taught {len(data)} examples in {result.epochs} epochs ({result.seconds:.0f} s): answer hit rate "
          f"{result.before['forget']:.0%} -> {result.after['forget']:.0%}; saved to {out}")
    if not result.reached:
        print(f"grin-ui: warning: the target hit rate {cfg.target_hit_rate:.0%} was not reached in "
              f"{cfg.max_epochs} epochs; try --epochs or --lr", file=sys.stderr)
    return 0


def _config(args):
    from grin_ui.config import PROBE_KINDS, RunConfig

    cfg = RunConfig()
    for section, key, value in (("unlearn", "objective", args.objective), ("mask", "selector", args.selector),
                                ("mask", "sparsity", args.sparsity), ("mask", "scope", args.scope),
                                ("noise", "scale", args.noise), ("unlearn", "steps", args.steps),
                                ("unlearn", "lr", args.lr)):
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    if args.seed is not None:
        cfg.seed = args.seed
    if args.probes is not None:
        probes = tuple(p.strip() for p in args.probes.split(",") if p.strip())
        unknown = [p for p in probes if p not in PROBE_KINDS]
        if unknown:
            raise GrinError(f"Unknown probe '{unknown[0]}'; choose from {', '.join(PROBE_KINDS)}.")
        cfg.probes = probes
    if not 0 < cfg.mask.sparsity <= 1:
        raise GrinError(f"--sparsity must be in (0, 1], got {cfg.mask.sparsity}.")
    return cfg


def _fmt_metric(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def _run(args) -> int:
    from grin_ui.data import load_file
    from grin_ui.journey import run_journey
    from grin_ui.models import load_model

    cfg = _config(args)
    sets = {"forget": load_file(args.forget, cfg.limits)}
    for name in ("retain", "holdout"):
        if getattr(args, name):
            sets[name] = load_file(getattr(args, name), cfg.limits)
    for s in sets.values():
        for w in s.warnings:
            print(f"grin-ui: warning: {w}", file=sys.stderr)
    lm = load_model(args.model, progress=lambda m: _progress(0.0, m))
    if args.teach:
        from grin_ui.teach import teach_cached

        retain = sets["retain"].records if "retain" in sets else []
        path, res = teach_cached(lm, sets["forget"].records, retain, progress=_progress)
        print(f"taught model: {path} (forget hit rate {res.after['forget']:.0%}"
              f"{', cached' if res.cached else ''})", file=sys.stderr)
        lm = load_model(str(path))
    report, _ = run_journey(lm, sets, cfg, out_dir=args.out,
                            progress=lambda stage, msg: print(f"[{stage}] {msg}", file=sys.stderr, flush=True))
    ev = report["eval"]
    rows = [("original", ev["original"]), ("unlearned", ev["unlearned"])]
    rows += [(f"{k} unlearned", v["unlearned"]) for k, v in ev["probes"].items()]
    print(f"{'state':<18}{'set':<9}{'hit rate':>9}{'ROUGE-L':>9}{'P(a|q)':>9}{'NLL':>9}")
    for label, e in rows:
        for set_name in ("forget", "retain", "holdout"):
            if set_name in e:
                m = e[set_name]
                print(f"{label:<18}{set_name:<9}{_fmt_metric(m['answer_hit_rate']):>9}"
                      f"{_fmt_metric(m['rougeL_recall']):>9}{_fmt_metric(m['answer_prob']):>9}"
                      f"{_fmt_metric(m['nll']):>9}")
    for probe, rec in report["recovery"].items():
        print(f"recovery under {probe}: " + ", ".join(
            f"{k} {'—' if v is None else f'{v:.0f} %'}" for k, v in rec.items()))
    mask = report["mask"]
    print(f"mask: {mask['selected']:,} of {mask['total']:,} weights; time {report['timings']['total']:.1f} s; "
          f"wrote {args.out}/report.json, report.html, delta.safetensors")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="grin-ui",
        description="Explore and audit machine unlearning in LLMs (GRIN masks, masked unlearning, quantization probes).",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("serve", help="start the dashboard")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    s.add_argument("--model", default="default", help="model loaded at start: default, a hub id or a directory")
    s.set_defaults(func=_serve)

    r = sub.add_parser("run", help="the whole journey headless: evaluate, GRIN unlearning, probes, report")
    r.add_argument("--model", default="default", help="default, a hub id or a directory")
    r.add_argument("--forget", required=True, help="examples to forget (.txt .jsonl .json .csv .tsv .parquet)")
    r.add_argument("--retain", help="examples to keep")
    r.add_argument("--holdout", help="examples of the same kind never trained on (membership inference)")
    r.add_argument("--out", required=True, help="output directory (report.json, report.html, delta.safetensors)")
    r.add_argument("--objective", choices=OBJECTIVES)
    r.add_argument("--selector", choices=SELECTORS)
    r.add_argument("--sparsity", type=float, help="fraction of scored weights selected (default 0.01)")
    r.add_argument("--scope", choices=("global", "tensor", "row"))
    r.add_argument("--noise", type=float, help="noise scale kappa (0 disables)")
    r.add_argument("--steps", type=int)
    r.add_argument("--lr", type=float)
    r.add_argument("--seed", type=int)
    r.add_argument("--probes", help="comma-separated: nf4,fp4,int8,rtn4,rtn8 (empty string for none)")
    r.add_argument("--teach", action="store_true",
                   help="first teach the model forget + retain (cached), for data it does not know yet")
    r.set_defaults(func=_run)

    t = sub.add_parser("teach", help="fine-tune a model until it knows the given data (e.g. fictitious facts)")
    t.add_argument("--model", default="default", help="default, a hub id or a directory")
    t.add_argument("--data", required=True, help="examples to teach (.txt .jsonl .json .csv .tsv .parquet)")
    t.add_argument("--retain", help="further examples trained along (not part of the stopping check)")
    t.add_argument("--out", required=True, help="directory to write the taught model to (loads as a model)")
    t.add_argument("--lr", type=float, help="learning rate (default: TeachConfig.lr)")
    t.add_argument("--epochs", type=int, help="maximum epochs (default: TeachConfig.max_epochs)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--seed", type=int)
    t.set_defaults(func=_teach)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GrinError as e:
        print(f"grin-ui: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grin-ui: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # internal failure: keep it to one line unless debugging
        if "--debug" in sys.argv or __import__("os").environ.get("GRIN_UI_DEBUG"):
            raise
        print(f"grin-ui: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
