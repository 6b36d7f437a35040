"""The server's memory budget (grin_ui.budget) and the session store's limits: accounting tensor by tensor, a queue
with positions, refusal when an action cannot fit, release of recomputable state, per-client limits, idle sweep."""

import threading
import time

import pytest
import torch

from grin_ui.budget import MemoryBudget, tensor_bytes
from grin_ui.errors import Cancelled, GrinError
from grin_ui.influence import Scores
from grin_ui.pipeline import GrinResult
from grin_ui.store import SessionStore

MB = 10**6


def test_tensor_bytes_counts_each_storage_once():
    a = torch.zeros(1000)  # 4000 bytes
    b = torch.zeros(10, dtype=torch.int64)  # 80 bytes
    view = a[:10]
    nested = {"x": [a, (b, view)], "y": {"z": a}}
    assert tensor_bytes(nested) == 4080
    assert tensor_bytes(nested, a) == 4080
    assert tensor_bytes(torch.empty(5, device="meta"), None, "text", 3) == 0


def test_reserve_admits_what_fits_and_frees_it_after():
    budget = MemoryBudget(100 * MB)
    with budget.reserve(60 * MB, "scoring", held=lambda: 30 * MB):
        assert budget.reserved == 60 * MB
    assert budget.reserved == 0 and budget.peak_reserved == 60 * MB


def test_too_large_is_refused_at_once():
    budget = MemoryBudget(100 * MB)
    with pytest.raises(GrinError, match="too large for the teaching"):
        with budget.reserve(80 * MB, "teaching", held=lambda: 40 * MB):
            pass
    assert budget.reserved == 0 and budget.queued() == 0


def test_nothing_running_and_nothing_releasable_is_refused_not_queued_forever():
    budget = MemoryBudget(100 * MB)
    held = 20 * MB  # e.g. sessions' deltas; the model (fixed) is 10 MB
    with pytest.raises(GrinError, match="Not enough memory for the scoring"):
        with budget.reserve(85 * MB, "scoring", held=lambda: held, fixed=lambda: 10 * MB, release=lambda n: 0):
            pass


def test_release_is_asked_before_waiting():
    budget = MemoryBudget(100 * MB)
    state = {"held": 70 * MB}

    def release(n):
        state["held"] -= 30 * MB
        return 30 * MB

    with budget.reserve(50 * MB, "scoring", held=lambda: state["held"], fixed=lambda: 10 * MB, release=release):
        assert state["held"] == 40 * MB


def test_second_action_waits_in_the_queue_and_hears_its_position():
    budget = MemoryBudget(100 * MB)
    heard, order = [], []
    first_in = threading.Event()
    go = threading.Event()

    def first():
        with budget.reserve(70 * MB, "scoring", held=lambda: 10 * MB):
            first_in.set()
            go.wait(5)
            order.append("first done")

    t = threading.Thread(target=first)
    t.start()
    assert first_in.wait(5)

    def second():
        with budget.reserve(50 * MB, "probes", held=lambda: 10 * MB, progress=heard.append):
            order.append("second in")

    t2 = threading.Thread(target=second)
    t2.start()
    deadline = time.monotonic() + 5
    while not heard and time.monotonic() < deadline:
        time.sleep(0.01)
    assert heard == ["The server is busy: 0.05 GB needed, 0.02 GB free; your request is queued at position 1"]
    assert budget.queued() == 1
    go.set()
    t.join(5)
    t2.join(5)
    assert order == ["first done", "second in"] and budget.reserved == 0


def test_cancel_while_waiting():
    budget = MemoryBudget(100 * MB)
    cancel = threading.Event()
    inside = threading.Event()
    release = threading.Event()

    def holder():
        with budget.reserve(80 * MB, "scoring", held=lambda: 0):
            inside.set()
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    assert inside.wait(5)
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(Cancelled):
        with budget.reserve(50 * MB, "probes", held=lambda: 0, cancel=cancel):
            pass
    assert budget.queued() == 0
    release.set()
    t.join(5)


