"""The ``grin-ui`` command line (SPEC §10).

    grin-ui serve [--host H] [--port P] [--trusted] [--memory-gb G]   # a non-loopback host implies public mode
    grin-ui cache [--clear]                                              # cached evaluations and taught models
    grin-ui run --model M --forget F [--retain F] [--holdout F] [--neighbours F] --out DIR [...]
    grin-ui run ... --probes nf4,relearn [--relearn-steps N --relearn-lr LR --relearn-fraction P]
    grin-ui run ... --split-by attribute --merge ties|average [--ties-keep K]   # split-unlearn-merge (SPUNGE)
    grin-ui run ... --dynamics N                             # per-example log-probs every N steps (report.json)
    grin-ui run --config DIR/report.json --out DIR2          # re-run a recorded session
    grin-ui report --from DIR/report.json [--out DIR2]       # re-render report.html from the JSON
    grin-ui teach --model M --data F --out DIR
    grin-ui recovery-demo [--example real-knowledge] [--kinds nf4,fp4,rtn4]   # full fine-tuning vs GRIN
    grin-ui dynamics-demo [--lr LR --steps N --every K --seed S --out F]   # in- vs out-of-distribution forgetting

Exit status: 0 success, 2 bad input (one line on stderr), 1 internal failure.
"""

from __future__ import annotations

import argparse
import os
import sys

from grin_ui.config import MERGES, NORMALIZATIONS, OBJECTIVES, RETAIN_LOSSES, SCOPES, SELECTORS, STATISTICS, \
    RelearnConfig
from grin_ui.errors import GrinError

SETS_HELP = {
    "forget": "examples to forget (.txt .jsonl .json .csv .tsv .parquet)",
    "retain": "examples to keep (trained on)",
    "holdout": "examples of the same kind the model never knew (membership inference, stopping check)",
    "neighbours": "facts of the forget kind that must stay; evaluated only, never trained on",
}


