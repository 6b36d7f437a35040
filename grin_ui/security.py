"""Safe defaults for a server others can reach (SPEC §9): public mode for non-loopback hosts, messages without
server paths.

    is_loopback("127.0.0.1")                      # True; "0.0.0.0", "192.168.1.5", "example.org" -> False
    enter_public_mode_if_exposed(host, trusted)   # sets GRIN_UI_PUBLIC=1 unless loopback or --trusted
    scrub_paths("no file /home/me/.cache/x")      # -> "no file <server path>"

Public mode (``GRIN_UI_PUBLIC=1``, grin_ui.models.is_public): local model paths only inside the allowed
directories, and models load only from safetensors files (pickled ``.bin`` weights are refused).
"""

from __future__ import annotations

import ipaddress
import os
import re

_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
# an absolute POSIX path (not the path of a URL), ~/..., or a Windows drive path; stops at quotes, spaces, brackets
_PATH_RE = re.compile(r"(?<![\w.:/~])(?:[A-Za-z]:\\|~/|/)(?:[^\s'\"`()\[\]{}<>,;:]+[/\\])+[^\s'\"`()\[\]{}<>,;:]*")
PLACEHOLDER = "<server path>"


def is_loopback(host: str | None) -> bool:
    """True when ``host`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    h = (host or "").strip().strip("[]").lower()
    if h in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False  # a name other than localhost, or 0.0.0.0 / :: (every interface)


def enter_public_mode_if_exposed(host: str | None, trusted: bool = False) -> bool:
    """Turn public mode on (``GRIN_UI_PUBLIC=1``) for a server bound to a non-loopback address unless ``trusted``.
    Returns whether the server runs in public mode afterwards."""
    if not trusted and not is_loopback(host):
        os.environ["GRIN_UI_PUBLIC"] = "1"
    return os.environ.get("GRIN_UI_PUBLIC", "").lower() in ("1", "true", "yes")


def allow_model_dir(spec: str | None) -> None:
    """Keep the operator's own start-up model loadable in public mode: when ``spec`` is a local directory, add it
    to ``$GRIN_UI_MODEL_DIRS``."""
    path = os.path.expanduser(spec or "")
    if spec and os.path.isdir(path):
        dirs = [d for d in os.environ.get("GRIN_UI_MODEL_DIRS", "").split(os.pathsep) if d]
        os.environ["GRIN_UI_MODEL_DIRS"] = os.pathsep.join(dirs + [os.path.realpath(path)])


def scrub_paths(text: str, known: tuple[str, ...] = ()) -> str:
    """``text`` with every absolute path (and each of ``known``, e.g. a resolved model directory) replaced by
    '<server path>', for messages shown to a visitor."""
    for p in sorted((str(k) for k in known if k), key=len, reverse=True):
        text = text.replace(p, PLACEHOLDER)
    return _PATH_RE.sub(PLACEHOLDER, text)
