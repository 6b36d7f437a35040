"""The dashboard: the eight steps of the journey (SPEC §2) as tabs, built from one module per panel.

    grin-ui serve                      # or: python app.py (Hugging Face Spaces)
    from grin_ui.ui.app import build_app; build_app("default").launch()

Wiring only: every callback calls grin_ui (mostly grin_ui.session, which keeps each visitor's results apart and
works on the shared base model under its lock).
"""

import gradio as gr

from grin_ui import session as S
from grin_ui.budget import MemoryBudget
from grin_ui.config import DataLimits
from grin_ui.examples import assets_dir
from grin_ui.models import DEFAULT_MODEL
from grin_ui.security import allow_model_dir, enter_public_mode_if_exposed
from grin_ui.threads import apply_threads
from grin_ui.ui.common import friendly, reporter, session_of
from grin_ui.ui.compare_panel import ComparePanel
from grin_ui.ui.data_panel import DataPanel
from grin_ui.ui.influence_panel import InfluencePanel
from grin_ui.ui.model_panel import ModelPanel
from grin_ui.ui.probe_panel import ProbePanel
from grin_ui.ui.report_panel import ReportPanel
from grin_ui.ui.teach_panel import TeachPanel
from grin_ui.ui.unlearn_panel import UnlearnPanel

HEADER = """# grin-ui — is it really forgotten?
Explore and audit **machine unlearning** in a real language model: find the weights that carry the data to forget
(**GRIN**: gradient-ratio influence + noise), unlearn by editing only those, then check whether the knowledge is
really gone — *even after quantization*. Defaults work out of the box: go through the tabs from left to right and
press the blue button in each."""

STEPS = ["1 · Model", "2 · Data", "3 · Teach", "4 · Influence map", "5 · Unlearn", "6 · Compare",
         "7 · Quantization probe", "8 · Report"]


def css() -> str:
    path = assets_dir() / "style.css"
    return path.read_text(encoding="utf-8") if path.is_file() else ""


class App:
    """Holds the panels of one Blocks app and the session store they share."""

    def __init__(self, model: str = DEFAULT_MODEL, store: S.SessionStore | None = None):
        self.store = store if store is not None else S.SessionStore(default_model=model)
        self.model = S.normalize_spec(model)
        self.model_panel = ModelPanel(self.store, self.model)
        self.data_panel = DataPanel(self.store)
        self.teach_panel = TeachPanel(self.store)
        self.influence_panel = InfluencePanel(self.store)
        self.unlearn_panel = UnlearnPanel(self.store)
        self.compare_panel = ComparePanel(self.store)
        self.probe_panel = ProbePanel(self.store)
        self.report_panel = ReportPanel(self.store)

    @friendly
    def start(self, example: str | None, request: gr.Request, progress=gr.Progress()):
        """Page load: load the session's model and, for a new visitor, the preselected built-in example."""
        s = session_of(self.store, request)
        base = self.store.base(s, reporter(progress))
        if not s.sets and example:
            try:
                return self._start_outputs(base, s, self.data_panel.use_example(example, request, progress))
            except gr.Error as e:  # a broken example must not block the page: show it and go on
                gr.Warning(e.message)
        return self._start_outputs(base, s, self.data_panel._outputs(s))

    def leave(self, request: gr.Request):
        """The page was closed: stop what the visitor runs and free its session."""
        self.store.leave(getattr(request, "session_hash", None))

    def _start_outputs(self, base, s, data_outputs):
        rows = [list(r) for r in base.lm.summary.as_rows()]
        return [rows, f"Loaded **{base.lm.summary.name}**."] + list(data_outputs)

    def build(self) -> gr.Blocks:
        # gradio's cache (uploads, served downloads): files older than an hour are removed every hour
        with gr.Blocks(title="grin-ui — machine unlearning audit", delete_cache=(3600, 3600)) as demo:
            gr.Markdown(HEADER)
            with gr.Tabs(selected=0) as tabs:
                panels = [self.model_panel, self.data_panel, self.teach_panel, self.influence_panel,
                          self.unlearn_panel, self.compare_panel, self.probe_panel, self.report_panel]
                for i, (title, panel) in enumerate(zip(STEPS, panels)):
                    with gr.Tab(title, id=i):
                        panel.build()
                        if i + 1 < len(STEPS):
                            with gr.Row(elem_classes=["next-row"]):
                                nxt = gr.Button(f"Next: {STEPS[i + 1]} →", size="sm", scale=0)
                            nxt.click(lambda i=i: gr.Tabs(selected=i + 1), None, tabs, api_name=f"next_{i + 1}",
                                      queue=False)
            self.influence_panel.wire([self.unlearn_panel.sparsity, self.unlearn_panel.scope])
            self.teach_panel.wire(self.model_panel.spec, self.model_panel.card)
            demo.load(self.start, self.data_panel.example,
                      [self.model_panel.card, self.model_panel.status] + self.data_panel.all_outputs,
                      api_name="start")
            demo.unload(self.leave)
        self.demo = demo
        return demo


