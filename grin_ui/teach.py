"""Teach a model data it does not know yet (e.g. fictitious authors), like TOFU's fine-tuned target model.

    result = teach(lm, forget, retain, TeachConfig())            # fine-tunes lm.model in place
    path, result = teach_cached(lm, forget, retain, cfg)         # the same, cached on disk; path loads as a model

Every weight is trained (grin_ui.train.train_masked with no mask) on forget ∪ retain, answers followed by the
end-of-turn token so that generations stop after the answer, until the forget answer hit rate reaches
``target_hit_rate`` or ``max_epochs`` is spent. A knowledge check (:func:`hit_rate`: the evaluation's answer hit
rate, same generation length) runs before and after. ``retain_only=True`` trains the retain-only reference model that TOFU's forget quality compares against.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from grin_ui.config import EvalConfig, TeachConfig
from grin_ui.data import Record, collate, encode
from grin_ui.diskcache import evict, taught_cache_bytes, touch
from grin_ui.errors import GrinError
from grin_ui.generation import generate
from grin_ui.metrics import answer_hit
from grin_ui.models import LoadedModel, cache_dir
from grin_ui.report import weights_sha256
from grin_ui.tokens import pad_id
from grin_ui.train import train_masked


@dataclass
class TeachResult:
    epochs: int
    reached: bool  # target hit rate reached
    before: dict  # {"forget": hit rate, "retain": hit rate}
    after: dict
    history: list[dict] = field(default_factory=list)  # per step: epoch, step, loss
    checks: list[dict] = field(default_factory=list)  # per knowledge check: epoch, forget, retain
    seconds: float = 0.0
    cached: bool = False


def hit_rate(lm: LoadedModel, records: list[Record], cfg: EvalConfig | None = None) -> float:
    """The answer hit rate of SPEC §4, as grin_ui.evaluate measures it: the fraction of Q/A records whose greedy
    answer (``cfg.max_new_tokens`` new tokens, the evaluation's setting) contains the reference answer or one of
    its keywords (metrics.answer_hit)."""
    cfg = cfg or EvalConfig()
    qa = [r for r in records if r.is_qa]
    if not qa:
        return float("nan")
    answers = generate(lm.model, lm.tokenizer, [r.question for r in qa], max_new_tokens=cfg.max_new_tokens,
                       batch_size=cfg.gen_batch_size)
    return sum(answer_hit(a, r.answer, r.keywords) for a, r in zip(answers, qa)) / len(qa)


def _check(lm, forget, retain) -> dict:
    return {"forget": hit_rate(lm, forget), "retain": hit_rate(lm, retain) if retain else None}


def teach(lm: LoadedModel, forget: list[Record], retain: list[Record], cfg: TeachConfig | None = None,
          progress=None, cancel=None, retain_only: bool = False) -> TeachResult:
    """Fine-tune ``lm.model`` in place. progress(fraction, message). Cancelling restores the model."""
    cfg = cfg or TeachConfig()
    if not forget:
        raise GrinError("Teaching needs a forget set.")
    train_set = list(retain) if retain_only else list(forget) + list(retain)
    if not train_set:
        raise GrinError("Teaching a retain-only reference model needs a retain set.")
    t0 = time.perf_counter()
    items = encode(train_set, lm.tokenizer, add_end=True).items
    pad = pad_id(lm.tokenizer)
    n_batches = (len(items) + cfg.batch_size - 1) // cfg.batch_size
    say = progress or (lambda f, m: None)
    say(0.0, "Knowledge check before teaching")
    before = _check(lm, forget, retain)
    result = TeachResult(0, False, before, before)
    rng = random.Random(cfg.seed)
    epoch = 0
    while epoch < cfg.max_epochs:
        chunk = min(cfg.check_every, cfg.max_epochs - epoch)
        order = []
        for _ in range(chunk):
            perm = list(range(len(items)))
            rng.shuffle(perm)
            order += [perm[i : i + cfg.batch_size] for i in range(0, len(perm), cfg.batch_size)]
        first = epoch

        def loss_fn(step, order=order):
            return lm.model(**collate([items[i] for i in order[step]], pad)).loss

        def on_step(step, steps, f, r, first=first):
            result.history.append({"epoch": first + (step - 1) // n_batches + 1, "step": len(result.history) + 1,
                                   "loss": f})
            say((first * n_batches + step) / (cfg.max_epochs * n_batches),
                f"Teaching: epoch {first + (step - 1) // n_batches + 1}/{cfg.max_epochs}, loss {f:.3f}")

        train_masked(lm.model, loss_fn, len(order), None, cfg.lr, cfg.weight_decay, seed=cfg.seed + epoch,
                     progress=on_step, cancel=cancel)
        epoch += chunk
        check = _check(lm, forget, retain)
        result.checks.append({"epoch": epoch, **check})
        result.epochs, result.after = epoch, check
        if not retain_only and check["forget"] >= cfg.target_hit_rate:
            result.reached = True
            break
    result.seconds = time.perf_counter() - t0
    say(1.0, f"Taught in {result.epochs} epochs: forget hit rate {result.after['forget']:.0%}")
    return result


def cache_key(lm: LoadedModel, forget: list[Record], retain: list[Record], cfg: TeachConfig,
              retain_only: bool = False) -> str:
    """sha256 over the base weights, the data and the settings."""
    blob = json.dumps({"weights": weights_sha256(lm.model), "forget": [r.to_dict() for r in forget],
                       "retain": [r.to_dict() for r in retain], "cfg": asdict(cfg), "retain_only": retain_only},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def teach_cached(lm: LoadedModel, forget: list[Record], retain: list[Record], cfg: TeachConfig | None = None,
                 progress=None, cancel=None, retain_only: bool = False, root: Path | None = None
                 ) -> tuple[Path, TeachResult]:
    """Teach, or reuse the taught model cached under ``root`` (default ``<cache>/taught``). Returns the directory
    (it loads with load_model) and the result. ``lm.model`` is left unchanged when the cache is hit and taught in
    place otherwise. The cache is bounded (``$GRIN_UI_TAUGHT_CACHE_GB``, grin_ui.diskcache): least recently used
    entries are removed once it grows past the bound."""
    cfg = cfg or TeachConfig()
    root = Path(root or cache_dir() / "taught")
    bound = taught_cache_bytes()  # read first: a bad setting is reported before the work
    target = root / cache_key(lm, forget, retain, cfg, retain_only)
    info = target / "teach.json"
    if info.is_file():
        data = json.loads(info.read_text())
        touch(target)
        return target, TeachResult(**{**data, "cached": True})
    result = teach(lm, forget, retain, cfg, progress, cancel, retain_only)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".teach-", dir=root))
    try:
        lm.model.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)
        (tmp / "teach.json").write_text(json.dumps(asdict(result), indent=1))
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    touch(target)
    evict(root, bound, keep=target)  # bounded: least recently used taught models go first
    return target, result
