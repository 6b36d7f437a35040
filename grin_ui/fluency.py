"""Fluency of generated answers (SPEC §4): do they end, do they loop, do they read like language?

    loops("Mars is red. Mars is red. Mars is red.")              # -> True
    nll = answer_nll(original_model, tokenizer, questions, texts)  # per-token NLL under the *original* model
    cut = gibberish_threshold(own_nll)                           # calibrated on the original model's own answers
    summary = fluency_summary(finished, texts, nll, cut)

Four measures per set of generations:
- **ends**: the generation produced an end-of-turn / EOS token before the token limit
  (:class:`grin_ui.generation.Generation.finished`);
- **loop**: a repetition loop in the words of the answer — the same word n-gram (n = 1…8) three or more times in a
  row, or the same sentence of three or more words twice (:func:`loops`);
- **gibberish**: the mean per-token NLL of the generated answer under the *original* model, given the question,
  skipping the answer's first ``GIBBERISH_SKIP`` tokens (:func:`answer_nll`). Word salad ("Il nostro nostro …",
  "L'avenir financière est fin …") is improbable text to the model that wrote fluent answers before, token after
  token; a refusal ("I don't know.") or a fluent wrong answer is surprising only in its opening words — a refusal's
  first token costs the original model ~5 nats, the rest ~1–3 — hence the skip (measured on the bundled model:
  refusals 2.6–2.9, fluent wrong answers 1.7–2.2, salad 3.2–7.3 nats per token after the skip). The cut-off
  (:func:`gibberish_threshold`, *our choice*) is calibrated on the original model's own greedy answers to the same
  questions: the larger of their 95th percentile + ``GIBBERISH_MARGIN`` nats and ``GIBBERISH_FLOOR`` nats.
  A refusal (below) is never counted as gibberish: the bundled 135M model, used as the judge, finds some plain
  refusals improbable ("That's beyond what I know." scores 4.2 nats per token after the skip);
- **refusal**: the answer declines to answer (:func:`is_refusal`: one of the refusal templates the IDK objective
  trains, or a sentence opening like "I don't know", "I'm not sure", "Sorry, …").

Limits, measured on the bundled model: repetitive salad ("El Diablo, el Diablo, …") is predictable token by token
and scores low — the loop check catches it; a fluent-looking phrase in another language ("Estadio La Habana, el
cielo de la verdeja.", 2.4 nats) passes. The score is a calibrated screen, not a proof of fluency: read the answers.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch

from grin_ui.data import EncodedExample, answer_token_ids, prompt_ids

GIBBERISH_MARGIN = 2.0  # nats per token above the original model's own answers (our choice)
GIBBERISH_FLOOR = 3.0  # never flag an answer whose per-token NLL is below this (our choice)
GIBBERISH_SKIP = 2  # opening tokens of an answer not counted in its gibberish score (our choice)
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE = re.compile(r"[^.!?\n]+")


def loops(text: str, max_n: int = 8, repeats: int = 3) -> bool:
    """True when the text repeats itself: some word n-gram (1 ≤ n ≤ ``max_n``) occurs ``repeats`` or more times back
    to back, or a sentence of three or more words occurs twice (case and punctuation ignored)."""
    words = [w.lower() for w in _WORD.findall(text or "")]
    for n in range(1, max_n + 1):
        for start in range(0, len(words) - n * repeats + 1):
            gram = words[start : start + n]
            if all(words[start + k * n : start + (k + 1) * n] == gram for k in range(1, repeats)):
                return True
    seen = set()
    for s in _SENTENCE.findall(text or ""):
        key = tuple(w.lower() for w in _WORD.findall(s))
        if len(key) >= 3:
            if key in seen:
                return True
            seen.add(key)
    return False


_REFUSAL_OPENING = re.compile(
    r"^(sorry|unfortunately|i (do not|don['’]t|dont|cannot|can['’]t|cant|have no|am not|m not|really don['’]t|"
    r"am unable|m unable|am afraid)|i['’](m not|d rather not|m unable|m afraid)|"
    r"that(['’]s| is) (not something|beyond|unknown)|there is no (information|answer))", re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """True when the answer declines: one of :data:`grin_ui.objectives.REFUSALS` (case and punctuation ignored),
    or it opens like a refusal ("I don't know", "I'm not sure", "I cannot", "Sorry", "That's beyond …")."""
    from grin_ui.metrics import normalize
    from grin_ui.objectives import REFUSALS

    t = (text or "").strip()
    return bool(t) and (normalize(t) in {normalize(r) for r in REFUSALS} or bool(_REFUSAL_OPENING.match(t)))


@torch.inference_mode()
def answer_nll(model, tokenizer, questions: Sequence[str], answers: Sequence[str],
               batch_size: int = 16) -> list[float | None]:
    """Mean NLL per token (nats) of each answer's token ids after its question's prompt, under ``model``, over the
    tokens after the first ``GIBBERISH_SKIP`` (all tokens when the answer is that short); None for an empty answer.
    Give ``model`` the original weights to get the gibberish score of another state's answers."""
    from grin_ui.evaluate import score_items
    from grin_ui.tokens import pad_id

    items, where = [], []
    for i, (q, text) in enumerate(zip(questions, answers)):
        a = answer_token_ids(tokenizer, text) if text else []  # as grin_ui.data.encode tokenizes answers
        if a:
            p = prompt_ids(tokenizer, q)
            items.append(EncodedExample(p + list(a), [-100] * len(p) + list(a), len(p), ""))
            where.append(i)
    out: list[float | None] = [None] * len(questions)
    if items:
        for i, st in zip(where, score_items(model, items, pad_id(tokenizer), batch_size)):
            lp = st.logprobs[GIBBERISH_SKIP:] if st.n > GIBBERISH_SKIP else st.logprobs
            out[i] = float(-lp.double().mean())
    return out


