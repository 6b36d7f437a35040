"""Unlearning dynamics per example (Baluta et al. 2024, arXiv 2411.04388; SPEC §3.8).

    rec = DynamicsRecorder.build(tokenizer, {"forget": f, "retain": r, "holdout": h, "neighbours": n}, every=4)
    result = unlearn_pipeline(lm, f, r, cfg, holdout=h, dynamics=rec)   # records step 0 (before noise), every
    result.dynamics                                                     # 4th step and the last step run

What is recorded, per example and per recorded step: the teacher-forced **answer log-probability per token**
(``logprob``, nats: the mean of log p(answer token | prompt, earlier answer tokens) over the answer's own tokens —
the log of §4's answer probability P(a|q)^(1/|a|); all tokens for raw text), and the same mean over the tokens that
carry the fact (``fact_logprob``: grin_ui.data.fact_span, what the stop-when-forgotten check measures; the whole
answer when no span is found). "Forgotten" below compares fact log-probs with the holdout set's: the phrasing an
answer shares with its kind ("X was born in") stays likely, so the whole-answer mean of a forgotten fact never
falls to that of a never-known one. Step 0 is the original model (before
the noise); then every ``every`` training steps and the last step run. At most :data:`MAX_EXAMPLES` examples per set
(a fixed, evenly spaced sample; the forget set is recorded whole up to that cap). Recording runs under
``torch.no_grad`` in eval mode, uses no random numbers, and so never changes the training trajectory.

The dict (``GrinResult.dynamics``, report.json ``dynamics``; schema ``$defs.dynamics``)::

    {"every": 4, "unit": "...", "steps": [0, 4, ...],
     "sets": {name: {"mean": [per step], "fact_mean": [...],
                     "examples": [{"label": question, "logprob": [per step], "fact_logprob": [per step]}]}},
     "forget_examples": [{"label", "memorization", "difficulty", "steps_to_forget"}],   # the scatter
     "reference_logprobs": [per forget example],   # only when a reference model was scored (DynamicsRecorder.reference)
     "summary": {...}}                                                   # see :func:`summarize`
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from grin_ui.data import Record, encode

MAX_EXAMPLES = 64  # examples recorded per set
UNIT = "mean log-probability per answer token (nats), teacher-forced"
ORDER = ("forget", "retain", "neighbours", "holdout")


def _sample(records: list[Record], n: int = MAX_EXAMPLES) -> list[Record]:
    if len(records) <= n:
        return list(records)
    return [records[round(i * (len(records) - 1) / (n - 1))] for i in range(n)]


def _label(r: Record) -> str:
    s = r.question if r.is_qa else (r.text or "")
    return s if len(s) <= 80 else s[:77] + "..."


@dataclass
class DynamicsRecorder:
    """Per-example answer log-probs of several sets at chosen steps (module docstring)."""

    tokenizer: object
    every: int
    labels: dict[str, list[str]]
    items: dict[str, list]
    focus: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # set -> per example: bool over scored tokens
    steps: list[int] = field(default_factory=list)
    values: dict[str, list[list[float]]] = field(default_factory=dict)  # set -> [example][step]
    facts: dict[str, list[list[float]]] = field(default_factory=dict)  # the same over the fact tokens
    seconds: float = 0.0  # time spent recording (part of the unlearn stage's time)
    reference_logprobs: list[float] | None = None  # per forget example, under a model that never saw it

    @classmethod
    def build(cls, tokenizer, sets: dict[str, list[Record]], every: int = 4, max_tokens: int = 256,
              max_examples: int = MAX_EXAMPLES) -> "DynamicsRecorder":
        """``sets``: name -> records (empty sets are skipped); ``every`` ≥ 1 steps between records."""
        labels, items, focus = {}, {}, {}
        for name in sorted(sets, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
            recs = _sample(list(sets[name] or []), max_examples)
            if recs:
                labels[name] = [_label(r) for r in recs]
                items[name] = encode(recs, tokenizer, max_tokens).items
                focus[name] = [_focus(a, b) for a, b in zip(items[name], encode(recs, tokenizer, max_tokens,
                                                                                  focus=True).items)]
        empty = lambda: {n: [[] for _ in v] for n, v in labels.items()}  # noqa: E731
        return cls(tokenizer, max(1, int(every)), labels, items, focus, values=empty(), facts=empty())

    @torch.no_grad()
    def record(self, model, step: int) -> None:
        """Score every set with ``model`` as it is now and append the values under ``step``."""
        from grin_ui.evaluate import score_items
        from grin_ui.tokens import pad_id

        t0 = time.perf_counter()
        was = model.training
        model.eval()
        try:
            pad = pad_id(self.tokenizer)
            for name, items in self.items.items():
                stats = score_items(model, items, pad, 16)
                for row, frow, s, m in zip(self.values[name], self.facts[name], stats, self.focus[name]):
                    row.append(float(s.logprobs.mean()) if s.n else float("nan"))
                    frow.append(float(s.logprobs[m].mean()) if bool(m.any()) else row[-1])
        finally:
            model.train(was)
        self.steps.append(int(step))
        self.seconds += time.perf_counter() - t0

    @torch.no_grad()
    def reference(self, model) -> None:
        """Score the forget examples under ``model``, a model that never saw them (e.g. the base model a taught one
        was trained from, or a retain-only model): their **difficulty** (grin_ui.dynamics.forget_examples)."""
        from grin_ui.evaluate import score_items
        from grin_ui.tokens import pad_id

        if "forget" not in self.items:
            return
        was = model.training
        model.eval()
        try:
            stats = score_items(model, self.items["forget"], pad_id(self.tokenizer), 16)
        finally:
            model.train(was)
        self.reference_logprobs = [float(s.logprobs.mean()) if s.n else float("nan") for s in stats]

    def maybe(self, model, step: int) -> None:
        """Record when ``step`` is a multiple of ``every``."""
        if step % self.every == 0 and (not self.steps or self.steps[-1] != step):
            self.record(model, step)

    def finish(self, model, step: int) -> None:
        """Record the last step run, unless it was just recorded."""
        if not self.steps or self.steps[-1] != step:
            self.record(model, step)

    def result(self) -> dict:
        sets = {}
        for name, rows in self.values.items():
            frows = self.facts[name]
            sets[name] = {"mean": _mean_rows(rows), "fact_mean": _mean_rows(frows),
                          "examples": [{"label": lab, "logprob": row, "fact_logprob": frow}
                                       for lab, row, frow in zip(self.labels[name], rows, frows)]}
        out = {"every": self.every, "unit": UNIT, "steps": list(self.steps), "sets": sets, "seconds": self.seconds}
        if self.reference_logprobs is not None:
            out["reference_logprobs"] = list(self.reference_logprobs)
        out["forget_examples"] = forget_examples(out)
        out["summary"] = summarize(out)
        return out


def _focus(full, focused) -> torch.Tensor:
    """Bool over ``full``'s scored tokens: those that carry the fact (scored in the ``focus=True`` encoding too)."""
    lab, flab = torch.tensor(full.labels[1:]), torch.tensor(focused.labels[1:])
    return (flab != -100)[lab != -100]


