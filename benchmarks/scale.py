"""Scale benchmark: randomly initialised Llama-style models (135M, 1B, 3B, 7B; no download) or a model directory,
on the device it runs on. Per size: GRI scoring time ÷ plain forward+backward over the same batches, one masked
unlearning step (GRIN mask, 1 %), an NF4 probe (quantize + evaluate), and the peak memory of each action next to the
memory plan of :mod:`grin_ui.memplan` (planned with the data's real longest sequence).

    OMP_NUM_THREADS=1 python benchmarks/scale.py                       # --sizes 135m on CPU
    python benchmarks/scale.py --sizes 135m,1b,3b,7b --json scale.json # on a GPU
    python benchmarks/scale.py --model DIR --quick                      # a saved model (e.g. the tiny test model)

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (reset before each action); on CPU the peak resident set
(bench_common.PeakRSS) in a process started with ``MALLOC_MMAP_THRESHOLD_=65536`` (the script re-executes itself
with it), so freed tensors leave the resident set. ``measured_*_bytes`` = weights + peak growth during the action
(+ the scores the session keeps, for unlearning and probes, as the plan counts them).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

SIZES = {  # published shapes: SmolLM2-135M, Llama-3.2-1B, Llama-3.2-3B, Llama-2-7B (and a tiny one for the test)
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=2048, tie_word_embeddings=True),
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                 num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, head_dim=64),
    "3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, head_dim=128),
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tokenizer_for(records):
    """A byte-level BPE trained on the records (a random-init model has no tokenizer of its own)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([r.text or f"Question: {r.question}\nAnswer: {r.answer}" for r in records], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


class Peak:
    """Peak bytes over a block: CUDA allocator peak, else peak RSS (bench_common.PeakRSS)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            from bench_common import PeakRSS

            self._rss = PeakRSS().__enter__()
            self.start = self._rss.start
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.growth = torch.cuda.max_memory_allocated(self.device) - self.start
        else:
            self._rss.__exit__(*exc)
            self.growth = self._rss.growth
        return False


def build(size: str | None, model_dir: str | None, device: torch.device, dtype, records):
    from transformers import LlamaConfig, LlamaForCausalLM

    if model_dir:
        from grin_ui.models import load_model

        lm = load_model(model_dir, device=str(device), dtype=dtype)
        return lm.model, lm.tokenizer, lm.model.config
    config = LlamaConfig(**SIZES[size], max_position_embeddings=2048)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype).eval()
    return model, tokenizer_for([r for rs in records.values() for r in rs]), config


def bench_one(label: str, model, tok, config, device, dtype, recs, args) -> dict:
    from grin_ui.config import EvalConfig, MaskConfig, RunConfig, ScoreConfig, UnlearnConfig
    from grin_ui.data import batches, encode
    from grin_ui.evaluate import evaluate_sets
    from grin_ui.influence import compute_scores, scored_parameters
    from grin_ui.mask import build_mask
    from grin_ui.memplan import plan_memory
    from grin_ui.quantize import quantized
    from grin_ui.tokens import pad_id
    from grin_ui.train import unlearn

    forget, retain = recs["forget"], recs["retain"]
    items_f = encode(forget, tok, 256).items
    items_r = encode(retain, tok, 256).items
    seq = max(len(i.input_ids) for i in items_f + items_r)
    run = RunConfig()
    run.limits.max_tokens = seq
    plan = plan_memory(config, dtype, device=str(device), run=run)
    n = sum(p.numel() for p in model.parameters())
    wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    out = {"model": label, "device": str(device), "dtype": str(dtype).replace("torch.", ""), "parameters": n,
           "plan_parameters": plan.parameters, "seq_len": seq, "weights_bytes": wbytes,
           "plan": {a: plan.need(a) for a in plan.needs}}
    pad = pad_id(tok)
    all_batches = [{k: v.to(device) for k, v in b.items()}
                   for b in [*batches(items_f, 8, pad), *batches(items_r, 8, pad)]]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def plain():  # every parameter requires grad: what a user's fine-tuning pays
        for p in model.parameters():
            p.requires_grad_(True)
        t0 = time.perf_counter()
        for b in all_batches:
            model(**b).loss.backward()
        sync()
        dt = time.perf_counter() - t0
        for p in model.parameters():
            p.grad = None
        return dt

    def score():
        t0 = time.perf_counter()
        s = compute_scores(model, tok, forget, retain, ScoreConfig(batch_size=8), keep_forget_saliency=True)
        sync()
        return time.perf_counter() - t0, s

    plain()  # warm-up
    reps = 1 if args.quick else 3
    t_plain, t_score = [], []
    for _ in range(reps):
        t_plain.append(plain())
        dt, scores = score()
        t_score.append(dt)
        del scores
    out["plain_fwd_bwd_s"] = statistics.median(t_plain)
    out["scoring_s"] = statistics.median(t_score)
    out["scoring_time_ratio"] = out["scoring_s"] / out["plain_fwd_bwd_s"]
    with Peak(device) as pk:
        scores = compute_scores(model, tok, forget, retain, ScoreConfig(batch_size=8), keep_forget_saliency=True)
    out["measured_scoring_bytes"] = wbytes + pk.growth
    kept = sum(t.numel() * t.element_size() for t in scores.scores.values()) * 2
    mask = build_mask(scored_parameters(model), scores, MaskConfig("grin", 0.01, "global"))
    steps = 2 if args.quick else 4
    cfg = UnlearnConfig(steps=steps, stop_when_forgotten=False, batch_size=4)
    with Peak(device) as pk:
        res = unlearn(model, tok, forget, retain, mask, cfg, seed=0)
    out["measured_unlearning_bytes"] = wbytes + kept + pk.growth
    secs = [h["seconds"] for h in res.history[1:]] or [h["seconds"] for h in res.history]
    out["masked_step_s"] = statistics.median(secs)
    res.delta.undo(model)
    n_eval = 4 if args.quick else 8
    sets = {"forget": forget[:n_eval], "retain": retain[:n_eval]}
    ecfg = EvalConfig(max_new_tokens=8 if args.quick else 16)
    import bitsandbytes  # noqa: F401 - imported before the measurement: its code pages are not the probe's memory

    t0 = time.perf_counter()
    with Peak(device) as pk:
        with quantized(model, "nf4", delta=res.delta) as q:
            evaluate_sets(q, tok, sets, ecfg, utility=False)
    sync()
    out["probe_nf4_s"] = time.perf_counter() - t0
    out["probe_examples"] = sum(len(v) for v in sets.values())
    out["measured_probes_bytes"] = wbytes + kept + pk.growth
    for a in ("scoring", "unlearning", "probes"):
        out[f"measured_over_plan_{a}"] = out[f"measured_{a}_bytes"] / out["plan"][a]
    del scores, mask, res
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="135m", help=f"comma-separated of {', '.join(SIZES)}")
    ap.add_argument("--model", default=None, help="a model directory (or 'default') instead of random-init sizes")
    ap.add_argument("--example", default="fictitious-authors")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--quick", action="store_true", help="one repeat, fewer steps and examples")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and not args.child and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        import subprocess

        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
        return subprocess.run([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--child"],
                              env=env).returncode
    if args.threads:
        torch.set_num_threads(args.threads)
    from grin_ui.examples import load_example

    recs = {k: list(v.records) for k, v in load_example(args.example).items()}
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    labels = [args.model] if args.model else [s.strip() for s in args.sizes.split(",") if s.strip()]
    results = []
    for label in labels:
        if not args.model and label not in SIZES:
            ap.error(f"unknown size {label}; use {', '.join(SIZES)}")
        log(f"{label}: building on {device} ({dtype})")
        model, tok, config = build(None if args.model else label, args.model, device, dtype, recs)
        r = bench_one(label, model, tok, config, device, dtype, recs, args)
        results.append(r)
        log(f"{label}: scoring {r['scoring_s']:.2f} s = {r['scoring_time_ratio']:.2f} x fwd+bwd; masked step "
            f"{r['masked_step_s']:.2f} s; NF4 probe {r['probe_nf4_s']:.1f} s; measured/plan: scoring "
            f"{r['measured_over_plan_scoring']:.2f}, unlearning {r['measured_over_plan_unlearning']:.2f}, probes "
            f"{r['measured_over_plan_probes']:.2f}")
        del model
        gc.collect()
    report = {"device": str(device), "torch_threads": torch.get_num_threads(), "quick": args.quick,
              "results": results}
    text = json.dumps(report, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
