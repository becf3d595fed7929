"""What the site's words mean: every quantity a check of ``papers.yaml`` names (and those the category
plots use), with a short label for the tables, and the confidence levels of a reported number. The
definitions and labels are written here by hand; the glossary page lists the quantities the catalogue's
checks actually name, so a new check quantity without a definition or label shows up
(:func:`undefined_quantities`, a warning that fails ``mkdocs build --strict``, and a test).
"""

from __future__ import annotations

from dataclasses import dataclass

from atlas.catalogue import Catalogue
from atlas.schema import CONFIDENCES

__all__ = ["CONFIDENCE_LEVELS", "LABELS", "PLOT_QUANTITIES", "QUANTITIES", "Confidence", "Label",
           "checked_quantities", "confidence_label", "confidence_levels", "label", "undefined_confidences",
           "undefined_quantities"]

#: quantity name -> its definition (a sentence fragment: what is measured, against what, in which unit)
QUANTITIES: dict[str, str] = {
    "accuracy": "test accuracy of the compressed (or distilled) model, in percent",
    "accuracy_change_pp": (
        "test accuracy of the compressed model minus that of its uncompressed baseline (the same "
        "architecture trained by the same recipe from the same seed), in percentage points; negative means "
        "accuracy lost"
    ),
    "distillation_gain_pp": (
        "accuracy of the distilled student minus the same student trained on hard labels (without the "
        "teacher), in percentage points; for retrieval, recall@1 instead of accuracy"
    ),
    "gap_recovered_fraction": (
        "the distillation gain (distillation_gain_pp) divided by the gap between the teacher (trained on "
        "the full training set) and the hard-label student (trained on the reduced set): the share of the "
        "accuracy lost to the smaller training set that the teacher's soft targets win back (1 = all of it)"
    ),
    "fitnet_over_kd_pp": (
        "accuracy of the FitNet student (hint-based training of its middle layers, then knowledge "
        "distillation) minus the same student trained by knowledge distillation alone, in percentage points"
    ),
    "teacher_q_gain_pp": (
        "accuracy of the rule-constrained teacher network q minus the same network trained without the "
        "logic rules, in percentage points"
    ),
    "conv_over_mlp_pp": (
        "accuracy of the best convolutional mimic student minus that of the fully connected (MLP) mimic "
        "student, both trained on the teacher's logits, in percentage points"
    ),
    "nst_kd_gain_pp": (
        "accuracy of the student trained with neuron selectivity transfer plus knowledge distillation minus "
        "the same student trained on hard labels, in percentage points"
    ),
    "map_gain_pp": (
        "mean average precision (%) of the distilled retrieval student minus the same student trained "
        "without transfer, in percentage points"
    ),
    "param_compression": (
        "parameters of the uncompressed model divided by the non-zero parameters of the compressed one "
        "(×); for distillation, the teacher's parameters divided by the student's"
    ),
    "storage_compression": (
        "the uncompressed model's size as 32-bit floats divided by the size of the compressed model's actual "
        "encoding (codes, indices, codebooks and every parameter left in 32-bit floats), ×"
    ),
    "weight_storage_compression": (
        "storage compression of the weight matrices alone: 32 bits per weight divided by the bits of their "
        "encoding (binary or ternary codes), ×; biases and normalisation parameters left out"
    ),
    "flop_reduction": (
        "floating-point operations of one forward pass of the uncompressed model divided by the compressed "
        "model's effective operations (each layer's count scaled by its share of non-zero weights), ×"
    ),
    "speedup": (
        "time of a forward pass (or of the compressed layers) of the uncompressed model divided by that of "
        "the compressed one, measured on the same machine in the same run, ×"
    ),
    "dense_storage_compression": (
        "storage compression of the fully-connected layers alone (the layers the method compresses, their 32-bit biases included): their size as 32-bit floats divided by the size of their actual encoding, ×"
    ),
    "weight_compression": (
        "the prunable (convolution and fully-connected) weights divided by the non-zero ones, ×; biases left out"
    ),
    "gain_over_low_lr_pp": (
        "test accuracy of the method's model minus that of the same network simply trained on at the lower learning rate for the same steps, percentage points"
    ),
    "gain_vs_small_dense_s50_pp": (
        "at 50% sparsity: test accuracy of the pruned large network minus that of a narrower dense network with the same number of non-zero parameters trained for the same steps, percentage points"
    ),
    "gain_vs_small_dense_s75_pp": (
        "at 75% sparsity: test accuracy of the pruned large network minus that of a narrower dense network with the same number of non-zero parameters trained for the same steps, percentage points"
    ),
    "gain_vs_small_dense_s90_pp": (
        "at 90% sparsity: test accuracy of the pruned large network minus that of a narrower dense network with the same number of non-zero parameters trained for the same steps, percentage points"
    ),
    "obd_advantage_db": (
        "with no retraining, the training objective after deleting the same number of weights by magnitude over that after deleting them by the saliency, in decibels (10 log10 of the ratio); above 0: the saliency deletes better"
    ),
    "obd_advantage_over_random_db": (
        "with no retraining, the training objective after deleting the same number of weights at random over that after deleting them by the saliency, in decibels"
    ),
    "predicted_over_actual_db": (
        "the increase of the training objective the summed saliencies predict over the increase measured after deleting those weights, in decibels; 0: the prediction is exact"
    ),
    "xnor_accuracy_change_pp": (
        "test accuracy of the binary network run through the XNOR-popcount kernel minus that of the same network in PyTorch, percentage points; 0: the kernel computes the same network"
    ),
}



