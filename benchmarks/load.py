"""Eight visitors at once on the bundled model: peak memory of a real server and what each visitor waits for.

    .venv/bin/python benchmarks/load.py                              # 8 visitors, budget from the machine
    .venv/bin/python benchmarks/load.py --visitors 4 --memory-gb 6 --steps 10 --out runs/load.json

Starts ``grin-ui serve`` in a subprocess on 127.0.0.1 (its own process, so its resident memory is measured alone,
sampled every 50 ms with psutil), then runs ``--visitors`` gradio_client visitors at once, each: page load (the
built-in example), influence scores, unlearning (``--steps`` steps, stop rule off, so every visitor does the same
work), compare (no utility metrics). Each visitor's actions are timed and the messages it was shown while waiting
(gradio's queue rank, "Waiting for the model", "the server is busy ... queued at position K") are kept. Prints one
line per visitor and the server's peak RSS against its memory budget; ``--out`` writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the server did not answer in time")


def call(c, seen: set, *args, api_name: str):
    """Submit, poll the status (collecting what the visitor is shown) and return (result, seconds)."""
    t0 = time.perf_counter()
    job = c.submit(*args, api_name=api_name)
    while not job.done():
        st = job.status()
        if st.rank is not None and st.rank > 0:
            seen.add(f"gradio queue rank {st.rank}")
        for p in st.progress_data or []:
            if p.desc and ("Waiting" in p.desc or "busy" in p.desc):
                seen.add(p.desc)
        time.sleep(0.5)
    return job.result(), time.perf_counter() - t0


def visitor(url: str, i: int, steps: int, out: dict) -> None:
    from gradio_client import Client

    seen: set[str] = set()
    rec: dict = {"visitor": i}
    try:
        c = Client(url, verbose=False)
        _, rec["start_s"] = call(c, seen, "real-knowledge", api_name="/start")
        _, rec["scores_s"] = call(c, seen, 1.0, "global", "mean log10", api_name="/compute_scores")
        res, rec["unlearn_s"] = call(c, seen, "idk", "grin", 1.0, "global", 0.1, 2e-3, steps, 5.0, "nll", i, False,
                                     api_name="/unlearn")
        rec["unlearn_status"] = res[1][:200]
        (table, _, _), rec["compare_s"] = call(c, seen, False, api_name="/compare")
        rec["forget_hit_rate"] = next((r[3] for r in (table["data"] if isinstance(table, dict) else table)
                                       if r[0] == "forget" and r[1] == "answer hit rate"), None)
        c.close()
    except Exception as e:  # noqa: BLE001 - reported in the table
        rec["error"] = repr(e)[:300]
    rec["shown_while_waiting"] = sorted(seen)
    out[i] = rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--visitors", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--memory-gb", type=float, default=None)
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "grin_ui.cli", "serve", "--port", str(port), "--model", args.model,
           "--max-sessions-per-client", str(max(8, args.visitors))]
    if args.memory_gb is not None:
        cmd += ["--memory-gb", str(args.memory_gb)]
    log = open(Path("/tmp") / f"grin-load-{port}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, proc)
        server = psutil.Process(proc.pid)
        idle_rss = server.memory_info().rss
        peak = {"rss": idle_rss}
        stop = threading.Event()

        def sample():
            while not stop.wait(0.05):
                try:
                    peak["rss"] = max(peak["rss"], server.memory_info().rss)
                except psutil.Error:
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out: dict[int, dict] = {}
        t0 = time.perf_counter()
        threads = [threading.Thread(target=visitor, args=(url, i, args.steps, out)) for i in range(args.visitors)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
        time.sleep(2)
        cpu0 = server.cpu_times()
        time.sleep(10)
        cpu1 = server.cpu_times()
        idle_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        budget_line = next((ln for ln in Path(log.name).read_text().splitlines() if "memory budget" in ln), "")
    finally:
        proc.terminate()
        proc.wait(30)
    for i in sorted(out):
        r = out[i]
        if "error" in r:
            print(f"visitor {i}: ERROR {r['error']}")
            continue
        print(f"visitor {i}: start {r['start_s']:.1f} s, scores {r['scores_s']:.1f} s, unlearn {r['unlearn_s']:.1f} s, "
              f"compare {r['compare_s']:.1f} s; forget hit rate after {r['forget_hit_rate']}; shown while waiting: "
              f"{'; '.join(r['shown_while_waiting']) or '—'}")
    summary = {"visitors": args.visitors, "steps": args.steps, "wall_s": wall, "server_idle_rss_bytes": idle_rss,
               "server_peak_rss_bytes": peak["rss"], "budget": budget_line, "idle_cpu_s_in_10_s": idle_cpu,
               "results": [out[i] for i in sorted(out)]}
    print(f"{args.visitors} visitors in {wall:.0f} s; server RSS {idle_rss / 1e9:.2f} GB idle with the model, peak "
          f"{peak['rss'] / 1e9:.2f} GB ({budget_line.strip() or 'budget unknown'}); CPU after they left: "
          f"{idle_cpu:.2f} s in 10 s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0 if all("error" not in r for r in out.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
