"""The thread setting (grin_ui.threads): $GRIN_UI_THREADS wins, a bad value is a clear error, the default leaves an
$OMP_NUM_THREADS choice alone and is otherwise the physical cores."""

import psutil
import pytest
import torch

from grin_ui.errors import GrinError
from grin_ui.threads import apply_threads, configured_threads


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_env_setting_applies(monkeypatch, restore_threads):
    monkeypatch.setenv("GRIN_UI_THREADS", "1")
    assert configured_threads() == 1 and apply_threads() == 1 and torch.get_num_threads() == 1
    for bad in ("0", "-2", "many"):
        monkeypatch.setenv("GRIN_UI_THREADS", bad)
        with pytest.raises(GrinError, match="GRIN_UI_THREADS"):
            configured_threads()


def test_default(monkeypatch, restore_threads):
    monkeypatch.delenv("GRIN_UI_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert configured_threads() == 1  # an explicit OMP_NUM_THREADS choice is kept
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert configured_threads() == min(psutil.cpu_count(logical=False) or 1, len(__import__("os").sched_getaffinity(0)))
