"""Every knob of grin-ui in one place, as dataclasses with documented defaults.

Defaults marked *our choice* fill details the GRIN paper leaves open (SPEC §3). Learning rate, steps and batch size
are the values measured to make the default walkthrough work on the bundled model (see README).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

OBJECTIVES = ("grad_ascent", "grad_diff", "npo", "simnpo", "idk", "flat")
RETAIN_LOSSES = ("nll", "kl")
SELECTORS = ("grin", "none", "random", "forget-saliency")
SCOPES = ("global", "tensor", "row")
NOISE_MODES = ("relative", "absolute")


@dataclass
class DataLimits:
    """Limits on user data (SPEC §6)."""

    max_file_bytes: int = 10 * 1024 * 1024  # per uploaded file
    max_examples: int = 2000  # per set
    max_tokens: int = 256  # per example; longer ones are truncated and counted in a warning


@dataclass
class ScoreConfig:
    """GRI scoring (SPEC §3.1): score_i = |G_f,i| / (|G_r,i| + eps)."""

    eps_rel: float = 1e-3  # eps = eps_rel * mean(|G_r|) over the scored weights (our choice)
    batch_size: int = 8
    include_embeddings: bool = False  # opt-in: token embeddings
    include_lm_head: bool = False  # opt-in: output head (when not tied to the embeddings)
    include_norms: bool = False  # opt-in: normalization weights
    include_biases: bool = False  # opt-in: biases


@dataclass
class MaskConfig:
    """Which weights may change (SPEC §3.2, §3.6)."""

    selector: str = "grin"  # grin | none (all weights) | random | forget-saliency (|G_f| alone)
    sparsity: float = 0.01  # fraction of scored weights selected
    scope: str = "global"  # global | tensor | row


@dataclass
class NoiseConfig:
    """Noise injected into the masked weights before training (SPEC §3.3)."""

    scale: float = 0.1  # kappa; 0 disables
    mode: str = "relative"  # relative: kappa * std(tensor); absolute: kappa itself is the std


@dataclass
class UnlearnConfig:
    """The unlearning objective and the masked training loop (SPEC §3.4, §3.5)."""

    objective: str = "npo"
    retain_loss: str = "nll"  # nll | kl (to the model before unlearning)
    alpha: float = 2.0  # retain weight
    npo_beta: float = 0.1
    simnpo_beta: float = 4.5
    simnpo_gamma: float = 0.0
    flat_form: str = "tv"  # tv | kl
    lr: float = 8e-3  # for a 1 % mask; an unmasked run needs a far smaller one (see README)
    steps: int = 20
    batch_size: int = 4  # forget and retain examples per step
    weight_decay: float = 0.0  # applied to masked entries only
    max_grad_norm: float = 1.0


@dataclass
class EvalConfig:
    """Evaluation of a model state on the data sets (SPEC §4)."""

    max_new_tokens: int = 32  # greedy generation length (answers are one sentence; generation stops at EOS)
    batch_size: int = 8  # sequences per forward pass when scoring
    gen_batch_size: int = 16  # prompts per batched greedy generation
    k: float = 0.4  # fraction of lowest-scoring tokens for Min-K % and Min-K %++
    max_tokens: int = 256  # per example (and per utility sequence); also capped at the model's context length
    max_listed_examples: int | None = None  # per set in the result's "examples" list; None = all


PROBE_KINDS = ("nf4", "fp4", "int8", "rtn4", "rtn8")


@dataclass
class ProbeConfig:
    """Quantization recovery probes (SPEC §5)."""

    group_size: int = 128  # RTN group along the input dimension (bitsandbytes 4-bit keeps its own block size, 64)
    utility: bool = False  # also measure perplexity and multiple-choice accuracy on each quantized model
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class RunConfig:
    """The whole journey: score -> mask -> noise -> unlearn -> evaluate -> probes."""

    score: ScoreConfig = field(default_factory=ScoreConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    limits: DataLimits = field(default_factory=DataLimits)
    eval: EvalConfig = field(default_factory=EvalConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0
    probes: tuple[str, ...] = ("nf4",)  # quantization probes run after unlearning
    utility: bool = True  # perplexity and multiple-choice accuracy for the original and unlearned model

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TeachConfig:
    """Teaching: fine-tune every weight on forget ∪ retain until the forget answers are reproduced (SPEC §2 step 3).

    The values were measured to teach the fictitious-authors example to the bundled model (see README)."""

    lr: float = 2e-4
    batch_size: int = 8
    max_epochs: int = 10
    check_every: int = 2  # epochs between knowledge checks (greedy answers on the forget set)
    target_hit_rate: float = 0.9  # stop once the forget answer hit rate reaches this
    weight_decay: float = 0.0
    seed: int = 0
