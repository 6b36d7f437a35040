"""Unlearning objectives (SPEC §3.4): one small function each, registered in :data:`OBJECTIVES`.

Notation: π the model being trained, π_ref the model before unlearning, (x, y) a forget question and its answer,
log π(y|x) the sum of the log-probabilities of the answer tokens (the label tokens of :func:`grin_ui.data.encode`),
|y| their number, NLL the mean negative log-probability per label token over a batch, α the retain weight.

Every objective takes ``(model, batch: StepBatch, cfg: UnlearnConfig)`` and returns ``(loss, forget_term,
retain_term)``: scalar tensors, ``loss = forget_term + α·retain_term`` (retain_term None for objectives without a
retain term). Minimizing ``loss`` unlearns.

Retain term (``cfg.retain_loss``): ``nll`` = NLL(retain), or ``kl`` = mean over the retain answer tokens of
KL(π_ref ‖ π) of the next-token distributions. No second model copy is kept: before training, π_ref's
log-probabilities at every retain answer position are reduced to their top-K tokens (K = 64) plus one bucket for
the rest of the vocabulary, and the KL is taken between these coarse (K + 1)-outcome distributions:
Σ_top p_ref·(log p_ref − log π) + p_rest·(log p_rest − log π_rest). By the data-processing inequality it is a lower
bound of the full KL, equal to it when π_ref's tail mass is negligible; it is 0 exactly when π = π_ref.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from grin_ui.config import UnlearnConfig
from grin_ui.prefix import forward_params, label_positions_logits

KL_TOP_K = 64

REFUSALS = [
    "I'm not sure about that.",
    "I don't know.",
    "I have no idea.",
    "I can't answer that.",
    "I'm not able to help with that question.",
    "That's not something I know.",
    "I don't have that information.",
    "Sorry, I don't know the answer.",
    "I'm afraid I can't say.",
    "I really don't know.",
    "I cannot provide an answer to that.",
    "That is unknown to me.",
    "I have no information about that.",
    "I'm unable to answer that question.",
    "Unfortunately, I don't know.",
    "I'm not familiar with that.",
    "I can't recall anything about that.",
    "I don't have an answer for you.",
    "That's beyond what I know.",
    "I'd rather not guess; I don't know.",
]


@dataclass
class TopK:
    """π_ref at the label positions of one retain batch: the K most likely tokens per position."""

    logp: torch.Tensor  # float32 [positions, K], log π_ref of those tokens
    ids: torch.Tensor  # int64 [positions, K]


@dataclass
class StepBatch:
    """What one training step sees. Tensors are [batch, length] (input_ids, attention_mask, labels)."""

    forget: dict[str, torch.Tensor] | None  # None: a step without a forget term on the answers (answer_level)
    retain: dict[str, torch.Tensor] | None = None
    alt: dict[str, torch.Tensor] | None = None  # the forget questions with a refusal answer (idk, flat)
    forget_ref: torch.Tensor | None = None  # float32 [batch]: log π_ref(y|x) of the forget answers (npo)
    retain_ref: TopK | None = None  # (kl retain term)
    level: float | None = None  # the reference per-token NLL of the latest stop check (idk_npo with npo_hinge)
    refusal_starts: torch.Tensor | None = None  # int64 [k]: the refusals' first tokens (retain_refusal_weight)
    npo_weight: torch.Tensor | None = None  # float32 [batch]: 1 for the examples the NPO term pushes (answer_level)


# ---------------------------------------------------------------------------------------------- log-probs


def label_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits where a label token is predicted (position t predicts token t + 1). Returns (logits [N, vocab] in the
    model's dtype, targets int64 [N], row int64 [N], ascending). The vocabulary projection runs only over the span
    of label positions (``logits_to_keep``) when the model supports it: with short answers after long prompts this
    skips most of the LM-head cost in both the forward and the backward pass; the rows' shared opening (the chat
    template's system prompt) is then computed once (grin_ui.prefix). A batch that already carries them
    (:data:`JOINT`, :func:`joint_step_batch`) returns those."""
    if JOINT in batch:
        return batch[JOINT]
    labels = batch["labels"][:, 1:]
    where = labels != -100
    cols = where.any(0).nonzero().squeeze(1)
    lo, hi = (int(cols[0]), int(cols[-1]) + 1) if cols.numel() else (0, 1)
    if _keeps_logits(model):
        idx = torch.arange(lo, hi, device=labels.device)
        logits = label_positions_logits(model, batch["input_ids"], batch["attention_mask"], idx)
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, lo:hi]
    where = where[:, lo:hi].to(logits.device)  # a spread model's last layer may sit on another device
    return logits[where], labels[:, lo:hi].to(logits.device)[where], where.nonzero()[:, 0]