def gibberish_threshold(own_nll: Sequence[float | None]) -> float:
    """The cut-off above which an answer counts as gibberish: max(95th percentile of the original model's own
    answers' per-token NLL + GIBBERISH_MARGIN, GIBBERISH_FLOOR) nats per token (module docstring)."""
    vals = sorted(v for v in own_nll if v is not None and math.isfinite(v))
    if not vals:
        return GIBBERISH_FLOOR
    q95 = vals[min(len(vals) - 1, math.ceil(0.95 * len(vals)) - 1)]
    return max(q95 + GIBBERISH_MARGIN, GIBBERISH_FLOOR)


def fluency_summary(finished: Sequence[bool], texts: Sequence[str], nll: Sequence[float | None] | None = None,
                    threshold: float | None = None) -> dict:
    """Per set: ``ends_rate`` (share finished before the token limit), ``loop_rate`` (share with a loop, see
    :func:`loops`), ``refusal_rate`` (share of refusals, :func:`is_refusal`), and when ``nll``/``threshold`` are
    given ``gibberish_rate`` (share of non-empty answers that are not refusals with per-token NLL under the original
    model above ``threshold``), ``gibberish_nll`` (mean NLL over non-empty answers) and the threshold itself."""
    n = len(texts)
    refusals = [is_refusal(t) for t in texts]
    out = {"ends_rate": sum(map(bool, finished)) / n if n else float("nan"),
           "loop_rate": sum(loops(t) for t in texts) / n if n else float("nan"),
           "refusal_rate": sum(refusals) / n if n else float("nan")}
    if nll is not None and threshold is not None:
        vals = [v for v in nll if v is not None]
        flagged = [v is not None and v > threshold and not r for v, r in zip(nll, refusals)]
        out["gibberish_rate"] = sum(flagged) / len(vals) if vals else 0.0
        out["gibberish_nll"] = sum(vals) / len(vals) if vals else float("nan")
        out["gibberish_threshold"] = threshold
    return out