def _mean_rows(rows: list[list[float]]) -> list[float | None]:
    if not rows:
        return []
    out = []
    for t in range(len(rows[0])):
        vals = [r[t] for r in rows if math.isfinite(r[t])]
        out.append(sum(vals) / len(vals) if vals else None)
    return out


def _level(dyn: dict) -> list[float | None] | None:
    h = dyn["sets"].get("holdout")
    return h["fact_mean"] if h else None


def holdout_level(dyn: dict) -> float | None:
    """The holdout set's answer probability per token before unlearning (exp of its mean log-prob at step 0): how
    likely the model finds facts it never knew — the difficulty level when no reference model was scored."""
    h = dyn["sets"].get("holdout")
    v = h["mean"][0] if h and h["mean"] else None
    return math.exp(v) if v is not None and math.isfinite(v) else None


def forget_examples(dyn: dict) -> list[dict]:
    """Per forget example: ``memorization`` = its answer probability per token before unlearning (exp of the step-0
    log-prob); ``difficulty`` = its answer probability per token under a model that never saw it (exp of
    ``reference_logprobs``, when a reference model was scored; else None, and the set-level
    :func:`holdout_level` stands in); ``steps_to_forget`` = the first recorded step (> 0) at which its log-prob is
    at or below the holdout set's mean log-prob at that step (facts never known), over the fact tokens; None when it
    never gets there or without a holdout set."""
    f = dyn["sets"].get("forget")
    if not f:
        return []
    level, steps = _level(dyn), dyn["steps"]
    refs = dyn.get("reference_logprobs") or [None] * len(f["examples"])
    out = []
    for ex, r in zip(f["examples"], refs):
        lp, fact = ex["logprob"], ex["fact_logprob"]
        reached = None
        if level is not None:
            reached = next((s for s, v, ref in zip(steps, fact, level) if s > 0 and ref is not None and v <= ref),
                           None)
        out.append({"label": ex["label"], "memorization": math.exp(lp[0]) if lp and math.isfinite(lp[0]) else None,
                    "difficulty": math.exp(r) if r is not None and math.isfinite(r) else None,
                    "steps_to_forget": reached})
    return out


