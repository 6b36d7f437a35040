"""Split–Unlearn–Merge (SPUNGE, Kadhe et al. 2024, arXiv 2406.11780; SPEC §3.7).

    groups = split_by(forget, "attribute")                       # attribute value -> records (first-seen order)
    merged = merge_deltas([d1, d2], "ties", keep=0.2)            # one SparseDelta over the same base
    result = spunge(lm, {"forget": f, "retain": r, "holdout": h}, RunConfig(spunge=SpungeConfig("attribute")))

The forget set is split by the value of a record field (``attribute``); each subset is unlearned separately from
the *same* starting model with the whole GRIN pipeline (its own GRI scores, mask, noise and run, against the whole
retain set): apply, capture the sparse delta, undo — no model copy. The deltas are then merged into one
:class:`grin_ui.delta.SparseDelta` over the union of their entries, which undoes, exports, evaluates and probes like
any other. Per entry, with τ_k = new_k − old the change of subset run k (0 where run k does not list the entry) and
K the number of runs:

- **average**: τ = (1/K) Σ_k τ_k — an entry changed by one run only moves by τ_k / K;
- **TIES** (Yadav et al. 2023, as in the SPUNGE paper): *trim* each τ_k to its ``keep`` fraction of largest-magnitude
  changes (over all its changed entries, exact count round(keep · changed), ties broken by tensor then index order;
  the rest set to 0), *elect* a sign per entry, γ = sign(Σ_k τ̂_k) (the sign with the larger summed magnitude),
  and take the *disjoint mean* of the trimmed changes that agree with it: τ = Σ_{k: sign τ̂_k = γ} τ̂_k / |{k: …}|
  (0 where none agrees); then τ is scaled by ``scale`` (λ, default 1).
  Keep fraction (*our choice*): 0.2, the TIES paper's k = 20 %.

Changes are computed in float32 and the merged value is old + τ rounded to the parameter's dtype; an entry with
τ = 0 keeps its original value bit-exactly. Overlapping entries must have the same original value in every delta
(the same base model), else GrinError.

Budget: each subset's run gets ``cfg.unlearn.steps`` (a budget; stop-when-forgotten on, each subset stops when *it*
is forgotten). For a comparison at equal total budget give each subset steps // K (benchmarks/spunge_compare.py).
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from grin_ui.config import MERGES, RunConfig
from grin_ui.data import Record, encode
from grin_ui.delta import DeltaEntry, SparseDelta
from grin_ui.errors import GrinError
from grin_ui.mask import Mask
from grin_ui.pipeline import GrinResult, unlearn_pipeline
from grin_ui.train import is_cancelled

TIES_KEEP = 0.2  # share of each delta's changed entries TIES keeps (the TIES paper's k = 20 %)


# ---------------------------------------------------------------------------------------------- split


def split_by(records: list[Record], field: str = "attribute") -> dict[str, list[Record]]:
    """Records grouped by the value of ``field``, groups in order of first appearance. GrinError when a record has
    no value or fewer than two groups result (nothing to split)."""
    groups: dict[str, list[Record]] = {}
    missing = 0
    for r in records:
        v = getattr(r, field, None)
        if v is None or (isinstance(v, str) and not v.strip()):
            missing += 1
            continue
        groups.setdefault(str(v), []).append(r)
    if missing:
        raise GrinError(f"{missing} of {len(records)} forget examples have no '{field}' value; SPUNGE splits the "
                        f"forget set by it, so every example needs one.")
    if len(groups) < 2:
        raise GrinError(f"The forget set has {len(groups)} distinct '{field}' value(s); splitting needs at least "
                        "two.")
    return groups


def attribute_counts(records: list[Record], field: str = "attribute") -> dict[str, int]:
    """Value -> number of records (records without a value counted under "(none)"); for the Data tab."""
    out: dict[str, int] = {}
    for r in records:
        v = getattr(r, field, None)
        key = str(v) if v not in (None, "") else "(none)"
        out[key] = out.get(key, 0) + 1
    return out


# ---------------------------------------------------------------------------------------------- merge


def _flat(e: DeltaEntry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(flat int64 indices, original values, float32 changes) of one entry; dense entries list every index."""
    old, new = e.old.reshape(-1), e.new.reshape(-1)
    idx = torch.arange(old.numel(), device=old.device) if e.idx is None else e.idx.to(old.device)
    return idx, old, new.float() - old.float()


