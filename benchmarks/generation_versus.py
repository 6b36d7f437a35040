"""Greedy generation today against an earlier version's ``grin_ui/generation.py`` (default: the first version,
commit ef99149), on the same model, questions, batch size and token budget, interleaved in one process.

    .venv/bin/python benchmarks/generation_versus.py                   # batch 16, 64 new tokens, 3 runs each
    .venv/bin/python benchmarks/generation_versus.py --rev HEAD~5 --batch 48 --repeats 5

The earlier file is read with ``git show REV:grin_ui/generation.py`` and loaded beside today's package (it imports
``grin_ui.data.prompt_ids`` from today's, the chat-template prompt both versions build alike). Questions: the
forget and retain questions of the example, the first ``--n``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def earlier_generate(rev: str):
    text = subprocess.run(["git", "show", f"{rev}:grin_ui/generation.py"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout
    path = Path(tempfile.mkdtemp()) / "earlier_generation.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("earlier_generation", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod.generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", default="ef99149")
    p.add_argument("--example", default="real-knowledge")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    from grin_ui.examples import load_example
    from grin_ui.generation import generate
    from grin_ui.models import load_model

    lm = load_model("default", device="cpu")
    sets = load_example(a.example)
    qs = [r.question for name in ("forget", "retain") for r in sets[name].records if r.is_qa][: a.n]
    fns = {a.rev: earlier_generate(a.rev), "today": generate}
    for fn in fns.values():  # warm-up
        fn(lm.model, lm.tokenizer, qs[:2], max_new_tokens=4, batch_size=2)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(a.repeats):
        for key in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            gc.collect()
            t0 = time.perf_counter()
            fns[key](lm.model, lm.tokenizer, qs, max_new_tokens=a.tokens, batch_size=a.batch)
            times[key].append(time.perf_counter() - t0)
            print(f"{key}: {times[key][-1]:.2f} s", file=sys.stderr, flush=True)
    rate = {k: len(qs) / statistics.median(v) for k, v in times.items()}
    print(f"{len(qs)} questions, batch {a.batch}, {a.tokens} new tokens: {a.rev} {rate[a.rev]:.2f} examples/s, "
          f"today {rate['today']:.2f} examples/s ({rate['today'] / rate[a.rev]:.2f}×)")


if __name__ == "__main__":
    main()