def _at(curve: list | None, i: int) -> float | None:
    return None if not curve or curve[i] is None else curve[i]


def summarize(dyn: dict) -> dict:
    """Single numbers per run:

    - ``forget_step``: the first recorded step (> 0) where the forget set's mean fact log-prob is at or below the
      holdout set's (None: never, or no holdout set); ``retain_change_at_forget`` / ``neighbours_change_at_forget``: the
      kept sets' mean log-prob change (nats/token, ≤ 0 is a loss) from step 0 to that step;
    - ``selectivity_area``: the area between the kept (retain) and forget change curves, averaged over the steps,
      (1/T) ∫ [Δ retain(t) − Δ forget(t)] dt (trapezoid over recorded steps, nats/token): how much more the forget
      set fell than the retain set, on average during the run; higher is more selective;
    - ``forget_change`` / ``retain_change``: the change from step 0 to the last recorded step;
    - ``memorization_spearman``: rank correlation between memorization and steps-to-forget over the forget examples
      that got there (None with fewer than 3 or no spread); ``difficulty_spearman``: the same for difficulty (None
      without a reference model)."""
    steps, sets = dyn["steps"], dyn["sets"]
    f = (sets.get("forget") or {}).get("mean")
    ff = (sets.get("forget") or {}).get("fact_mean")
    r = (sets.get("retain") or {}).get("mean")
    n = (sets.get("neighbours") or {}).get("mean")
    level = _level(dyn)
    out: dict = {"forget_step": None, "retain_change_at_forget": None, "neighbours_change_at_forget": None,
                 "selectivity_area": None, "forget_change": None, "retain_change": None,
                 "memorization_spearman": None, "difficulty_spearman": None}
    if not f or len(steps) < 1:
        return out
    delta = lambda c, i: None if _at(c, i) is None or _at(c, 0) is None else c[i] - c[0]  # noqa: E731
    last = len(steps) - 1
    out["forget_change"], out["retain_change"] = delta(f, last), delta(r, last)
    if level is not None:
        i = next((i for i, s in enumerate(steps) if s > 0 and ff[i] is not None and level[i] is not None
                  and ff[i] <= level[i]), None)
        if i is not None:
            out.update(forget_step=steps[i], retain_change_at_forget=delta(r, i), neighbours_change_at_forget=delta(n, i))
    if r and steps[-1] > 0:
        gaps = [(delta(r, i) or 0.0) - (delta(f, i) or 0.0) for i in range(len(steps))]
        area = sum((steps[i + 1] - steps[i]) * (gaps[i] + gaps[i + 1]) / 2 for i in range(len(steps) - 1))
        out["selectivity_area"] = area / (steps[-1] - steps[0])
    for key in ("memorization", "difficulty"):
        out[f"{key}_spearman"] = _spearman([(e.get(key), e["steps_to_forget"])
                                            for e in dyn.get("forget_examples") or []])
    return out


def _spearman(pairs: list[tuple]) -> float | None:
    pts = [p for p in pairs if p[0] is not None and p[1] is not None]
    if len(pts) < 3 or len({p[0] for p in pts}) < 2 or len({p[1] for p in pts}) < 2:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr([p[0] for p in pts], [p[1] for p in pts]).statistic)


# ---------------------------------------------------------------------------------------------- views (static SVG)