def _union(entries: list[DeltaEntry | None]):
    """The union of the entries' indices: (uniq, old values, changes [K, len(uniq)] with 0 where absent, dense shape
    or None)."""
    parts = [(k, *_flat(e)) for k, e in enumerate(entries) if e is not None]
    uniq, inverse = torch.unique(torch.cat([p[1] for p in parts]), sorted=True, return_inverse=True)
    old = torch.empty(len(uniq), dtype=parts[0][2].dtype, device=parts[0][2].device)
    changes = torch.zeros(len(entries), len(uniq), dtype=torch.float32, device=old.device)
    seen = torch.zeros(len(uniq), dtype=torch.bool, device=old.device)
    pos = 0
    for k, idx, o, c in parts:
        inv = inverse[pos: pos + len(idx)]
        pos += len(idx)
        both = seen[inv]
        if bool(both.any()) and not torch.equal(old[inv][both], o.to(old.dtype)[both]):
            raise GrinError("The deltas do not start from the same model: an entry has different original values; "
                            "SPUNGE merges runs over one base model only.")
        old[inv] = o.to(old.dtype)
        seen[inv] = True
        changes[k, inv] = c
    dense = next((e.old.shape for e in entries if e is not None and e.idx is None), None)
    return uniq, old, changes, dense


def _entry(uniq: torch.Tensor, old: torch.Tensor, change: torch.Tensor, dense) -> DeltaEntry:
    new = torch.where(change == 0, old, (old.float() + change).to(old.dtype))
    if dense is not None and len(uniq) == int(torch.Size(dense).numel()):
        return DeltaEntry(None, old.reshape(dense), new.reshape(dense))
    return DeltaEntry(uniq, old, new)


def _trim_masks(deltas: list[SparseDelta], keep: float) -> list[dict[str, torch.Tensor]]:
    """Per delta, name -> bool over its flat entries: its round(keep · changed) largest |changes| (ties: tensor
    order, then entry order — a stable sort)."""
    out = []
    for d in deltas:
        names = list(d.entries)
        mags = [(_flat(d.entries[n])[2]).abs() for n in names]
        allm = torch.cat(mags) if mags else torch.zeros(0)
        n_keep = int(round(keep * int((allm != 0).sum())))
        flag = torch.zeros(len(allm), dtype=torch.bool)
        if n_keep > 0:
            order = torch.sort(allm.cpu(), descending=True, stable=True).indices[:n_keep]
            flag[order] = True
        masks, pos = {}, 0
        for n, m in zip(names, mags):
            masks[n] = flag[pos: pos + len(m)].to(m.device)
            pos += len(m)
        out.append(masks)
    return out


def merge_deltas(deltas: list[SparseDelta], method: str = "ties", keep: float = TIES_KEEP,
                 scale: float = 1.0) -> SparseDelta:
    """Merge deltas taken over the same base model into one SparseDelta (module docstring for the rules).
    ``method``: average | ties; ``keep``: TIES trim fraction in (0, 1]; ``scale``: λ applied to the merged change."""
    if method not in MERGES:
        raise GrinError(f"Unknown merge '{method}'; use one of {', '.join(MERGES)}.")
    if not deltas:
        raise GrinError("Nothing to merge: no delta given.")
    if method == "ties" and not 0 < keep <= 1:
        raise GrinError(f"The TIES keep fraction must be in (0, 1], got {keep}.")
    trims = _trim_masks(deltas, keep) if method == "ties" else None
    names = list(dict.fromkeys(n for d in deltas for n in d.entries))
    entries = {}
    for name in names:
        per = [d.entries.get(name) for d in deltas]
        uniq, old, changes, dense = _union(per)
        if method == "average":
            merged = changes.sum(0) / len(deltas)
        else:
            for k, e in enumerate(per):
                if e is None:
                    continue
                idx = _flat(e)[0]
                pos = torch.searchsorted(uniq, idx)
                dropped = pos[~trims[k][name]]
                changes[k, dropped] = 0.0
            sign = torch.sign(changes.sum(0))
            agree = (torch.sign(changes) == sign) & (changes != 0)
            merged = (changes * agree).sum(0) / agree.sum(0).clamp_min(1)
        entries[name] = _entry(uniq, old, merged * scale if scale != 1.0 else merged, dense)
    meta = {"merge": method, "runs": len(deltas), **({"ties_keep": keep} if method == "ties" else {}),
            **({"scale": scale} if scale != 1.0 else {})}
    first = deltas[0].meta
    meta.update({k: first[k] for k in ("objective", "selector", "scope", "sparsity", "seed") if k in first})
    return SparseDelta(entries, meta)


# ---------------------------------------------------------------------------------------------- run


