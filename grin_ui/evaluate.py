"""Run the §4 metrics over data sets: batched scoring passes, batched greedy generation, aggregates.

    from grin_ui.evaluate import evaluate_sets
    result = evaluate_sets(lm.model, lm.tokenizer, {"forget": f, "retain": r, "holdout": h})
    result["forget"]["answer_hit_rate"], result["mia"]["loss_auc"], result["utility"]["mc_accuracy"]

Every forward pass is batched (right padding + attention mask, sequences sorted by length); generation is batched
greedy decoding with left padding and the KV cache (:func:`grin_ui.generation.generate_ids`). Answers are scored on
their own tokens only: the chat template's end-of-turn token after the answer is *not* scored (SPEC §4).
The result is plain JSON (dicts, lists, floats, ints, strings).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from grin_ui import cancel
from grin_ui import metrics as M
from grin_ui.config import EvalConfig
from grin_ui.data import EncodedExample, Record, collate, encode
from grin_ui.errors import GrinError
from grin_ui.examples import assets_dir
from grin_ui.fluency import answer_nll, fluency_summary, gibberish_threshold, loops
from grin_ui.generation import generate_details
from grin_ui.objectives import label_logits
from grin_ui.placement import input_device
from grin_ui.prefix import can_share_prompts, openings_reused, shared_prompt_logprobs
from grin_ui.tokens import pad_id

MIA_ATTACKS = ("loss", "zlib", "mink", "minkpp")


# ---------------------------------------------------------------------------------------------- scoring


@dataclass
class SeqStats:
    """Per-token statistics of one example's scored tokens (the answer for Q/A data, all tokens for raw text).

    logprobs: float32 [n], log p(x_t | x_<t) in nats.
    mu, sigma: float32 [n] or None, mean and standard deviation of log p(z | x_<t) for z ~ p(· | x_<t) (Min-K %++).
    """

    logprobs: torch.Tensor
    mu: torch.Tensor | None = None
    sigma: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return int(self.logprobs.numel())

    @property
    def nll_sum(self) -> float:
        """Total NLL over the scored tokens (nats)."""
        return float(-self.logprobs.double().sum())

    @property
    def nll(self) -> float:
        """Mean NLL per scored token (nats)."""
        return self.nll_sum / max(self.n, 1)

    @property
    def prob(self) -> float:
        """Length-normalized probability exp(−nll) = P(x_scored | prefix)^(1/n)."""
        return float(torch.exp(torch.tensor(-self.nll, dtype=torch.float64)))


def context_length(model) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def _token_limit(model, max_tokens: int) -> int:
    ctx = context_length(model)
    return min(max_tokens, ctx) if ctx else max_tokens


@torch.inference_mode()
def score_items(
    model, items: Sequence[EncodedExample], pad_id: int, batch_size: int = 8, with_distribution: bool = False
) -> list[SeqStats]:
    """Log-probs of every labelled token of every item, in input order. Items are sorted by length and scored in
    right-padded batches of ``batch_size``. ``with_distribution`` also returns μ_t, σ_t of the model's next-token
    log-prob distribution at each scored position (one extra [n_scored, vocab] pass, no extra forward)."""
    device = input_device(model)
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    out: list[SeqStats | None] = [None] * len(items)
    for start in range(0, len(order), batch_size):
        cancel.check()
        idx = order[start : start + batch_size]
        batch = collate([items[i] for i in idx], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits, targets, _ = label_logits(model, batch)
        scored = batch["labels"][:, 1:] != -100
        lp_all = torch.log_softmax(logits.float(), dim=-1)  # [n_scored_in_batch, vocab]
        lp = lp_all.gather(1, targets.unsqueeze(1)).squeeze(1)
        mu = sigma = None
        if with_distribution:
            p = lp_all.exp()
            mu = (p * lp_all).sum(-1)
            sigma = ((p * lp_all.square()).sum(-1) - mu.square()).clamp_min(0).sqrt()
        counts = scored.sum(1).tolist()
        offset = 0
        for row, i in enumerate(idx):
            sl = slice(offset, offset + counts[row])
            out[i] = SeqStats(
                lp[sl].cpu(), None if mu is None else mu[sl].cpu(), None if sigma is None else sigma[sl].cpu()
            )
            offset += counts[row]
    return out  # type: ignore[return-value]


def sequence_stats(
    model, tokenizer, records: Sequence[Record], batch_size: int = 8, max_tokens: int = 256,
    with_distribution: bool = True,
) -> list[SeqStats]:
    """Per-example token log-probs of the records' answers (or whole raw texts), plus μ_t/σ_t for Min-K %++."""
    enc = encode(list(records), tokenizer, _token_limit(model, max_tokens), add_end=False)
    return score_items(model, enc.items, pad_id(tokenizer), batch_size, with_distribution)


