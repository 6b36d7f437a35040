"""Dashboard start-up: `grin-ui serve` in a subprocess until GET / answers 200 (SPEC §8: ≤ 20 s). Runs last: it
drops the benchmark's own model first.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from bench_common import Bench, free_port

NAME = "serve"
NEEDS: tuple[str, ...] = ()

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


def run(b: Bench) -> None:
    b.lm = None  # free the memory before the server loads its own copy
    b.shared.clear()
    gc.collect()
    bench_serve(b.args.model, b.res)
