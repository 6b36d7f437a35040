"""Helpers shared by the panels: the visitor's session, friendly errors, progress adapters, small formatters."""

import functools
import inspect
import logging
import math

import gradio as gr

from grin_ui.errors import Cancelled, GrinError
from grin_ui.models import is_public
from grin_ui.security import scrub_paths
from grin_ui.store import Session, SessionStore

log = logging.getLogger("grin_ui.ui")


def session_of(store: SessionStore, request: gr.Request | None) -> Session:
    """The visitor's session: one per browser tab (gradio's session hash), one per gradio_client; its creator's
    address counts towards the per-client limit."""
    sid = getattr(request, "session_hash", None) if request is not None else None
    return store.get(sid, client=client_of(request))


def client_of(request: gr.Request | None) -> str:
    """The visitor's address: the first X-Forwarded-For entry when a proxy (e.g. Hugging Face Spaces) set one, else
    the connection's. Only used to share out sessions fairly, never for access control."""
    if request is None:
        return ""
    headers = getattr(request, "headers", None) or {}
    forwarded = (headers.get("x-forwarded-for") or "").split(",")[0].strip()
    return forwarded or getattr(getattr(request, "client", None), "host", None) or ""


def cancel_button(store: SessionStore, api_name: str, label: str = "Cancel") -> gr.Button:
    """A Cancel button for the long actions of a tab: it sets the visitor's cancel flag, which the running action
    checks at every token, batch or step (grin_ui.cancel); the action then stops, restores the model and says so."""
    btn = gr.Button(label, variant="stop", scale=0, min_width=110)

    def cancel(request: gr.Request):
        session_of(store, request).cancel.set()

    btn.click(cancel, None, None, api_name=api_name, queue=False, concurrency_limit=None)
    return btn


def _friendly(e: Exception) -> gr.Error:
    if isinstance(e, gr.Error):
        return e
    if isinstance(e, Cancelled):
        return gr.Error(str(e), title="Cancelled", print_exception=False)
    if isinstance(e, GrinError):
        message = scrub_paths(str(e)) if is_public() else str(e)  # a public server never shows its paths
        return gr.Error(message, title="Cannot do that", print_exception=False)
    log.exception("internal error in a dashboard action")
    return gr.Error(f"Internal error ({type(e).__name__}: {scrub_paths(str(e))}). The model and your results are "
                    "unchanged.",
                    title="Internal error")


def friendly(fn):
    """Show every GrinError as a readable error toast (and any other exception as one line), never a traceback.
    Works for plain functions and generators; keeps the signature gradio inspects (gr.Request, gr.Progress)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - turned into a toast
                raise _friendly(e) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - turned into a toast
            raise _friendly(e) from None
    return wrapper


def reporter(progress):
    """Adapt a gr.Progress to the session actions' ``progress(message, fraction=None)``."""
    if progress is None:
        return None

    def report(message, fraction=None):
        try:
            progress(fraction if fraction is not None else None, desc=message)
        except Exception:  # noqa: BLE001 - progress is cosmetic (e.g. called outside an event in tests)
            pass
    return report


def notices(session: Session) -> None:
    for n in session.pop_notices():
        gr.Warning(n)


def fmt(v, digits: int = 3) -> str:
    """Number for a table cell: None / NaN as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "—"
    return f"{f:.{digits}g}" if abs(f) < 1e4 else f"{f:,.0f}"


def explain(text: str) -> gr.Markdown:
    """The short explanation shown at the top of a panel."""
    return gr.Markdown(text, elem_classes=["explain"])
