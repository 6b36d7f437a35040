"""grin-ui: explore and audit machine unlearning in large language models.

The library (everything outside ``grin_ui.ui``) never imports gradio; the dashboard and the CLI are thin faces
over it.
"""

from grin_ui.errors import GrinError

__version__ = "0.1.0"
__all__ = ["GrinError", "__version__"]
