"""The masked training loop (SPEC §3.5), shared by teaching (no mask) and unlearning (a GRIN mask).

    delta = train_masked(model, loss_fn, steps=20, masks=mask.masks, lr=1e-4)        # -> SparseDelta
    result = unlearn(model, tokenizer, forget, retain, mask, UnlearnConfig(), seed=0)  # -> UnlearnResult

Guarantees of a masked run:
  * only masked entries change; every unmasked entry stays bit-identical (updates are written with
    ``index_copy_`` at the masked flat indices only);
  * a tensor with no masked entry is frozen (requires_grad False), so its weight gradient is never computed; a
    linear weight whose mask is a few whole rows (the "row" scope) gets the gradient of those rows only, one with a
    small share of scattered entries the gradient of those entries only (grin_ui.rowgrad);
  * AdamW runs on flat buffers of the masked entries (:class:`MaskedAdamW`): optimizer state is 2 floats per masked
    entry (3 for bf16/fp16 models: plus an fp32 master copy, so small updates are not rounded away), gradient
    clipping and weight decay see the masked entries only;
  * cancellation (``cancel()`` true, or a set ``threading.Event``, checked before every step) and any error roll the
    model back bit-exactly to the state before the run; cancellation then raises :class:`Cancelled`;
  * deterministic for a seed on a given machine (fixed batch order, seeded RNG).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import torch

from grin_ui import cancel as cancel_flag
from grin_ui.config import OBJECTIVES as OBJECTIVE_NAMES
from grin_ui.config import RETAIN_LOSSES, UnlearnConfig
from grin_ui.data import Record, answer_token_ids, batches, collate, encode
from grin_ui.delta import SparseDelta
from grin_ui.errors import Cancelled, GrinError  # noqa: F401 - Cancelled re-exported (grin_ui.train.Cancelled)
from grin_ui.objectives import (OBJECTIVES, REFUSALS, USES_FORGET_REFERENCE, USES_REFUSAL, USES_RETAIN, StepBatch,
                                joint_step_batch, reference_sequence_logprobs, reference_topk)
from grin_ui.placement import input_device
from grin_ui.rowgrad import row_gradients
from grin_ui.stopping import ForgetCheck, npo_weights
from grin_ui.tokens import pad_id

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def is_cancelled(cancel) -> bool:
    """``cancel`` (a threading.Event or a callable) is set, or the current action was cancelled (grin_ui.cancel)."""
    if cancel_flag.requested():
        return True
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


class MaskedAdamW:
    """AdamW over the masked entries only.

    ``entries``: (param, idx) pairs; idx int64 flat indices of the masked entries, or None for a fully masked
    tensor. State m, v: float32 [len(idx)] per tensor. One step, for the gathered values w and gradients g:
        g ← g · min(1, max_grad_norm / ‖g_all‖₂)   (norm over all masked entries; skipped if max_grad_norm ≤ 0)
        w ← w − lr·wd·w;  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
        w ← w − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + 1e-8),   β = (0.9, 0.999)
    then w is scattered back with ``index_copy_``.

    fp32 master copies: for a parameter in bfloat16 / float16, w is a float32 *master* copy of its masked entries
    (taken when the optimizer is built, [len(idx)] per tensor), updated in float32 and written back rounded to the
    parameter's dtype after every step. Updates much smaller than the 16-bit spacing (at lr 1e-5 a bf16 weight of
    0.02 moves 1e-5 per step against a spacing of 1.2e-4) thus accumulate instead of being rounded away each step;
    the parameter always equals its master rounded. float32 parameters are updated in place (no master copy).
    """

    def __init__(self, entries: list[tuple[torch.nn.Parameter, torch.Tensor | None]], lr: float,
                 weight_decay: float = 0.0, max_grad_norm: float = 0.0):
        self.entries = entries
        self.lr, self.weight_decay, self.max_grad_norm = lr, weight_decay, max_grad_norm
        self.m = [torch.zeros(p.numel() if i is None else len(i), dtype=torch.float32, device=p.device)
                  for p, i in entries]
        self.v = [torch.zeros_like(m) for m in self.m]
        with torch.no_grad():
            self.master = [(p.detach().reshape(-1) if i is None else p.detach().reshape(-1)[i]).float().clone()
                           if p.dtype in (torch.bfloat16, torch.float16) else None for p, i in entries]
        self.t = 0

    def master_numel(self) -> int:
        """Number of float32 master values (masked entries of the 16-bit parameters; 0 for a float32 model)."""
        return sum(w.numel() for w in self.master if w is not None)

    def state_numel(self) -> int:
        """Number of float32 values of optimizer state: m and v (2 × masked entries) plus the master copies
        (:meth:`master_numel`: 1 × the masked entries of 16-bit parameters)."""
        return sum(m.numel() + v.numel() for m, v in zip(self.m, self.v)) + self.master_numel()

    @torch.no_grad()
    def step(self) -> float:
        """One update from the parameters' ``.grad``; returns the masked gradient norm before clipping."""
        grads = []
        for p, idx in self.entries:
            g = p.grad.view(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device, dtype=p.dtype)
            grads.append((g if idx is None else g[idx]).float())
        norm = torch.sqrt(sum((g * g).sum() for g in grads)) if grads else torch.tensor(0.0)
        scale = 1.0
        if self.max_grad_norm > 0 and float(norm) > self.max_grad_norm:
            scale = self.max_grad_norm / (float(norm) + 1e-6)
        self.t += 1
        b1, b2 = ADAM_BETAS
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for (p, idx), g, m, v, master in zip(self.entries, grads, self.m, self.v, self.master):
            if scale != 1.0:
                g.mul_(scale)
            flat = p.view(-1)
            w = master if master is not None else (flat if idx is None else flat[idx]).float()
            if self.weight_decay:
                w.mul_(1 - self.lr * self.weight_decay)
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            w.addcdiv_(m / c1, (v / c2).sqrt_().add_(ADAM_EPS), value=-self.lr)
            if idx is None:
                flat.copy_(w)
            else:
                flat.index_copy_(0, idx, w.to(p.dtype))
        return float(norm)