def union_mask(masks: list[Mask]) -> Mask:
    """The entries any of ``masks`` selects (what the merged delta may change), as one Mask."""
    union: dict[str, torch.Tensor] = {}
    for m in masks:
        for n, t in m.masks.items():
            union[n] = union[n] | t if n in union else t.clone()
    counts = {n: int(t.sum()) for n, t in union.items()}
    first = masks[0]
    return Mask(union, sum(counts.values()), first.total, None, first.selector, first.scope, first.sparsity,
                counts, dict(first.numels))


@torch.no_grad()
def _mean_nll(lm, items) -> float | None:
    from grin_ui.evaluate import score_items
    from grin_ui.tokens import pad_id

    if not items:
        return None
    stats = score_items(lm.model, items, pad_id(lm.tokenizer), 8)
    vals = [s.nll for s in stats if s.n > 0]
    return sum(vals) / len(vals) if vals else None


def nll_table(lm, groups: dict[str, list[Record]], retain: list[Record], states: dict[str, SparseDelta | None],
              max_tokens: int = 256) -> dict:
    """Mean per-token answer NLL (teacher-forced, nats) of every subset and of the retain set (at most 32 records)
    under each model state (name -> delta applied to the original weights, None for the original)."""
    from grin_ui.stopping import _sample

    items = {a: encode(r, lm.tokenizer, max_tokens).items for a, r in groups.items()}
    if retain:
        items["(retain)"] = encode(_sample(list(retain), 32), lm.tokenizer, max_tokens).items
    was = lm.model.training
    lm.model.eval()
    out = {}
    try:
        for state, delta in states.items():
            if delta is None:
                out[state] = {a: _mean_nll(lm, it) for a, it in items.items()}
            else:
                with delta.applied(lm.model):
                    out[state] = {a: _mean_nll(lm, it) for a, it in items.items()}
    finally:
        lm.model.train(was)
    return {"sets": list(items), "states": out}


def spunge(lm, sets: dict[str, list[Record]], cfg: RunConfig, progress=None, cancel=None, on_step=None,
           dynamics_sets: dict[str, list[Record]] | None = None) -> GrinResult:
    """SPUNGE on ``lm`` (module docstring): split ``sets["forget"]`` by ``cfg.spunge.split_by``, run the GRIN
    pipeline on each subset (against the whole retain set; the holdout set feeds each run's stopping check), undo
    it, and merge the deltas with ``cfg.spunge.merge``. On return ``lm.model`` holds the original weights.

    The result is a GrinResult whose ``delta`` is the merged delta, ``mask`` the union of the subset masks,
    ``history`` every subset's steps in turn (each with its ``subset``), ``timings`` summed per stage (plus
    "merge"), and ``spunge`` the per-subset summary: attribute, size, mask, steps run, stopping step, changed
    entries, and ``nll``: every subset's and the retain set's answer NLL under the original model, each subset's own
    delta and the merged one. Cancelled: ``cancelled=True`` and no delta (the model restored).
    progress(message, fraction); on_step(step, steps, forget_term, retain_term) per training step of every run;
    ``dynamics_sets``: the sets recorded per example during each run when ``cfg.unlearn.dynamics_every`` > 0."""
    sp = cfg.spunge
    field = sp.split_by or "attribute"
    groups = split_by(sets["forget"], field)
    retain, holdout = sets.get("retain", []), sets.get("holdout")
    say = progress or (lambda m, f=None: None)
    k = len(groups)
    runs, subsets, history, timings = [], [], [], {}
    for i, (attr, recs) in enumerate(groups.items()):
        if is_cancelled(cancel):
            return GrinResult(None, None, None, history, timings, True)
        t0 = time.perf_counter()
        rec = None
        if cfg.unlearn.dynamics_every > 0:
            from grin_ui.dynamics import DynamicsRecorder

            rec = DynamicsRecorder.build(lm.tokenizer, {**(dynamics_sets or sets), "forget": recs},
                                         cfg.unlearn.dynamics_every, cfg.limits.max_tokens)
        res = unlearn_pipeline(lm, recs, retain, cfg, cancel=cancel, on_step=on_step, holdout=holdout,
                               progress=lambda stage, f, m, i=i, a=attr: say(f"subset {i + 1}/{k} ({a}): {stage}: "
                                                                             f"{m}", (i + f) / k), dynamics=rec)
        if res.delta is not None:
            res.delta.undo(lm.model)
        if res.cancelled or res.delta is None:
            return GrinResult(None, None, None, history, timings, True)
        for stage, s in res.timings.items():
            timings[stage] = timings.get(stage, 0.0) + s
        history += [{**h, "subset": attr} for h in res.history]
        runs.append(res)
        subsets.append({"attribute": attr, "n": len(recs), "selected": res.mask.selected,
                        "changed": res.delta.changed(), "steps_run": res.stats.get("steps_run"),
                        "stopped_at": (res.stopping or {}).get("stopped_at"),
                        "seconds": time.perf_counter() - t0, "dynamics": res.dynamics})
    t0 = time.perf_counter()
    say(f"merging {k} deltas ({sp.merge})", 1.0)
    merged = merge_deltas([r.delta for r in runs], sp.merge, sp.ties_keep)
    merged.meta.update({"split_by": field, "subsets": list(groups)})
    timings["merge"] = time.perf_counter() - t0
    mask = union_mask([r.mask for r in runs])
    overlap = sum(int(t.sum()) for t in _overlap([r.mask for r in runs]).values())
    states = {"original": None, **{f"run {a}": r.delta for a, r in zip(groups, runs)}, "merged": merged}
    summary = {"split_by": field, "merge": sp.merge, "ties_keep": sp.ties_keep if sp.merge == "ties" else None,
               "steps_budget": cfg.unlearn.steps, "subsets": subsets, "union_selected": mask.selected,
               "overlap_selected": overlap, "merged_changed": merged.changed(),
               "nll": nll_table(lm, groups, retain, states, cfg.limits.max_tokens)}
    stats = {"steps_run": sum(s["steps_run"] or 0 for s in subsets), "runs": k}
    out = GrinResult(None, mask, merged, history, timings, False, stats, None)
    out.spunge = summary
    return out


