"""Relearning probe (SPEC §5): does a little fine-tuning on *part* of the forget set bring back the *rest*?

    with delta.applied(lm.model):                      # the caller puts the model in the unlearned state
        out = relearn_probe(lm, forget, holdout, original_eval=eval_original, steps=10, lr=5e-5)
    out["recovery"]["answer_hit_rate"]     # % of what unlearning removed from the evaluated part that came back
    out["reference_gain"]["answer_prob"]   # the same steps on facts the model never knew, in the same units

Procedure, all on the model as it is when called (normally: the unlearned model):
1. Split the forget set with ``seed`` into a part to relearn on (``n_train`` examples, or round(train_fraction · n),
   at least 1, leaving at least 1) and a part to evaluate; likewise the holdout set (facts never known).
2. Evaluate the evaluated part (:func:`grin_ui.evaluate.evaluate_sets`: answer hit rate, ROUGE-L recall, answer
   probability, NLL, truth ratio when the data has it) and the teacher-forced answer probability of the trained part.
3. Fine-tune every weight for ``steps`` AdamW steps (:func:`grin_ui.train.train_masked`, no mask) on the trained part
   only — answers end with the end-of-turn token (``encode(..., add_end=True)``), batches of ``batch_size`` drawn in
   a seeded order — then evaluate again. The evaluated part never enters a training batch.
4. Restore the model bit-exactly (a full copy of the parameters is kept on the CPU and copied back in a ``finally``:
   this is the probe's one extra model copy). Repeat 2–4 on the holdout set: the *reference*.

Recovery % per metric M on the evaluated part (as for quantization):
    100 · (M(relearned) − M(unlearned)) / (M(original) − M(unlearned))
where M(original) comes from ``original_eval``: the original model's :func:`evaluate_sets` result on the *whole*
forget set, with every example listed (``max_listed_examples=None``, the default); the evaluated part's metrics are
recomputed from its per-example rows. Without it, recovery is None. ``reference_gain`` uses the same denominator for
the reference: 100 · (M(reference after) − M(reference before)) / (M(original) − M(unlearned)) — how much of the
recovery plain learning of the same number of unseen facts would explain. Both None where the denominator is ~0.
Both parts are evaluated under the set name "forget", so every metric (the truth ratio's min(R, 1/R) included) has
the same definition in both.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Callable, Sequence

import torch

from grin_ui import metrics as M
from grin_ui.config import EvalConfig, RelearnConfig
from grin_ui.data import Record, collate, encode
from grin_ui.errors import GrinError
from grin_ui.evaluate import evaluate_sets, sequence_stats
from grin_ui.placement import input_device
from grin_ui.quantize import RECOVERY_METRICS
from grin_ui.train import Cancelled, is_cancelled, train_masked
from grin_ui.tokens import pad_id

SUMMARY_KEYS = ("n", "answer_hit_rate", "rougeL_recall", "answer_prob", "nll", "truth_ratio")


def split(n: int, seed: int, train_fraction: float = 0.5, n_train: int | None = None) -> tuple[list[int], list[int]]:
    """(trained indices, evaluated indices), both sorted, disjoint, covering range(n): a seeded permutation of
    range(n), the first ``n_train`` (or round(train_fraction · n), clamped to [1, n − 1]) trained."""
    if n < 2:
        raise GrinError(f"The relearning probe needs at least 2 examples in a set (one to train, one to evaluate); "
                        f"got {n}.")
    k = n_train if n_train is not None else round(train_fraction * n)
    k = min(max(int(k), 1), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[:k]), sorted(perm[k:])


def _summary(set_eval: dict) -> dict:
    return {k: set_eval[k] for k in SUMMARY_KEYS if k in set_eval}


def subset_metrics(set_eval: dict, indices: Sequence[int], records: Sequence[Record] | None = None) -> dict:
    """The forget-set metrics of ``set_eval`` (one set of an :func:`evaluate_sets` result, every example listed)
    restricted to the examples at ``indices``: means of hit, ROUGE-L recall, answer probability and NLL over them;
    truth ratio as mean min(R, 1/R) over those that have one. ``records``: checked against the listed questions."""
    ex = set_eval.get("examples") or []
    if len(ex) != set_eval.get("n", len(ex)) or (records is not None and len(ex) != len(records)):
        raise GrinError("The original evaluation does not list every forget example (evaluate it with "
                        "max_listed_examples=None on the same forget set).")
    if records is not None and any(r.is_qa and e.get("question") != r.question for e, r in zip(ex, records)):
        raise GrinError("The original evaluation was made on a different forget set (its questions differ).")
    rows = [ex[i] for i in indices]
    mean = lambda key: sum(float(r[key]) for r in rows) / len(rows)  # noqa: E731
    out = {"n": len(rows), "answer_hit_rate": mean("hit"), "rougeL_recall": mean("rougeL_recall"),
           "answer_prob": mean("answer_prob"), "nll": mean("nll")}
    trs = [r["truth_ratio"] for r in rows if "truth_ratio" in r]
    if trs:
        out["truth_ratio"] = M.truth_ratio_forget(trs)
    return out


def _train_prob(model, tokenizer, records: Sequence[Record], max_tokens: int) -> float:
    """Mean teacher-forced answer probability P(a|q)^(1/|a|) (end-of-turn token not scored)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            stats = sequence_stats(model, tokenizer, records, max_tokens=max_tokens, with_distribution=False)
    finally:
        model.train(was)
    return sum(s.prob for s in stats) / len(stats)