def _unpack(out):
    if isinstance(out, torch.Tensor):
        return out, float(out.detach()), None
    loss, f, r = out
    to_f = lambda x: None if x is None else float(x.detach() if isinstance(x, torch.Tensor) else x)  # noqa: E731
    return loss, to_f(f), to_f(r)


def train_masked(model: torch.nn.Module, loss_fn, steps: int, masks: dict[str, torch.Tensor] | None, lr: float,
                 weight_decay: float = 0.0, max_grad_norm: float = 1.0, seed: int = 0, progress=None, cancel=None,
                 *, originals: dict | None = None, history: list | None = None,
                 stats: dict | None = None, stop=None) -> SparseDelta | None:
    """Train ``model`` for ``steps`` steps of AdamW on ``loss_fn(step)``.

    loss_fn(step) returns a scalar loss tensor, or (loss, forget_value, retain_value).
    masks: name -> bool tensor of the parameter's shape: only those entries change (see the module docstring), and
    the result is the :class:`SparseDelta` from ``originals`` (a :meth:`SparseDelta.snapshot` taken earlier, e.g.
    before noise was added; default: taken now) to the final weights. masks None: every parameter is trainable
    (teaching) with ``torch.optim.AdamW`` and the result is None; a full copy of the weights is kept for rollback
    only when ``cancel`` is given.
    progress(step, steps, forget_value, retain_value) after each step (1-based); history: list that receives
    {step, forget_loss, retain_loss, loss, seconds} per step; stats: dict that receives optimizer_state_numel,
    trainable_tensors, frozen_tensors, masked_entries, steps_run, row_gradient_tensors and entry_gradient_tensors
    (masked linear weights whose gradient is computed for their selected rows / entries only: grin_ui.rowgrad).
    stop(step) -> bool, called after each step (1-based): True ends the run there (the steps are then a budget).
    Raises :class:`Cancelled` (model rolled back) when ``cancel`` fires, GrinError if the loss becomes NaN/inf.
    """
    if steps < 0:
        raise GrinError(f"The number of steps must be ≥ 0, got {steps}.")
    if not lr > 0:
        raise GrinError(f"The learning rate must be > 0, got {lr}.")
    params = dict(model.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    if masks is not None:
        unknown = [n for n in masks if n not in params]
        if unknown:
            raise KeyError(f"mask names not in the model: {unknown[:3]}")
        masks = {n: m for n, m in masks.items() if bool(m.any())}
        if originals is None:
            originals = SparseDelta.snapshot(model, masks)
        entries, names = [], []
        for n, m in masks.items():
            p = params[n]
            idx = None if bool(m.all()) else m.reshape(-1).nonzero().squeeze(1).to(p.device)
            entries.append((p, idx))
            names.append(n)
        opt = MaskedAdamW(entries, lr, weight_decay, max_grad_norm)
        trainable = set(names)
        state_numel = opt.state_numel()
        backup = None
    else:
        trainable = set(params)
        opt = torch.optim.AdamW(list(params.values()), lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS,
                                weight_decay=weight_decay, foreach=True)
        state_numel = 2 * sum(p.numel() for p in params.values())
        backup = {n: p.detach().clone() for n, p in params.items()} if cancel is not None else None
    if stats is not None:
        stats.update(optimizer_state_numel=state_numel, trainable_tensors=len(trainable),
                     frozen_tensors=len(params) - len(trainable),
                     masked_entries=sum(int(m.sum()) for m in masks.values()) if masks is not None else
                     sum(p.numel() for p in params.values()))

    def rollback():
        with torch.no_grad():
            if masks is not None:
                SparseDelta.capture(model, originals).undo(model)
            elif backup is not None:
                for n, p in params.items():
                    p.copy_(backup[n])

    for n, p in params.items():
        p.requires_grad_(n in trainable)
        p.grad = None
    model.train()
    try:
        with torch.random.fork_rng(devices=[]), row_gradients(model, masks or {}) as row_grad:
            if stats is not None:
                kinds = list(row_grad.values())
                stats["row_gradient_tensors"] = kinds.count("rows")
                stats["entry_gradient_tensors"] = kinds.count("entries")
            torch.manual_seed(seed)
            for step in range(steps):
                if is_cancelled(cancel):
                    rollback()
                    raise Cancelled(f"Cancelled at step {step} of {steps}; the model was restored.")
                t0 = time.perf_counter()
                loss, f, r = _unpack(loss_fn(step))
                if not math.isfinite(float(loss.detach())):
                    rollback()
                    raise GrinError(f"Training diverged at step {step + 1} (the loss became {float(loss.detach())}); "
                                    "lower the learning rate.")
                loss.backward()
                if masks is None:
                    if max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(list(params.values()), max_grad_norm)
                    opt.step()
                else:
                    opt.step()
                for p in params.values():
                    p.grad = None
                if history is not None:
                    history.append({"step": step + 1, "forget_loss": f, "retain_loss": r, "loss": float(loss.detach()),
                                    "seconds": time.perf_counter() - t0})
                if progress:
                    progress(step + 1, steps, f, r)
                if stop is not None and stop(step + 1):
                    break
    except BaseException:  # cancelled (here or by grin_ui.cancel.check in a stop check) or failed
        rollback()
        raise
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
            p.grad = None
        model.eval()
    if stats is not None:
        stats["steps_run"] = len(history) if history is not None else None
    if masks is None:
        return None
    steps_run = stats.get("steps_run") if stats is not None else None
    return SparseDelta.capture(model, originals, {"optimizer_state_numel": state_numel,
                                                  "steps": steps if steps_run is None else steps_run})


# ---------------------------------------------------------------------------------------------- unlearning


@dataclass
class UnlearnData:
    """Batches and π_ref quantities for an unlearning run, prepared once (before noise, so π_ref is the original
    model). Batch ``i`` of a step is ``step % len(...)``."""

    forget: list[dict]
    retain: list[dict]
    alt: list[dict] = field(default_factory=list)  # refusal answers to the forget questions (idk, flat)
    refusal_starts: torch.Tensor | None = None  # int64 [k]: first tokens of the refusals (retain_refusal_weight)
    forget_ref: list[torch.Tensor] = field(default_factory=list)  # npo
    retain_ref: list = field(default_factory=list)  # kl retain term
    forget_questions: list[list[str]] = field(default_factory=list)  # per forget batch, its questions (answer_level)

    def step_batch(self, step: int) -> StepBatch:
        i = step % len(self.forget)
        j = step % len(self.retain) if self.retain else None
        return StepBatch(
            forget=self.forget[i],
            retain=self.retain[j] if j is not None else None,
            alt=self.alt[i] if self.alt else None,
            refusal_starts=self.refusal_starts,
            forget_ref=self.forget_ref[i] if self.forget_ref else None,
            retain_ref=self.retain_ref[j] if self.retain_ref and j is not None else None,
        )


@dataclass
class UnlearnResult:
    delta: SparseDelta | None  # original -> final (None when cancelled)
    history: list[dict]  # per step: step, forget_loss, retain_loss, loss, seconds (+ "check" at check steps)
    cancelled: bool = False
    stats: dict = field(default_factory=dict)
    stopping: dict | None = None  # grin_ui.stopping.ForgetCheck.summary (None when the rule is off)


def check_unlearn_config(cfg: UnlearnConfig) -> None:
    if cfg.objective not in OBJECTIVE_NAMES:
        raise GrinError(f"Unknown objective '{cfg.objective}'; use one of {', '.join(OBJECTIVE_NAMES)}.")
    if cfg.retain_loss not in RETAIN_LOSSES:
        raise GrinError(f"Unknown retain loss '{cfg.retain_loss}'; use one of {', '.join(RETAIN_LOSSES)}.")
    if cfg.flat_form not in ("tv", "kl"):
        raise GrinError(f"Unknown FLAT form '{cfg.flat_form}'; use tv or kl.")
    if cfg.batch_size < 1:
        raise GrinError(f"The batch size must be ≥ 1, got {cfg.batch_size}.")
    if not cfg.retain_near >= 0:
        raise GrinError(f"retain_near must be ≥ 0, got {cfg.retain_near}.")
    if not cfg.retain_refusal_weight >= 0:
        raise GrinError(f"retain_refusal_weight must be ≥ 0, got {cfg.retain_refusal_weight}.")
    if not cfg.idk_npo_weight >= 0:
        raise GrinError(f"idk_npo_weight must be ≥ 0, got {cfg.idk_npo_weight}.")
    for name in ("npo_beta", "simnpo_beta"):
        if not getattr(cfg, name) > 0:
            raise GrinError(f"{name} must be > 0, got {getattr(cfg, name)}.")


def _shuffled(items: list, seed: int) -> list:
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    return [items[i] for i in order]


@torch.no_grad()
def question_states(model, tokenizer, records: list[Record], max_tokens: int = 256, batch: int = 16) -> torch.Tensor:
    """[n, hidden] unit vectors: the model's last hidden state at each question's last prompt token."""
    items = encode(records, tokenizer, max_tokens).items
    pad, device, out = pad_id(tokenizer), input_device(model), []
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        b = collate(chunk, pad)
        h = model.base_model(input_ids=b["input_ids"].to(device),  # the backbone: no vocabulary projection
                             attention_mask=b["attention_mask"].to(device)).last_hidden_state
        pos = torch.tensor([it.prompt_len - 1 for it in chunk], device=h.device)
        out.append(h[torch.arange(len(chunk), device=h.device), pos].float())
    return torch.nn.functional.normalize(torch.cat(out), dim=1).cpu()


def nearest_retain(model, tokenizer, forget: list[Record], retain: list[Record], k: int,
                   max_tokens: int = 256) -> list[int]:
    """Indices of the ``k`` retain records whose questions are most like a forget question (cosine of
    :func:`question_states`, the largest over the forget set)."""
    if k <= 0 or not retain:
        return []
    was_training = model.training
    model.eval()
    try:
        sim = question_states(model, tokenizer, retain, max_tokens) @ question_states(model, tokenizer, forget,
                                                                                     max_tokens).T
    finally:
        model.train(was_training)
    return sim.max(dim=1).values.topk(min(k, len(retain))).indices.tolist()


def prepare_unlearn(model, tokenizer, forget: list[Record], retain: list[Record], cfg: UnlearnConfig, seed: int = 0,
                    max_tokens: int = 256) -> UnlearnData:
    """Encode and batch the data (order shuffled once with ``seed``), draw the refusal answers, and compute the π_ref
    quantities the objective needs with the model as it is now. Retain and refusal answers end with the end-of-turn
    token (the model must keep ending its answers); forget answers do not (only their own tokens are pushed down).
    With ``cfg.retain_near`` > 0 the ``retain_near`` × |forget| retain examples nearest the forget questions
    (:func:`nearest_retain`) are in the retain set twice, so that each pass trains on them twice as often."""
    check_unlearn_config(cfg)
    if not forget:
        raise GrinError("Unlearning needs a forget set: it is empty.")
    uses_retain = USES_RETAIN[cfg.objective] and cfg.alpha != 0
    if uses_retain and not retain:
        raise GrinError(f"The '{cfg.objective}' objective has a retain term (alpha={cfg.alpha}) but the retain set "
                        "is empty: add retain data, set alpha to 0, or pick grad_ascent or flat.")
    device = input_device(model)
    pad = pad_id(tokenizer)
    forget = _shuffled(list(forget), seed)
    to_dev = lambda bs: [{k: v.to(device) for k, v in b.items()} for b in bs]  # noqa: E731
    data = UnlearnData(to_dev(batches(encode(forget, tokenizer, max_tokens, focus=cfg.focus_fact).items,
                                      cfg.batch_size, pad)), [])
    data.forget_questions = [[r.question for r in forget[i:i + cfg.batch_size]]
                             for i in range(0, len(forget), cfg.batch_size)]
    if uses_retain:
        retain = list(retain)
        if cfg.retain_near > 0:
            k = min(len(retain), round(cfg.retain_near * len(forget)))
            retain += [retain[j] for j in nearest_retain(model, tokenizer, forget, retain, k, max_tokens)]
        retain = _shuffled(retain, seed + 1)
        data.retain = to_dev(batches(encode(retain, tokenizer, max_tokens, add_end=True).items, cfg.batch_size, pad))
    if cfg.objective in USES_REFUSAL:
        if not all(r.is_qa for r in forget):
            raise GrinError(f"The '{cfg.objective}' objective needs question/answer forget data (it trains a "
                            "refusal answer to each question); raw-text examples have no question.")
        g = torch.Generator().manual_seed(seed + 2)
        picks = torch.randint(0, len(REFUSALS), (len(forget),), generator=g).tolist()
        alt = [Record(question=r.question, answer=REFUSALS[k]) for r, k in zip(forget, picks)]
        data.alt = to_dev(batches(encode(alt, tokenizer, max_tokens, add_end=True).items, cfg.batch_size, pad))
        if cfg.retain_refusal_weight and uses_retain:
            starts = sorted({ids[0] for ids in (answer_token_ids(tokenizer, a) for a in REFUSALS) if ids})
            data.refusal_starts = torch.tensor(starts, device=device)
    was_training = model.training
    model.eval()
    if cfg.objective in USES_FORGET_REFERENCE:
        data.forget_ref = reference_sequence_logprobs(model, data.forget)
    if uses_retain and cfg.retain_loss == "kl":
        data.retain_ref = reference_topk(model, data.retain)
    model.train(was_training)
    return data


def unlearn(model, tokenizer, forget: list[Record], retain: list[Record], mask, cfg: UnlearnConfig | None = None,
            seed: int = 0, progress=None, cancel=None, max_tokens: int = 256, *, originals: dict | None = None,
            data: UnlearnData | None = None, holdout: list[Record] | None = None,
            check=None) -> UnlearnResult:
    """Masked unlearning: ``cfg.steps`` AdamW steps on ``OBJECTIVES[cfg.objective]`` over the entries of ``mask``
    (a :class:`grin_ui.mask.Mask`). ``originals``: a snapshot of the masked entries taken before any change the
    delta should include (noise); ``data``: from :func:`prepare_unlearn` (default: prepared now, so π_ref is the
    model as passed in). progress(step, steps, forget_loss, retain_loss); ``forget_loss`` is the objective's forget
    term, ``retain_loss`` its retain term before α (None when it has none). A cancelled run restores the model to
    the state of ``originals`` (or before the call) and returns cancelled=True, delta None.
    With ``cfg.stop_when_forgotten`` a :class:`grin_ui.stopping.ForgetCheck` (``check``, or built here from the
    forget and ``holdout`` records) runs every ``cfg.stop_check_every`` steps and ends the run once the forget set is
    forgotten; the result's ``stopping`` records the checks."""
    cfg = cfg or UnlearnConfig()
    check_unlearn_config(cfg)
    if data is None:
        data = prepare_unlearn(model, tokenizer, forget, retain, cfg, seed, max_tokens)
    fn = OBJECTIVES[cfg.objective]
    history: list[dict] = []
    stats: dict = {}

    def loss_fn(step):
        b = data.step_batch(step)
        if check is not None and check.checks:  # the reference level the latest check measured (npo_hinge)
            b.level = check.checks[-1].get("reference_nll")
        if cfg.uses_answer_level:  # NPO only where a stop check asks for it (stopping)
            b.npo_weight = npo_weights(check, data.forget_questions[step % len(data.forget)])
            if not b.npo_weight.any():  # no NPO term: the forget answers stay out of the step's forward pass
                b.forget = b.forget_ref = None
        return fn(model, joint_step_batch(model, b, cfg), cfg)

    stopped_at: list[int] = []
    if cfg.stop_when_forgotten and check is None:
        check = ForgetCheck.build(tokenizer, forget, holdout, cfg, max_tokens, retain=retain)
        check.calibrate(model)
    every = max(1, cfg.stop_check_every)

    def stop(step):
        if check is None or (step % every and step != cfg.steps):
            return False
        m = check(model, step)
        if history:
            history[-1]["check"] = m
        if m["stop"]:
            stopped_at.append(step)
        return m["stop"]

    try:
        delta = train_masked(model, loss_fn, cfg.steps, mask.masks, cfg.lr, cfg.weight_decay, cfg.max_grad_norm,
                             seed, progress, cancel, originals=originals, history=history, stats=stats,
                             stop=stop if check is not None else None)
    except Cancelled:
        return UnlearnResult(None, history, True, stats)
    stopping = check.summary(stopped_at[0] if stopped_at else None, cfg.steps, every) if check is not None else None
    delta.meta.update({"objective": cfg.objective, "selector": mask.selector, "scope": mask.scope,
                       "sparsity": mask.sparsity, "selected": mask.selected, "seed": seed})
    return UnlearnResult(delta, history, False, stats, stopping)
