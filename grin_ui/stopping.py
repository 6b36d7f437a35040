"""Stop when forgotten (SPEC §3.5): the unlearning steps are a budget, and a cheap check of the forget set every few
steps ends the run once the forget answers are gone — at the level of facts the model never knew, not far below it.

    check = ForgetCheck.build(tokenizer, forget, holdout, cfg, retain=retain)   # before training
    check.calibrate(model)        # the retain answers' NLL before any change (before noise)
    m = check(model, step)        # {"step", "forget_nll", "reference_nll", "level_reached", ["hit_rate"],
                                  #  ["retain_nll"], ["answer_nll", "answer_auc", "pushed"], "stop"}

The check measures, with the model as it is at that step, the mean over forget examples of the per-token answer NLL
(teacher-forced, one forward pass; with ``focus_fact`` only the tokens that carry the fact, e.g. the capital's name
in "The capital of Cuba is Havana.", see grin_ui.data.fact_span) and compares it with a
*reference level* (*our choice*, in this order of preference):

- ``holdout``: the same quantity on the holdout set (facts of the same kind the model never knew; at most
  ``MAX_REFERENCE`` of them, a fixed sample), measured at the same step. Reaching it means a LOSS membership-inference attack can no longer tell forget from holdout (AUC ≈ 0.5);
  going far beyond it is over-unlearning (AUC → 0) and breaks fluency;
- ``perturbed``: without a holdout set, the mean NLL of the forget examples' perturbed (wrong) answers — the true
  answer is then no more likely than plausible wrong ones;
- ``none``: neither exists; only the greedy confirmation below decides.

The level counts as reached when forget NLL ≥ reference NLL − ``stop_margin``. Because the greedy answer can still
name the fact when the *average* answer likelihood has fallen, a reached level is confirmed by generating the
forget answers greedily (``stop_check_tokens`` new tokens): the run stops once the answer hit rate is ≤
``stop_hit_rate``. Generation runs only at checks where the level is reached, so the check stays cheap — except for
objectives that train an alternative answer (IDK, FLAT: the refusal replaces the answer while the fact's likelihood
under teacher forcing may stay above the reference level), where every check generates and the run stops as soon as
the greedy answers no longer give the fact. (Also requiring the level for them was measured and not kept: on taught
facts IDK did not reach it within 80 steps — membership-inference AUC 1.0 at the step-16 stop, 0.94 after all 80 —
so the rule only made runs five times longer; README, "Quality".) IDK+NPO (``idk_npo``), which also pushes the
fact's likelihood down, is checked like NPO: the level first, then the greedy answers; the training steps after a
check receive its reference level (``StepBatch.level``), so that its NPO term (``npo_hinge``) stops pushing an
example once the example's fact is at that level.

**Answer level** (``answer_level``, IDK+NPO only): a refusal can outrank a fact while the fact stays far likelier
than one never known (taught facts: membership inference then still finds them). With it the check also scores the
forget and reference answers over *every* token — what a LOSS membership-inference attack scores — and the level
counts as reached when that attack tells the two samples apart with AUC ≤ ``level_auc``. The run is IDK until a
check finds the forget set forgotten (and kept) with the level not reached; from then on the NPO term pushes each
example that is refused (its greedy answer no longer gives the fact) and likelier than the reference answers'
median (:attr:`ForgetCheck.pushed`), and the run stops only once the level is reached, greedy answers gone and
kept. Where the refusal alone brings the answers to the level, the run is IDK's step for step — and so it is
without a stop check (``stop_when_forgotten`` off) or without a reference (no holdout, no wrong answers).

**And kept** (``stop_keep_margin`` ≥ 0, with a retain set): the first steps of unlearning hurt facts of the same kind
too (the forget gradient at the answer positions is shared by every question of the kind); the retain term then
repairs them. So a forgotten state also has to be a kept one: the retain answers' mean per-token NLL (a fixed sample
of at most ``MAX_REFERENCE``) must be back within ``stop_keep_margin`` nats of its value before unlearning
(:meth:`ForgetCheck.calibrate`), *and* their greedy answers must still give the fact: at most one more of the
sampled retain answers lost than before unlearning (*our choice*). The NLL alone was measured to miss it: a refusal
can take over a kept question's first token while its true answer stays nearly as likely under teacher forcing
(world-capitals, seed 2: the NLL condition held at step 28 with 38 % of the retain answers turned into refusals).
Measured only at checks where the forget set is already forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from grin_ui.config import UnlearnConfig
from grin_ui.data import Record, encode
from grin_ui.generation import generate_ids
from grin_ui.prefix import openings_reused
from grin_ui.tokens import pad_id
from grin_ui.metrics import answer_hit

REFERENCES = ("holdout", "perturbed", "none")


MAX_REFERENCE = 16  # reference examples scored per check (a fixed sample: the check must stay cheap)


def _sample(records: list[Record], n: int = MAX_REFERENCE) -> list[Record]:
    """At most ``n`` records, an evenly spaced fixed sample (deterministic, no RNG)."""
    if len(records) <= n:
        return records
    return [records[round(i * (len(records) - 1) / (n - 1))] for i in range(n)]


def _mean_nll(model, items, pad: int) -> float:
    return _mean_nlls(model, [items], pad)[0]


def _mean_nlls(model, groups: list[list], pad: int, batch_size: int = 32) -> list[float]:
    """Per group of encoded examples, the mean over its examples of the per-token answer NLL (nan when none has
    a scored token); every group scored in the same batches."""
    from grin_ui.evaluate import score_items

    stats = iter(score_items(model, [it for g in groups for it in g], pad, batch_size))
    return [_mean_of([s.nll if s.n > 0 else None for s in (next(stats) for _ in g)]) for g in groups]


def _within(stats, whole, item) -> float | None:
    """The mean NLL per token of ``item``'s labelled tokens, from ``stats`` (grin_ui.evaluate.SeqStats) of
    ``whole``: the same token ids labelled on every answer token, a superset of ``item``'s labels. None when
    ``item`` has no labelled token."""
    from grin_ui.evaluate import SeqStats

    keep = torch.tensor([b != -100 for a, b in zip(whole.labels[1:], item.labels[1:]) if a != -100])
    return SeqStats(stats.logprobs[keep]).nll if keep.any() else None


def _mean_of(vals: list) -> float:
    """The mean of the values that are not None (nan when none is)."""
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def npo_weights(check, questions: list[str]) -> torch.Tensor:
    """answer_level: 1 for each of ``questions`` that the latest check of ``check`` (or None) chose to push with
    NPO, else 0."""
    pushed = (check.pushed if check is not None else None) or {}
    return torch.tensor([float(pushed.get(q, False)) for q in questions])


@dataclass
class ForgetCheck:
    """The stop-when-forgotten check for one run (module docstring). Call it with the model at a step."""

    tokenizer: object
    forget: list[Record]
    forget_items: list
    reference: str  # holdout | perturbed | none
    reference_items: list = field(default_factory=list)
    margin: float = 0.0
    hit_rate: float = 0.0
    tokens: int = 24
    greedy_always: bool = False  # confirm by generation at every check, not only once the level is reached
    retain_items: list = field(default_factory=list)
    retain: list = field(default_factory=list)  # the retain records of retain_items (greedy confirmation)
    keep_margin: float = -1.0  # < 0: no "kept" condition
    retain_base: float | None = None  # retain answers' NLL before unlearning (calibrate)
    retain_hits_base: int | None = None  # retain answers given greedily before unlearning (calibrate)
    answer_items: list = field(default_factory=list)  # answer_level: the forget answers, every token scored
    reference_answer_items: list = field(default_factory=list)  # answer_level: the reference answers, likewise
    pushed: dict | None = None  # answer_level: question -> pushed by the NPO term, from the latest check
    npo_phase: bool = False  # answer_level: a check found the forget set forgotten and kept but too likely
    level_auc: float = 0.6  # answer_level: the level is reached at a membership-inference AUC at most this
    reference_median: float | None = None  # answer_level: the reference answers' median NLL at the latest check
    checks: list[dict] = field(default_factory=list)

    @classmethod
    def build(cls, tokenizer, forget: list[Record], holdout: list[Record] | None, cfg: UnlearnConfig,
              max_tokens: int = 256, retain: list[Record] | None = None) -> "ForgetCheck":
        forget = [r for r in forget if r.is_qa] or list(forget)
        focus = cfg.focus_fact
        items = encode(forget, tokenizer, max_tokens, focus=focus).items
        if holdout:
            ref, ref_records = "holdout", _sample(list(holdout))
        else:
            wrong = [Record(question=r.question, answer=a, perturbed_answers=[r.answer, *r.perturbed_answers])
                     for r in forget if r.is_qa for a in r.perturbed_answers]
            ref, ref_records = ("perturbed", _sample(wrong)) if wrong else ("none", [])
        ref_items = encode(ref_records, tokenizer, max_tokens, focus=focus).items
        from grin_ui.objectives import USES_FORGET_REFERENCE, USES_REFUSAL

        keep = cfg.stop_keep_margin if retain else -1.0
        kept = [r for r in _sample(list(retain)) if r.is_qa] if retain and keep >= 0 else []
        r_items = encode(kept, tokenizer, max_tokens).items if kept else []
        level = cfg.uses_answer_level and ref != "none"
        check = cls(tokenizer, forget, items, ref, ref_items, cfg.stop_margin, cfg.stop_hit_rate,
                    cfg.stop_check_tokens, cfg.objective in USES_REFUSAL - USES_FORGET_REFERENCE or level,
                    r_items, kept, keep)
        if level:
            check.level_auc = cfg.level_auc
            check.answer_items = encode(forget, tokenizer, max_tokens).items
            check.reference_answer_items = encode(ref_records, tokenizer, max_tokens).items
        return check

    def _hits(self, model, records: list[Record], items) -> int:
        return sum(self._answered(model, records, items))

    def _answered(self, model, records: list[Record], items) -> list[bool]:
        gens = generate_ids(model, self.tokenizer, [it.input_ids[: it.prompt_len] for it in items], self.tokens, 16)
        return [answer_hit(g, r.answer, r.keywords) for g, r in zip(gens, records)]

    @torch.no_grad()
    def calibrate(self, model) -> None:
        """Record the retain answers' NLL with the model as it is now (call before noise and training)."""
        if self.retain_items:
            was_training = model.training
            model.eval()
            try:
                with openings_reused(model):  # the weights stay fixed during the check
                    self.retain_base = _mean_nll(model, self.retain_items, pad_id(self.tokenizer))
                    self.retain_hits_base = self._hits(model, self.retain, self.retain_items)
            finally:
                model.train(was_training)

    @torch.no_grad()
    def __call__(self, model, step: int) -> dict:
        was_training = model.training
        model.eval()
        try:
            with openings_reused(model):  # the weights stay fixed during the check
                pad = pad_id(self.tokenizer)
                whole = self._whole_answers(model) if self.answer_items else None
                if whole is None:
                    f_nll, r_nll = _mean_nlls(model, [self.forget_items, self.reference_items], pad)
                else:  # the fact's tokens are among the whole answers' (same ids): one pass gives both levels
                    f_nll, r_nll = (_mean_of([_within(*t) for t in zip(stats, wholes, items)])
                                    for stats, wholes, items in
                                    ((whole[0], self.answer_items, self.forget_items),
                                     (whole[1], self.reference_answer_items, self.reference_items)))
                r_nll = r_nll if self.reference_items else None
                reached = r_nll is None or f_nll >= r_nll - self.margin
                m = {"step": step, "forget_nll": f_nll, "reference_nll": r_nll, "level_reached": reached}
                stop = False
                if (reached or self.greedy_always) and all(r.is_qa for r in self.forget):
                    answered = self._answered(model, self.forget, self.forget_items)
                    rate = sum(answered) / len(self.forget_items)
                    m["hit_rate"] = rate
                    stop = rate <= self.hit_rate
                    if whole is not None:  # the level of the whole answers (what membership inference scores)
                        own = self._answer_level(whole, m)
                elif reached:
                    stop = r_nll is not None
                if stop and self.retain_items and self.retain_base is not None and self.keep_margin >= 0:
                    m["retain_nll"] = _mean_nll(model, self.retain_items, pad)
                    m["retain_nll_start"] = self.retain_base
                    stop = m["retain_nll"] <= self.retain_base + self.keep_margin
                    if stop and self.retain_hits_base is not None:
                        m["retain_hits"] = self._hits(model, self.retain, self.retain_items)
                        m["retain_hits_start"] = self.retain_hits_base
                        stop = m["retain_hits"] >= self.retain_hits_base - 1
                if self.answer_items and "answer_nll" in m:  # forgotten and kept, but still too likely: NPO from now on
                    self.npo_phase = self.npo_phase or (stop and not m["level_reached"])
                    if self.npo_phase:
                        level = self.reference_median
                        self.pushed = {r.question: bool(not a and n < level)
                                       for r, a, n in zip(self.forget, answered, own)}
                        m["pushed"] = sum(self.pushed.values())
                    stop = stop and m["level_reached"]
                m["stop"] = stop
        finally:
            model.train(was_training)
        self.checks.append(m)
        return m

    def _whole_answers(self, model) -> tuple[list, list]:
        """answer_level: the token log-probs of the forget and of the reference answers over every answer token,
        scored in one pass."""
        from grin_ui.evaluate import score_items

        stats = score_items(model, self.answer_items + self.reference_answer_items, pad_id(self.tokenizer), 32)
        return stats[: len(self.answer_items)], stats[len(self.answer_items):]

    def _answer_level(self, whole: tuple[list, list], m: dict) -> list[float]:
        """answer_level: from the whole answers' scores (:meth:`_whole_answers`), into ``m`` the forget and
        reference answers' mean NLL per token, the LOSS membership-inference AUC between them and whether it is at
        most ``level_auc`` (the level is reached). Returns the forget examples' own NLLs."""
        from grin_ui.metrics import auc

        own = [s.nll for s in whole[0]]
        ref = [s.nll for s in whole[1] if s.n > 0]
        self.reference_median = float(torch.tensor(ref).median())
        m["answer_nll"], m["reference_answer_nll"] = sum(own) / len(own), sum(ref) / len(ref)
        m["answer_auc"] = auc([-x for x in own], [-x for x in ref])
        m["level_reached"] = m["answer_auc"] <= self.level_auc
        return own

    def summary(self, stopped_at: int | None, budget: int, every: int) -> dict:
        """What the report records: the rule, the reference, every check and where the run stopped."""
        rule = "greedy answers gone" if self.greedy_always else "reference level reached, greedy answers gone"
        if self.answer_items:
            rule = ("greedy answers gone, then whole answers at the reference level: from the first check that finds "
                    "them gone (and kept) but too likely, NPO pushes each refused example still likelier than the "
                    "reference answers")
        if self.retain_base is not None and self.keep_margin >= 0:
            rule += (f", retain NLL within {self.keep_margin:g} nats of the start and at most one more retain answer "
                     "lost")
        return {"rule": f"stop when forgotten ({rule})", "reference": self.reference, "margin": self.margin,
                "retain_nll_start": self.retain_base, "retain_hits_start": self.retain_hits_base,
                "retain_sample": len(self.retain_items), "keep_margin": self.keep_margin,
                "hit_rate_target": self.hit_rate, "check_every": every, "budget_steps": budget,
                "stopped_at": stopped_at, "checks": list(self.checks)}