def _cache(args) -> int:
    import shutil

    from grin_ui.diskcache import folder_bytes
    from grin_ui.evalcache import EvalCache
    from grin_ui.models import cache_dir

    evals, taught = EvalCache().root, cache_dir() / "taught"
    for name, root in (("evaluations", evals), ("taught models", taught)):
        n = sum(1 for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else 0
        size = folder_bytes(root) if root.is_dir() else 0
        print(f"{name}: {n} entries, {size / 2**20:.1f} MB in {root}")
    if args.clear:
        n = EvalCache().clear()
        if taught.is_dir():
            shutil.rmtree(taught)
        print(f"cleared: {n} evaluations and the taught models")
    return 0


def _serve(args) -> int:
    from grin_ui.ui.app import launch

    launch(host=args.host, port=args.port, model=args.model, trusted=args.trusted, memory_gb=args.memory_gb,
           max_per_client=args.max_sessions_per_client)
    return 0


def _progress(message: str, fraction: float | None = None) -> None:
    head = "" if fraction is None else f"[{100 * fraction:5.1f}%] "
    print(f"{head}{message}", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    print(f"grin-ui: warning: {message}", file=sys.stderr)


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
    lm = load_model(args.model, progress=_progress)
    result = teach(lm, data, retain, cfg, progress=lambda f, m: _progress(m, f))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lm.model.save_pretrained(out)
    lm.tokenizer.save_pretrained(out)
    (out / "teach.json").write_text(json.dumps(asdict(result), indent=1))
    print(f"taught {len(data)} examples in {result.epochs} epochs ({result.seconds:.0f} s): answer hit rate "
          f"{result.before['forget']:.0%} -> {result.after['forget']:.0%}; saved to {out}")
    if not result.reached:
        _warn(f"the target hit rate {cfg.target_hit_rate:.0%} was not reached in {cfg.max_epochs} epochs; "
              "try --epochs or --lr")
    return 0


OVERRIDES = (  # (section or None for the top level, field, argparse dest)
    ("unlearn", "objective", "objective"), ("mask", "selector", "selector"), ("mask", "sparsity", "sparsity"),
    ("mask", "scope", "scope"), ("mask", "normalize", "normalize"), ("score", "statistic", "score_statistic"),
    ("noise", "scale", "noise"), ("unlearn", "steps", "steps"), ("unlearn", "lr", "lr"),
    ("unlearn", "alpha", "alpha"), ("unlearn", "retain_loss", "retain_loss"),
    ("unlearn", "retain_near", "retain_near"), (None, "seed", "seed"),
    ("relearn", "steps", "relearn_steps"), ("relearn", "lr", "relearn_lr"),
    ("relearn", "train_fraction", "relearn_fraction"),
    ("spunge", "split_by", "split_by"), ("spunge", "merge", "merge"), ("spunge", "ties_keep", "ties_keep"),
    ("unlearn", "dynamics_every", "dynamics"),
)


def _config(args, recorded: dict | None = None):
    """The run's settings: the recorded ones (``--config``) or the defaults, with every flag given on top."""
    from grin_ui.config import PROBE_KINDS, RunConfig
    from grin_ui.journey import RELEARN

    cfg = RunConfig.from_dict(recorded["config"]) if recorded else RunConfig()
    for section, key, dest in OVERRIDES:
        value = getattr(args, dest)
        if value is not None:
            setattr(getattr(cfg, section) if section else cfg, key, value)
    if args.no_utility:
        cfg.utility = False
    if args.no_stop:
        cfg.unlearn.stop_when_forgotten = False
    if args.probes is not None:
        probes = tuple(p.strip() for p in args.probes.split(",") if p.strip())
        unknown = [p for p in probes if p not in (*PROBE_KINDS, RELEARN)]
        if unknown:
            raise GrinError(f"Unknown probe '{unknown[0]}'; choose from {', '.join((*PROBE_KINDS, RELEARN))}.")
        cfg.probes = tuple(dict.fromkeys(probes))
    if not 0 < cfg.mask.sparsity <= 1:
        raise GrinError(f"--sparsity must be in (0, 1], got {cfg.mask.sparsity}.")
    if args.merge is not None and not cfg.spunge.split_by:
        raise GrinError("--merge needs --split-by FIELD (split-unlearn-merge).")
    if cfg.spunge.split_by is not None and cfg.spunge.split_by != "attribute":
        raise GrinError(f"--split-by supports the record field 'attribute', got '{cfg.spunge.split_by}'.")
    if not 0 < cfg.spunge.ties_keep <= 1:
        raise GrinError(f"--ties-keep must be in (0, 1], got {cfg.spunge.ties_keep}.")
    if cfg.unlearn.dynamics_every < 0:
        raise GrinError(f"--dynamics must be ≥ 0 steps, got {cfg.unlearn.dynamics_every}.")
    if not 0 < cfg.relearn.train_fraction < 1:
        raise GrinError(f"--relearn-fraction must be between 0 and 1, got {cfg.relearn.train_fraction}.")
    if cfg.relearn.steps < 1 or cfg.relearn.lr <= 0:
        raise GrinError("--relearn-steps must be at least 1 and --relearn-lr positive.")
    return cfg


def _fmt_metric(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def summary_lines(report: dict) -> list[str]:
    """The metrics table `grin-ui run` prints: one row per model state and set (forget, retain, neighbours,
    holdout), with the fluency columns (ends, loops) when the evaluation measured them."""
    from grin_ui.report import SET_ORDER, fluency_of

    ev = report["eval"]
    rows = [("original", ev["original"]), ("unlearned", ev["unlearned"])]
    rows += [(f"{k} unlearned", v["unlearned"]) for k, v in ev["probes"].items()]
    fluent = any(fluency_of(e.get(s) or {}) for _, e in rows for s in SET_ORDER)
    head = f"{'state':<18}{'set':<11}{'hit rate':>9}{'ROUGE-L':>9}{'P(a|q)':>9}{'NLL':>9}"
    lines = [head + (f"{'ends':>8}{'loops':>8}" if fluent else "")]
    for label, e in rows:
        for set_name in SET_ORDER:
            if set_name in e:
                m = e[set_name]
                line = (f"{label:<18}{set_name:<11}{_fmt_metric(m.get('answer_hit_rate')):>9}"
                        f"{_fmt_metric(m.get('rougeL_recall')):>9}{_fmt_metric(m['answer_prob']):>9}"
                        f"{_fmt_metric(m['nll']):>9}")
                if fluent:
                    f = fluency_of(m)
                    line += f"{_fmt_metric(f.get('ends_rate')):>8}{_fmt_metric(f.get('loop_rate')):>8}"
                lines.append(line)
    return lines


def relearn_lines(report: dict) -> list[str]:
    """What `grin-ui run` prints about the relearning probe: recovery % per metric on the forget examples it did not
    relearn on, and the reference gain (the same steps on facts the model never knew)."""
    rl = report.get("relearn")
    if not rl:
        return []
    pct = lambda v: "—" if v is None else f"{v:.0f} %"  # noqa: E731
    split, cfg = rl["split"]["forget"], rl["config"]
    lines = [f"relearning ({cfg['steps']} steps, lr {cfg['lr']:g}, on {len(split['train'])} forget examples; "
             f"measured on the other {len(split['eval'])}): recovery "
             + (", ".join(f"{k} {pct(v)}" for k, v in rl["recovery"].items()) if rl.get("recovery") else "—")]
    if rl.get("reference_gain"):
        lines.append("relearning reference (the same steps on never-known facts): gain "
                     + ", ".join(f"{k} {pct(v)}" for k, v in rl["reference_gain"].items()))
    return lines


def spunge_dynamics_lines(report: dict) -> list[str]:
    """What `grin-ui run` prints about a split-unlearn-merge run and the recorded dynamics (nothing when neither)."""
    lines = []
    sp = report.get("spunge")
    if sp:
        runs = ", ".join(f"{s['attribute']} ({s['n']} ex., {s['steps_run']} steps)" for s in sp["subsets"])
        lines.append(f"split-unlearn-merge by {sp['split_by']}, {sp['merge']} merge: {runs}; "
                     f"{sp['merged_changed']:,} weights changed by the merged delta")
    dyn = (report.get("dynamics") or {}).get("summary")
    if dyn:
        f = lambda v: "—" if v is None else f"{v:.3g}"  # noqa: E731
        lines.append(f"dynamics: forget at the holdout level at step {f(dyn['forget_step'])} (retain log-prob change "
                     f"there {f(dyn['retain_change_at_forget'])} nats/token); selectivity area "
                     f"{f(dyn['selectivity_area'])} nats/token")
    return lines


def _check_weights(lm, recorded: dict) -> None:
    from grin_ui.report import weights_sha256

    want, got = recorded["model"]["weights_sha256"], weights_sha256(lm.model)
    if want != got:
        _warn(f"the model's weights differ from the recorded ones (sha256 {got[:12]}… instead of {want[:12]}…): "
              "the metrics will differ")


def _run(args) -> int:
    from grin_ui.data import load_file
    from grin_ui.examples import SET_NAMES
    from grin_ui.journey import run_journey, teach
    from grin_ui.models import load_model
    from grin_ui.report import read_report
    from grin_ui.rerun import check_data, data_paths, recorded_model

    recorded = read_report(args.config) if args.config else None
    cfg = _config(args, recorded)
    given = {n: getattr(args, n) for n in SET_NAMES if getattr(args, n)}
    if recorded:
        paths = data_paths(recorded, given, os.path.dirname(os.path.abspath(args.config)))
    elif "forget" not in given:
        raise GrinError("Give the examples to forget with --forget FILE (or re-run a report with --config).")
    else:
        paths = given
    sets = {n: load_file(p, cfg.limits) for n, p in paths.items()}
    if recorded:
        check_data(recorded, sets)
    for s in sets.values():
        for w in s.warnings:
            _warn(w)
    spec, taught = recorded_model(recorded) if recorded and args.model is None else (args.model or "default", False)
    lm = load_model(spec, progress=_progress)
    loaded, taught_from, reference = spec, None, None
    if args.reference and cfg.unlearn.dynamics_every > 0:
        reference = load_model(args.reference, progress=_progress)
    if taught or args.teach:
        path, res = teach(lm, sets, progress=_progress)
        _progress(f"taught model: {path} (forget hit rate {res.after['forget']:.0%}"
                  f"{', cached' if res.cached else ''})")
        if reference is None and cfg.unlearn.dynamics_every > 0:
            reference = lm  # the model before teaching never saw the forget set
        lm, loaded, taught_from = load_model(str(path)), str(path), spec
    if recorded:
        _check_weights(lm, recorded)
    files = {n: os.path.abspath(p) for n, p in paths.items()}
    from grin_ui.evalcache import EvalCache

    report, _ = run_journey(lm, sets, cfg, out_dir=args.out, progress=_progress, spec=loaded,
                            taught_from=taught_from, files=files, cache=EvalCache(enabled=False if args.no_cache
                                                                                  else None),
                            reference=reference)
    print("\n".join(summary_lines(report)))
    for probe, rec in report["recovery"].items():
        print(f"recovery under {probe}: " + ", ".join(
            f"{k} {'—' if v is None else f'{v:.0f} %'}" for k, v in rec.items()))
    for line in relearn_lines(report):
        print(line)
    for line in spunge_dynamics_lines(report):
        print(line)
    mask = report["mask"]
    print(f"mask: {mask['selected']:,} of {mask['total']:,} weights; time {report['timings']['total']:.1f} s; "
          f"wrote {args.out}/report.json, report.html, delta.safetensors")
    return 0


def _report(args) -> int:
    from pathlib import Path

    from grin_ui.report import read_report, write_html

    rep = read_report(args.source)
    out = write_html(rep, args.out or Path(args.source).resolve().parent)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from grin_ui.cli_demos import add_demo_parsers

    p = argparse.ArgumentParser(
        prog="grin-ui",
        description="Explore and audit machine unlearning in LLMs (GRIN masks, masked unlearning, quantization probes).",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("serve", help="start the dashboard")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    s.add_argument("--model", default="default", help="model loaded at start: default, a hub id or a directory")
    s.add_argument("--trusted", action="store_true",
                   help="a non-loopback --host normally implies public mode (GRIN_UI_PUBLIC=1: local models only "
                        "from GRIN_UI_MODEL_DIRS, safetensors weights only); --trusted turns that off")
    s.add_argument("--memory-gb", type=float, default=None,
                   help="memory budget for models, visitors' results and running actions (default: "
                        "$GRIN_UI_MEMORY_GB, else 80%% of the memory available at start)")
    s.add_argument("--max-sessions-per-client", type=int, default=8,
                   help="sessions one address may hold (default 8; raise it for a workshop behind one NAT address)")
    s.set_defaults(func=_serve)

    r = sub.add_parser("run", help="the whole journey headless: evaluate, GRIN unlearning, probes, report")
    r.add_argument("--config", metavar="REPORT",
                   help="re-run the session recorded in this report.json: its seed and settings (flags given here "
                        "override them), its model, and its data files unless given (their sha256 must match)")
    r.add_argument("--model", help="default, a hub id or a directory (default: default, or the recorded model)")
    for name, help_text in SETS_HELP.items():
        r.add_argument(f"--{name}", metavar="FILE", help=help_text)
    r.add_argument("--out", required=True, help="output directory (report.json, report.html, delta.safetensors)")
    r.add_argument("--objective", choices=OBJECTIVES)
    r.add_argument("--selector", choices=SELECTORS)
    r.add_argument("--sparsity", type=float, help="fraction of scored weights selected (default 0.01)")
    r.add_argument("--scope", choices=SCOPES)
    r.add_argument("--normalize", choices=NORMALIZATIONS,
                   help="tensor: divide each tensor's scores by its median before the global threshold (default none)")
    r.add_argument("--score-statistic", choices=STATISTICS,
                   help="GRI gradient statistic: abs-sum |Σg| (default, the paper's), sum-abs Σ|g| per example, "
                        "fisher Σg² per example")
    r.add_argument("--noise", type=float, help="noise scale kappa (0 disables)")
    r.add_argument("--steps", type=int)
    r.add_argument("--lr", type=float)
    r.add_argument("--alpha", type=float, help="retain weight")
    r.add_argument("--retain-loss", choices=RETAIN_LOSSES, help="retain term: nll or kl (to the original model)")
    r.add_argument("--retain-near", type=float,
                   help="the retain examples asked most like the forget questions, this many times the forget set's "
                        "size, are trained on twice as often (default 4; 0: every retain example alike)")
    r.add_argument("--seed", type=int)
    r.add_argument("--probes",
                   help="comma-separated probes run after unlearning (default nf4; empty string for none): the "
                        "quantization probes nf4,fp4,int8,rtn4,rtn8, and relearn — the relearning probe: fine-tune "
                        "the unlearned model on part of the forget set and measure how much of the rest comes back, "
                        "next to the same steps on the holdout set (facts never known) as the reference")
    rl = RelearnConfig()
    r.add_argument("--relearn-steps", type=int, help=f"relearning probe: fine-tuning steps (default {rl.steps})")
    r.add_argument("--relearn-lr", type=float, help=f"relearning probe: learning rate (default {rl.lr:g})")
    r.add_argument("--relearn-fraction", type=float,
                   help=f"relearning probe: share of the forget (and holdout) set relearned on; the rest is "
                        f"measured (default {rl.train_fraction:g})")
    r.add_argument("--split-by", metavar="FIELD",
                   help="split-unlearn-merge (SPUNGE): split the forget set by this record field (attribute), "
                        "unlearn each subset separately from the same model, and merge the sparse deltas")
    r.add_argument("--merge", choices=MERGES,
                   help="how --split-by merges the subsets' deltas: average (mean change per weight) or ties (trim "
                        "each to its largest changes, elect a sign per weight, average the agreeing ones; default)")
    r.add_argument("--ties-keep", type=float,
                   help="TIES merge: share of each delta's changed weights kept by the trim (default 0.2)")
    r.add_argument("--dynamics", type=int, metavar="N",
                   help="record every N steps each example's answer log-probability (forget, retain, neighbours, "
                        "holdout) into report.json's dynamics block (default 0: off)")
    r.add_argument("--reference", metavar="MODEL",
                   help="with --dynamics: a model that never saw the forget set (e.g. a retain-only model); each "
                        "forget example's answer probability under it is its difficulty. With --teach, the model "
                        "before teaching is used when this is not given")
    r.add_argument("--no-stop", action="store_true",
                   help="run every step of the budget instead of stopping once the forget set is forgotten (at the "
                        "level of the holdout set, or of the forget answers' wrong alternatives)")
    r.add_argument("--no-utility", action="store_true",
                   help="skip perplexity and multiple-choice accuracy (faster)")
    r.add_argument("--teach", action="store_true",
                   help="first teach the model forget + retain + neighbours (cached), for data it does not know yet")
    r.add_argument("--no-cache", action="store_true",
                   help="evaluate the original model (and its quantized copies) again instead of reusing the "
                        "evaluation cached for the same weights, data and settings (grin-ui cache --clear empties it)")
    r.set_defaults(func=_run)

    c = sub.add_parser("cache", help="show or empty grin-ui's caches (evaluations, taught models)")
    c.add_argument("--clear", action="store_true", help="remove the cached evaluations and taught models")
    c.set_defaults(func=_cache)

    add_demo_parsers(sub)

    o = sub.add_parser("report", help="re-render report.html from a report.json (checked against the schema)")
    o.add_argument("--from", dest="source", required=True, metavar="REPORT", help="the report.json to render")
    o.add_argument("--out", help="directory for report.html (default: the folder of the JSON)")
    o.set_defaults(func=_report)

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
        from grin_ui.threads import apply_threads

        apply_threads()
        return int(args.func(args) or 0)
    except GrinError as e:
        print(f"grin-ui: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grin-ui: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # internal failure: keep it to one line unless debugging
        if "--debug" in sys.argv or os.environ.get("GRIN_UI_DEBUG"):
            raise
        print(f"grin-ui: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