COLORS = {"forget": "#d62728", "retain": "#1f77b4", "neighbours": "#2ca02c", "holdout": "#7f7f7f"}


def svg_views(dyn: dict) -> list[tuple[str, str]]:
    """(svg, caption) of the three views for the HTML report: per-example curves with the set means, the trade-off
    curve (forget vs retain mean log-prob over steps) and steps-to-forget against memorization."""
    from grin_ui import svgplot as sp

    steps, sets = dyn["steps"], dyn["sets"]
    series = [sp.Series(f"{name} (mean)", steps, s["mean"], COLORS.get(name, "#9467bd"), markers=True)
              for name, s in sets.items()]
    pts = [(st, v, COLORS["forget"], f"{e['label']} @ step {st}: {v:.3f}")
           for e in (sets.get("forget") or {}).get("examples", []) for st, v in zip(steps, e["logprob"])
           if math.isfinite(v)]
    out = [(sp.lines(series, "Answer log-probability per token over the unlearning steps", "step", "nats / token",
                     points=pts, aria="per-example curves"),
            "Teacher-forced answer log-probability per token; lines: the mean of each set, open circles: each "
            "forget example at each recorded step (hover for the question). Step 0 is the original model.")]
    f, r = (sets.get("forget") or {}).get("mean"), (sets.get("retain") or {}).get("mean")
    if f and r:
        pts = [(x, y, "#1f77b4", f"step {s}") for s, x, y in zip(steps, f, r) if x is not None and y is not None]
        out.append((sp.lines([sp.Series("trade-off", f, r, "#1f77b4", markers=True)],
                             "Trade-off: forget vs retain over the steps", "forget log-prob (nats/token)",
                             "retain log-prob (nats/token)", points=pts, aria="trade-off curve"),
                    "Each point is a recorded step (hover for its number): unlearning should move left (forget "
                    "falls) while staying high (retain kept)."))
    fx = [e for e in dyn.get("forget_examples") or [] if e["memorization"] is not None]
    if fx:
        top = max([e["steps_to_forget"] or 0 for e in fx] + [steps[-1] if steps else 0])
        pts = [(e["memorization"], e["steps_to_forget"] if e["steps_to_forget"] is not None else top,
                "#d62728" if e["steps_to_forget"] is not None else "#7f7f7f",
                e["label"] + ("" if e["steps_to_forget"] is not None else " (not forgotten)")
                + ("" if e.get("difficulty") is None else f"; difficulty {e['difficulty']:.3g}")) for e in fx]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        level = holdout_level(dyn)
        lines = [sp.Series("", [min(xs + [level or xs[0]]), max(xs)], [0, max(ys)], "none")]  # sets the axes
        if level is not None:
            lines.append(sp.Series("holdout level (facts never known)", [level, level], [0, max(ys)], "#7f7f7f",
                                    dash=True))
        out.append((sp.lines(lines, "Steps to forget vs memorization", "original answer probability per token",
                             "steps to reach the holdout level", points=pts, aria="steps to forget scatter"),
                    "One circle per forget example; grey: not at the holdout level by the last recorded step "
                    "(drawn at the top). The grey line is the holdout set's answer probability before unlearning "
                    "(the difficulty level of facts never known); with a reference model each circle's hover also "
                    "gives its difficulty (its answer probability under a model that never saw it)."))
    return out


def html_section(dyn: dict | None) -> str:
    """The report's dynamics block (summary table and the three views); '' when nothing was recorded."""
    if not dyn or not dyn.get("steps"):
        return ""
    import html as _html

    rows = "".join(f"<tr><td>{_html.escape(k)}</td><td>{'—' if v is None else (f'{v:.4g}' if isinstance(v, float) else v)}"
                   f"</td></tr>" for k, v in (dyn.get("summary") or {}).items())
    figs = "".join(f"<figure>{svg}<figcaption>{_html.escape(cap)}</figcaption></figure>" for svg, cap in svg_views(dyn))
    return (f"<h3>Unlearning dynamics per example</h3><p>{_html.escape(dyn.get('unit', UNIT))}, recorded every "
            f"{dyn.get('every')} steps (grin_ui.dynamics).</p><table><tbody>{rows}</tbody></table>{figs}")
