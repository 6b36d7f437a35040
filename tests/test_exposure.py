"""Safe when exposed (SPEC §9): public mode for non-loopback hosts, safetensors only, no server paths in messages;
bounded caches and scratch folders."""

from __future__ import annotations

import os
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file as load_safetensors

from grin_ui import scratch
from grin_ui.cli import main
from grin_ui.diskcache import evict, taught_cache_bytes, touch
from grin_ui.errors import GrinError
from grin_ui.models import load_model
from grin_ui.security import is_loopback, scrub_paths


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True),
                                           ("localhost", True), ("0.0.0.0", False), ("::", False),
                                           ("192.168.1.20", False), ("example.org", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


class _Stop(GrinError):
    pass


@pytest.mark.parametrize("argv,public", [(["--host", "0.0.0.0"], True), (["--host", "10.1.2.3"], True),
                                         (["--host", "0.0.0.0", "--trusted"], False), ([], False),
                                         (["--host", "localhost"], False)])
def test_serve_on_a_non_loopback_host_is_public_unless_trusted(monkeypatch, argv, public):
    from grin_ui import session
    from grin_ui.ui import app  # noqa: F401 - imported before SessionStore is replaced below

    monkeypatch.setenv("GRIN_UI_PUBLIC", "")  # recorded, so that what serve sets is undone afterwards
    monkeypatch.setenv("GRIN_UI_MODEL_DIRS", "")
    seen = {}

    def stop(*args, **kwargs):  # the first thing launch() does after choosing the mode: stop there
        seen["public"] = os.environ.get("GRIN_UI_PUBLIC") == "1"
        raise _Stop("stopped before loading a model")

    monkeypatch.setattr(session, "SessionStore", stop)
    assert main(["serve", *argv, "--model", "default"]) == 2
    assert seen["public"] is public


def _bin_copy(tiny_dir, dest):
    """The tiny model with its weights as a pickled pytorch_model.bin instead of safetensors."""
    shutil.copytree(tiny_dir, dest)
    torch.save(load_safetensors(dest / "model.safetensors"), dest / "pytorch_model.bin")
    (dest / "model.safetensors").unlink()
    return dest


def test_public_mode_refuses_pickled_weights_and_hides_paths(tmp_path, tiny_dir, monkeypatch):
    allowed = tmp_path / "models"
    model = _bin_copy(tiny_dir, allowed / "pickled")
    assert load_model(str(model), device="cpu").model is not None  # a local, trusted run loads it
    monkeypatch.setenv("GRIN_UI_PUBLIC", "1")
    monkeypatch.setenv("GRIN_UI_MODEL_DIRS", str(allowed))
    with pytest.raises(GrinError, match=r"has no safetensors weights: this public server loads models only from "
                                        r"safetensors files \(pickled \.bin weights are refused\)"):
        load_model(str(model), device="cpu")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(GrinError, match="outside the directories it allows") as e:
        load_model(str(outside), device="cpu")
    assert str(allowed) not in str(e.value)
    broken = allowed / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(GrinError) as e:
        load_model(str(broken), device="cpu")
    assert str(tmp_path) not in str(e.value).replace(f"'{broken}'", "")  # only the spec the visitor typed


def test_scrub_paths():
    assert scrub_paths("no file in /srv/cache/models/x/config.json.") == "no file in <server path>"
    assert scrub_paths("see ~/.cache/grin-ui/x and C:\\Users\\me\\m") == "see <server path> and <server path>"
    assert scrub_paths("https://huggingface.co/owner/name and owner/name") == \
        "https://huggingface.co/owner/name and owner/name"
    assert scrub_paths("the model at /opt/m", known=("/opt/m",)) == "the model at <server path>"


def test_taught_cache_evicts_least_recently_used(tmp_path, monkeypatch):
    root = tmp_path / "taught"
    for i, name in enumerate(("a", "b", "c")):
        (root / name).mkdir(parents=True)
        (root / name / "model.safetensors").write_bytes(b"x" * 1000)
        touch(root / name)
        os.utime(root / name / ".last_used", (time.time() - 100 + i, time.time() - 100 + i))
    (root / ".teach-crashed").mkdir()
    os.utime(root / ".teach-crashed", (0, 0))
    os.utime(root / "a" / ".last_used")  # "a" used just now: "b" is the least recently used
    removed = evict(root, 2500, keep=root / "c")
    assert {p.name for p in removed} == {"b", ".teach-crashed"}
    assert sorted(p.name for p in root.iterdir()) == ["a", "c"]
    assert evict(root, 0, keep=root / "c") == [root / "a"]  # the kept entry stays even over the bound
    monkeypatch.setenv("GRIN_UI_TAUGHT_CACHE_GB", "0.5")
    assert taught_cache_bytes() == 2**29
    monkeypatch.setenv("GRIN_UI_TAUGHT_CACHE_GB", "lots")
    with pytest.raises(GrinError, match="GRIN_UI_TAUGHT_CACHE_GB must be a number"):
        taught_cache_bytes()


def test_scratch_folders_are_replaced_bounded_and_removed(monkeypatch):
    monkeypatch.setattr(scratch, "MAX_FOLDERS", 3)
    first = scratch.scratch_dir("s1", "report")
    (first / "report.html").write_text("x")
    second = scratch.scratch_dir("s1", "report")
    assert not first.exists() and second.is_dir()  # a new export replaces the session's last one
    others = [scratch.scratch_dir(f"s{i}", "report") for i in range(2, 5)]
    assert not second.exists() and all(p.is_dir() for p in others)  # at most MAX_FOLDERS
    root = scratch.root()
    scratch.clear_all()
    assert not root.exists()
