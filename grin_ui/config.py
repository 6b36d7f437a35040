"""Every knob of grin-ui in one place, as dataclasses with documented defaults.

Defaults marked *our choice* fill details the GRIN paper leaves open (SPEC §3). Learning rate, steps and batch size
are the values measured to make the default walkthrough work on the bundled model (see README).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

OBJECTIVES = ("grad_ascent", "grad_diff", "npo", "simnpo", "idk", "idk_npo", "flat")
RETAIN_LOSSES = ("nll", "kl")
SELECTORS = ("grin", "none", "random", "forget-saliency", "magnitude")
STATISTICS = ("abs-sum", "sum-abs", "fisher")  # GRI gradient statistics (grin_ui.influence)
NORMALIZATIONS = ("none", "tensor")  # score normalisation before a global threshold (grin_ui.mask)
SCOPES = ("global", "tensor", "row")
NOISE_MODES = ("relative", "absolute")
MERGES = ("average", "ties")  # SPUNGE delta merges (grin_ui.spunge)


@dataclass
class DataLimits:
    """Limits on user data (SPEC §6), enforced while reading (grin_ui.readers): sizes count the uncompressed
    content (a parquet file is refused from its metadata before its columns are decoded)."""

    max_file_bytes: int = 10 * 1024 * 1024  # per uploaded file
    max_examples: int = 2000  # per set
    max_tokens: int = 256  # per example; longer ones are truncated and counted in a warning
    max_rows: int = 10_000  # records, rows or non-empty lines read from one file, before duplicates are dropped
    max_field_chars: int = 65_536  # characters per field (question, answer, ...) or list item
    max_list_items: int = 64  # items per list field (perturbed_answer, keywords)
    max_fields: int = 64  # fields per record (columns of a table)


@dataclass
class ScoreConfig:
    """GRI scoring (SPEC §3.1): score_i = |G_f,i| / (|G_r,i| + eps) (|G| stands for ``statistic`` of the gradients)."""

    eps_rel: float = 1e-3  # eps = eps_rel * mean of the retain statistic over the scored weights (our choice)
    batch_size: int = 8
    include_embeddings: bool = False  # opt-in: token embeddings
    include_lm_head: bool = False  # opt-in: output head (when not tied to the embeddings)
    include_norms: bool = False  # opt-in: normalization weights
    include_biases: bool = False  # opt-in: biases
    focus_fact: bool = True  # forget gradient over the answer tokens that carry the fact (data.fact_span; our choice)
    score_dtype: str = "auto"  # auto (bfloat16 for 16-bit weights on CUDA, else float32) | float32 | bfloat16
    statistic: str = "abs-sum"  # abs-sum: |Σ_batches g| (the paper) | sum-abs: Σ_examples |g| | fisher: Σ_examples g²


@dataclass
class MaskConfig:
    """Which weights may change (SPEC §3.2, §3.6)."""

    selector: str = "grin"  # grin | none (all weights) | random | forget-saliency (|G_f| alone) | magnitude (|w|)
    sparsity: float = 0.01  # fraction of scored weights selected
    scope: str = "global"  # global | tensor | row
    normalize: str = "none"  # none | tensor: each tensor's scores divided by their median before a global threshold


@dataclass
class NoiseConfig:
    """Noise injected into the masked weights before training (SPEC §3.3)."""

    scale: float = 0.1  # kappa; 0 disables
    mode: str = "relative"  # relative: kappa * std(tensor); absolute: kappa itself is the std


@dataclass
class UnlearnConfig:
    """The unlearning objective and the masked training loop (SPEC §3.4, §3.5)."""

    objective: str = "idk_npo"  # with answer_level: IDK, then NPO only where the refusal leaves the answers likelier
    # than facts never known; measured: precise and fluent on the built-in examples (README, benchmarks/tune.py)
    retain_loss: str = "nll"  # nll | kl (to the model before unlearning)
    alpha: float = 5.0  # retain weight
    npo_beta: float = 0.1
    idk_npo_weight: float = 1.0  # idk_npo: weight of the NPO term beside the refusal (our choice)
    retain_refusal_weight: float = 0.0  # idk, idk_npo: weight of a retain term against retain answers that begin
    # like a refusal (objectives.refusal_start_term; 0: off); measured at 1: more neighbours kept at the median, a
    # worse worst run — not the default (README "Quality")
    npo_hinge: bool = True  # idk_npo: push only the examples whose fact is still likelier than the stop check's
    # reference level (facts never known), not beyond it (our choice; measured better than without, README "Quality")
    answer_level: bool = True  # idk_npo: IDK until the stop check finds the forget set forgotten and kept; if its
    # whole answers are still likelier than the reference answers, NPO then pushes each refused example likelier
    # than their median until they are at that level (our choice; grin_ui.stopping)
    level_auc: float = 0.6  # answer_level: "at the level" = a LOSS membership-inference attack on the stop check's
    # sample tells forget from reference answers with AUC ≤ this (the target band is 0.3–0.7; our choice)
    simnpo_beta: float = 4.5
    simnpo_gamma: float = 0.0
    flat_form: str = "tv"  # tv | kl
    lr: float = 2e-3  # for a 1 % mask; an unmasked run needs a far smaller one (see README)
    steps: int = 80  # a budget: the stop-when-forgotten rule usually ends the run earlier
    batch_size: int = 4  # forget and retain examples per step
    retain_near: float = 4.0  # the retain examples whose questions are most like the forget questions, this many
    # times the forget set's size, are trained on twice per pass over the retain set (0: off; train.nearest_retain);
    # measured: more neighbours kept at every seed (README "Quality")
    weight_decay: float = 0.0  # applied to masked entries only
    max_grad_norm: float = 1.0
    focus_fact: bool = True  # forget term over the tokens that carry the fact, not the shared phrasing (our choice)
    stop_when_forgotten: bool = True  # steps become a budget: stop once the forget set is forgotten (grin_ui.stopping)
    stop_check_every: int = 4  # steps between checks
    stop_margin: float = 0.0  # nats: the level counts as reached at forget NLL ≥ reference NLL − margin
    stop_hit_rate: float = 0.0  # confirm: greedy forget answer hit rate at or below this
    stop_check_tokens: int = 24  # new tokens generated per forget answer for the confirmation
    stop_keep_margin: float = 0.1  # and kept: retain answers' NLL within this many nats of the start (< 0: off)
    dynamics_every: int = 0  # record per-example answer log-probs every N steps (grin_ui.dynamics; 0: off)

    @property
    def uses_answer_level(self) -> bool:
        """Whether ``answer_level`` applies: it shapes IDK+NPO only."""
        return self.answer_level and self.objective == "idk_npo"


@dataclass
class EvalConfig:
    """Evaluation of a model state on the data sets (SPEC §4)."""

    max_new_tokens: int = 32  # greedy generation length (answers are one sentence; generation stops at EOS)
    batch_size: int = 8  # sequences per forward pass when scoring
    gen_batch_size: int = 48  # prompts per batched greedy generation (decoding is memory-bound: 48 rows cost little
    # more per step than 16 — 2.0 vs 4.1 examples/s on the bundled model, 2 CPU cores, identical answers)
    k: float = 0.4  # fraction of lowest-scoring tokens for Min-K % and Min-K %++
    max_tokens: int = 256  # per example (and per utility sequence); also capped at the model's context length
    max_listed_examples: int | None = None  # per set in the result's "examples" list; None = all
    truth_ratio: bool = True  # score paraphrased / perturbed answers (when the data has them)
    generate_holdout: bool = True  # greedy answers for the holdout set (membership inference needs only log-probs)


PROBE_KINDS = ("nf4", "fp4", "int8", "rtn4", "rtn8")


@dataclass
class ProbeConfig:
    """Quantization recovery probes (SPEC §5)."""

    group_size: int = 128  # RTN group along the input dimension (bitsandbytes 4-bit keeps its own block size, 64)
    utility: bool = False  # also measure perplexity and multiple-choice accuracy on each quantized model
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class RelearnConfig:
    """The relearning probe (SPEC §5, grin_ui.relearn): fine-tune the unlearned model for a few steps on part of the
    forget set and measure how much returns on the rest; the same steps on the holdout set (facts never known) give
    the reference. ``relearn_probe(lm, forget, holdout, **asdict(cfg))``. Not yet tuned on the bundled model:
    measure before quoting figures."""

    train_fraction: float = 0.5  # share of the forget (and holdout) set relearned on; the rest is evaluated
    n_train: int | None = None  # examples relearned on; overrides train_fraction
    steps: int = 10  # AdamW steps on every weight
    lr: float = 5e-5
    batch_size: int = 4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0  # the split and the batch order


@dataclass
class SpungeConfig:
    """Split–Unlearn–Merge (SPEC §3.7, grin_ui.spunge): unlearn each subset of the forget set separately, merge the
    sparse deltas. ``split_by`` None: one unsplit run."""

    split_by: str | None = None  # record field to split the forget set by ("attribute"); None: no split
    merge: str = "ties"  # average | ties
    ties_keep: float = 0.2  # TIES: share of each delta's changed entries kept by the trim (TIES paper's k = 20 %)


@dataclass
class GentleConfig:
    """The full fine-tuning arm of the built-in comparison "Does quantization undo it?" (grin_ui.recovery_demo):
    every weight trainable, no noise, a fixed number of steps (stop-when-forgotten off), a small learning rate."""

    objective: str = "grad_diff"
    lr: float = 1e-5
    steps: int = 20


# (section, field, value that reproduces a run recorded before the field existed, and a field the recorded section
# must name for it to apply, or None): answer_level came with a new default objective, so a section that leaves the
# objective out gets both new defaults
ADDED_SETTINGS = (("unlearn", "retain_near", 0.0, None), ("unlearn", "answer_level", False, "objective"))


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
    probes: tuple[str, ...] = ("nf4",)  # run after unlearning: quantization kinds (PROBE_KINDS) and "relearn"
    utility: bool = True  # perplexity and multiple-choice accuracy for the original and unlearned model
    relearn: RelearnConfig = field(default_factory=RelearnConfig)  # "relearn" in probes runs it
    spunge: SpungeConfig = field(default_factory=SpungeConfig)  # split_by set: SPUNGE instead of one run

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """The inverse of :meth:`to_dict` (e.g. a report's ``config`` block). Keys left out keep their defaults,
        except a setting added with a default that changed the behaviour (:data:`ADDED_SETTINGS`): a section
        recorded without it was run without it, so it gets the value that reproduces that run. An unknown key or a
        value of the wrong type is a GrinError naming it."""
        cfg = RunConfig._fill(cls(), data, "config")
        for section, key, before, needs in ADDED_SETTINGS:
            rec = data.get(section) if isinstance(data, dict) else None
            if isinstance(rec, dict) and key not in rec and (needs is None or needs in rec):
                setattr(getattr(cfg, section), key, before)
        return cfg

    @staticmethod
    def _fill(obj, data, where: str):
        from dataclasses import fields

        from grin_ui.errors import GrinError

        if not isinstance(data, dict):
            raise GrinError(f"{where} must be an object, got {type(data).__name__}.")
        known = {f.name for f in fields(obj)}
        for key, value in data.items():
            if key not in known:
                raise GrinError(f"Unknown setting {where}.{key} (this grin-ui knows: {', '.join(sorted(known))}).")
            setattr(obj, key, RunConfig._value(getattr(obj, key), value, f"{where}.{key}"))
        return obj

    @staticmethod
    def _value(default, value, where: str):
        from dataclasses import is_dataclass

        from grin_ui.errors import GrinError

        if is_dataclass(default):
            return RunConfig._fill(default, value, where)
        if default is None:
            return value
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = (isinstance(value, int) and not isinstance(value, bool)) or \
                (isinstance(value, float) and value.is_integer())
            value = int(value) if ok else value
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, tuple):
            ok = isinstance(value, (list, tuple))
            value = tuple(value) if ok else value
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise GrinError(f"Setting {where} should be like {default!r}, got {value!r}.")
        return value


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
