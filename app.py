"""Hugging Face Spaces entry point: build the grin-ui dashboard and serve it on port 7860."""

import os

from grin_ui.ui.app import launch

if __name__ == "__main__":
    launch(host="0.0.0.0", port=int(os.environ.get("PORT", 7860)), model=os.environ.get("GRIN_UI_MODEL", "default"))
