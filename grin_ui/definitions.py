"""One line per figure: what each number in report.json means — the one source of these texts.

    define("answer_hit_rate")              # a set metric (forget, retain, neighbours, holdout)
    define("loss_auc", group="mia")        # a figure of a group: looks up "mia.loss_auc" first
    GROUPS["survival"]                     # (title, one-line description) of a report section / dashboard tab

The audit report (grin_ui.report_html) prints these next to every figure; the dashboard can import them for its
tables and tooltips, so that the report, the tabs and the docstrings say the same thing. Keys are the report's own
keys: bare for the per-set metrics, ``group.key`` for the figures of a group (``fluency``, ``mia``, ``utility``,
``semeval``, ``recovery``, ``survival``, ``ratio_hist``, ``mask``, ``stopping``, ``check``, ``history``,
``relearn``, ``files``). Definitions follow the code that computes each figure (grin_ui.metrics, evaluate, fluency,
survival, stopping, relearn); change them together.
"""

from __future__ import annotations

# Report sections in the dashboard's order: id -> (title, what the section answers).
GROUPS: dict[str, tuple[str, str]] = {
    "data": ("Model and data", "The model the session started from and the four data sets, each identified by a "
             "sha256."),
    "influence": ("Influence map and mask", "Which weights matter more to the forget set than to the retain set "
                  "(GRI score), and which of them the mask lets change."),
    "unlearning": ("Unlearning and stopping", "The masked training run: losses per step, the stop-when-forgotten "
                   "checks, and the step it stopped at."),
    "compare": ("Compare: original vs unlearned", "The metrics of every set before and after unlearning, with "
                "fluency and the answers side by side."),
    "mia": ("Membership inference", "Can an attacker tell the forget set from facts the model never saw? (forget = "
            "members, holdout = non-members)"),
    "utility": ("Utility", "General ability outside the data: perplexity on general text, multiple-choice "
                "accuracy."),
    "semeval": ("SemEval-style scores", "The SemEval-2025 Task 4 recipe computed on this tool's own metrics "
                "(labelled SemEval-style: not the official benchmark)."),
    "probes": ("Quantization probes", "The same metrics after quantizing the original and the unlearned model; "
               "recovery % says how much forgotten knowledge quantization brings back."),
    "survival": ("Survival of the changes under quantization", "Which unlearning changes still move a "
                 "quantization code, per block × module, and how large each change is against its bin."),
    "relearn": ("Relearning probe", "A few fine-tuning steps on part of the forget set: does the rest come back?"),
    "reproducibility": ("Reproducibility", "Everything needed to re-run and check this session."),
}