# ---------------------------------------------------------------------------------------------- one set


def _truth_ratios(model, tokenizer, records: Sequence[Record], cfg: EvalConfig, limit: int) -> list[float | None]:
    """Per record truth ratio R (None where the record has no paraphrased or no perturbed answer). A question's
    paraphrased and perturbed answers share its prompt, which runs once (grin_ui.prefix.shared_prompt_logprobs)."""
    extra: list[Record] = []
    spans: list[tuple[int, int] | None] = []
    for r in records:
        if r.is_qa and r.paraphrased_answer and r.perturbed_answers:
            spans.append((len(extra), len(r.perturbed_answers)))
            extra.append(Record(question=r.question, answer=r.paraphrased_answer))
            extra.extend(Record(question=r.question, answer=a) for a in r.perturbed_answers)
        else:
            spans.append(None)
    if not extra:
        return [None] * len(records)
    enc = encode(extra, tokenizer, limit, add_end=False)
    if can_share_prompts(model):
        st = [SeqStats(lp) for lp in shared_prompt_logprobs(model, enc.items, pad_id(tokenizer))]
    else:
        st = score_items(model, enc.items, pad_id(tokenizer), cfg.batch_size)
    out: list[float | None] = []
    for span in spans:
        if span is None:
            out.append(None)
            continue
        first, n_pert = span
        out.append(M.truth_ratio([s.prob for s in st[first + 1 : first + 1 + n_pert]], st[first].prob))
    return out


def _mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else float("nan")


def _generates(name: str, cfg: EvalConfig) -> bool:
    return name != "holdout" or cfg.generate_holdout


def _split(values: list, sizes: list[int]) -> list[list]:
    """``values`` cut into consecutive pieces of ``sizes``."""
    out, at = [], 0
    for n in sizes:
        out.append(values[at : at + n])
        at += n
    return out


def _evaluate_set(tokenizer, name: str, records: list[Record], enc, cfg: EvalConfig, stats: list, gens: list,
                  ratios: list):
    """One set's metrics from the passes :func:`evaluate_sets` runs once over every set: ``stats`` (answer
    scores), ``gens`` (None per record where not generated) and ``ratios``."""
    examples = []
    for r, it, st, g, tr in zip(records, enc.items, stats, gens, ratios):
        reference = r.answer if r.is_qa else it.answer
        ex = {
            "question": r.question if r.is_qa else tokenizer.decode(it.input_ids[: it.prompt_len],
                                                                    skip_special_tokens=True),
            "reference": reference,
            "answer_prob": st.prob,
            "nll": st.nll,
            "tokens": st.n,
        }
        if g is not None:
            ex.update(generation=g.text, hit=M.answer_hit(g.text, reference, r.keywords),
                      rougeL_recall=M.rouge_l_recall(g.text, reference), finished=g.finished, loop=loops(g.text))
        if tr is not None:
            ex["truth_ratio"] = tr
        examples.append(ex)
    result = {"n": len(records)}
    if gens[0] is not None:
        result.update(answer_hit_rate=_mean(float(e["hit"]) for e in examples),
                      rougeL_recall=_mean(e["rougeL_recall"] for e in examples))
    result.update(answer_prob=_mean(e["answer_prob"] for e in examples), nll=_mean(e["nll"] for e in examples))
    if gens[0] is not None:
        result["fluency"] = fluency_summary([g.finished for g in gens], [g.text for g in gens])
    trs = [t for t in ratios if t is not None]
    if trs:
        result["truth_ratio"] = M.truth_ratio_forget(trs) if name == "forget" else M.truth_ratio_other(trs)
        result["truth_ratio_kind"] = "mean min(R, 1/R)" if name == "forget" else "mean max(0, 1 - R)"
        result["truth_ratio_n"] = len(trs)
    if enc.warnings:
        result["warnings"] = enc.warnings
    limit_n = cfg.max_listed_examples
    result["examples"] = examples if limit_n is None else examples[:limit_n]
    return result


