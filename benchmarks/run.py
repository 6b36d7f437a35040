#!/usr/bin/env python
"""grin-ui performance figures (SPEC §8), measured in one run on one machine.

    python benchmarks/run.py                      # full run on the bundled model (steadier, slower)
    python benchmarks/run.py --quick --json bench.json
    python benchmarks/run.py --quick --model tests-tiny-dir --skip serve,walkthrough

Timings that SPEC §8 states as ratios are measured side by side in this process: the variants are interleaved (the
order rotates each repeat) and the figure is the ratio of medians, so that load from other processes on the machine
hits both sides alike. Memory is measured in a child process (see ``memory_child``) where glibc returns every large
block to the OS at once (MALLOC_MMAP_THRESHOLD_), so that resident-set growth tracks live tensors.
See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import torch

SECTIONS = ("scoring", "memory", "step", "mask", "generation", "quantize", "walkthrough", "serve")
REQUIRED = ("scoring_time_ratio", "scoring_peak_memory_ratio", "masked_step_ratio",
            "optimizer_state_bytes_per_masked_entry", "mask_recompute_ms", "walkthrough_s", "ready_s")
# figure -> (target, comparison); "le": value must be ≤ target
TARGETS = {
    "scoring_time_ratio": (1.15, "le"),
    "scoring_peak_memory_ratio": (3.5, "le"),
    "masked_step_ratio": (0.85, "le"),
    "optimizer_state_bytes_per_masked_entry": (8.0, "le"),  # 2 fp32 Adam moments per masked entry
    "mask_recompute_ms": (300.0, "le"),
    "walkthrough_s": (120.0, "le"),
    "ready_s": (20.0, "le"),
}
MiB = 2 ** 20


# ---------------------------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs) -> float:
    return float(statistics.median(xs))


def rss_bytes() -> int:
    """Resident set size of this process (VmRSS of /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _hwm_bytes() -> int | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


class PeakRSS:
    """Peak resident set size over a block: a background thread samples VmRSS every ``interval`` s, and the kernel's
    own high-water mark (VmHWM, reset at entry through /proc/self/clear_refs where allowed) catches short spikes."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0
        self.start = 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._hwm_ok = True
        except OSError:
            self._hwm_ok = False
        self.start = rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        if self._hwm_ok:
            self.peak = max(self.peak, _hwm_bytes() or 0)
        return False

    @property
    def growth(self) -> int:
        return self.peak - self.start


def saved_activation_bytes(model, batch_list) -> int:
    """Bytes autograd keeps for the backward pass of one forward (the activations), max over batches. Counted with
    ``saved_tensors_hooks``: every saved tensor's storage once, parameters excluded."""
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    peak = 0
    for batch in batch_list:
        seen: dict[int, int] = {}

        def pack(t):
            s = t.untyped_storage()
            if s.data_ptr() not in param_storages:
                seen[s.data_ptr()] = s.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(**batch).loss
        peak = max(peak, sum(seen.values()))
        del loss
    return peak


def param_bytes_fp32(model) -> int:
    return sum(p.numel() for p in model.parameters()) * 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> dict:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "loadavg_start": load}


def requires_grad_only(model, keep: set[int] | None) -> None:
    """keep None: every parameter requires grad; else only those whose id is in ``keep``."""
    for p in model.parameters():
        p.requires_grad_(keep is None or id(p) in keep)
        p.grad = None


# ---------------------------------------------------------------------------------------------- setup


def load(model_spec: str, example: str, quick: bool):
    from grin_ui.examples import load_example
    from grin_ui.models import load_model

    t0 = time.perf_counter()
    lm = load_model(model_spec, device="cpu")
    load_s = time.perf_counter() - t0
    sets = load_example(example)
    recs = {k: list(v.records) for k, v in sets.items()}
    return lm, recs, load_s