def _examples(before: dict, after: dict, indices: Sequence[int]) -> list[dict]:
    out = []
    for i, b, a in zip(indices, before.get("examples") or [], after.get("examples") or []):
        out.append({"index": i, "question": b.get("question"), "reference": b.get("reference"),
                    "before": b.get("generation"), "after": a.get("generation"), "hit_before": b.get("hit"),
                    "hit_after": a.get("hit"), "answer_prob_before": b.get("answer_prob"),
                    "answer_prob_after": a.get("answer_prob")})
    return out


def _relearn_once(lm, records: list[Record], train_idx: list[int], eval_idx: list[int], cfg: RelearnConfig,
                  eval_cfg: EvalConfig, cancel, say: Callable[[str], None], label: str) -> dict:
    """Steps 2–4 for one set; the model is restored before returning (or raising)."""
    model, tok = lm.model, lm.tokenizer
    train_recs = [records[i] for i in train_idx]
    eval_recs = [records[i] for i in eval_idx]
    say(f"Relearning probe ({label}): evaluating {len(eval_recs)} held-out examples before relearning")
    before = evaluate_sets(model, tok, {"forget": eval_recs}, eval_cfg, utility=False)["forget"]
    out = {"before": _summary(before), "train_prob_before": _train_prob(model, tok, train_recs, eval_cfg.max_tokens)}
    items = encode(train_recs, tok, eval_cfg.max_tokens, add_end=True).items
    pad = pad_id(tok)
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    bs = min(cfg.batch_size, len(items))
    device = input_device(model)
    losses: list[float] = []

    def loss_fn(step: int):
        if is_cancelled(cancel):
            raise Cancelled(f"Relearning probe cancelled at step {step} of {cfg.steps}; the model was restored.")
        pick = [order[(step * bs + j) % len(order)] for j in range(bs)]
        batch = {k: v.to(device) for k, v in collate([items[i] for i in pick], pad).items()}
        return model(**batch).loss

    backup = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}
    try:
        say(f"Relearning probe ({label}): {cfg.steps} fine-tuning steps on {len(train_recs)} examples")
        train_masked(model, loss_fn, cfg.steps, None, cfg.lr, cfg.weight_decay, cfg.max_grad_norm, cfg.seed,
                     progress=lambda step, steps, f, r: losses.append(f))
        say(f"Relearning probe ({label}): evaluating the held-out examples after relearning")
        after = evaluate_sets(model, tok, {"forget": eval_recs}, eval_cfg, utility=False)["forget"]
        out.update(after=_summary(after), train_prob_after=_train_prob(model, tok, train_recs, eval_cfg.max_tokens),
                   loss=losses, examples=_examples(before, after, eval_idx))
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(backup[n])
        del backup
    return out


