"""The auditor's verdict: is it really gone — even after quantization? Pure functions over a report dict.

    v = compute_verdict(report)                      # default thresholds (SPEC §8)
    v = compute_verdict(report, Thresholds(forget_hit_pass=0.05))
    v["status"], v["headline"]                       # "pass" | "concern" | "fail" | "not measured", one sentence
    for line in v["lines"]: line["question"], line["status"], line["answer"], line["rule"]

Six lines, each marked by the thresholds written next to it (every bound inclusive; the defaults are SPEC §8's
targets, the concern bands *our choice*):

1. **forgotten** at full precision: forget answer hit rate after unlearning ≤ 10 % pass, ≤ 25 % concern. A forget
   set the original model hardly knew (hit rate ≤ the pass bound before) is a concern: nothing was there to forget.
2. **kept**: retain hit rate after ≥ 90 % of before (concern ≥ 75 %), neighbours ≥ 85 % (concern ≥ 70 %).
3. **fluent**: retain and neighbour answers end before the token limit ≥ 90 % (concern ≥ 75 %); loops and gibberish
   (forget, retain, neighbours) 0 % pass, ≤ 10 % concern.
4. **over-unlearned?** membership-inference LOSS AUC, forget vs holdout, within 0.3–0.7 pass, 0.2–0.8 concern.
5. **survives quantization?** per probe, recovery % (the worst of the hit rate, ROUGE-L and answer probability
   recoveries that are defined) ≤ 10 % pass, ≤ 50 % concern; code-level survival of the changes
   (``survival.<probe>.fraction``) below 50 % is a concern (most of the update may be rounded away).
6. **survives relearning?** the relearning probe's recovery (same metrics) ≤ 10 % pass, ≤ 50 % concern.

A line without its inputs (no holdout set, no probe, no relearning run, no neighbours) says "not measured" — never
pass. A line's status is the worst of its measured items; the verdict's status the worst of its measured lines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

PASS, CONCERN, FAIL, NOT_MEASURED = "pass", "concern", "fail", "not measured"
STATUSES = (PASS, CONCERN, FAIL, NOT_MEASURED)
_RANK = {PASS: 0, CONCERN: 1, FAIL: 2}
_EPS = 1e-9  # float slack at the bounds (9/10 of 1.0 is a pass at 90 %)


@dataclass(frozen=True)
class Thresholds:
    """Bounds of each verdict line (rates as fractions 0–1, recoveries in %); every bound is inclusive."""

    forget_hit_pass: float = 0.10  # forget answer hit rate after unlearning: at most
    forget_hit_concern: float = 0.25
    retain_kept_pass: float = 0.90  # retain hit rate after / before: at least
    retain_kept_concern: float = 0.75
    neighbours_kept_pass: float = 0.85  # neighbours hit rate after / before: at least
    neighbours_kept_concern: float = 0.70
    ends_pass: float = 0.90  # retain and neighbour answers ending before the token limit: at least
    ends_concern: float = 0.75
    loops_pass: float = 0.0  # answers with a repetition loop (forget, retain, neighbours): at most
    loops_concern: float = 0.10
    gibberish_pass: float = 0.0  # gibberish answers (forget, retain, neighbours): at most
    gibberish_concern: float = 0.10
    auc_pass_low: float = 0.3  # membership-inference LOSS AUC forget vs holdout: within [low, high]
    auc_pass_high: float = 0.7
    auc_concern_low: float = 0.2
    auc_concern_high: float = 0.8
    recovery_pass: float = 10.0  # quantization recovery %: at most
    recovery_concern: float = 50.0
    survival_pass: float = 0.5  # code-level survival of the changes: at least (below: concern, never fail)
    relearn_pass: float = 10.0  # relearning recovery %: at most
    relearn_concern: float = 50.0
    recovery_metrics: tuple[str, ...] = ("answer_hit_rate", "rougeL_recall", "answer_prob")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["recovery_metrics"] = list(self.recovery_metrics)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "Thresholds":
        """Thresholds from a dict (e.g. a report's ``verdict.thresholds``); unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in (d or {}).items() if k in names}
        if "recovery_metrics" in kw:
            kw["recovery_metrics"] = tuple(kw["recovery_metrics"])
        return cls(**kw)


# ---------------------------------------------------------------------------------------------- helpers


def _num(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        return None
    return float(v)


def at_most(value, pass_max: float, concern_max: float) -> str:
    """pass when value ≤ pass_max, concern when ≤ concern_max, else fail; not measured when value is None."""
    v = _num(value)
    if v is None:
        return NOT_MEASURED
    return PASS if v <= pass_max + _EPS else CONCERN if v <= concern_max + _EPS else FAIL


def at_least(value, pass_min: float, concern_min: float) -> str:
    """pass when value ≥ pass_min, concern when ≥ concern_min, else fail; not measured when value is None."""
    v = _num(value)
    if v is None:
        return NOT_MEASURED
    return PASS if v >= pass_min - _EPS else CONCERN if v >= concern_min - _EPS else FAIL


def within(value, pass_band: tuple[float, float], concern_band: tuple[float, float]) -> str:
    v = _num(value)
    if v is None:
        return NOT_MEASURED
    if pass_band[0] - _EPS <= v <= pass_band[1] + _EPS:
        return PASS
    return CONCERN if concern_band[0] - _EPS <= v <= concern_band[1] + _EPS else FAIL


def worst(statuses) -> str:
    """The worst measured status (fail > concern > pass); not measured when none was measured."""
    measured = [s for s in statuses if s in _RANK]
    return max(measured, key=_RANK.__getitem__) if measured else NOT_MEASURED


def pct(v, digits: int = 0) -> str:
    """A fraction as a percentage ("—" for None)."""
    v = _num(v)
    return "—" if v is None else f"{100 * v:.{digits}f} %"


def _p(v) -> str:
    v = _num(v)
    return "—" if v is None else f"{0.0 if abs(v) < 0.5 else v:.0f} %"


def _set(rep: dict, state: str, name: str) -> dict:
    ev = (rep.get("eval") or {}).get(state) or {}
    s = ev.get(name)
    return s if isinstance(s, dict) else {}


def _item(label: str, status: str, text: str, value=None) -> dict:
    return {"label": label, "status": status, "text": text, "value": _num(value)}


def _line(key: str, question: str, items: list[dict], answer: str, rule: str, status: str | None = None) -> dict:
    return {"key": key, "question": question, "status": status or worst(i["status"] for i in items),
            "answer": answer, "rule": rule, "items": items}


def worst_recovery(rec: dict | None, metrics) -> tuple[str | None, float | None]:
    """(metric, %) of the highest defined recovery among ``metrics`` ((None, None) when none is defined)."""
    vals = [(m, _num((rec or {}).get(m))) for m in metrics]
    vals = [(m, v) for m, v in vals if v is not None]
    return max(vals, key=lambda mv: mv[1]) if vals else (None, None)


# ---------------------------------------------------------------------------------------------- the lines


def forgotten_line(rep: dict, t: Thresholds) -> dict:
    before = _num(_set(rep, "original", "forget").get("answer_hit_rate"))
    after = _num(_set(rep, "unlearned", "forget").get("answer_hit_rate"))
    rule = (f"pass: forget hit rate after ≤ {pct(t.forget_hit_pass)}; concern ≤ {pct(t.forget_hit_concern)}; "
            f"fail above. Concern also when the model hardly knew the set before (≤ {pct(t.forget_hit_pass)}).")
    status = at_most(after, t.forget_hit_pass, t.forget_hit_concern)
    items = [_item("forget answer hit rate", status, f"{pct(before)} → {pct(after)} (target ≤ "
                   f"{pct(t.forget_hit_pass)})", after)]
    if before is not None and before <= t.forget_hit_pass + _EPS:
        items.append(_item("known before?", CONCERN, f"the original model answered only {pct(before)} of the "
                           "forget questions: there was little to forget (teach the data first)", before))
    p0 = _num(_set(rep, "original", "forget").get("answer_prob"))
    p1 = _num(_set(rep, "unlearned", "forget").get("answer_prob"))
    probs = "" if p0 is None or p1 is None else f"; answer probability {p0:.3g} → {p1:.3g}"
    if status == NOT_MEASURED:
        answer = "Not measured: the report has no forget-set evaluation of the unlearned model."
    elif status == PASS:
        answer = f"Yes: the forget answers are gone — hit rate {pct(before)} → {pct(after)}{probs}."
    elif status == CONCERN:
        answer = f"Partly: hit rate {pct(before)} → {pct(after)} — some forget questions are still answered{probs}."
    else:
        answer = f"No: hit rate {pct(before)} → {pct(after)} — the forget questions are still answered{probs}."
    return _line("forgotten", "Forgotten at full precision?", items, answer, rule)


def kept_line(rep: dict, t: Thresholds) -> dict:
    items, parts, missing = [], [], []
    for name, p_min, c_min in (("retain", t.retain_kept_pass, t.retain_kept_concern),
                               ("neighbours", t.neighbours_kept_pass, t.neighbours_kept_concern)):
        before = _num(_set(rep, "original", name).get("answer_hit_rate"))
        after = _num(_set(rep, "unlearned", name).get("answer_hit_rate"))
        label = f"{name} hit rate, % of before"
        if before is None or after is None:
            why = "no neighbours set given" if name == "neighbours" else f"no {name} set evaluated"
            items.append(_item(label, NOT_MEASURED, f"not measured ({why})"))
            missing.append(name)
            continue
        if before <= 0:
            items.append(_item(label, NOT_MEASURED, f"not measured: the original model answered none of the "
                               f"{name} questions ({pct(before)} → {pct(after)})"))
            missing.append(f"{name} (unknown before)")
            continue
        ratio = after / before
        items.append(_item(label, at_least(ratio, p_min, c_min), f"{pct(before)} → {pct(after)} = {pct(ratio)} of "
                           f"before (target ≥ {pct(p_min)})", ratio))
        parts.append(f"{name} {pct(ratio)}")
    status = worst(i["status"] for i in items)
    lead = {PASS: "Yes", CONCERN: "Partly", FAIL: "No", NOT_MEASURED: "Not measured"}[status]
    rule = (f"pass: retain ≥ {pct(t.retain_kept_pass)} and neighbours ≥ {pct(t.neighbours_kept_pass)} of their hit "
            f"rate before; concern ≥ {pct(t.retain_kept_concern)} / {pct(t.neighbours_kept_concern)}; fail below.")
    answer = f"{lead}: " + (f"share of the hit rate before kept — {', '.join(parts)}" if parts
                            else "nothing measured")
    answer += f"; not measured: {', '.join(missing)}." if missing else "."
    return _line("kept", "Kept what must stay?", items, answer, rule)


def fluent_line(rep: dict, t: Thresholds) -> dict:
    def flu(state, name):
        f = _set(rep, state, name).get("fluency")
        return f if isinstance(f, dict) else {}

    checks = (("ends_rate", "answers end before the token limit", ("retain", "neighbours"),
               lambda v: at_least(v, t.ends_pass, t.ends_concern), f"≥ {pct(t.ends_pass)}"),
              ("loop_rate", "answers with a repetition loop", ("forget", "retain", "neighbours"),
               lambda v: at_most(v, t.loops_pass, t.loops_concern), f"≤ {pct(t.loops_pass)}"),
              ("gibberish_rate", "gibberish answers (word salad)", ("forget", "retain", "neighbours"),
               lambda v: at_most(v, t.gibberish_pass, t.gibberish_concern), f"≤ {pct(t.gibberish_pass)}"))
    items, bad = [], []
    for key, label, sets, judge, target in checks:
        got = [(s, _num(flu("unlearned", s).get(key)), _num(flu("original", s).get(key))) for s in sets]
        got = [g for g in got if g[1] is not None]
        if not got:
            items.append(_item(label, NOT_MEASURED, "not measured"))
            continue
        status = worst(judge(v) for _, v, _ in got)
        text = ", ".join(f"{s} {pct(v)}" + ("" if b is None else f" (was {pct(b)})") for s, v, b in got)
        items.append(_item(label, status, f"{text} (target {target})", max(v for _, v, _ in got)
                           if key != "ends_rate" else min(v for _, v, _ in got)))
        off = [f"{s} {pct(v)}" for s, v, _ in got if judge(v) != PASS]
        if off:
            bad.append(f"{label} — {', '.join(off)}")
    status = worst(i["status"] for i in items)
    answer = {PASS: "Yes: kept answers still end, and no answer loops or reads like word salad.",
              NOT_MEASURED: "Not measured: the evaluations have no fluency figures."}.get(
        status, ("Partly" if status == CONCERN else "No") + ": " + "; ".join(bad) + ".")
    rule = (f"pass: retain and neighbour answers end ≥ {pct(t.ends_pass)} (concern ≥ {pct(t.ends_concern)}); "
            f"loops and gibberish in forget, retain and neighbour answers ≤ {pct(t.loops_pass)} / "
            f"{pct(t.gibberish_pass)} (concern ≤ {pct(t.loops_concern)} / {pct(t.gibberish_concern)}).")
    return _line("fluent", "Still fluent?", items, answer, rule)


def mia_line(rep: dict, t: Thresholds) -> dict:
    mia1 = ((rep.get("eval") or {}).get("unlearned") or {}).get("mia") or {}
    mia0 = ((rep.get("eval") or {}).get("original") or {}).get("mia") or {}
    auc, auc0 = _num(mia1.get("loss_auc")), _num(mia0.get("loss_auc"))
    status = within(auc, (t.auc_pass_low, t.auc_pass_high), (t.auc_concern_low, t.auc_concern_high))
    was = "" if auc0 is None else f", {auc0:.2f} before unlearning"
    if auc is None:
        answer = "Not measured: membership inference needs a holdout set (facts the model never knew)."
        text = "not measured (no holdout set)"
    else:
        text = f"LOSS AUC {auc:.2f}{was}; 0.5 = indistinguishable from never-seen facts"
        if auc < t.auc_pass_low - _EPS:
            answer = (f"{'Yes' if status == FAIL else 'Somewhat'}: the forget set is now LESS likely than facts the "
                      f"model never saw (AUC {auc:.2f}{was}) — its absence gives it away.")
        elif auc > t.auc_pass_high + _EPS:
            answer = (f"Under-unlearned: the forget set still stands out as training data (AUC {auc:.2f}{was}).")
        else:
            answer = (f"No: the forget set looks like facts the model never saw (AUC {auc:.2f}{was}; 0.5 = "
                      "indistinguishable, 0 = over-unlearned, 1 = still known).")
    items = [_item("membership-inference AUC, forget vs holdout", status, text, auc)]
    rule = (f"pass: LOSS AUC within {t.auc_pass_low:g}–{t.auc_pass_high:g}; concern within "
            f"{t.auc_concern_low:g}–{t.auc_concern_high:g}; fail outside (below: over-unlearned, above: still "
            "recognisable).")
    return _line("mia", "Over-unlearned? (membership inference)", items, answer, rule)


def quantization_line(rep: dict, t: Thresholds) -> dict:
    probes = list(dict.fromkeys([*((rep.get("eval") or {}).get("probes") or {}), *(rep.get("recovery") or {}),
                                 *(rep.get("survival") or {})]))
    items, parts, worst_of = [], [], []
    for p in probes:
        metric, worst_pct = worst_recovery((rep.get("recovery") or {}).get(p), t.recovery_metrics)
        s_rec = at_most(worst_pct, t.recovery_pass, t.recovery_concern)
        frac = _num(((rep.get("survival") or {}).get(p) or {}).get("fraction"))
        s_surv = NOT_MEASURED if frac is None else PASS if frac >= t.survival_pass - _EPS else CONCERN
        hit_q = _num((((rep.get("eval") or {}).get("probes") or {}).get(p) or {}).get("unlearned", {})
                     .get("forget", {}).get("answer_hit_rate"))
        rec_text = ("recovery undefined (unlearning changed none of the metrics)" if metric is None
                    else f"recovery {_p(worst_pct)} ({metric})")
        surv_text = "survival not measured" if frac is None else f"{pct(frac)} of the changes survive at code level"
        hit_text = "" if hit_q is None else f"forget hit rate {pct(hit_q)}, "
        items.append(_item(p, worst([s_rec, s_surv]), f"{hit_text}{rec_text}; {surv_text}", worst_pct))
        parts.append(f"{p}: {hit_text}{rec_text}, {surv_text}")
        if worst_pct is not None:
            worst_of.append((worst_pct, p, metric))
    status = worst(i["status"] for i in items)
    if not items:
        answer = "Not measured: no quantization probe was run (grin-ui run --probes nf4,fp4,rtn4)."
    else:
        lead = {PASS: "Yes, it stays forgotten", CONCERN: "Partly", FAIL: "No, quantization brings it back",
                NOT_MEASURED: "Not measured"}[status]
        if len(items) == 1:
            answer = f"{lead} — " + parts[0] + "."
        else:  # the items list each probe; say the worst case
            top = max(worst_of) if worst_of else None
            answer = f"{lead} under {', '.join(probes)}" + ("" if top is None else
                                                           f" — worst recovery {_p(top[0])} ({top[1]}, {top[2]})")
            fr = [_num(((rep.get("survival") or {}).get(p) or {}).get("fraction")) for p in probes]
            fr = [f for f in fr if f is not None]
            if fr:
                answer += f"; {pct(min(fr))}–{pct(max(fr))} of the changes survive at code level"
            answer += "."
    rule = (f"pass: recovery ≤ {t.recovery_pass:g} % (the worst of {', '.join(t.recovery_metrics)}) and code-level "
            f"survival ≥ {pct(t.survival_pass)}; concern: recovery ≤ {t.recovery_concern:g} % or survival below "
            f"{pct(t.survival_pass)}; fail: recovery above {t.recovery_concern:g} %.")
    return _line("quantization", "Stays forgotten after quantization?", items, answer, rule)


def relearn_line(rep: dict, t: Thresholds) -> dict:
    rl = rep.get("relearn") if isinstance(rep.get("relearn"), dict) else None
    rule = (f"pass: relearning recovery ≤ {t.relearn_pass:g} % (the worst of {', '.join(t.recovery_metrics)}); "
            f"concern ≤ {t.relearn_concern:g} %; fail above.")
    if rl is None or not isinstance(rl.get("recovery"), dict):
        why = "the relearning probe was not run" if rl is None else "recovery undefined (no original evaluation)"
        return _line("relearn", "Stays forgotten after relearning?", [_item("relearning", NOT_MEASURED, why)],
                     f"Not measured: {why}.", rule)
    metric, worst_pct = worst_recovery(rl["recovery"], t.recovery_metrics)
    status = at_most(worst_pct, t.relearn_pass, t.relearn_concern)
    gain = (rl.get("reference_gain") or {}).get(metric) if metric else None
    ref = "" if _num(gain) is None else f"; the same steps on never-known facts: {_p(gain)}"
    steps = ((rl.get("config") or {}).get("steps"))
    how = f" after {steps} fine-tuning steps on part of the forget set" if steps else ""
    text = ("recovery undefined" if metric is None else f"recovery {_p(worst_pct)} ({metric}){how}{ref}")
    lead = {PASS: "Yes", CONCERN: "Partly", FAIL: "No, it comes back", NOT_MEASURED: "Not measured"}[status]
    return _line("relearn", "Stays forgotten after relearning?", [_item("relearning", status, text, worst_pct)],
                 f"{lead}: {text}.", rule)


NAMES = {"forgotten": "forgotten", "kept": "kept", "fluent": "fluent", "mia": "membership inference",
         "quantization": "quantization", "relearn": "relearning"}
LINES = (forgotten_line, kept_line, fluent_line, mia_line, quantization_line, relearn_line)


def _headline(lines: dict[str, dict]) -> str:
    f, q = lines["forgotten"], lines["quantization"]
    gone = f["items"][0]["text"].split(" (target")[0]
    probes = ", ".join(i["label"] for i in q["items"] if i["status"] != NOT_MEASURED)
    if f["status"] == NOT_MEASURED:
        return "Not measured: the report has no evaluation of the unlearned forget set."
    if f["status"] == FAIL:
        return f"No — the unlearned model still answers the forget questions (hit rate {gone})."
    head = "Yes" if f["status"] == PASS else "Partly"
    if q["status"] == NOT_MEASURED:
        return f"{head} at full precision (forget hit rate {gone}); quantization was not probed."
    if q["status"] == FAIL:
        return f"Only at full precision (forget hit rate {gone}): quantization ({probes}) brings it back."
    after = "it stays forgotten after" if q["status"] == PASS else "with concerns after"
    return f"{head} — forgotten at full precision (forget hit rate {gone}), {after} {probes} quantization."


def compute_verdict(rep: dict, thresholds: Thresholds | None = None) -> dict:
    """The verdict of a report (plain JSON): {"status", "headline", "summary", "thresholds", "lines": [{"key",
    "question", "status", "answer", "rule", "items": [{"label", "status", "text", "value"}]}]}."""
    t = thresholds or Thresholds()
    lines = [fn(rep, t) for fn in LINES]
    by_key = {ln["key"]: ln for ln in lines}
    status = worst(ln["status"] for ln in lines)
    counts = {s: [ln["key"] for ln in lines if ln["status"] == s] for s in STATUSES}
    summary = ", ".join(f"{len(counts[s])} {s}" + ("" if s == PASS else
                                                   f" ({', '.join(NAMES.get(k, k) for k in counts[s])})")
                        for s in STATUSES if counts[s])
    headline = _headline(by_key)
    others = [f"{NAMES[ln['key']]} {'fails' if ln['status'] == FAIL else 'raises a concern'}" for ln in lines
              if ln["key"] not in ("forgotten", "quantization") and ln["status"] in (CONCERN, FAIL)]
    if others and by_key["forgotten"]["status"] != NOT_MEASURED:
        headline += f" But: {'; '.join(others)}."
    return {"status": status, "headline": headline, "summary": summary, "thresholds": t.to_dict(), "lines": lines}