def score_batches(tok, forget, retain, batch_size: int):
    from grin_ui.data import batches, encode

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    fb = [b for b in batches(encode(forget, tok, 256).items, batch_size, pad) if (b["labels"] != -100).any()]
    rb = [b for b in batches(encode(retain, tok, 256).items, batch_size, pad) if (b["labels"] != -100).any()]
    return fb, rb


# ---------------------------------------------------------------------------------------------- sections


def bench_scoring(lm, recs, repeats: int, res: dict, ctx: dict) -> None:
    """GRI scoring vs the plain forward + backward passes over the same batches."""
    from grin_ui.config import ScoreConfig
    from grin_ui.data import encode
    from grin_ui.influence import ScoreIndex, compute_scores, scored_parameters

    model, tok = lm.model, lm.tokenizer
    cfg = ScoreConfig()
    forget, retain = recs["forget"], recs["retain"]
    fb, rb = score_batches(tok, forget, retain, cfg.batch_size)
    scored = {id(p) for _, p in scored_parameters(model, cfg)}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.eval()

    def plain(keep):
        requires_grad_only(model, keep)
        t0 = time.perf_counter()
        for group in (fb, rb):  # gradients accumulate within a pass, like G_f and G_r
            for b in group:
                model(**b).loss.backward()
            for p in model.parameters():
                p.grad = None
        dt = time.perf_counter() - t0
        requires_grad_only(model, set())
        return dt

    def score():
        t0 = time.perf_counter()
        s = compute_scores(model, tok, forget, retain, cfg)
        dt = time.perf_counter() - t0
        ctx["scores"] = s
        return dt

    variants = {"plain_all": lambda: plain(None), "plain_scored": lambda: plain(scored), "score": score}
    times: dict[str, list[float]] = {k: [] for k in variants}
    plain(None)  # warm-up (allocator, kernels)
    names = list(variants)
    for r in range(repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            if k == "score":
                ctx.pop("scores", None)  # free the previous scores first
            gc.collect()
            times[k].append(variants[k]())
            log(f"scoring repeat {r + 1}/{repeats}: {k} {times[k][-1]:.2f} s")
    for n, p in model.named_parameters():
        p.requires_grad_(flags[n])
    # phases of compute_scores outside the passes: tokenization and the binned index
    enc, idx = [], []
    for _ in range(max(1, min(repeats, 3))):
        t0 = time.perf_counter()
        encode(forget, tok, 256), encode(retain, tok, 256)
        enc.append(time.perf_counter() - t0)
        gc.collect()
        t0 = time.perf_counter()
        ScoreIndex.build(ctx["scores"].scores)
        idx.append(time.perf_counter() - t0)
    med = {k: median(v) for k, v in times.items()}
    res.update({
        "scoring_time_ratio": med["score"] / med["plain_all"],
        "scoring_time_ratio_vs_scored_grads": med["score"] / med["plain_scored"],
        "scoring_s": med["score"],
        "plain_fwd_bwd_all_params_s": med["plain_all"],
        "plain_fwd_bwd_scored_params_s": med["plain_scored"],
        "scoring_phase_encode_s": median(enc),
        "scoring_phase_index_build_s": median(idx),
        "scoring_phase_passes_and_rest_s": med["score"] - median(enc) - median(idx),
        "scoring_examples": len(forget) + len(retain),
        "scoring_batches": len(fb) + len(rb),
        "scoring_tokens": int(sum(b["attention_mask"].sum() for b in fb + rb)),
        "scoring_padded_tokens": int(sum(b["input_ids"].numel() for b in fb + rb)),
        "scored_weights": ctx["scores"].total,
        "scoring_repeats": repeats,
        "scoring_times_s": times,
    })


def bench_step(lm, recs, steps: int, repeats: int, res: dict, ctx: dict) -> None:
    """Masked unlearning step (GRIN mask, 1 %) vs unmasked (selector none) vs plain full-model AdamW."""
    from grin_ui.config import MaskConfig, UnlearnConfig
    from grin_ui.influence import scored_parameters
    from grin_ui.mask import build_mask
    from grin_ui.objectives import OBJECTIVES
    from grin_ui.train import MaskedAdamW, prepare_unlearn, train_masked, unlearn

    model, tok = lm.model, lm.tokenizer
    scores = ctx["scores"]
    params = scored_parameters(model)
    cfg = UnlearnConfig(steps=steps)
    data = prepare_unlearn(model, tok, recs["forget"], recs["retain"], cfg, seed=0)
    masks = {"masked": build_mask(params, scores, MaskConfig("grin", 0.01, "global")),
             "unmasked": build_mask(params, scores, MaskConfig("none", 0.01, "global"))}
    stats: dict[str, dict] = {}

    def run_masked(key):
        r = unlearn(model, tok, recs["forget"], recs["retain"], masks[key], cfg, seed=0, data=data)
        r.delta.undo(model)
        stats[key] = r.stats
        ctx.setdefault("delta", r.delta) if key == "masked" else None
        return [h["seconds"] for h in r.history]

    def run_full():
        backup = {n: p.detach().clone() for n, p in model.named_parameters()}
        fn = OBJECTIVES[cfg.objective]
        hist: list[dict] = []
        st: dict = {}
        try:
            train_masked(model, lambda s: fn(model, data.step_batch(s), cfg), steps, None, cfg.lr, cfg.weight_decay,
                         cfg.max_grad_norm, 0, history=hist, stats=st)
        finally:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(backup[n])
            del backup
        stats["full"] = st
        return [h["seconds"] for h in hist]

    variants = {"masked": lambda: run_masked("masked"), "unmasked": lambda: run_masked("unmasked"),
                "full": run_full}
    per_step: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            gc.collect()
            secs = variants[k]()
            per_step[k].extend(secs[1:] if len(secs) > 1 else secs)  # first step of a run: warm-up
            log(f"step repeat {r + 1}/{repeats}: {k} {median(secs):.2f} s/step")
    med = {k: median(v) for k, v in per_step.items()}

    # profile: the optimizer alone for each variant (same entries as train_masked builds), gradients set to ones
    opt_s = {}
    for key in ("masked", "unmasked"):
        named = dict(model.named_parameters())
        entries = [(named[n], None if bool(m.all()) else m.reshape(-1).nonzero().squeeze(1))
                   for n, m in masks[key].masks.items()]
        backup = {n: named[n].detach().clone() for n in masks[key].masks}
        opt = MaskedAdamW(entries, 1e-12, 0.0, 1.0)
        for p, _ in entries:
            p.grad = torch.ones_like(p)
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            opt.step()
            ts.append(time.perf_counter() - t0)
        with torch.no_grad():
            for n in masks[key].masks:
                named[n].grad = None
                named[n].copy_(backup[n])
        del opt, backup, entries
        opt_s[key] = median(ts)
    m = stats["masked"]
    res.update({
        "masked_step_ratio": med["masked"] / med["unmasked"],
        "masked_step_ratio_vs_full_adamw": med["masked"] / med["full"],
        "masked_step_s": med["masked"],
        "unmasked_step_s": med["unmasked"],
        "full_adamw_step_s": med["full"],
        "masked_optimizer_only_s": opt_s["masked"],
        "unmasked_optimizer_only_s": opt_s["unmasked"],
        "masked_entries": m["masked_entries"],
        "masked_trainable_tensors": m["trainable_tensors"],
        "masked_frozen_tensors": m["frozen_tensors"],
        "unmasked_trainable_tensors": stats["unmasked"]["trainable_tensors"],
        "optimizer_state_bytes_per_masked_entry": m["optimizer_state_numel"] * 4 / m["masked_entries"],
        "optimizer_state_bytes_masked": m["optimizer_state_numel"] * 4,
        "optimizer_state_bytes_unmasked": stats["unmasked"]["optimizer_state_numel"] * 4,
        "step_objective": cfg.objective,
        "step_batch_size": cfg.batch_size,
        "steps_per_run": steps,
        "step_repeats": repeats,
    })


def bench_mask(lm, res: dict, ctx: dict, sparsities, repeats: int) -> None:
    """Mask recomputation from cached scores (what the sparsity slider does): build_mask + the density grid."""
    from grin_ui.config import MaskConfig
    from grin_ui.influence import scored_parameters
    from grin_ui.mask import build_mask

    scores = ctx["scores"]
    params = scored_parameters(lm.model)
    table = {}
    cold = {}
    for scope in ("global", "tensor", "row"):
        for i, p in enumerate(sparsities):
            ts = []
            for r in range(repeats + (1 if i == 0 else 0)):
                gc.collect()
                t0 = time.perf_counter()
                m = build_mask(params, scores, MaskConfig("grin", p, scope))
                m.block_module_density()
                dt = (time.perf_counter() - t0) * 1000
                if i == 0 and r == 0:
                    cold[scope] = dt  # first mask of this scope (row means are computed once and cached)
                else:
                    ts.append(dt)
            table[f"{scope}@{p:g}"] = median(ts)
    worst = max(table, key=table.get)
    res.update({
        "mask_recompute_ms": table[worst],
        "mask_recompute_worst": worst,
        "mask_recompute_median_ms": median(table.values()),
        "mask_recompute_ms_by_config": table,
        "mask_first_build_ms_by_scope": cold,
    })


def bench_generation(lm, recs, n: int, repeats: int, max_new_tokens: int, res: dict) -> None:
    from grin_ui.generation import generate

    qs = [r.question for r in recs["forget"] + recs["retain"] if r.is_qa][:n]
    times = {16: [], 1: []}
    generate(lm.model, lm.tokenizer, qs[:2], max_new_tokens=4, batch_size=2)  # warm-up
    for r in range(repeats):
        for bs in ((16, 1) if r % 2 == 0 else (1, 16)):
            gc.collect()
            t0 = time.perf_counter()
            generate(lm.model, lm.tokenizer, qs, max_new_tokens=max_new_tokens, batch_size=bs)
            times[bs].append(time.perf_counter() - t0)
            log(f"generation repeat {r + 1}/{repeats}: batch {bs}: {times[bs][-1]:.1f} s")
    b16, b1 = len(qs) / median(times[16]), len(qs) / median(times[1])
    res.update({"gen_batched_examples_per_s": b16, "gen_single_examples_per_s": b1, "gen_batched_speedup": b16 / b1,
                "gen_examples": len(qs), "gen_max_new_tokens": max_new_tokens})


def bench_walkthrough(lm, recs, res: dict) -> None:
    from grin_ui.config import RunConfig
    from grin_ui.journey import run_journey

    sets = {k: v for k, v in recs.items() if k in ("forget", "retain", "holdout")}
    gc.collect()
    t0 = time.perf_counter()
    report, _ = run_journey(lm, sets, RunConfig(probes=("nf4",)))
    res["walkthrough_s"] = time.perf_counter() - t0
    res["walkthrough_stage_s"] = {k: round(v, 2) for k, v in report.get("timings", {}).items()}


def bench_serve(model_spec: str, res: dict, timeout: float = 180.0) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "grin_ui.cli", "serve", "--port", str(port), "--model", model_spec]
    log_file = tempfile.NamedTemporaryFile("w+", prefix="grin-serve-", suffix=".log", delete=False)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    ready = None
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        ready = time.perf_counter() - t0
                        break
            except OSError:
                pass
            time.sleep(0.2)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if ready is None:
        log_file.seek(0)
        tail = log_file.read()[-600:]
        raise RuntimeError(f"serve did not answer 200 within {timeout:.0f} s (exit {proc.returncode}): {tail}")
    res["ready_s"] = ready
    os.unlink(log_file.name)