@dataclass(frozen=True)
class Label:
    """How a table names a quantity where its definition does not fit."""

    text: str  # a short noun phrase, e.g. "gain of distilled student over hard-label student"
    unit: str  # "pp", "%", "×", or "" for a plain number
    signed: bool = False  # a difference: its values show their sign (+0.72)

    def __str__(self) -> str:
        return f"{self.text} ({self.unit})" if self.unit else self.text


#: quantity name -> its short label (the tables show it; the name and definition are in the glossary)
LABELS: dict[str, Label] = {
    "accuracy": Label("test accuracy", "%"),
    "accuracy_change_pp": Label("accuracy change against the uncompressed baseline", "pp", signed=True),
    "distillation_gain_pp": Label("gain of distilled student over hard-label student", "pp", signed=True),
    "gap_recovered_fraction": Label("share of the teacher–student gap recovered", "1 = all"),
    "fitnet_over_kd_pp": Label("gain of FitNet over distillation alone", "pp", signed=True),
    "teacher_q_gain_pp": Label("gain of the rule-constrained teacher over the same network without rules", "pp",
                               signed=True),
    "conv_over_mlp_pp": Label("gain of the convolutional over the MLP mimic student", "pp", signed=True),
    "nst_kd_gain_pp": Label("gain of NST with distillation over hard-label student", "pp", signed=True),
    "map_gain_pp": Label("mAP gain of distilled over plain retrieval student", "pp", signed=True),
    "param_compression": Label("parameter compression", "×"),
    "storage_compression": Label("storage compression", "×"),
    "weight_storage_compression": Label("weight storage compression", "×"),
    "flop_reduction": Label("FLOP reduction", "×"),
    "speedup": Label("speed-up", "×"),
    "dense_storage_compression": Label("storage compression of the fully-connected layers", "×"),
    "weight_compression": Label("compression of the prunable weights", "×"),
    "gain_over_low_lr_pp": Label("gain over continued training at the lower learning rate", "pp", signed=True),
    "gain_vs_small_dense_s50_pp": Label("gain of large-sparse over small-dense at 50% sparsity", "pp", signed=True),
    "gain_vs_small_dense_s75_pp": Label("gain of large-sparse over small-dense at 75% sparsity", "pp", signed=True),
    "gain_vs_small_dense_s90_pp": Label("gain of large-sparse over small-dense at 90% sparsity", "pp", signed=True),
    "obd_advantage_db": Label("objective advantage of the saliency over magnitude deletion", "dB", signed=True),
    "obd_advantage_over_random_db": Label("objective advantage of the saliency over random deletion", "dB", signed=True),
    "predicted_over_actual_db": Label("predicted over actual objective increase", "dB", signed=True),
    "xnor_accuracy_change_pp": Label("accuracy change through the XNOR kernel", "pp", signed=True),
}


def label(name: str) -> Label:
    """The quantity's label; a quantity without one is shown by its name."""
    return LABELS.get(name) or Label(name, "")


#: the quantities the category plots use besides the checked ones (x: compression or speed-up)
PLOT_QUANTITIES = ("accuracy_change_pp", "distillation_gain_pp", "param_compression", "storage_compression",
                   "flop_reduction", "speedup")


@dataclass(frozen=True)
class Confidence:
    label: str  # how the site shows the value
    meaning: str


#: papers.yaml's confidence values (``atlas.schema.Confidence``) -> how the site shows and explains them
CONFIDENCE_LEVELS: dict[str, Confidence] = {
    "high": Confidence(
        "read in the paper",
        "The number was read in the source the claim names: the paper's own table, section or figure (in "
        "a few cases the authors' released code or its README). It can be a reproduction target.",
    ),
    "checked": Confidence(
        "confirmed from a secondary source",
        "The number was first noted without a source at hand, then confirmed in a source text that reports "
        "it (a secondary source: another paper's table, a results page). It can be a reproduction target.",
    ),
    "unconfirmed": Confidence(
        "unconfirmed",
        "The number could not be confirmed from the paper's text or from a source that reports it. It is "
        "shown for orientation only and is never a reproduction target: such a claim has no checks.",
    ),
}


def confidence_label(value: str) -> str:
    """How the site shows a claim's confidence value (the value itself when it has no entry)."""
    level = CONFIDENCE_LEVELS.get(value)
    return level.label if level else value


def confidence_levels() -> list[tuple[str, Confidence]]:
    """The schema's confidence values, in its order, each with its explanation."""
    return [(value, CONFIDENCE_LEVELS[value]) for value in CONFIDENCES if value in CONFIDENCE_LEVELS]


def undefined_confidences() -> list[str]:
    return [value for value in CONFIDENCES if value not in CONFIDENCE_LEVELS]


def checked_quantities(catalogue: Catalogue) -> dict[str, list[str]]:
    """Every quantity a check names -> the keys of the papers whose claims check it (in catalogue order)."""
    found: dict[str, list[str]] = {}
    for paper in catalogue:
        for claim in paper.claims:
            for check in claim.checks:
                keys = found.setdefault(check.quantity, [])
                if paper.key not in keys:
                    keys.append(paper.key)
    return dict(sorted(found.items()))


def undefined_quantities(catalogue: Catalogue) -> list[str]:
    """The checked quantities without a definition in :data:`QUANTITIES` or a label in :data:`LABELS`."""
    return [q for q in checked_quantities(catalogue) if q not in QUANTITIES or q not in LABELS]
