"""The figures carry exactly the numbers they are given."""

import math

import pytest

import plotly.graph_objects as go

from grin_ui import plots


def test_block_module_heatmap_carries_values_and_labels():
    values = [[-1.5, 0.25, None], [2.0, float("nan"), 3.5]]
    fig = plots.score_heatmap([0, 1], ["q_proj", "k_proj", "down_proj"], values)
    hm = fig.data[0]
    assert isinstance(hm, go.Heatmap)
    assert list(hm.x) == ["q_proj", "k_proj", "down_proj"]
    assert list(hm.y) == ["block 0", "block 1"]
    assert [list(r) for r in hm.z] == [[-1.5, 0.25, None], [2.0, None, 3.5]]
    assert hm.text[0][0] == "-1.5" and hm.text[1][1] == ""
    assert fig.layout.yaxis.autorange == "reversed"  # block 0 on top


def test_density_and_survival_heatmaps_are_percentages():
    fig = plots.density_heatmap([0, 1], ["q", "v"], [[0.01, 0.0], [0.5, 1.0]], sparsity=0.01)
    assert [list(r) for r in fig.data[0].z] == [[1.0, 0.0], [50.0, 100.0]]
    assert "1 % sparsity" in fig.layout.title.text
    fig = plots.survival_heatmap([3], ["up_proj"], [[0.25]], kind="nf4")
    assert fig.data[0].z[0][0] == 25.0 and fig.data[0].zmax == 100 and "nf4" in fig.layout.title.text


def test_heatmap_accepts_tensors():
    import torch

    fig = plots.block_module_heatmap([0], ["a", "b"], torch.tensor([[1.0, 2.0]]), "t")
    assert list(fig.data[0].z[0]) == [1.0, 2.0]


def test_histogram_bars_and_threshold_line():
    edges = [-3.0, -2.0, -1.0, 0.0, 1.0]
    counts = [10, 200, 50, 3]
    fig = plots.score_histogram(edges, counts, threshold=-0.4, selected=12, total=263)
    bar = fig.data[0]
    assert list(bar.x) == [-2.5, -1.5, -0.5, 0.5]
    assert list(bar.y) == [10.0, 200.0, 50.0, 3.0]
    assert list(bar.width) == [1.0, 1.0, 1.0, 1.0]
    (line,) = [s for s in fig.layout.shapes if s.type == "line"]
    assert line.x0 == line.x1 == -0.4
    assert any("12 selected of 263" in a.text for a in fig.layout.annotations)


def test_histogram_without_threshold_has_no_line():
    fig = plots.score_histogram([0, 1, 2], [1, 2])
    assert not [s for s in fig.layout.shapes if s.type == "line"]


def test_loss_curves_carry_history():
    history = [{"step": 1, "forget_loss": 2.0, "retain_loss": 1.0, "loss": 1.5},
               {"step": 2, "forget_loss": 3.0, "retain_loss": 1.1, "loss": 1.9}]
    fig = plots.loss_curves(history)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["forget loss"].x) == [1, 2]
    assert list(by_name["forget loss"].y) == [2.0, 3.0]
    assert list(by_name["retain loss"].y) == [1.0, 1.1]
    assert list(by_name["objective"].y) == [1.5, 1.9]


def test_loss_curves_skip_missing_series_and_empty_history():
    fig = plots.loss_curves([{"step": 0, "forget_loss": 1.0}])
    assert [t.name for t in fig.data] == ["forget loss"]
    empty = plots.loss_curves([])
    assert not empty.data and "Run unlearning" in empty.layout.annotations[0].text


def test_metrics_bars_group_states():
    states = {
        "original": {"forget": {"answer_hit_rate": 1.0, "rougeL_recall": 0.9}, "retain": {"answer_hit_rate": 0.8}},
        "unlearned": {"forget": {"answer_hit_rate": 0.0, "rougeL_recall": 0.1}, "retain": {"answer_hit_rate": 0.75}},
        "nf4 · unlearned": {"forget": {"answer_hit_rate": 0.5}, "retain": {}},
    }
    fig = plots.metrics_bars(states, metrics=("answer_hit_rate", "rougeL_recall"))
    assert [t.name for t in fig.data] == list(states)
    assert list(fig.data[0].y) == [1.0, 0.9, 0.8, None]
    assert list(fig.data[1].y) == [0.0, 0.1, 0.75, None]
    assert list(fig.data[2].y) == [0.5, None, None, None]
    assert fig.data[0].x[0].startswith("forget") and "hit rate" in fig.data[0].x[0]
    assert fig.layout.barmode == "group"


def test_recovery_bars_show_undefined_as_dash():
    fig = plots.recovery_bars({"nf4": {"answer_hit_rate": 83.0, "rougeL_recall": None}})
    bar = fig.data[0]
    assert bar.name == "nf4"
    ys = dict(zip(bar.x, bar.y))
    assert ys["answer hit rate"] == 83.0 and ys["ROUGE-L recall"] is None
    assert "—" in list(bar.text)


def test_figures_serialize_to_json():
    fig = plots.score_histogram([0, 1], [5], threshold=0.5)
    assert isinstance(fig.to_json(), str)
    assert not math.isnan(fig.data[0].y[0])


def test_reorder_modules_follows_model_order():
    modules, values = plots.reorder_modules(["k", "q", "x"], [[1, 2, 3], [4, 5, 6]], ["q", "k", "v"])
    assert modules == ["q", "k", "x"] and values == [[2, 1, 3], [5, 4, 6]]


def test_interval_bars_draw_the_95_percent_interval():
    iv = {"n": 3, "mean": 0.5, "lo": 0.4, "hi": 0.6}
    one = {"n": 1, "mean": 0.7, "lo": None, "hi": None}
    fig = plots.interval_bars({"GRIN": {"forget_hit": iv, "retain_kept": one}, "random": {"forget_hit": one}},
                              {"forget_hit": "forget", "retain_kept": "retain"})
    grin, rnd = fig.data
    assert list(grin.x) == ["forget", "retain"] and list(grin.y) == [0.5, 0.7] and rnd.y[1] is None
    assert grin.error_y.visible and grin.error_y.array[0] == pytest.approx(0.1)
    assert grin.error_y.arrayminus[0] == pytest.approx(0.1) and grin.error_y.array[1] is None
    assert rnd.error_y.visible is False  # one seed: no interval to draw