# ---------------------------------------------------------------------------------------------- memory child


def memory_child(args) -> None:
    """Runs in a fresh process with MALLOC_MMAP_THRESHOLD_ set: scoring peak memory, then each probe's time and peak
    memory. Writes a JSON dict to ``args.child_out``."""
    from grin_ui.config import MaskConfig, ProbeConfig, UnlearnConfig
    from grin_ui.influence import compute_scores, scored_parameters
    from grin_ui.mask import build_mask
    from grin_ui.quantize import quantized, run_probe
    from grin_ui.train import unlearn

    out: dict = {"errors": {}}
    lm, recs, _ = load(args.model, args.example, args.quick)
    model, tok = lm.model, lm.tokenizer
    pbytes = param_bytes_fp32(model)
    out["param_bytes_fp32"] = pbytes
    skip = set(args.skip)
    if "memory" not in skip:
        fb, rb = score_batches(tok, recs["forget"], recs["retain"], 8)
        scored = {id(p) for _, p in scored_parameters(model)}
        requires_grad_only(model, scored)
        act = saved_activation_bytes(model, fb + rb)
        for p in model.parameters():
            p.requires_grad_(True)  # as loaded; compute_scores sets and restores its own flags
        gc.collect()
        with PeakRSS() as pk:
            scores = compute_scores(model, tok, recs["forget"], recs["retain"])
        held = rss_bytes() - pk.start
        n_scored = scores.total
        peak_total = pbytes + pk.growth
        out.update({
            "scoring_peak_memory_ratio": (peak_total - act) / pbytes,
            "scoring_peak_memory_ratio_incl_activations": peak_total / pbytes,
            "scoring_peak_growth_bytes": pk.growth,
            "scoring_activation_bytes": act,
            "scoring_held_after_bytes": held,
            "scored_weight_bytes_fp32": n_scored * 4,
            "scoring_peak_growth_per_scored_fp32": pk.growth / (n_scored * 4),
        })
    if "quantize" not in skip:
        if "memory" in skip:
            scores = compute_scores(model, tok, recs["forget"], recs["retain"])
        mask = build_mask(scored_parameters(model), scores, MaskConfig("grin", 0.01, "global"))
        delta = unlearn(model, tok, recs["forget"], recs["retain"], mask, UnlearnConfig(steps=args.probe_steps),
                        seed=0).delta
        delta.undo(model)
        del scores, mask
        sets = {k: v[: args.probe_examples] if args.probe_examples else v for k, v in recs.items()
                if k in ("forget", "retain")}
        for kind in ("nf4", "fp4", "int8", "rtn4"):
            try:
                gc.collect()
                t0 = time.perf_counter()
                with PeakRSS() as qk:
                    with quantized(model, kind):
                        pass
                q_s = time.perf_counter() - t0
                gc.collect()
                t0 = time.perf_counter()
                with PeakRSS() as pk:
                    run_probe(model, tok, kind, sets, delta, ProbeConfig())
                out[f"probe_{kind}_s"] = time.perf_counter() - t0
                out[f"probe_{kind}_quantize_s"] = q_s
                out[f"probe_{kind}_peak_growth_bytes"] = pk.growth
                out[f"probe_{kind}_peak_model_copies"] = pk.growth / pbytes
                out[f"probe_{kind}_quantize_peak_model_copies"] = qk.growth / pbytes
                log(f"probe {kind}: {out[f'probe_{kind}_s']:.1f} s, peak +{pk.growth / MiB:.0f} MiB")
            except Exception as e:  # noqa: BLE001 - one probe failing must not hide the others
                out["errors"][f"probe_{kind}"] = f"{type(e).__name__}: {e}"
        out["probe_examples_per_set"] = {k: len(v) for k, v in sets.items()}
        out["probe_unlearn_steps"] = args.probe_steps
    Path(args.child_out).write_text(json.dumps(out))


