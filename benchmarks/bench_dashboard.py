"""The user's wait in the dashboard (SPEC §8: the eight tabs ≤ 180 s in all, no action but unlearning over 45 s):
`grin-ui serve` in a subprocess, driven through gradio_client in the order a visitor clicks — load the model, use
the built-in example, knowledge check, scores, unlearning (defaults), compare, NF4 probe, report — each action timed
from the request to its answer. Runs after the walkthrough, with the benchmark's own model dropped first.
"""

from __future__ import annotations

import gc
import time

from bench_common import Bench, serving

NAME = "dashboard"
NEEDS: tuple[str, ...] = ()
NOT_UNLEARNING = ("load", "data", "knowledge check", "scores", "compare", "nf4 probe", "report")


def bench_dashboard(model_spec: str, example: str, res: dict) -> None:
    from gradio_client import Client

    from grin_ui.config import RunConfig

    d = RunConfig()
    with serving(model_spec) as (url, _):
        c = Client(url, verbose=False)
        steps = [
            ("load", lambda: (c.predict(api_name="/start"), c.predict(model_spec, api_name="/load_model"))),
            ("data", lambda: c.predict(example, api_name="/use_example")),
            ("knowledge check", lambda: c.predict(api_name="/knowledge_check")),
            ("scores", lambda: c.predict(100 * d.mask.sparsity, d.mask.scope, "mean log10",
                                         api_name="/compute_scores")),
            ("unlearning", lambda: c.predict(d.unlearn.objective, d.mask.selector, 100 * d.mask.sparsity, d.mask.scope,
                                             d.noise.scale, d.unlearn.lr, d.unlearn.steps, d.unlearn.alpha,
                                             d.unlearn.retain_loss, d.seed, d.unlearn.stop_when_forgotten, False,
                                             d.spunge.merge, 0, api_name="/unlearn")),
            ("compare", lambda: c.predict(False, api_name="/compare")),
            ("nf4 probe", lambda: c.predict(["nf4"], api_name="/probe")),
            ("report", lambda: c.predict(api_name="/report")),
        ]
        tabs = {}
        for name, call in steps:
            t0 = time.perf_counter()
            call()
            tabs[name] = round(time.perf_counter() - t0, 2)
    res["dashboard_tab_s"] = tabs
    res.update({f"dashboard_{k.replace(' ', '_')}_s": v for k, v in tabs.items()})
    res["dashboard_total_s"] = round(sum(tabs.values()), 1)
    res["dashboard_max_action_s"] = max(tabs[k] for k in NOT_UNLEARNING)


def run(b: Bench) -> None:
    b.lm = None  # free the memory before the server loads its own copy
    b.shared.clear()
    gc.collect()
    bench_dashboard(b.args.model, b.args.example, b.res)
