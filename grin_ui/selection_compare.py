"""Does the GRI selection earn its place? Weight selections × seeds at an equal budget (SPEC §3.6).

    rows = compare(lm, sets, ["grin", "random", "none"], seeds=[0, 1, 2], base=protocol_config())
    table = aggregate(rows)            # per (example, selection): mean and 95 % interval of every metric
    print(markdown_table(table))

Every run starts from the same model with the same data, objective, budget and stopping rule; only the selection
(which weights may change, :data:`SELECTIONS`) and its learning rate differ. ``benchmarks/compare.py --sweep``
chooses each selection's learning rate on a tuning split, so that no selection runs at a learning rate tuned for
another; :data:`LR_FACTORS` carries the sweep's choices, as multiples of the base learning rate, to the dashboard.
A seed drives everything random in a run: the random mask's draw, the noise and the batch order. The original
model is evaluated once; GRI scores are computed once per gradient statistic and reused by every selection and seed
that needs them. ``versus`` tests each selection against the random mask (Welch's t). Each run records the
trade-off curve (the forget and kept answers' teacher-forced probability every few steps, grin_ui.dynamics), is
evaluated on every set (hit rates, fluency, membership inference), and is undone: the model is the original again
afterwards.

The dashboard's "Compare with baselines" and ``benchmarks/compare.py`` both run :func:`run_selection`.
"""

from __future__ import annotations

import copy
import hashlib
import math
import statistics
import time
import warnings

from grin_ui import journey
from grin_ui.config import RunConfig
from grin_ui.errors import GrinError

# name -> (what it is, overrides "section.field": value of the protocol's RunConfig)
SELECTIONS: dict[str, tuple[str, dict]] = {
    "grin": ("GRI mask |Σg| + noise (the paper's)", {}),
    "grin-sum-abs": ("GRI from Σ|g| per example", {"score.statistic": "sum-abs"}),
    "grin-fisher": ("GRI from Σg² per example (Fisher ratio)", {"score.statistic": "fisher"}),
    "grin-tensor-norm": ("GRI, each tensor's scores over its median, then one global threshold",
                         {"mask.normalize": "tensor"}),
    "grin-row": ("GRI, whole output rows (row scope)", {"mask.scope": "row"}),
    "grin-no-noise": ("GRI mask without noise", {"noise.scale": 0.0}),
    "random": ("random mask of the same size + noise", {"mask.selector": "random"}),
    "forget-saliency": ("|G_f| alone (forget-only saliency) + noise", {"mask.selector": "forget-saliency"}),
    "magnitude": ("largest |w| + noise (ignores the data)", {"mask.selector": "magnitude"}),
    "none": ("no mask: every weight (plain fine-tuning), no noise", {"mask.selector": "none", "noise.scale": 0.0}),
}
# each selection's learning rate as a multiple of GRIN's, from the sweep of benchmarks/compare.py (24 steps, tuning
# split: GRIN, random and magnitude 1.6e-2, Fisher GRI 8e-3, forget-only saliency 2e-3, every weight 4e-5)
LR_FACTORS: dict[str, float] = {"none": 0.0025, "forget-saliency": 0.125, "grin-fisher": 0.5}
METRICS = ("forget_hit", "retain_kept", "neighbours_kept", "balance", "kept_ends", "kept_loops", "forget_gibberish",
           "mia_auc", "changed", "steps_run")


PROTOCOL_OBJECTIVE, PROTOCOL_LR = "idk", 2e-3
CURVE_EXAMPLES = 16  # examples per set on the trade-off curve (a fixed, evenly spaced sample: grin_ui.dynamics)


def protocol_config(steps: int = 24, record_every: int = 8) -> RunConfig:
    """The comparison's shared settings: the default knobs with the objective it was measured with (IDK, base
    learning rate 2e-3: pinned, so that the results files stay comparable when the defaults move), a fixed budget of
    ``steps`` (the stopping rule off, so every selection gets the same number of updates), the trade-off curve
    recorded every ``record_every`` steps; evaluation without truth ratios, holdout generations or utility."""
    cfg = RunConfig(probes=(), utility=False)
    cfg.unlearn.objective, cfg.unlearn.lr = PROTOCOL_OBJECTIVE, PROTOCOL_LR
    cfg.unlearn.steps = steps
    cfg.unlearn.stop_when_forgotten = False
    cfg.unlearn.dynamics_every = record_every
    cfg.eval.truth_ratio = False
    cfg.eval.generate_holdout = False
    return cfg