def run_memory_child(args, res: dict, errors: dict) -> None:
    fd, path = tempfile.mkstemp(prefix="grin-bench-", suffix=".json")
    os.close(fd)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--child-out", path, "--model", args.model,
           "--example", args.example, "--skip", ",".join(args.skip), "--probe-steps", str(args.probe_steps),
           "--probe-examples", str(args.probe_examples), "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    try:
        subprocess.run(cmd, env=env, check=True)
        out = json.loads(Path(path).read_text())
    finally:
        os.unlink(path)
    errors.update(out.pop("errors", {}))
    res.update(out)


# ---------------------------------------------------------------------------------------------- report


def met(key: str, value) -> str:
    if key not in TARGETS:
        return ""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    target, how = TARGETS[key]
    return "yes" if (value <= target if how == "le" else value >= target) else "NO"


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "—" if v is None else str(v)


ROWS = [
    ("scoring_time_ratio", "GRI scoring ÷ plain fwd+bwd (all params grad)"),
    ("scoring_time_ratio_vs_scored_grads", "GRI scoring ÷ fwd+bwd (scored params grad)"),
    ("scoring_s", "GRI scoring time, s"),
    ("scoring_phase_index_build_s", "  of which: ScoreIndex.build, s"),
    ("scoring_phase_encode_s", "  of which: tokenization, s"),
    ("scoring_peak_memory_ratio", "scoring peak memory ÷ fp32 params (excl. activations)"),
    ("scoring_peak_memory_ratio_incl_activations", "scoring peak memory ÷ fp32 params (incl. activations)"),
    ("scoring_activation_bytes", "activations (saved for backward), bytes"),
    ("masked_step_ratio", "masked step (GRIN 1 %) ÷ unmasked step (selector none)"),
    ("masked_step_ratio_vs_full_adamw", "masked step ÷ plain full-model AdamW step"),
    ("masked_step_s", "masked step, s"),
    ("unmasked_step_s", "unmasked step, s"),
    ("full_adamw_step_s", "full-model AdamW step, s"),
    ("masked_optimizer_only_s", "  MaskedAdamW.step alone (masked), s"),
    ("unmasked_optimizer_only_s", "  MaskedAdamW.step alone (unmasked), s"),
    ("optimizer_state_bytes_per_masked_entry", "optimizer state bytes ÷ masked entries"),
    ("mask_recompute_ms", "mask recompute, worst config (median), ms"),
    ("mask_recompute_median_ms", "mask recompute, median over configs, ms"),
    ("gen_batched_examples_per_s", "generation, batch 16, examples/s"),
    ("gen_single_examples_per_s", "generation, batch 1, examples/s"),
    ("gen_batched_speedup", "generation speed-up, batch 16 ÷ batch 1"),
]
for _k in ("nf4", "fp4", "int8", "rtn4"):
    ROWS += [(f"probe_{_k}_s", f"probe {_k}: quantize + evaluate both states, s"),
             (f"probe_{_k}_peak_model_copies", f"probe {_k}: peak memory growth ÷ fp32 params")]