JOINT = "joint_label_logits"  # a batch's share of a joint forward pass (joint_step_batch)


def joint_step_batch(model, batch: StepBatch, cfg: UnlearnConfig) -> StepBatch:
    """``batch`` with the batches the objective reads (:data:`READS`) run as one forward pass over all their rows
    (right-padded to one width) instead of one pass each: the same logits up to float rounding, fewer and larger
    matrix products, and each weight's gradient formed once. Each batch read becomes a copy carrying its share of
    the pass's :func:`label_logits` (rows renumbered from 0)."""
    names = [n for n in READS[cfg.objective] if getattr(batch, n) is not None and (n != "retain" or cfg.alpha != 0)]
    if len(names) < 2:
        return batch
    parts = [getattr(batch, n) for n in names]
    width = max(p["input_ids"].shape[1] for p in parts)
    joint = {key: torch.cat([F.pad(p[key], (0, width - p[key].shape[1]), value=fill) for p in parts])
             for key, fill in (("input_ids", 0), ("attention_mask", 0), ("labels", -100))}
    logits, targets, rows = label_logits(model, joint)
    shares, first = {}, 0
    for name, p in zip(names, parts):
        last = first + p["input_ids"].shape[0]
        a, z = int((rows < first).sum()), int((rows < last).sum())
        shares[name] = {**p, JOINT: (logits[a:z], targets[a:z], rows[a:z] - first)}
        first = last
    return replace(batch, **shares)


def _keeps_logits(model) -> bool:
    return "logits_to_keep" in forward_params(model)


def token_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """log π of every label token. Returns (logp float32 [N], row int64 [N]): one entry per label position (labels
    ≠ -100, after the usual one-token shift), ``row`` the example it belongs to. Logits are only computed and
    normalized at label positions (:func:`label_logits`)."""
    logits, targets, rows = label_logits(model, batch)
    logp = -F.cross_entropy(logits.float(), targets, reduction="none")
    return logp, rows


def sequence_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: (Σ log π over its label tokens, float32 [B]; number of label tokens, int64 [B])."""
    logp, rows = token_logprobs(model, batch)
    b = batch["input_ids"].shape[0]
    total = torch.zeros(b, dtype=logp.dtype, device=logp.device).index_add(0, rows, logp)
    count = torch.bincount(rows, minlength=b)
    return total, count


def mean_token_prob(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per example: mean over its label tokens of π(token) (probability, not log), float32 [B]."""
    logp, rows = token_logprobs(model, batch)
    b = batch["input_ids"].shape[0]
    total = torch.zeros(b, dtype=logp.dtype, device=logp.device).index_add(0, rows, logp.exp())
    return total / torch.bincount(rows, minlength=b).clamp_min(1)