def build_app(model: str = DEFAULT_MODEL, store: S.SessionStore | None = None) -> gr.Blocks:
    """The dashboard as a gradio Blocks app (not launched). ``store``: share or inspect the session store."""
    return App(model, store).build()


IDLE_POLL_S = 0.05  # how often gradio's queue looks for new events when it has none (its default on Linux: 1 ms)
PROGRESS_POLL_S = 0.1  # how often it looks for progress to send (default 10 ms)


def queued(demo: gr.Blocks, concurrency: int = 4) -> gr.Blocks:
    """``demo.queue(default_concurrency_limit=concurrency)`` with gradio's idle polling slowed down: its queue loop
    wakes up every 1 ms and its progress loop every 10 ms even with no visitor (about 7 % of a core on a 2-core
    machine); every 50 / 100 ms is plenty for a dashboard whose actions take seconds."""
    demo.queue(default_concurrency_limit=concurrency)
    q = getattr(demo, "_queue", None)
    if q is not None:
        q.sleep_when_free = max(getattr(q, "sleep_when_free", 0), IDLE_POLL_S)
        q.progress_update_sleep_when_free = max(getattr(q, "progress_update_sleep_when_free", 0), PROGRESS_POLL_S)
    return demo


def launch_options() -> dict:
    """Keyword arguments for ``Blocks.launch`` that style the dashboard (gradio 6 takes css/theme at launch)."""
    return {"css": css(), "theme": gr.themes.Soft(primary_hue="blue"),
            "max_file_size": DataLimits().max_file_bytes}  # uploads over the per-file limit never reach the disk


def launch(host: str = "127.0.0.1", port: int = 7860, model: str = DEFAULT_MODEL, trusted: bool = False,
           memory_gb: float | None = None, max_per_client: int = 8) -> None:
    """Serve the dashboard. A non-loopback ``host`` turns public mode on (GRIN_UI_PUBLIC=1: local models only from
    the allowed directories, safetensors only) unless ``trusted``; the start-up ``model`` stays allowed. Memory:
    ``memory_gb`` (default $GRIN_UI_MEMORY_GB, else 80 % of the memory available now) bounds what models, sessions
    and running actions hold (grin_ui.budget); idle sessions are dropped after 30 minutes."""
    if enter_public_mode_if_exposed(host, trusted):
        allow_model_dir(model)
        print(f"grin-ui: public mode ({host} is reachable from other machines): models load only from safetensors "
              "and from the allowed directories; start with --trusted to turn this off.", flush=True)
    apply_threads()  # $GRIN_UI_THREADS, else the physical cores
    budget = MemoryBudget.from_env(memory_gb)
    store = S.SessionStore(default_model=model, budget=budget, max_per_client=max_per_client)
    store.models.get(model)  # load before serving so the first visitor does not wait
    store.start_janitor()
    print(f"grin-ui: memory budget {budget.total / 1e9:.1f} GB", flush=True)
    demo = build_app(model, store)
    print(f"grin-ui dashboard: http://{host if host != '0.0.0.0' else '127.0.0.1'}:{port}", flush=True)
    queued(demo).launch(server_name=host, server_port=port, show_error=False, **launch_options())