def _overlap(masks: list[Mask]) -> dict[str, torch.Tensor]:
    """name -> bool of the entries selected by two or more masks."""
    counts: dict[str, torch.Tensor] = {}
    for m in masks:
        for n, t in m.masks.items():
            counts[n] = counts[n] + t.to(torch.int16) if n in counts else t.to(torch.int16)
    return {n: c >= 2 for n, c in counts.items()}


def equal_budget(cfg: RunConfig, subsets: int) -> RunConfig:
    """``cfg`` with each subset's step budget cut to steps // subsets (at least 1): SPUNGE at the unsplit run's
    total budget."""
    return replace(cfg, unlearn=replace(cfg.unlearn, steps=max(1, cfg.unlearn.steps // max(1, subsets))))


def html_section(sp: dict | None) -> str:
    """The report's split–unlearn–merge block: the subset runs and the NLL table ('' for an unsplit run)."""
    if not sp:
        return ""
    import html as _h

    f = lambda v: "—" if v is None else (f"{v:.4g}" if isinstance(v, float) else _h.escape(str(v)))  # noqa: E731
    keys = ("attribute", "n", "selected", "changed", "steps_run", "stopped_at", "seconds")
    runs = "".join("<tr>" + "".join(f"<td>{f(s.get(k))}</td>" for k in keys) + "</tr>" for s in sp["subsets"])
    nll = sp.get("nll") or {}
    cols = nll.get("sets") or []
    rows = "".join(f"<tr><td>{_h.escape(state)}</td>" + "".join(f"<td>{f(v.get(c))}</td>" for c in cols) + "</tr>"
                   for state, v in (nll.get("states") or {}).items())
    keep = f" (keep {sp['ties_keep']:g} of each delta's changes)" if sp.get("ties_keep") else ""
    return (f"<h3>Split–unlearn–merge</h3><p>The forget set split by <code>{_h.escape(sp['split_by'])}</code> into "
            f"{len(sp['subsets'])} subsets, each unlearned from the same original model (budget "
            f"{sp['steps_budget']} steps each), deltas merged by <b>{_h.escape(sp['merge'])}</b>{keep}: "
            f"{sp['union_selected']:,} weights selected by any subset, {sp['overlap_selected']:,} by two or more, "
            f"{sp['merged_changed']:,} changed by the merged delta.</p>"
            "<table><thead><tr>" + "".join(f"<th>{k}</th>" for k in keys) + f"</tr></thead><tbody>{runs}</tbody>"
            "</table><p>Mean answer NLL per token (nats; higher = less likely) of each subset under each state:</p>"
            "<table><thead><tr><th>state</th>" + "".join(f"<th>{_h.escape(c)}</th>" for c in cols)
            + f"</tr></thead><tbody>{rows}</tbody></table>")


__all__ = ["TIES_KEEP", "split_by", "attribute_counts", "merge_deltas", "union_mask", "nll_table",
           "spunge", "equal_budget", "html_section"]
