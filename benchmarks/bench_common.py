"""Shared helpers of the benchmark sections (benchmarks/run.py): timing, memory sampling, loading the model and data.

Every section module (``bench_*.py``) has ``NAME``, ``NEEDS`` (keys of ``Bench.shared`` it needs from an earlier
section) and ``run(b: Bench)``, which writes its figures into ``b.res``.
"""

from __future__ import annotations

import argparse
import gc
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
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from grin_ui.tokens import pad_id

MiB = 2 ** 20


@dataclass
class Bench:
    """What the sections share: the options, the loaded model and data, the figures, and what one section leaves
    for the next (``shared["scores"]``: the GRI scores of the scoring section)."""

    args: argparse.Namespace
    res: dict
    lm: object = None
    recs: dict = field(default_factory=dict)
    shared: dict = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        return bool(self.args.quick)

    @property
    def errors(self) -> dict:
        return self.res["errors"]


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


@contextmanager
def serving(model_spec: str, timeout: float = 180.0):
    """`grin-ui serve --model model_spec` in a subprocess on a free local port, yielded as ``(url, ready_s)`` once
    GET / answers 200 (``ready_s``: seconds from the start); stopped on exit. Raises with the server's log tail if
    it does not answer within ``timeout``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.NamedTemporaryFile("w+", prefix="grin-serve-", suffix=".log") as log_file:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "grin_ui.cli", "serve", "--port", str(port), "--model",
                                 model_spec], stdout=log_file, stderr=subprocess.STDOUT)
        try:
            ready = None
            while ready is None and time.perf_counter() - t0 < timeout and proc.poll() is None:
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        if r.status == 200:
                            ready = time.perf_counter() - t0
                except OSError:
                    time.sleep(0.2)
            if ready is None:
                log_file.seek(0)
                raise RuntimeError(f"serve did not answer 200 within {timeout:.0f} s (exit {proc.poll()}): "
                                   f"{log_file.read()[-600:]}")
            yield url, ready
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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

    pad = pad_id(tok)
    fb = [b for b in batches(encode(forget, tok, 256).items, batch_size, pad) if (b["labels"] != -100).any()]
    rb = [b for b in batches(encode(retain, tok, 256).items, batch_size, pad) if (b["labels"] != -100).any()]
    return fb, rb