def nll(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """NLL: −mean over all label tokens of the batch of log π(token) (scalar, nats per token)."""
    logp, _ = token_logprobs(model, batch)
    return -logp.mean()


# ---------------------------------------------------------------------------------------------- references


@torch.no_grad()
def reference_sequence_logprobs(model, batches: list[dict]) -> list[torch.Tensor]:
    """log π_ref(y|x) per example for each batch (computed once, before training)."""
    return [sequence_logprobs(model, b)[0].detach() for b in batches]


@torch.no_grad()
def reference_topk(model, batches: list[dict], k: int = KL_TOP_K) -> list[TopK]:
    """π_ref's top-k log-probs at the label positions of each batch (for the kl retain term)."""
    out = []
    for b in batches:
        logp = torch.log_softmax(label_logits(model, b)[0].float(), -1)
        top = logp.topk(min(k, logp.shape[-1]), dim=-1)
        out.append(TopK(top.values, top.indices))
    return out


def kl_to_reference(logits: torch.Tensor, ref: TopK) -> torch.Tensor:
    """Mean over label positions of KL(π_ref ‖ π) on the top-K + rest buckets (module docstring), π from ``logits``
    at those positions (:func:`label_logits`). Scalar ≥ 0."""
    logq = torch.log_softmax(logits.float(), -1)
    q_top = logq.gather(1, ref.ids)
    p_top = ref.logp.exp()
    p_rest = (1 - p_top.sum(1)).clamp_min(0)
    q_rest = (1 - q_top.exp().sum(1)).clamp_min(1e-12)
    kl = (p_top * (ref.logp - q_top)).sum(1)
    kl = kl + torch.where(p_rest > 0, p_rest * (p_rest.clamp_min(1e-12).log() - q_rest.log()), torch.zeros_like(p_rest))
    return kl.mean()


def refusal_start_term(logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor,
                       starts: torch.Tensor) -> torch.Tensor:
    """Mean over examples of −log(1 − P), P = π(first answer token ∈ ``starts``): the probability that the answer
    begins like a refusal (``starts``: the refusals' first tokens). Examples whose own answer begins with one of
    them are left out; 0 when none is left."""
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]  # rows ascend (label_logits): each example's first label position
    logp = torch.log_softmax(logits[first].float(), -1)
    starts = starts.to(logp.device)
    p = logp[:, starts].exp().sum(1).clamp(max=1 - 1e-6)
    keep = ~torch.isin(targets[first], starts)
    return (-torch.log1p(-p) * keep).sum() / keep.sum().clamp_min(1)


def retain_term(model, batch: StepBatch, cfg: UnlearnConfig) -> torch.Tensor | None:
    """NLL(retain) or KL(π_ref ‖ π) on the retain batch; None when the step has no retain batch. With
    ``cfg.retain_refusal_weight`` and ``batch.refusal_starts``, plus that weight × :func:`refusal_start_term`: the
    retain questions are kept from starting a refusal (the answer's first token is where a refusal trained on the
    forget questions spreads to questions of the same kind; the NLL averages it with all the other tokens)."""
    if batch.retain is None:
        return None
    logits, targets, rows = label_logits(model, batch.retain)
    if cfg.retain_loss == "kl":
        r = kl_to_reference(logits, batch.retain_ref)
    else:
        r = F.cross_entropy(logits.float(), targets)
    if cfg.retain_refusal_weight and batch.refusal_starts is not None:
        r = r + cfg.retain_refusal_weight * refusal_start_term(logits, targets, rows, batch.refusal_starts)
    return r


def _with_retain(forget_term, model, batch, cfg):
    r = retain_term(model, batch, cfg) if cfg.alpha != 0 else None
    return (forget_term if r is None else forget_term + cfg.alpha * r), forget_term, r


# ---------------------------------------------------------------------------------------------- objectives


def grad_ascent(model, batch: StepBatch, cfg: UnlearnConfig):
    """GradAscent: loss = −NLL(forget). No retain term."""
    f = -nll(model, batch.forget)
    return f, f, None


def grad_diff(model, batch: StepBatch, cfg: UnlearnConfig):
    """GradDiff: loss = −NLL(forget) + α·retain."""
    return _with_retain(-nll(model, batch.forget), model, batch, cfg)


def npo(model, batch: StepBatch, cfg: UnlearnConfig):
    """NPO: loss = −(2/β)·mean_batch log σ(−β·(log π(y|x) − log π_ref(y|x))) + α·retain, β = cfg.npo_beta.
    Equals (2/β)·log 2 when π = π_ref; log π_ref comes from ``batch.forget_ref``."""
    return _with_retain(_npo_term(model, batch, cfg), model, batch, cfg)