def dashboard_config(cfg: RunConfig) -> RunConfig:
    """The dashboard's baseline runs: the visitor's settings, evaluated without truth ratios, holdout answers,
    utility or probes (what the comparison reports does not need them)."""
    out = copy.deepcopy(cfg)
    out.probes, out.utility = (), False
    out.eval.truth_ratio = False
    out.eval.generate_holdout = False
    return out


def selection_config(base: RunConfig, name: str, seed: int, lr: float | None = None) -> RunConfig:
    """``base`` with selection ``name``'s overrides, its learning rate (``lr``, else the base's times
    :data:`LR_FACTORS`) and ``seed``."""
    if name not in SELECTIONS:
        raise GrinError(f"Unknown selection '{name}'; use one of {', '.join(SELECTIONS)}.")
    cfg = copy.deepcopy(base)
    for key, value in SELECTIONS[name][1].items():
        section, fld = key.split(".")
        setattr(getattr(cfg, section), fld, value)
    cfg.unlearn.lr = float(lr if lr is not None else base.unlearn.lr * LR_FACTORS.get(name, 1.0))
    cfg.seed = int(seed)
    return cfg


def mask_fingerprint(mask) -> str:
    """A short hash of which weights a mask selects (two masks select the same weights iff equal, up to hashing)."""
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(mask.masks):
        h.update(name.encode())
        h.update(mask.masks[name].cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _rate(ev: dict, name: str) -> float | None:
    return ev[name].get("answer_hit_rate") if name in ev else None


def _kept(ev: dict, before: dict, name: str) -> float | None:
    a, b = _rate(ev, name), _rate(before, name)
    return None if a is None or not b else a / b


def balance(row: dict) -> float | None:
    """The one-number trade-off of a run (*our choice*, also the learning-rate sweep's rule): kept — the mean of the
    retain and neighbours answers kept, as fractions of before — minus the forget hit rate. 1 is perfect (every kept
    answer kept, every forget answer gone); 0, e.g., nothing changed on a fully known forget set."""
    kept = [v for v in (row.get("retain_kept"), row.get("neighbours_kept")) if v is not None]
    if not kept or row.get("forget_hit") is None:
        return None
    return sum(kept) / len(kept) - row["forget_hit"]


def trade_off_curve(dynamics: dict | None) -> list[list[float]]:
    """[[step, forget P̄ of the fact tokens, kept P̄ (retain and neighbours examples, whole answers)], ...] from a
    run's dynamics (probabilities per token: exp of the mean log-probability)."""
    if not dynamics:
        return []
    sets = dynamics["sets"]
    out = []
    for i, step in enumerate(dynamics["steps"]):
        f = sets.get("forget", {}).get("fact_mean", [None] * (i + 1))[i]
        kept = [e["logprob"][i] for n in ("retain", "neighbours") if n in sets for e in sets[n]["examples"]
                if math.isfinite(e["logprob"][i])]
        if f is None or not kept:
            continue
        out.append([step, math.exp(f), math.exp(sum(kept) / len(kept))])
    return out


def summarize(ev: dict, before: dict) -> dict:
    """The comparison's metrics of one unlearned model's evaluation ``ev`` (gibberish added) against ``before``."""
    kept = [e for n in ("retain", "neighbours") if n in ev for e in ev[n]["examples"]]
    fl = ev["forget"].get("fluency", {})
    return {"forget_hit": _rate(ev, "forget"), "forget_hit_before": _rate(before, "forget"),
            "retain_kept": _kept(ev, before, "retain"), "neighbours_kept": _kept(ev, before, "neighbours"),
            "kept_ends": sum(bool(e.get("finished")) for e in kept) / len(kept) if kept else None,
            "kept_loops": sum(bool(e.get("loop")) for e in kept) / len(kept) if kept else None,
            "forget_gibberish": fl.get("gibberish_rate"), "forget_loops": fl.get("loop_rate"),
            "mia_auc": ev.get("mia", {}).get("loss_auc")}


def score_bank(lm, sets: dict, base: RunConfig, names, progress=None) -> dict:
    """GRI scores (forget saliency kept) for each gradient statistic the selections ``names`` need: statistic ->
    Scores. Computed on ``lm``'s current weights."""
    bank = {}
    for name in names:
        cfg = selection_config(base, name, 0)
        if journey.needs_scores(cfg) and cfg.score.statistic not in bank:
            bank[cfg.score.statistic] = journey.score(lm, sets, cfg, progress=progress, keep_forget_saliency=True)
    return bank


def run_selection(lm, sets: dict, cfg: RunConfig, before: dict, scores=None, cancel=None, progress=None) -> dict | None:
    """One unlearning run with ``cfg`` (see :func:`selection_config`) from ``lm``'s current weights, evaluated on
    every set of ``sets`` and undone. ``before``: the original model's evaluation (gibberish measures added here).
    Returns the row of metrics, or None when cancelled."""
    t0 = time.perf_counter()
    res = journey.unlearn(lm, sets, cfg, progress=progress, cancel=cancel, scores=scores,
                          dynamics_examples=CURVE_EXAMPLES)
    if res.cancelled or res.delta is None:
        return None
    t1 = time.perf_counter()
    after = journey.evaluate(lm, sets, cfg, delta=res.delta, utility=False)
    journey.fluency(lm, before, after)
    return {"lr": cfg.unlearn.lr, "seed": cfg.seed, "selected": res.mask.selected, "total": res.mask.total,
            "changed": res.delta.changed(), "mask": mask_fingerprint(res.mask),
            "steps_run": res.stats.get("steps_run"), "unlearn_s": round(t1 - t0, 1),
            "eval_s": round(time.perf_counter() - t1, 1), **summarize(after, before),
            "curve": trade_off_curve(res.dynamics),
            "forget_answers": [e["generation"][:80] for e in after["forget"]["examples"][:3]]}


def compare(lm, sets: dict, names, seeds, base: RunConfig | None = None, lrs: dict | None = None, before=None,
            bank=None, cancel=None, progress=None, on_row=None) -> list[dict]:
    """Every selection of ``names`` at every seed (see the module docstring). ``lrs``: selection -> learning rate
    (default: :func:`selection_config`'s); ``before`` / ``bank``: the original model's evaluation and the scores, when
    already computed. ``on_row(row)`` hears each finished run. Returns the rows (``selection`` added)."""
    base = base or protocol_config()
    say = journey._say(progress)
    if before is None:
        say("Evaluating the original model", 0.0)
        before = journey.evaluate(lm, sets, base, utility=False)
    if bank is None:
        bank = score_bank(lm, sets, base, names, progress=lambda m, f=None: say(f"scores: {m}", 0.0))
    rows = []
    runs = [(n, s) for n in names for s in seeds]
    for i, (name, seed) in enumerate(runs):
        cfg = selection_config(base, name, seed, (lrs or {}).get(name))
        lo, hi = i / len(runs), (i + 1) / len(runs)
        row = run_selection(lm, sets, cfg, before, scores=bank.get(cfg.score.statistic), cancel=cancel,
                            progress=lambda m, f=None: say(f"{name}, seed {seed}: {m}", lo + (hi - lo) * (f or 0)))
        if row is None:
            break
        row = {"selection": name, **row}
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def interval(values) -> dict:
    """Mean and 95 % confidence interval (Student's t) of ``values`` (None dropped): {n, mean, lo, hi}; lo/hi are
    None with fewer than two values."""
    from scipy import stats

    v = [float(x) for x in values if x is not None]
    if not v:
        return {"n": 0, "mean": None, "lo": None, "hi": None}
    m = statistics.fmean(v)
    if len(v) < 2:
        return {"n": 1, "mean": m, "lo": None, "hi": None}
    half = stats.t.ppf(0.975, len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v))
    return {"n": len(v), "mean": m, "lo": m - half, "hi": m + half}