METRIC_DEFINITIONS: dict[str, str] = {
    # ---- per set (forget, retain, neighbours, holdout): grin_ui.evaluate / grin_ui.metrics
    "n": "Examples in the set.",
    "answer_hit_rate": "Share of greedy answers that contain the normalized reference answer (or one of the "
                       "example's keywords).",
    "rougeL_recall": "ROUGE-L recall of the greedy answer against the reference (rouge-score, stemmed): longest "
                     "common word subsequence / reference length.",
    "answer_prob": "Answer probability P(a|q)^(1/|a|), teacher-forced over the answer's own tokens (the "
                   "end-of-turn token is not scored); higher = better known.",
    "nll": "Mean negative log-likelihood per answer token (nats), teacher-forced; higher = less known.",
    "truth_ratio": "Truth ratio R = mean P̄(perturbed) / P̄(paraphrased): the forget set reports mean min(R, 1/R), "
                   "the other sets mean max(0, 1 − R).",
    "truth_ratio_kind": "Which truth-ratio summary this set reports.",
    "truth_ratio_n": "Examples with a paraphrased and perturbed answers (those the truth ratio averages).",
    "seconds": "Wall-clock seconds of this evaluation.",
    # ---- fluency of the generations: grin_ui.fluency
    "fluency.ends_rate": "Share of greedy answers that end (end-of-turn / EOS) before the token limit.",
    "fluency.loop_rate": "Share of answers with a repetition loop (the same word n-gram 3× in a row, or the same "
                         "sentence twice).",
    "fluency.gibberish_rate": "Share of answers the original model finds implausible token after token (per-token "
                              "NLL above the calibrated cut-off): word salad.",
    "fluency.gibberish_nll": "Mean per-token NLL of the answers under the original model (nats; first 2 tokens "
                             "skipped).",
    "fluency.gibberish_threshold": "Gibberish cut-off: 95th percentile of the original model's own answers + 2 "
                                   "nats, at least 3 nats per token.",
    # ---- membership inference, forget (members) vs holdout (non-members): grin_ui.evaluate._mia
    "mia.loss_auc": "AUC of the LOSS attack (score −NLL): 0.5 = forget looks like never-seen facts, 1 = still "
                    "recognisable as training data, 0 = pushed below never-seen facts (over-unlearned).",
    "mia.zlib_auc": "AUC of the ZLib attack: mean NLL per token over the zlib-compressed length of the text.",
    "mia.mink_auc": "AUC of Min-K % (k = 0.4): mean log-probability of the 40 % least likely tokens.",
    "mia.minkpp_auc": "AUC of Min-K %++ (k = 0.4): Min-K % on token log-probs standardized by the mean and "
                      "spread of the model's next-token log-probabilities.",
    "mia.score": "SemEval-2025 MIA score 1 − 2·|AUC − 0.5| of the LOSS attack: 1 = indistinguishable, 0 = fully "
                 "exposed either way.",
    "mia.score_from": "The attack the MIA score is computed from.",
    "mia.n_member": "Forget examples scored as members.",
    "mia.n_nonmember": "Holdout examples scored as non-members.",
    # ---- utility: grin_ui.evaluate.utility_metrics
    "utility.perplexity": "Perplexity on the built-in general-text sample (lower = better language modelling).",
    "utility.perplexity_tokens": "Tokens the perplexity is computed over.",
    "utility.mc_accuracy": "Accuracy on the built-in multiple-choice general-knowledge set, each option scored by "
                           "its log-likelihood.",
    "utility.mc_n": "Multiple-choice questions asked.",
    # ---- SemEval-style: grin_ui.metrics.semeval_*
    "semeval.label": "Name shown for these scores (SemEval-style: the recipe, not the official benchmark).",
    "semeval.aggregate": "Harmonic mean of (1 − forget ROUGE-L), (1 − forget hit rate), retain ROUGE-L and retain "
                         "hit rate.",
    "semeval.mia_score": "The MIA score used in the final score (1 − 2·|LOSS AUC − 0.5|).",
    "semeval.utility_accuracy": "The multiple-choice accuracy used in the final score.",
    "semeval.final": "Mean of the aggregate, the MIA score and the utility accuracy (— when one is missing).",
    "semeval.missing": "Inputs the final score lacks (a holdout set for MIA, utility).",
    # ---- quantization recovery: grin_ui.metrics.recovery_pct
    "recovery": "100 · (M(Q(unlearned)) − M(unlearned)) / (M(original) − M(unlearned)) on the forget set: 0 % "
                "stays forgotten, 100 % fully back, — undefined (unlearning did not change M).",
    # ---- survival: grin_ui.survival.survival_map
    "survival.kind": "Quantizer of this probe.",
    "survival.group_size": "RTN group size (weights sharing one scale along the input dimension).",
    "survival.block": "Which weights share one quantization scale.",
    "survival.changed": "Weights the unlearning changed.",
    "survival.survived": "Changed weights whose quantization code moves at the original block scale (the change "
                         "survives quantization).",
    "survival.fraction": "survived / changed: share of the changes that survive at code level.",
    "survival.scale_only": "Changed weights whose quantized value moves only because their block's absmax moved "
                           "(never counted as survival).",
    "survival.scale_only_fraction": "scale_only / changed.",
    "survival.beyond_range": "Survivors whose new value lies beyond the original block's range (they moved the "
                             "scale themselves).",
    "survival.bystanders": "Unchanged weights whose quantized value moved all the same (a moved block scale).",
    "survival.share": "Share of the update that survives: ⟨Q(θu) − Q(θo), θu − θo⟩ / ‖θu − θo‖².",
    "survival.cosine": "Cosine between the quantized change and the update: near 1 = the quantized change follows "
                       "the update, small = mostly rounding noise.",
    "survival.values": "Per block × module: survived / changed (the survival map).",
    "survival.scale_only_values": "Per block × module: scale_only / changed.",
    "survival.share_values": "Per block × module: share of the update that survives.",
    "survival.cosine_values": "Per block × module: cosine(ΔQ, Δθ).",
    "survival.unquantized": "Changed tensors the probe does not quantize (kept exactly; counted as surviving).",
    "ratio_hist.n": "Changed, quantized weights in the |Δw| / bin-width histogram.",
    "ratio_hist.below": "Changes below the histogram's range (|Δw| / bin < 1e-6).",
    "ratio_hist.above": "Changes above its range (or at a zero-width bin).",
    "ratio_hist.at_least_half": "Changes of at least half a bin (they mostly move their code).",
    "ratio_hist.share_at_least_half": "at_least_half / n.",
    "ratio_hist.median_ratio": "Median |Δw| / bin width at the weight.",
    "ratio_hist.median_abs_delta": "Median |Δw| of the changed weights.",
    "ratio_hist.median_bin_width": "Median quantization bin width at the changed weights.",
    # ---- mask: grin_ui.mask
    "mask.selected": "Weights the mask lets change.",
    "mask.total": "Scored weights (the linear weights of the transformer blocks by default).",
    "mask.selector": "How weights were selected: grin (GRI score), forget-saliency, random or none (all).",
    "mask.scope": "global (one threshold), tensor (top p of each matrix) or row (top p of rows).",
    "mask.sparsity": "Fraction of scored weights selected.",
    "mask.threshold_log10": "log10 GRI score above which a weight is selected (global GRI mask).",
    "mask.density": "Per block × module: share of its weights selected.",
    "mask.changed": "Weights whose value differs after unlearning.",
    "mask.delta_entries": "Entries stored in delta.safetensors.",
    "mask.scores": "Per block × module: mean log10 GRI score (score = |G_forget| / (|G_retain| + ε)).",
    # ---- unlearning: grin_ui.train / grin_ui.stopping
    "history.step": "Training step.",
    "history.forget_loss": "Forget term of the objective at this step.",
    "history.retain_loss": "Retain term (α-weighted NLL or KL on the retain set).",
    "history.loss": "The objective minimized (forget term + retain term).",
    "history.seconds": "Seconds this step took.",
    "stopping.rule": "The stopping rule.",
    "stopping.reference": "The level the forget NLL is compared with: holdout (facts never known), perturbed "
                          "answers, or none.",
    "stopping.margin": "The level counts as reached when forget NLL ≥ reference NLL − margin.",
    "stopping.hit_rate_target": "A reached level is confirmed when the greedy forget hit rate is at most this.",
    "stopping.check_every": "Steps between two checks.",
    "stopping.budget_steps": "Maximum steps (the budget).",
    "stopping.stopped_at": "Step the run stopped at (— : it used the whole budget).",
    "check.forget_nll": "Mean per-token answer NLL on the forget set at this check.",
    "check.reference_nll": "The same on the reference (holdout) set.",
    "check.level_reached": "forget NLL ≥ reference NLL − margin (answer level: answer AUC ≤ level_auc).",
    "check.hit_rate": "Greedy forget hit rate (measured only once the level is reached, or at every check for "
                      "refusal objectives).",
    "check.answer_nll": "Answer level: mean per-token NLL of the forget answers over every token.",
    "check.reference_answer_nll": "Answer level: the same on the reference answers.",
    "check.answer_auc": "Answer level: AUC of a LOSS membership-inference attack telling the forget answers from the "
                        "reference answers at this check (0.5: indistinguishable).",
    "check.pushed": "Answer level: forget examples the NPO term pushes until the next check (refused, and likelier "
                    "than the reference answers' median).",
    "check.retain_nll": "And kept: mean per-token NLL of the sampled retain answers.",
    "check.retain_hits": "And kept: sampled retain answers still given greedily.",
    "check.stop": "Whether the run stopped here.",
    # ---- relearning: grin_ui.relearn
    "relearn.recovery": "100 · (M(relearned) − M(unlearned)) / (M(original) − M(unlearned)) on the forget "
                        "examples never trained on during relearning.",
    "relearn.reference_gain": "The same steps on facts never known (holdout), in the same units: how much plain "
                              "learning explains.",
    # ---- files
    "files.delta_sha256": "sha256 of delta.safetensors as written next to this report.",
}


def define(key: str, group: str | None = None) -> str:
    """The one-line definition of ``key`` (``group.key`` first when a group is given); "" when there is none."""
    if group is not None and f"{group}.{key}" in METRIC_DEFINITIONS:
        return METRIC_DEFINITIONS[f"{group}.{key}"]
    return METRIC_DEFINITIONS.get(key, "")
