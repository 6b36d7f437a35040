"""The dashboard served on 127.0.0.1 and driven through its api_names with gradio_client, on the tiny model."""

import json
import shlex
import shutil
import socket
import threading
from pathlib import Path

import pytest
import torch
from gradio_client import Client

from grin_ui import session as S
from grin_ui.cli import main
from grin_ui.report import validate_report
from grin_ui.ui.app import build_app, launch_options, queued
from tests import tiny
from tests.helpers import without_seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jsonl(records) -> str:
    return "\n".join(json.dumps(r.to_dict()) for r in records)


@pytest.fixture(scope="module")
def served(tiny_dir):
    store = S.SessionStore(default_model=tiny_dir)
    demo = build_app(tiny_dir, store)
    port = free_port()
    queued(demo).launch(server_name="127.0.0.1", server_port=port,
                        prevent_thread_lock=True, quiet=True, **launch_options())
    yield f"http://127.0.0.1:{port}/", store
    demo.close()


def client(url: str) -> Client:
    return Client(url, verbose=False)


def rows(df) -> list:
    return df["data"] if isinstance(df, dict) else df


def test_whole_journey(served):
    url, store = served
    c = client(url)
    card, status, *data = c.predict(None, api_name="/start")
    assert dict(map(tuple, rows(card)))["architecture"] == "LlamaForCausalLM"
    for name, recs in (("forget", tiny.FORGET), ("retain", tiny.RETAIN), ("holdout", tiny.HOLDOUT)):
        preview, info = c.predict(jsonl(recs), api_name=f"/paste_{name}")
        assert len(rows(preview)) == len(recs) and f"**{len(recs)} {name} examples**" in info
    score_map, density, hist, top, summary, pct, scope = c.predict(1.0, "global", "mean log10",
                                                                   api_name="/compute_scores")
    assert "scored weights selected" in summary and pct == 1.0 and scope == "global"
    assert rows(top)[0][0].endswith(".weight")
    *_, summary5, _, _ = c.predict(5.0, "global", api_name="/update_mask")
    assert "(5 %" in summary5
    curves, run_status, *_ = c.predict("npo", "grin", 1.0, "global", 0.1, 1e-3, 5, 1.0, "nll", 0, True,
                                       api_name="/unlearn")
    assert "**Done.**" in run_status
    b_table, b_chart = c.predict("npo", 1.0, "global", 0.1, 1e-3, 3, 1.0, "nll", 0, False, 2, api_name="/baselines")
    labels = [label for label, _ in S.BASELINES]
    assert [r[0] for r in rows(b_table)] == labels and all(r[2] == 2 for r in rows(b_table))
    assert rows(b_table)[-1][1] == "2.5e-06"  # no mask: 1/400 of the learning rate (the sweep's ratio)
    assert all("±" in r[5] for r in rows(b_table))  # retain kept: mean ± interval over 2 seeds
    bars = json.loads(b_chart["plot"])["data"]
    assert [t["name"] for t in bars] == labels and all(len(t["error_y"]["array"]) == 3 for t in bars)
    table, chart, generations = c.predict(False, api_name="/compare")
    assert any(r[:2] == ["forget", "answer hit rate"] for r in rows(table))
    assert "Forget set (6 questions)" in generations
    before, after = c.predict("Where was Velmora Quist born?", api_name="/ask_both")
    fact = next(r for r in tiny.FORGET if r.question == "Where was Velmora Quist born?")
    said = ["".join(t["token"] if isinstance(t, dict) else t[0] for t in h) for h in (before, after)]
    assert fact.keywords[0] in said[0] and said[1].strip(), said  # the original states the fact; both answered
    probe_table, rec, bars, rec_plot, surv, shown = c.predict(["rtn4"], api_name="/probe")
    assert rows(rec)[0][0] == "rtn4"
    rl_summary, rl_table, rl_plot = c.predict(api_name="/relearn")
    assert "measured on the other 3" in rl_summary and rows(rl_table)[0][0] == "answer hit rate"
    files, preview, command = c.predict(api_name="/report")
    assert sorted(Path(f).name for f in files) == ["delta.safetensors", "forget.jsonl", "holdout.jsonl",
                                                   "report.html", "report.json", "retain.jsonl"]
    assert "grin-ui audit report" in preview and "grin-ui run --config report.json" in command
    _, reset_status = c.predict(api_name="/reset")
    assert "Reset" in reset_status


def test_errors_come_back_as_messages(served):
    url, _ = served
    c = client(url)
    with pytest.raises(Exception, match="line 1"):
        c.predict("{not json", api_name="/paste_forget")
    with pytest.raises(Exception, match="step 2"):
        c.predict(1.0, "global", "mean log10", api_name="/compute_scores")