ROWS += [("walkthrough_s", "default walkthrough (run_journey, nf4), s"), ("ready_s", "dashboard ready, s"),
         ("model_load_s", "model load, s")]


def print_table(res: dict) -> None:
    m = res["machine"]
    print(f"\nmachine: {m['cpu_count']} CPUs, torch {m['torch']} with {m['torch_threads']} threads, "
          f"python {m['python']}, load average at start {m['loadavg_start']}, at end {m.get('loadavg_end')}")
    print(f"model: {res['model']}   example: {res['example']}   mode: {'quick' if res['quick'] else 'full'}\n")
    w = max(len(label) for _, label in ROWS)
    print(f"{'figure':<{w}}  {'value':>12}  {'target':>8}  met?")
    print("-" * (w + 32))
    for key, label in ROWS:
        if key not in res and key not in REQUIRED:
            continue
        v = res.get(key)
        tgt = f"≤ {TARGETS[key][0]:g}" if key in TARGETS else ""
        print(f"{label:<{w}}  {fmt(v):>12}  {tgt:>8}  {met(key, v)}")
    for sec, err in res["errors"].items():
        print(f"error in {sec}: {err}")
    for sec, why in res["skipped"].items():
        print(f"skipped {sec}: {why}")


# ---------------------------------------------------------------------------------------------- main