def aggregate(rows: list[dict], metrics=METRICS) -> list[dict]:
    """Per (example, selection) — examples in first-seen order, selections in :data:`SELECTIONS` order: seeds, the
    learning rate(s) and :func:`interval` of each metric."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("example", ""), r["selection"]), []).append(r)
    examples = list(dict.fromkeys(ex for ex, _ in groups))
    order = list(SELECTIONS)
    out = []
    for (ex, sel), rs in sorted(groups.items(), key=lambda kv: (examples.index(kv[0][0]),
                                                                 order.index(kv[0][1]) if kv[0][1] in order else 99)):
        out.append({"example": ex, "selection": sel, "seeds": [r["seed"] for r in rs],
                    "lr": sorted({r["lr"] for r in rs}), "masks": len({r["mask"] for r in rs}),
                    **{m: interval([balance(r) if m == "balance" else r.get(m) for r in rs]) for m in metrics}})
    return out


def versus(rows: list[dict], reference: str = "random", metrics=("balance", "forget_hit", "retain_kept",
                                                                    "neighbours_kept")) -> list[dict]:
    """Each selection against ``reference`` on the same example: per metric the difference of the means over seeds
    (selection − reference), its 95 % interval and two-sided p-value from Welch's t-test (unequal variances; the
    seeds of two selections are independent draws). Examples and selections in :func:`aggregate`'s order; a
    difference with fewer than two seeds on either side, or no variance on both, has interval and p None."""
    from scipy import stats

    cells = [(a["example"], a["selection"]) for a in aggregate(rows, metrics=())]
    out = []
    for ex, sel in cells:
        if sel == reference or (ex, reference) not in cells:
            continue
        mine = [r for r in rows if r.get("example", "") == ex and r["selection"] == sel]
        ref = [r for r in rows if r.get("example", "") == ex and r["selection"] == reference]
        row = {"example": ex, "selection": sel, "reference": reference, "seeds": (len(mine), len(ref))}
        for m in metrics:
            get = balance if m == "balance" else (lambda r, m=m: r.get(m))
            a = [float(v) for v in map(get, mine) if v is not None]
            b = [float(v) for v in map(get, ref) if v is not None]
            d = {"diff": statistics.fmean(a) - statistics.fmean(b) if a and b else None, "lo": None, "hi": None,
                 "p": None}
            if len(a) >= 2 and len(b) >= 2 and (statistics.stdev(a) > 0 or statistics.stdev(b) > 0):
                with warnings.catch_warnings():  # scipy warns of precision loss when one side has no variance
                    warnings.simplefilter("ignore", RuntimeWarning)
                    t = stats.ttest_ind(a, b, equal_var=False)
                ci = t.confidence_interval(0.95)
                d.update(lo=float(ci.low), hi=float(ci.high), p=float(t.pvalue))
            row[m] = d
        out.append(row)
    return out


def _diff_cell(d: dict) -> str:
    if d["diff"] is None:
        return "—"
    if d["lo"] is None:
        return f"{100 * d['diff']:+.0f}"
    return f"{100 * d['diff']:+.0f} [{100 * d['lo']:+.0f}, {100 * d['hi']:+.0f}], p {d['p']:.2f}"


def versus_table(vs: list[dict]) -> str:
    """:func:`versus` as a markdown table: differences in percentage points, [95 % interval], p-value."""
    lines = ["| example | selection − reference | seeds | balance | forget hit | retain kept | neighbours kept |",
             "|---|---|---|---|---|---|---|"]
    for v in vs:
        lines.append(f"| {v['example']} | {v['selection']} − {v['reference']} | {v['seeds'][0]} vs {v['seeds'][1]} | "
                     + " | ".join(_diff_cell(v[m]) for m in ("balance", "forget_hit", "retain_kept",
                                                              "neighbours_kept")) + " |")
    return "\n".join(lines)


def _cell(iv: dict, pct: bool = True, digits: int = 0) -> str:
    if iv["mean"] is None:
        return "—"
    f = (lambda x: f"{100 * x:.{digits}f}") if pct else (lambda x: f"{x:.2f}")
    if iv["lo"] is None:
        return f(iv["mean"])
    return f"{f(iv['mean'])} ± {f(iv['mean'] - iv['lo'])}"


TABLE_COLUMNS = ("example", "selection", "lr", "seeds", "distinct masks", "forget hit %", "retain kept %",
                 "neighbours kept %", "balance", "kept answers end %", "forget gibberish %", "MIA AUC",
                 "weights changed")


def markdown_table(agg: list[dict]) -> str:
    """One row per (example, selection): mean ± half-width of the 95 % interval over seeds."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for a in agg:
        ch = a["changed"]["mean"]
        lines.append("| " + " | ".join([
            a["example"], a["selection"], ", ".join(f"{x:g}" for x in a["lr"]), str(len(a["seeds"])),
            str(a["masks"]), _cell(a["forget_hit"]), _cell(a["retain_kept"]), _cell(a["neighbours_kept"]),
            _cell(a["balance"], pct=False), _cell(a["kept_ends"]), _cell(a["forget_gibberish"]),
            _cell(a["mia_auc"], pct=False),
            "—" if ch is None else f"{ch:,.0f}"]) + " |")
    return "\n".join(lines)
