"""benchmarks/scale.py on a tiny random-init Llama config: every figure is present, finite and consistent."""

from __future__ import annotations

import json
import math

from tests.helpers import load_script


def test_scale_benchmark_structure_on_tiny_config(tmp_path):
    mod = load_script("benchmarks/scale.py")
    out = tmp_path / "scale.json"
    assert mod.main(["--sizes", "tiny", "--quick", "--threads", "1", "--device", "cpu", "--child",
                     "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["device"] == "cpu" and len(rep["results"]) == 1
    r = rep["results"][0]
    assert r["model"] == "tiny" and r["dtype"] == "float32"
    # the meta-device plan counts exactly the parameters of the built model
    assert r["plan_parameters"] == r["parameters"] and r["weights_bytes"] == 4 * r["parameters"]
    assert set(r["plan"]) == {"load", "scoring", "unlearning", "probes", "teaching", "evaluation"}
    assert r["plan"]["evaluation"] < r["plan"]["probes"]  # no backward, no quantized copy
    assert r["plan"]["load"] == r["weights_bytes"]
    for key in ("plain_fwd_bwd_s", "scoring_s", "masked_step_s", "probe_nf4_s", "scoring_time_ratio"):
        assert math.isfinite(r[key]) and r[key] > 0, key
    assert r["scoring_time_ratio"] == r["scoring_s"] / r["plain_fwd_bwd_s"]
    for a in ("scoring", "unlearning", "probes"):
        assert r[f"measured_{a}_bytes"] >= r["weights_bytes"]
        assert r[f"measured_over_plan_{a}"] == r[f"measured_{a}_bytes"] / r["plan"][a]
    assert r["probe_examples"] == 8 and r["seq_len"] > 10
