"""Shared fixtures: the tiny trained model (fast tests) and the bundled default model (slow tests)."""

from __future__ import annotations

import pytest

from grin_ui.models import load_model
from tests import tiny


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> str:
    """Directory of the tiny model, trained once per test session to memorize tiny.FORGET + tiny.RETAIN."""
    return tiny.build_tiny(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_lm(tiny_dir):
    """A fresh copy of the tiny model (tests may modify it)."""
    return load_model(tiny_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_sets():
    return {"forget": tiny.FORGET, "retain": tiny.RETAIN, "holdout": tiny.HOLDOUT}


@pytest.fixture(scope="session")
def default_lm():
    """The bundled SmolLM2-135M-Instruct (converted to the safetensors cache on first use). Slow tests only."""
    return load_model("default", device="cpu")