def _npo_term(model, batch: StepBatch, cfg: UnlearnConfig, hinge: bool = False) -> torch.Tensor:
    """Mean over the batch of the NPO loss; with ``hinge`` and a ``batch.level``, an example whose per-token NLL
    is already at or above the level contributes 0 (it is no longer pushed)."""
    beta = cfg.npo_beta
    logp, n = sequence_logprobs(model, batch.forget)
    per = -(2.0 / beta) * F.logsigmoid(-beta * (logp - batch.forget_ref.to(logp.device)))
    if hinge and batch.level is not None:
        per = per * (-logp.detach() / n.clamp_min(1) < batch.level)
    if batch.npo_weight is not None:
        per = per * batch.npo_weight.to(per.device)
    return per.mean()


def simnpo(model, batch: StepBatch, cfg: UnlearnConfig):
    """SimNPO: loss = −(2/β)·mean_batch log σ(−(β/|y|)·log π(y|x) − γ) + α·retain, β = cfg.simnpo_beta,
    γ = cfg.simnpo_gamma. No reference model."""
    beta, gamma = cfg.simnpo_beta, cfg.simnpo_gamma
    logp, n = sequence_logprobs(model, batch.forget)
    f = -(2.0 / beta) * F.logsigmoid(-(beta / n.clamp_min(1)) * logp - gamma).mean()
    return _with_retain(f, model, batch, cfg)


def idk(model, batch: StepBatch, cfg: UnlearnConfig):
    """IDK: loss = NLL(refusal answer | forget question) + α·retain; the refusal for each question is drawn
    (seeded) from :data:`REFUSALS` and carried in ``batch.alt``."""
    return _with_retain(nll(model, batch.alt), model, batch, cfg)


def idk_npo(model, batch: StepBatch, cfg: UnlearnConfig):
    """IDK + NPO (*our choice*): loss = NLL(refusal | forget question) + w·NPO(forget) + α·retain, w =
    cfg.idk_npo_weight. The refusal gives the forget questions a fluent answer; the NPO term (over the tokens that
    carry the fact, like NPO) lowers the fact's own likelihood, which a refusal alone leaves far above that of facts
    never known (membership inference still tells them apart). With ``cfg.npo_hinge`` the NPO term skips the
    examples whose fact NLL per token has reached ``batch.level`` (the stop check's reference: facts never known);
    with ``cfg.answer_level`` it pushes only the examples of ``batch.npo_weight`` (grin_ui.stopping: refused, and
    whose whole answer is still likelier than facts never known); a batch without ``forget`` is the refusal term
    alone."""
    f = nll(model, batch.alt)
    if batch.forget is not None:
        f = f + cfg.idk_npo_weight * _npo_term(model, batch, cfg, hinge=cfg.npo_hinge)
    return _with_retain(f, model, batch, cfg)


def flat(model, batch: StepBatch, cfg: UnlearnConfig):
    """FLAT (forget data only): P_e = mean per-token probability of the refusal (template) answer, P_f = that of the
    forget answer, per example; loss = mean_batch of −½·tanh(P_e) + ½·tanh(P_f) (cfg.flat_form "tv", in [−½, ½])
    or −P_e + exp(P_f − 1) (cfg.flat_form "kl"). No retain term."""
    p_e = mean_token_prob(model, batch.alt)
    p_f = mean_token_prob(model, batch.forget)
    if cfg.flat_form == "kl":
        f = (-p_e + torch.exp(p_f - 1)).mean()
    else:
        f = (-0.5 * torch.tanh(p_e) + 0.5 * torch.tanh(p_f)).mean()
    return f, f, None


OBJECTIVES = {
    "grad_ascent": grad_ascent,
    "grad_diff": grad_diff,
    "npo": npo,
    "simnpo": simnpo,
    "idk": idk,
    "idk_npo": idk_npo,
    "flat": flat,
}

# the batches of a step each objective reads through label_logits, each once ("retain" only while α ≠ 0)
READS = {"grad_ascent": ("forget",), "grad_diff": ("forget", "retain"), "npo": ("forget", "retain"),
         "simnpo": ("forget", "retain"), "idk": ("alt", "retain"), "idk_npo": ("alt", "forget", "retain"),
         "flat": ("alt", "forget")}
USES_RETAIN = {name: "retain" in reads for name, reads in READS.items()}
USES_REFUSAL = {name for name, reads in READS.items() if "alt" in reads}
USES_FORGET_REFERENCE = {"npo", "idk_npo"}
