"""Malformed uploads through the dashboard's upload path (SPEC §9): a real server on 127.0.0.1 with the tiny model
receives a sample of the generated broken files of tests/test_uploads.py through gradio_client (the file goes over
HTTP into gradio's upload cache, then through the forget set's upload event). Each is loaded or refused with a
readable message — never "Internal error" — and the server keeps answering. Bounded: about 70 files, 180 s."""

import random
import time

import pytest
from gradio_client import handle_file

from grin_ui import session as S
from grin_ui.ui.app import build_app, launch_options, queued
from tests.test_app_client import client, free_port
from tests.test_uploads import _malformed


@pytest.fixture(scope="module")
def url(tiny_dir):
    demo = build_app(tiny_dir, S.SessionStore(default_model=tiny_dir))
    port = free_port()
    queued(demo).launch(server_name="127.0.0.1", server_port=port,
                        prevent_thread_lock=True, quiet=True, **launch_options())
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_malformed_uploads_through_the_server(url, tmp_path):
    cases = _malformed(random.Random(1234))
    sample = cases[::6] + cases[-30:]  # every kind of damage, and all the giant / nested / bomb files
    c = client(url)
    c.predict(None, api_name="/start")
    seen = {"loaded": 0, "refused": 0}
    messages: set[str] = set()
    t0 = time.monotonic()
    for i, (ext, data) in enumerate(sample):
        assert time.monotonic() - t0 < 180, "the uploads took too long"
        path = tmp_path / f"upload{i}{ext}"
        path.write_bytes(data)
        try:
            preview, info = c.predict(handle_file(str(path)), api_name="/upload_forget")
        except Exception as e:  # noqa: BLE001 - gradio_client raises the server's message
            msg = str(e)
            assert "Internal error" not in msg and f"upload{i}{ext}" in msg, (i, ext, msg)  # names the file
            messages.add(f"{ext}: {msg}")
            assert str(tmp_path) not in msg, msg
            seen["refused"] += 1
        else:
            assert "forget examples" in info, (i, ext, info)
            seen["loaded"] += 1
        path.unlink()
    assert seen["refused"] >= 40 and seen["loaded"] >= 1, seen
    # the visitor is told what is wrong (the message comes back through gradio, not a generic error)
    assert len(messages) >= 15, sorted(messages)
    card, status, *_ = c.predict(None, api_name="/start")  # still up and answering
    assert "Loaded" in status