FLUENCY_SETS = ("forget", "retain", "neighbours", "holdout")


def add_gibberish(model, tokenizer, original_eval: dict, *evals: dict, batch_size: int = 16) -> float:
    """Score the generations of ``original_eval`` and of every other evaluation in ``evals`` under ``model`` — which
    must hold the ORIGINAL weights — and add the gibberish measures (:mod:`grin_ui.fluency`): per example
    ``gibberish_nll``, per set ``fluency.gibberish_rate`` / ``gibberish_nll`` / ``gibberish_threshold``. The
    threshold is calibrated on the original model's own answers over all sets. Needs every example listed
    (``max_listed_examples`` None); examples already scored are not scored again. Returns the threshold."""

    def score(ev: dict) -> None:
        for name in FLUENCY_SETS:
            exs = [e for e in ev.get(name, {}).get("examples") or [] if "generation" in e and "gibberish_nll" not in e]
            qs = [e["question"] for e in exs]
            for e, v in zip(exs, answer_nll(model, tokenizer, qs, [e["generation"] for e in exs], batch_size)):
                e["gibberish_nll"] = v

    with openings_reused(model):  # one model state throughout: the prompt openings' keys and values are reused
        score(original_eval)
        for ev in evals:
            score(ev)
    own = [e.get("gibberish_nll") for name in FLUENCY_SETS for e in original_eval.get(name, {}).get("examples", [])]
    cut = gibberish_threshold(own)
    for ev in (original_eval, *evals):
        for name in FLUENCY_SETS:
            exs = [e for e in ev.get(name, {}).get("examples") or [] if "generation" in e]
            if exs:
                ev[name]["fluency"] = {**ev[name].get("fluency", {}), **fluency_summary(
                    [e.get("finished", True) for e in exs], [e["generation"] for e in exs],
                    [e.get("gibberish_nll") for e in exs], cut)}
    return cut


def _mia(member: list[SeqStats], member_texts: list[str], non: list[SeqStats], non_texts: list[str], k: float):
    def scores(stats: list[SeqStats], texts: list[str]) -> dict[str, list[float]]:
        kept = [(s, t) for s, t in zip(stats, texts) if s.n > 0]
        return {
            "loss": [-s.nll for s, _ in kept],
            "zlib": [-M.zlib_score(s.nll, t) for s, t in kept],
            "mink": [M.min_k(s.logprobs.tolist(), k) for s, _ in kept],
            "minkpp": [M.min_k_plus_plus(s.logprobs.tolist(), s.mu.tolist(), s.sigma.tolist(), k) for s, _ in kept],
        }

    m, n = scores(member, member_texts), scores(non, non_texts)
    out = {f"{a}_auc": M.auc(m[a], n[a]) for a in MIA_ATTACKS}
    out["score"] = M.mia_score(out["loss_auc"])
    out["score_from"] = "loss_auc"
    out["n_member"], out["n_nonmember"] = len(m["loss"]), len(n["loss"])
    return out


# ---------------------------------------------------------------------------------------------- utility


def utility_dir() -> Path:
    return assets_dir() / "utility"


def load_general_text() -> list[str]:
    """The built-in general-text sample: one passage per non-empty line of ``assets/utility/general.txt``."""
    path = utility_dir() / "general.txt"
    if not path.is_file():
        raise GrinError("The built-in utility text (assets/utility/general.txt) is missing: reinstall grin-ui or set "
                        "GRIN_UI_ASSETS.")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_multiple_choice() -> list[dict]:
    """The built-in multiple-choice set: ``assets/utility/multiple_choice.jsonl`` rows {question, choices, answer}."""
    path = utility_dir() / "multiple_choice.jsonl"
    if not path.is_file():
        raise GrinError("The built-in multiple-choice set (assets/utility/multiple_choice.jsonl) is missing: "
                        "reinstall grin-ui or set GRIN_UI_ASSETS.")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not (isinstance(row.get("choices"), list) and 0 <= row.get("answer", -1) < len(row["choices"])):
            raise GrinError(f"{path.name}, line {n}: needs 'choices' (a list) and 'answer' (an index into it).")
        rows.append(row)
    return rows