def test_budget_from_env(monkeypatch):
    monkeypatch.setenv("GRIN_UI_MEMORY_GB", "2.5")
    assert MemoryBudget.from_env().total == 2_500_000_000
    assert MemoryBudget.from_env(1).total == 1_000_000_000
    monkeypatch.setenv("GRIN_UI_MEMORY_GB", "lots")
    with pytest.raises(GrinError, match="GRIN_UI_MEMORY_GB"):
        MemoryBudget.from_env()
    monkeypatch.delenv("GRIN_UI_MEMORY_GB")
    assert 0 < MemoryBudget.from_env().total


def _scores(n: int) -> Scores:
    return Scores({"w": torch.rand(n, n) + 0.1})


def test_releasing_scores_frees_them_for_real(tiny_dir):
    """The scores are also referenced by the last result: both references go, and the bytes are really freed."""
    store = SessionStore(default_model=tiny_dir)
    s = store.get("a")
    sc = _scores(500)  # 1 MB of scores (+ its index)
    s.scores = sc
    s.result = GrinResult(sc, None, None)
    held = s.held_bytes()
    assert held >= 1_000_000
    freed = s.release_scores()
    assert freed == held and s.scores is None and s.result.scores is None and s.held_bytes() == 0
    assert "released" in s.pop_notices()[0]


def test_store_fits_the_budget_by_releasing_least_recently_used(tiny_dir):
    store = SessionStore(default_model=tiny_dir, budget=MemoryBudget(10**12))
    a, b, c = store.get("a"), store.get("b"), store.get("c")
    store.store_scores(a, _scores(500))
    store.store_scores(b, _scores(500))
    weights = store.models.weights_bytes()  # no model loaded yet: 0
    per = a.held_bytes()
    store.budget = MemoryBudget(weights + int(2.5 * per))
    store.store_scores(c, _scores(500))  # three sets of scores do not fit in 2.5: the oldest (a) goes
    assert a.scores is None and b.scores is not None and c.scores is not None
    assert store.held_bytes() <= store.budget.total


def test_per_client_limit_evicts_the_clients_own_sessions(tiny_dir):
    store = SessionStore(default_model=tiny_dir, max_sessions=16, max_per_client=3)
    other = store.get("visitor", client="10.0.0.2")
    for i in range(6):
        store.get(f"bot-{i}", client="10.0.0.9")
    assert "visitor" in store and other is store.get("visitor", client="10.0.0.2")
    assert [sid for sid in store.ids() if sid.startswith("bot")] == ["bot-3", "bot-4", "bot-5"]


def test_idle_sessions_are_swept_and_leaving_cancels(tiny_dir):
    store = SessionStore(default_model=tiny_dir, idle_timeout_s=60)
    a, b = store.get("a"), store.get("b")
    b.last_used -= 120
    with a.busy:  # a busy session is never swept, however old
        a.last_used -= 120
        assert store.sweep() == ["b"]
    assert store.sweep() == ["a"] and len(store) == 0
    c = store.get("c")
    store.leave("c")
    assert c.cancel.is_set() and "c" not in store


def test_client_address_behind_a_proxy():
    from types import SimpleNamespace

    from grin_ui.ui.common import client_of

    direct = SimpleNamespace(headers={}, client=SimpleNamespace(host="10.0.0.7"))
    proxied = SimpleNamespace(headers={"x-forwarded-for": "203.0.113.5, 10.0.0.1"},
                              client=SimpleNamespace(host="10.0.0.1"))
    assert client_of(direct) == "10.0.0.7" and client_of(proxied) == "203.0.113.5" and client_of(None) == ""


def test_eviction_drops_every_excess_session_at_once(tiny_dir):
    store = SessionStore(default_model=tiny_dir, max_sessions=16, max_per_client=16)
    for i in range(6):
        store.get(f"s{i}", client="c")
    store.max_per_client = 2  # lowered while six are held: the next one leaves the newest and itself
    store.get("new", client="c")
    assert store.ids() == ["s5", "new"]
