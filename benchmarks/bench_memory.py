"""Peak memory of GRI scoring (SPEC §8: ≤ 3.5 × the fp32 parameters + activations) and each quantization probe's
time and peak memory, measured in a child process (``run.py --child``) where freed memory goes back to the OS.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import (Bench, MiB, PeakRSS, load, log, param_bytes_fp32, requires_grad_only, rss_bytes,
                          saved_activation_bytes, score_batches)

NAME = "memory+quantize"
NEEDS: tuple[str, ...] = ()
SKIP_WHEN = ("memory", "quantize")  # skipped only when both are

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


def run_memory_child(args, res: dict, errors: dict, script: str) -> None:
    fd, path = tempfile.mkstemp(prefix="grin-bench-", suffix=".json")
    os.close(fd)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    cmd = [sys.executable, script, "--child", "--child-out", path, "--model", args.model,
           "--example", args.example, "--skip", ",".join(args.skip), "--probe-steps", str(args.probe_steps),
           "--probe-examples", str(args.probe_examples), "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    try:
        subprocess.run(cmd, env=env, check=True)
        out = json.loads(Path(path).read_text())
    finally:
        os.unlink(path)
    errors.update(out.pop("errors", {}))
    res.update(out)


def run(b: Bench) -> None:
    run_memory_child(b.args, b.res, b.errors, b.args.script)
