"""In- vs out-of-distribution forgetting under gradient ascent, side by side (Baluta et al. 2024, arXiv 2411.04388;
SPEC §3.8): the built-in dynamics preset.

    res = compare(lm)                          # both arms on the built-in world-capitals data, same budget and seed
    print("\\n".join(table_lines(res)))

Baluta et al. find that forget examples unlike the data the model must keep (out-of-distribution) need more
gradient-ascent steps to forget but cost little utility, while examples like the kept data (in-distribution) are
forgotten fast and drag the kept data down with them. The preset asks that question of the loaded model with data
it really knows (``assets/examples/world-capitals``, checked against the bundled model):

* the **same kept data** for both arms: the example's retain capitals and its unrelated facts of other kinds
  (literature, science, arts and history) — trained on by neither arm here, since gradient ascent has no retain
  term, but the GRI mask is scored against them; its **neighbours** (capitals never trained on) and **holdout**
  (capitals the model does not know: the "forgotten" level) are recorded too;
* **in-distribution** forget set: the example's 8 forget capitals — the same kind as most of the kept data;
* **out-of-distribution** forget set: the example's known facts of the kinds :data:`OOD_KINDS` ("solar system",
  "nature and geography"), taken *out* of the kept data, so no kept example is of their kind (8 facts as well).

Each arm runs gradient ascent on the GRI mask with the same learning rate and a fixed budget (stop-when-forgotten
off), recording the per-example dynamics (grin_ui.dynamics) every few steps; the model is restored after each arm.
The figures to compare are the dynamics summaries: the step at which the forget set's fact log-probability reaches
the holdout level, the kept sets' log-probability change at that step, and the selectivity area.
"""

from __future__ import annotations

import time
from dataclasses import replace

from grin_ui.config import RunConfig
from grin_ui.errors import Cancelled, GrinError

EXAMPLE = "world-capitals"
OOD_KINDS = ("solar system", "nature and geography")  # attributes of the example's unrelated retain facts
ID, OOD = "in-distribution", "out-of-distribution"
OBJECTIVE, LR, STEPS, EVERY = "grad_ascent", 5e-4, 24, 2  # measured on the bundled model (README, dynamics)


def preset_sets(example: str = EXAMPLE, ood_kinds=OOD_KINDS) -> dict[str, dict[str, list]]:
    """{ID: sets, OOD: sets}: the same retain (minus the out-of-distribution facts), neighbours and holdout; the
    forget set is the example's own (ID) or its retain facts of ``ood_kinds`` (OOD)."""
    from grin_ui.examples import load_example

    sets = {n: list(s.records) for n, s in load_example(example).items()}
    ood = [r for r in sets.get("retain", []) if r.attribute in ood_kinds]
    if not ood:
        raise GrinError(f"The example {example!r} has no retain facts of the kinds {', '.join(ood_kinds)}.")
    base = {n: sets[n] for n in ("neighbours", "holdout") if sets.get(n)}
    base["retain"] = [r for r in sets["retain"] if r.attribute not in ood_kinds]
    return {ID: {**base, "forget": sets["forget"]}, OOD: {**base, "forget": ood}}


def preset_config(lr: float = LR, steps: int = STEPS, every: int = EVERY, seed: int = 0,
                  base: RunConfig | None = None) -> RunConfig:
    """Gradient ascent on ``base``'s mask (default RunConfig(): GRIN, 1 %), a fixed budget, dynamics every ``every``
    steps; no utility metrics, no probes."""
    cfg = base or RunConfig()
    return replace(cfg, unlearn=replace(cfg.unlearn, objective=OBJECTIVE, lr=lr, steps=steps,
                                        stop_when_forgotten=False, dynamics_every=max(1, int(every))),
                   seed=seed, probes=(), utility=False)


def compare(lm, cfg: RunConfig | None = None, sets: dict | None = None, progress=None, cancel=None) -> dict:
    """Run both arms from the original model (restored after each) and return {"config", "arms": {name: {"sizes",
    "dynamics", "changed", "steps_run"}}, "seconds"}. ``sets`` default :func:`preset_sets`."""
    from grin_ui.journey import unlearn

    cfg = cfg or preset_config()
    sets = sets or preset_sets()
    say = progress or (lambda msg, frac=None: None)
    t0 = time.perf_counter()
    arms = {}
    for i, (name, s) in enumerate(sets.items()):
        share = lambda msg, frac=None, i=i: say(f"{name}: {msg}", (i + (frac or 0.0)) / len(sets))  # noqa: E731
        res = unlearn(lm, s, cfg, progress=share, cancel=cancel)
        if res.cancelled:
            raise Cancelled("Cancelled; the model is the original again.")
        arms[name] = {"sizes": {n: len(v) for n, v in s.items()}, "dynamics": res.dynamics,
                      "changed": res.delta.changed() if res.delta is not None else 0,
                      "steps_run": len(res.history)}
    return {"config": {"objective": cfg.unlearn.objective, "lr": cfg.unlearn.lr, "steps": cfg.unlearn.steps,
                       "every": cfg.unlearn.dynamics_every, "selector": cfg.mask.selector,
                       "sparsity": cfg.mask.sparsity, "seed": cfg.seed},
            "arms": arms, "seconds": time.perf_counter() - t0}


SUMMARY_COLUMNS = (("forget_step", "step at the holdout level"),
                   ("retain_change_at_forget", "retain Δ there"),
                   ("neighbours_change_at_forget", "neighbours Δ there"),
                   ("forget_change", "forget Δ at the end"),
                   ("retain_change", "retain Δ at the end"),
                   ("selectivity_area", "selectivity area"))


def summary_rows(res: dict) -> list[list]:
    """One row per arm: its name, forget size, then the dynamics summary (nats/token; None where never reached)."""
    rows = []
    for name, arm in res["arms"].items():
        s = (arm.get("dynamics") or {}).get("summary") or {}
        rows.append([name, arm["sizes"].get("forget"), *[s.get(k) for k, _ in SUMMARY_COLUMNS]])
    return rows


def table_lines(res: dict) -> list[str]:
    """A markdown table of :func:`summary_rows` under one line of settings."""
    c = res["config"]
    f = lambda v: "never" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))  # noqa: E731
    out = [f"gradient ascent, {c['selector']} {100 * c['sparsity']:g} %, lr {c['lr']:g}, {c['steps']} steps, "
           f"dynamics every {c['every']}, seed {c['seed']} ({res['seconds']:.0f} s); Δ = change of the mean answer "
           f"log-prob per token since step 0 (nats)",
           "| arm | forget examples | " + " | ".join(h for _, h in SUMMARY_COLUMNS) + " |",
           "|---" * (2 + len(SUMMARY_COLUMNS)) + "|"]
    out += ["| " + " | ".join(f(v) for v in row) + " |" for row in summary_rows(res)]
    return out