def perplexity(model, tokenizer, texts: Sequence[str], batch_size: int = 8, max_tokens: int = 256) -> tuple[float, int]:
    """exp(total NLL / total predicted tokens) over the texts, each scored on its own (every token after the first).
    Returns (perplexity, number of predicted tokens)."""
    stats = sequence_stats(model, tokenizer, [Record(text=t) for t in texts], batch_size, max_tokens, False)
    total = sum(s.nll_sum for s in stats)
    count = sum(s.n for s in stats)
    return float(torch.exp(torch.tensor(total / max(count, 1), dtype=torch.float64))), count


def choice_logprobs(model, tokenizer, rows: Sequence[dict], batch_size: int = 8) -> list[list[float]]:
    """Log-likelihood of each choice as the answer to its question: [[log p(choice_j | prompt) summed over the
    choice's tokens, nats] per row] — each (question, choice) pair encoded as a Q/A record; the question's prompt
    is run once and shared by its choices (grin_ui.prefix.shared_prompt_logprobs) where the model allows it."""
    recs = [Record(question=row["question"], answer=str(c)) for row in rows for c in row["choices"]]
    if not recs:
        return [[] for _ in rows]
    items = encode(recs, tokenizer, 10**9, add_end=False).items
    if can_share_prompts(model):
        lps = shared_prompt_logprobs(model, items, pad_id(tokenizer), max_rows=4 * batch_size)
    else:
        lps = [s.logprobs for s in score_items(model, items, pad_id(tokenizer), batch_size)]
    it = iter(float(lp.sum()) for lp in lps)
    return [[next(it) for _ in row["choices"]] for row in rows]


def mc_accuracy(model, tokenizer, rows: Sequence[dict], batch_size: int = 8) -> float:
    """Multiple-choice accuracy by option log-likelihood: each choice is scored as the answer to the question (same
    prompt format as the Q/A data); the prediction is the choice with the highest total log-likelihood
    log p(choice | prompt) (lm-eval-harness "acc"; not length-normalized)."""
    if not rows:
        return float("nan")
    scores = choice_logprobs(model, tokenizer, rows, batch_size)
    hits = [max(range(len(s)), key=s.__getitem__) == row["answer"] for s, row in zip(scores, rows)]
    return sum(hits) / len(rows)


def utility_metrics(model, tokenizer, cfg: EvalConfig | None = None) -> dict:
    """Perplexity on the built-in general text and accuracy on the built-in multiple-choice set."""
    cfg = cfg or EvalConfig()
    limit = _token_limit(model, cfg.max_tokens)
    texts, rows = load_general_text(), load_multiple_choice()
    ppl, n_tokens = perplexity(model, tokenizer, texts, cfg.batch_size, limit)
    return {
        "perplexity": ppl,
        "perplexity_tokens": n_tokens,
        "mc_accuracy": mc_accuracy(model, tokenizer, rows, cfg.batch_size),
        "mc_n": len(rows),
    }


# ---------------------------------------------------------------------------------------------- everything


def _semeval(out: dict) -> dict | None:
    if "forget" not in out or "retain" not in out:
        return None
    f, r = out["forget"], out["retain"]
    agg = M.semeval_aggregate(f["rougeL_recall"], f["answer_hit_rate"], r["rougeL_recall"], r["answer_hit_rate"])
    mia = out.get("mia", {}).get("score")
    acc = out.get("utility", {}).get("mc_accuracy")
    missing = [name for name, v in (("mia (needs a holdout set)", mia), ("utility", acc)) if v is None]
    return {"label": M.SEMEVAL_LABEL, "aggregate": agg, "mia_score": mia, "utility_accuracy": acc,
            "final": M.semeval_final(agg, mia, acc), "missing": missing}