def parse(argv=None):
    p = argparse.ArgumentParser(description="grin-ui performance figures (SPEC §8)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and examples (a few minutes)")
    p.add_argument("--json", help="write every figure to this JSON file")
    p.add_argument("--model", default="default", help="default, a hub id or a local model directory")
    p.add_argument("--example", default="real-knowledge", help="built-in example set")
    p.add_argument("--skip", default="", help=f"comma-separated sections to skip: {','.join(SECTIONS)}")
    p.add_argument("--probe-steps", type=int, default=None, help="unlearning steps of the delta the probes use")
    p.add_argument("--probe-examples", type=int, default=None, help="examples per set for the probes (0 = all)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.skip = [s for s in args.skip.split(",") if s]
    bad = [s for s in args.skip if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}; use {','.join(SECTIONS)}")
    if args.probe_steps is None:
        args.probe_steps = 3 if args.quick else 20
    if args.probe_examples is None:
        args.probe_examples = 8 if args.quick else 0
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        memory_child(args)
        return {}
    quick = args.quick
    res: dict = {"machine": machine(), "model": args.model, "example": args.example, "quick": quick,
                 "errors": {}, "skipped": {}}
    errors, skipped = res["errors"], res["skipped"]
    for s in args.skip:
        skipped[s] = "--skip"
    t_all = time.perf_counter()
    log(f"loading {args.model}")
    lm, recs, res["model_load_s"] = load(args.model, args.example, quick)
    res["param_bytes_fp32"] = param_bytes_fp32(lm.model)
    ctx: dict = {}

    def section(name, fn, *a):
        if name in args.skip:
            return
        if any(k not in ctx for k in getattr(fn, "needs", ())):
            skipped[name] = "needs the scores from the scoring section"
            return
        log(f"--- {name}")
        t0 = time.perf_counter()
        try:
            fn(*a)
        except Exception as e:  # noqa: BLE001 - report and go on with the other figures
            errors[name] = f"{type(e).__name__}: {str(e)[:400]}"
            log(f"{name} failed: {errors[name]}")
        res.setdefault("section_s", {})[name] = round(time.perf_counter() - t0, 1)
        log(f"{name}: {res['section_s'][name]} s")

    bench_step.needs = bench_mask.needs = ("scores",)
    section("scoring", bench_scoring, lm, recs, 2 if quick else 5, res, ctx)
    section("mask", bench_mask, lm, res, ctx, (0.001, 0.01, 0.05, 0.1) if quick else
            (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2), 2 if quick else 5)
    section("step", bench_step, lm, recs, 3 if quick else 5, 2 if quick else 3, res, ctx)
    ctx.clear()
    gc.collect()
    section("generation", bench_generation, lm, recs, 16 if quick else 33, 1 if quick else 2, 64, res)
    if "memory" in args.skip and "quantize" in args.skip:
        pass
    else:
        section("memory+quantize", run_memory_child, args, res, errors)
    section("walkthrough", bench_walkthrough, lm, recs, res)
    del lm
    gc.collect()
    section("serve", bench_serve, args.model, res)
    for key in REQUIRED:
        res.setdefault(key, None)
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["total_s"] = time.perf_counter() - t_all
    res["targets"] = {k: {"target": t, "met": met(k, res.get(k))} for k, (t, _) in TARGETS.items()}
    print_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
        log(f"wrote {args.json}")
    return res


if __name__ == "__main__":
    main()
