"""Eight visitors at once (SPEC §9): a real server on 127.0.0.1 with the tiny model and a memory budget, eight
gradio_client visitors each running data → scores → unlearn → compare on their own forget set. Every one succeeds,
each sees its own results, the server's memory growth stays under its budget, and once they have left the server
is idle: no CPU, sessions dropped after the idle timeout. Bounded: 8 visitors, 240 s."""

import threading
import time

import psutil
import pytest

from grin_ui import session as S
from grin_ui.budget import MemoryBudget
from grin_ui.ui.app import build_app, launch_options, queued
from tests import tiny
from tests.test_app_client import client, free_port, jsonl, rows

VISITORS = 8
BUDGET_BYTES = 400 * 10**6


class PeakRSS:
    """Samples this process's resident memory every 20 ms until stopped."""

    def __init__(self):
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak - self.start


@pytest.fixture(scope="module")
def loaded_server(tiny_dir):
    store = S.SessionStore(default_model=tiny_dir, budget=MemoryBudget(BUDGET_BYTES), idle_timeout_s=3)
    store.models.get(tiny_dir)
    demo = build_app(tiny_dir, store)
    port = free_port()
    queued(demo).launch(server_name="127.0.0.1", server_port=port,
                        prevent_thread_lock=True, quiet=True, **launch_options())
    yield f"http://127.0.0.1:{port}/", store
    demo.close()


def visit(url: str, i: int, out: dict) -> None:
    try:
        c = client(url)
        forget = tiny.FORGET[: 2 + i % 5]  # visitor i forgets 2..6 questions: its results say how many
        retain = tiny.RETAIN
        c.predict(None, api_name="/start")
        c.predict(jsonl(forget), api_name="/paste_forget")
        c.predict(jsonl(retain), api_name="/paste_retain")
        c.predict(jsonl(tiny.HOLDOUT), api_name="/paste_holdout")
        c.predict(1.0, "global", "mean log10", api_name="/compute_scores")
        _, status, *_ = c.predict("npo", "grin", 1.0, "global", 0.1, 1e-3, 5, 1.0, "nll", i, False,
                                  api_name="/unlearn")
        table, _, generations = c.predict(False, api_name="/compare")
        out[i] = {"status": status, "generations": generations, "n": len(forget),
                  "forget_rows": [r for r in rows(table) if r[0] == "forget"]}
        c.close()
    except Exception as e:  # noqa: BLE001 - reported by the test
        out[i] = {"error": repr(e)}


def test_eight_visitors_at_once(loaded_server):
    url, store = loaded_server
    peak = PeakRSS()
    out: dict[int, dict] = {}
    threads = [threading.Thread(target=visit, args=(url, i, out)) for i in range(VISITORS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, 240 - (time.monotonic() - t0)))
    grew = peak.stop()
    assert not any(t.is_alive() for t in threads), "visitors still running after 240 s"
    errors = {i: r["error"] for i, r in out.items() if "error" in r}
    assert not errors and len(out) == VISITORS, errors
    for i, r in out.items():  # each visitor sees its own data
        assert "**Done.**" in r["status"], r["status"]
        assert f"Forget set ({r['n']} questions)" in r["generations"], i
    assert grew <= BUDGET_BYTES, f"the server grew by {grew / 1e6:.0f} MB, over its {BUDGET_BYTES / 1e6:.0f} MB budget"
    assert store.budget.reserved == 0 and store.budget.queued() == 0


def test_idle_after_the_visitors_left(loaded_server):
    """After the visitors (of the test above) left: no CPU used, and the sessions go after the idle timeout."""
    _, store = loaded_server
    store.start_janitor(every_s=0.5)
    time.sleep(1.0)
    proc = psutil.Process()
    t = proc.cpu_times()
    time.sleep(4.0)
    t2 = proc.cpu_times()
    used = (t2.user - t.user) + (t2.system - t.system)
    assert used < 0.2, f"the idle server used {used:.2f} s of CPU in 4 s"
    assert len(store) == 0  # idle timeout 3 s, swept every 0.5 s