def evaluate_sets(
    model,
    tokenizer,
    sets: Mapping[str, Sequence[Record]],
    cfg: EvalConfig | None = None,
    progress: Callable[[str], None] | None = None,
    utility: bool = True,
    reference_truth_ratios: Sequence[float] | None = None,
) -> dict:
    """Evaluate ``model`` on each named set (``forget``, ``retain``, ``holdout``, or any other name).

    ``sets``: name -> list of Records (or an ExampleSet). Returns, for each non-empty set, {"n", "answer_hit_rate",
    "rougeL_recall", "answer_prob", "nll", ["truth_ratio", ...], "examples": [...]} (see SPEC §4 for definitions:
    answer_prob is the mean over examples of P(a|q)^(1/|a|), nll the mean over examples of the per-token NLL of the
    answer); "mia" when forget and holdout are both given (AUCs of LOSS, ZLib, Min-K %, Min-K %++ with forget as
    members; "score" = 1 − 2|loss_auc − 0.5|); "utility" when ``utility``; "semeval" when forget and retain are
    given; "forget_quality" inside "forget" when ``reference_truth_ratios`` (the reference model's per-example forget
    truth ratios R) is given; "seconds". The model's train/eval mode is restored afterwards.
    """
    cfg = cfg or EvalConfig()
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    limit = _token_limit(model, cfg.max_tokens)
    out: dict = {}
    kept: dict[str, tuple[list[SeqStats], list[str]]] = {}
    was_training = model.training
    model.eval()
    try:
        with openings_reused(model):  # the weights stay fixed: the prompt openings' keys and values are reused
            named = {name: recs for name, recs in ((n, list(getattr(r, "records", r) or [])) for n, r in sets.items())
                     if recs}
            encs = {name: encode(recs, tokenizer, limit, add_end=False) for name, recs in named.items()}
            # greedy answers and truth ratios: one batched pass over every set (fuller batches, fewer decoding steps)
            talk = [name for name in named if _generates(name, cfg)]
            prompts = [it.input_ids[: it.prompt_len] for name in talk for it in encs[name].items]
            if prompts:
                say(f"Generating the answers of the {', '.join(talk)} set{'s' if len(talk) > 1 else ''} "
                    f"({len(prompts)} questions)")
            gens = dict(zip(talk, _split(generate_details(model, tokenizer, prompts, cfg.max_new_tokens,
                                                          cfg.gen_batch_size) if prompts else [],
                                         [len(named[n]) for n in talk])))
            every = [r for recs in named.values() for r in recs]
            if cfg.truth_ratio:
                say("Truth ratios: paraphrased and perturbed answers")
            ratios = dict(zip(named, _split(_truth_ratios(model, tokenizer, every, cfg, limit) if cfg.truth_ratio
                                            else [None] * len(every), [len(recs) for recs in named.values()])))
            say("Scoring the answers")
            stats = dict(zip(named, _split(score_items(model, [it for e in encs.values() for it in e.items],
                                                       pad_id(tokenizer), cfg.batch_size, with_distribution=True),
                                           [len(recs) for recs in named.values()])))
            for name, records in named.items():
                out[name] = _evaluate_set(tokenizer, name, records, encs[name], cfg, stats[name],
                                          gens.get(name, [None] * len(records)), ratios[name])
                kept[name] = (stats[name], [r.answer if r.is_qa else r.text for r in records])
            if "forget" in kept and "holdout" in kept:
                say("Membership inference: forget vs holdout")
                out["mia"] = _mia(*kept["forget"], *kept["holdout"], cfg.k)
            if reference_truth_ratios is not None and "forget" in out:
                trs = [e["truth_ratio"] for e in out["forget"]["examples"] if "truth_ratio" in e]
                if cfg.max_listed_examples is not None and len(trs) < out["forget"].get("truth_ratio_n", 0):
                    raise GrinError("Forget quality needs every forget example listed (max_listed_examples=None).")
                out["forget"]["forget_quality"] = M.forget_quality(trs, list(reference_truth_ratios))
            if utility:
                say("Utility: general-text perplexity and multiple-choice accuracy")
                out["utility"] = utility_metrics(model, tokenizer, cfg)
            sem = _semeval(out)
            if sem is not None:
                out["semeval"] = sem
    finally:
        model.train(was_training)
    out["seconds"] = time.perf_counter() - t0
    return out