def _pct(original: dict | None, before: dict, after: dict) -> dict[str, float | None] | None:
    if original is None:
        return None
    return {m: M.recovery_pct(original[m], before[m], after[m]) for m in RECOVERY_METRICS
            if m in original and m in before and m in after}


def relearn_probe(lm, forget_records: Sequence[Record], holdout_records: Sequence[Record] | None = None, *,
                  train_fraction: float = 0.5, n_train: int | None = None, steps: int = 10, lr: float = 5e-5,
                  batch_size: int = 4, weight_decay: float = 0.0, max_grad_norm: float = 1.0, seed: int = 0,
                  eval_cfg: EvalConfig | None = None, original_eval: dict | None = None, cancel=None,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Relearn part of the forget set on the model as it is now and measure the rest (module docstring).

    ``lm``: a LoadedModel (``.model``, ``.tokenizer``) in the state to probe; it is bit-identical afterwards, also
    when cancelled (``cancel()`` true or a set Event: raises :class:`grin_ui.train.Cancelled`) or on error.
    ``original_eval``: the original model's evaluate_sets result on the whole forget set (or its "forget" entry).
    Returns plain JSON: {"config", "split": {"forget": {"train": [i], "eval": [i]}, "holdout": ... or None},
    "forget": {"original" (or None), "before", "after" — metrics of the evaluated part —, "train_prob_before",
    "train_prob_after", "loss": [per step], "examples": [{index, question, reference, before, after, hit_before,
    hit_after, answer_prob_before, answer_prob_after}]}, "reference": the same for the holdout set (no "original")
    or None, "recovery": {metric: % or None} or None, "reference_gain": {metric: % or None} or None, "seconds"}."""
    cfg = RelearnConfig(train_fraction, n_train, steps, lr, batch_size, weight_decay, max_grad_norm, seed)
    if cfg.steps < 1:
        raise GrinError(f"The relearning probe needs at least 1 step, got {cfg.steps}.")
    eval_cfg = eval_cfg or EvalConfig()
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    forget = list(getattr(forget_records, "records", forget_records) or [])
    holdout = list(getattr(holdout_records, "records", holdout_records) or [])
    f_train, f_eval = split(len(forget), cfg.seed, cfg.train_fraction, cfg.n_train)
    original = None
    if original_eval is not None:
        set_eval = original_eval if "examples" in original_eval else original_eval.get("forget")
        if not set_eval:
            raise GrinError("The original evaluation has no forget set.")
        original = subset_metrics(set_eval, f_eval, forget)
    out: dict = {"config": asdict(cfg), "split": {"forget": {"train": f_train, "eval": f_eval}, "holdout": None}}
    out["forget"] = {"original": original,
                     **_relearn_once(lm, forget, f_train, f_eval, cfg, eval_cfg, cancel, say, "forget set")}
    out["reference"] = None
    if len(holdout) >= 2:
        h_train, h_eval = split(len(holdout), cfg.seed, cfg.train_fraction, cfg.n_train)
        out["split"]["holdout"] = {"train": h_train, "eval": h_eval}
        out["reference"] = _relearn_once(lm, holdout, h_train, h_eval, cfg, eval_cfg, cancel, say, "reference")
    f = out["forget"]
    out["recovery"] = _pct(original, f["before"], f["after"])
    ref = out["reference"]
    out["reference_gain"] = None if ref is None or original is None else {  # same denominator as "recovery"
        m: M.recovery_pct(original[m], f["before"][m], f["before"][m] + ref["after"][m] - ref["before"][m])
        for m in RECOVERY_METRICS if m in original and m in f["before"] and m in ref["before"] and m in ref["after"]}
    out["seconds"] = time.perf_counter() - t0
    return out