def test_two_sessions_keep_their_own_results(served):
    url, store = served
    a, b = client(url), client(url)
    a.predict(jsonl(tiny.FORGET), api_name="/paste_forget")
    b.predict(jsonl(tiny.FORGET[:2]), api_name="/paste_forget")
    for c in (a, b):
        c.predict(jsonl(tiny.RETAIN), api_name="/paste_retain")
    out = {}

    def journey(name, c):
        summary = c.predict(1.0, "global", "mean log10", api_name="/compute_scores")[4]
        status = c.predict("grad_diff", "grin", 2.0, "global", 0.1, 1e-3, 3, 1.0, "nll", 0, True, api_name="/unlearn")[1]
        out[name] = (summary, status)

    threads = [threading.Thread(target=journey, args=(n, c)) for n, c in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert "6 forget and 12 retain examples" in out["a"][0]
    assert "2 forget and 12 retain examples" in out["b"][0]
    assert "**Done.**" in out["a"][1] and "**Done.**" in out["b"][1]
    sessions = [s for s in (store.get(sid) for sid in store.ids()) if s.delta is not None and s.run_config
                and s.run_config.unlearn.objective == "grad_diff"]
    assert len(sessions) == 2, [(s.id, s.delta is not None, s.run_config and s.run_config.unlearn.objective)
                                for s in (store.get(sid) for sid in store.ids())]
    sa, sb = sorted(sessions, key=lambda s: len(s.sets["forget"]))
    assert len(sa.sets["forget"]) == 2 and len(sb.sets["forget"]) == 6
    assert sa.scores is not sb.scores and sa.delta is not sb.delta
    # the two unlearned states differ, and the shared base model holds neither
    name = next(iter(sb.delta.entries))
    base = store.base(sa).lm.model
    p = dict(base.named_parameters())[name].detach().reshape(-1)
    e = sb.delta.entries[name]
    assert torch.equal(p[e.idx] if e.idx is not None else p, e.old.reshape(-1))
    # each client sees its own comparison
    ga = a.predict(False, api_name="/compare")[2]
    gb = b.predict(False, api_name="/compare")[2]
    assert "Forget set (6 questions)" in ga and "Forget set (2 questions)" in gb


# the dashboard's unlearning knobs and the same settings as `grin-ui run` flags
KNOBS = ("npo", "grin", 1.0, "global", 0.1, 1e-3, 5, 2.0, "nll", 3, True)
FLAGS = ["--objective", "npo", "--selector", "grin", "--sparsity", "0.01", "--scope", "global", "--noise", "0.1",
         "--lr", "1e-3", "--steps", "5", "--alpha", "2.0", "--retain-loss", "nll", "--seed", "3", "--probes", "rtn4",
         "--no-utility"]


def test_dashboard_and_cli_write_one_report(served, tiny_dir, tmp_path, monkeypatch):
    """Both faces run the same journey code: the same settings give reports that follow the one schema, with the
    same keys, the same config block and the same numbers; the command the Report tab shows re-runs the session."""
    url, _ = served
    c = client(url)
    for name, recs in (("forget", tiny.FORGET), ("retain", tiny.RETAIN[:8]), ("neighbours", tiny.RETAIN[8:]),
                       ("holdout", tiny.HOLDOUT)):
        c.predict(jsonl(recs), api_name=f"/paste_{name}")
    c.predict(1.0, "global", "mean log10", api_name="/compute_scores")
    assert "**Done.**" in c.predict(*KNOBS, api_name="/unlearn")[1]
    c.predict(False, api_name="/compare")
    c.predict(["rtn4"], api_name="/probe")
    files, _, command = c.predict(api_name="/report")
    folder = tmp_path / "download"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / Path(f).name)
    dash = json.loads((folder / "report.json").read_text())
    validate_report(dash)

    out = tmp_path / "cli"
    data = [a for n in ("forget", "retain", "neighbours", "holdout") for a in (f"--{n}", str(folder / f"{n}.jsonl"))]
    assert main(["run", "--model", tiny_dir, *data, "--out", str(out), *FLAGS]) == 0
    cli = json.loads((out / "report.json").read_text())
    validate_report(cli)
    assert cli["config"] == dash["config"]
    for block in ("model", "mask", "data", "eval", "timings"):
        assert set(cli[block]) == set(dash[block]), block
    assert cli["model"] == {**dash["model"], "spec": cli["model"]["spec"]}
    assert {n: d["sha256"] for n, d in cli["data"].items()} == {n: d["sha256"] for n, d in dash["data"].items()}
    assert without_seconds(cli["eval"]) == without_seconds(dash["eval"])
    assert cli["recovery"] == dash["recovery"] and cli["mask"] == dash["mask"]
    assert dash["eval"]["unlearned"]["neighbours"]["n"] == 4

    # the Report tab's command, run in the downloaded folder, reproduces the dashboard's session exactly
    line = command.split("```bash")[1].split("```")[0].strip()
    monkeypatch.chdir(folder)
    assert main(shlex.split(line)[1:]) == 0
    again = json.loads((folder / "rerun" / "report.json").read_text())
    assert again["config"] == dash["config"] and without_seconds(again["eval"]) == without_seconds(dash["eval"])


def test_dynamics_preset_through_the_server(served):
    """The Unlearn tab's in- vs out-of-distribution preset (built-in data, default settings) over the API."""
    url, _ = served
    status, table, fig = client(url).predict(api_name="/dynamics_preset")
    assert status.startswith("gradient ascent, grin 1 %, lr 0.0005, 24 steps")
    assert [r[:2] for r in rows(table)] == [["in-distribution", 8], ["out-of-distribution", 8]]
    traces = json.loads(fig["plot"])["data"]  # per arm: the mean curve of forget, retain, neighbours, holdout
    assert len(traces) == 2 * 4 and {t["name"] for t in traces} == {"forget", "retain", "neighbours", "holdout"}
