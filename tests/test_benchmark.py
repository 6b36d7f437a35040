"""Smoke test of benchmarks/run.py: the quick mode on the tiny model writes every SPEC §8 figure.

Serve and the walkthrough are skipped (they are measured on the bundled model by the real run); every other figure
must be a finite positive number, and the optimizer state must be exactly two fp32 moments per masked entry.
"""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import load_script


def test_quick_benchmark_on_tiny_model(tiny_dir, tmp_path):
    bench = load_script("benchmarks/run.py")
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--model", tiny_dir, "--skip", "serve,walkthrough", "--threads", "1",
                "--probe-examples", "2", "--probe-steps", "1", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["errors"] == {}, res["errors"]
    for key in bench.REQUIRED:
        assert key in res, key
    skipped = {"walkthrough_s", "ready_s"}
    for key in set(bench.REQUIRED) - skipped:
        v = res[key]
        assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, (key, v)
    assert res["walkthrough_s"] is None and res["ready_s"] is None
    assert set(res["skipped"]) == {"serve", "walkthrough"}
    assert res["optimizer_state_bytes_per_masked_entry"] == 8.0  # m and v, fp32, per masked entry
    # the dashboard's eight tabs, clicked through a real server on the tiny model
    tabs = res["dashboard_tab_s"]
    assert list(tabs) == ["load", "data", "knowledge check", "scores", "unlearning", "compare", "nf4 probe", "report"]
    assert all(v > 0 for v in tabs.values()) and res["dashboard_total_s"] == pytest.approx(sum(tabs.values()), abs=0.1)
    assert res["dashboard_max_action_s"] == max(v for k, v in tabs.items() if k != "unlearning")
    assert 0 < res["masked_entries"] < res["scored_weights"]
    assert res["masked_row_step_ratio"] > 0 and res["masked_row_gradient_tensors"] > 0  # grin_ui.rowgrad in use
    assert res["masked_entry_gradient_tensors"] > 0  # the sampled products of grin_ui.rowgrad at the global scope
    for kind in ("nf4", "fp4", "int8", "rtn4"):
        assert res[f"probe_{kind}_s"] > 0
    assert res["machine"]["cpu_count"] >= 1 and res["machine"]["torch_threads"] == 1
    assert res["targets"]["scoring_time_ratio"]["target"] == 1.15
