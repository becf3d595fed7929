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
    "bc_sr_gap_pp": (
        "at 1 bit: test accuracy of the network trained BinaryConnect's way (quantized forward pass, full-precision weights updated) minus that of the same network trained on its quantized weights alone with stochastic rounding, same grid, initial weights and steps, percentage points"
    ),
    "bc_sr_gap_2bit_pp": (
        "the same gap as the 1-bit BinaryConnect-minus-stochastic-rounding gap, on a 2-bit grid, percentage points"
    ),
    "gain_over_no_fusing_pp": (
        "with no retraining: test accuracy of the pruned network whose removed neurons were fused into the kept ones minus that of the same kept neurons without fusing, percentage points"
    ),
    "gain_over_random_pp": (
        "with no retraining: test accuracy of the network pruned to the method's subset of neurons minus that of a random subset of the same size fused the same way, percentage points"
    ),
    "gain_over_xnor_pp": (
        "test accuracy of the method's network minus that of XNOR-Net (binary weights, sign activations) trained from the same initial weights for the same steps, percentage points"
    ),
    "accuracy_vs_equal_pp": (
        "test accuracy of the network with per-layer bit-widths allocated by the method minus that of the same network with one bit-width in every layer, percentage points"
    ),
    "correlation_gain": (
        "mean over a layer's neurons of each neuron's largest absolute correlation with another neuron, with the method's extra noise outputs minus without them (same training steps); above 0: the noise makes neurons more correlated"
    ),
    "dot_correlation": (
        "Pearson correlation, over test examples and units, of each layer's dot products with the binarized weights and with the real-valued weights, averaged over the binarized layers"
    ),
    "gain_over_binaryconnect_pp": (
        "test accuracy of the method's binary-weight network minus that of BinaryConnect trained from the same initial weights for the same steps, percentage points"
    ),
    "gain_over_bwn_pp": (
        "test accuracy of the method's binary-weight network minus that of a Binary-Weight-Network (scaled sign, no curvature) trained from the same initial weights for the same steps, percentage points"
    ),
    "gain_over_dropout_pp": (
        "test accuracy of the method's network minus that of the same architecture trained with dropout for the same steps, percentage points"
    ),
    "gain_over_narrow_pp": (
        "test accuracy of the sparse network minus that of a dense network narrowed to the same number of parameters and trained for the same steps, percentage points"
    ),
    "gain_over_weight_norm_pp": (
        "test accuracy after pruning the same number of feature maps by the method's criterion minus after pruning them by the weight-norm criterion, with the same fine-tuning, percentage points"
    ),
    "noise_gain_pp": (
        "test accuracy of the network pruned with the method's noise outputs minus that of the same pruning without them, at the same size and steps, percentage points"
    ),
    "obs_advantage_over_magnitude_db": (
        "with no retraining, the training objective after deleting the same number of weights by magnitude over that after deleting them by Optimal Brain Surgeon (saliency and weight update), in decibels; above 0: OBS deletes better"
    ),
    "obs_advantage_over_obd_db": (
        "with no retraining, the training objective after deleting the same number of weights by Optimal Brain Damage over that after deleting them by Optimal Brain Surgeon, in decibels; above 0: OBS deletes better"
    ),
    "order2_gain_pp": (
        "test accuracy of the network with order-two residual binarization of its inputs minus that of the order-one (XNOR-Net) network with the same steps, percentage points"
    ),
    "pruned_gain_over_dropout_pp": (
        "after magnitude pruning to the stated ratio without retraining: test accuracy of the method-trained network minus that of the dropout-trained network, percentage points"
    ),
    "random_angle_deg": (
        "mean angle, in degrees, between random Gaussian vectors and their signs (their binarized versions), over samples and dimensions"
    ),
    "residual_error_ratio": (
        "norm of the input's residual after order-two binarization over that after order-one binarization; below 1: the second order approximates the input better"
    ),
    "rounding_gain_pp": (
        "test accuracy of the network trained in fixed point with stochastic rounding minus that with round-to-nearest, same format and steps, percentage points"
    ),
    "size_reduction": (
        "one minus the encoded size of the weights under the method's allocation over their encoded size at the equal bit-width it is compared with (0.2: 20% smaller)"
    ),
    "small_weight_gain_pct": (
        "percentage of weights below 1% of their layer's largest magnitude in the method-trained network minus that in the dropout-trained network"
    ),
    "sq_gain_pp": (
        "test accuracy of the network trained with stochastic quantization minus that of the same quantizer applied to every filter at once (BWN or TWN), same steps, percentage points"
    ),
    "training_time_saving_pct": (
        "wall-clock training time saved by the method against training the same network normally for the same steps, timed in the same run, percent"
    ),
    "weight_angle_deg": (
        "mean angle, in degrees, between each unit's real-valued (latent) weight vector and its sign in a trained binarized network, over its binarized layers"
    ),
    "bound_violations": (
        "number of the tested fixed-point precisions at which the measured mismatch probability (the fixed-point network's decision differing from the floating-point network's on the test set) exceeds the analytical bound; 0: the bound holds everywhere"
    ),
    "error_prediction_db": (
        "ten times the base-10 logarithm of the predicted over the measured mean squared output error of the fixed-point network, averaged over the tested precisions, in decibels; 0: the analysis predicts the error exactly"
    ),
    "gain_over_hashednets_pp": (
        "test accuracy of the method's network minus that of a HashedNets network (random weight sharing in the spatial domain) with the same number of stored parameters and the same steps, at the paper's main compression ratio, percentage points"
    ),
    "gain_over_hashednets_64x_pp": (
        "test accuracy of the method's network minus that of a HashedNets network with the same number of stored parameters and the same steps, at 64 times compression, percentage points"
    ),
    "retraining_gain_pp": (
        "test accuracy of the quantized network after retraining (fine-tuning through the quantizer) minus that of the same trained network quantized directly to the same format without retraining, percentage points"
    ),
    "temp_memory_reduction": (
        "memory of the largest intermediate result between layers stored in fp32 over the same result stored as packed bits (plus the one float the method keeps): how much less temporary space inference needs, a ratio"
    ),
    "widening_gain_pp": (
        "test accuracy of the low-precision network with wider hidden layers minus that of the low-precision network at the base width, both retrained for the same steps, percentage points"
    ),
    "adaptive_gain_pp": (
        "test accuracy of the network whose weight blocks are compressed with per-block quality chosen by their sensitivity minus that of the same network compressed with one quality for every block at the same (or a slightly larger) encoded size, percentage points"
    ),
    "enhancement_gain_pp": (
        "the smallest rise in test accuracy from decoding one more enhancement layer of a scalable (base plus residual) weight encoding, over the decoded levels, percentage points; above 0: every added layer helps"
    ),
    "gain_over_unbalanced_pp": (
        "test accuracy of the network with balanced (equal-count, percentile-bin) quantized weights minus that with uniform quantization whose range is set by the largest weight magnitude, averaged over the curve's bit-widths, same fine-tuning steps, percentage points"
    ),
    "regularizer_gain_pp": (
        "test accuracy of the network trained with the compression regulariser and then quantized minus the same network trained without it and quantized after training with the same encoding (so the same storage), percentage points"
    ),
    "knq_gain_over_enq_pp": (
        "test accuracy of the network quantized per layer by k-means (KNQ) minus that quantized per layer with equal-width intervals and their mean levels (ENQ), at the same bit-width, both post-training, percentage points"
    ),
    "gain_over_layerwise_pp": (
        "test accuracy of the network pruned by the global gradual scheme minus that of the layer-wise scheme pruned to the same weights with the same retraining, percentage points"
    ),
    "second_over_first_order_pp": (
        "test accuracy after removing the same share of neurons ranked by the second-order Taylor estimate of the error change minus that ranked by the first-order estimate, percentage points"
    ),
    "guarantee_ratio": (
        "the pruned network's output discrepancy on the Net-Trim programs' training samples divided by the bound of the parallel Net-Trim scheme; at most 1 means the guarantee holds, a ratio"
    ),
    "gain_over_magnitude_pp": (
        "test accuracy after pruning by the method's criterion minus that after global magnitude pruning at the same compression with the same retraining steps, percentage points"
    ),
    "compensation_gain_pp": (
        "with no retraining, test accuracy of the pruned specialist network whose removed channels are replaced by their mean feature maps minus that with those channels simply removed, percentage points"
    ),
    "gain_over_standard_truncated_pp": (
        "test accuracy of the network trained with an incomplete-dot-product profile and run with only its leading share of channels minus that of the normally trained network run with the same channels, percentage points"
    ),
    "storage_gain_over_fine_grained": (
        "bits of the pruned convolutions encoded fine-grained (CSR, one index per kept weight) divided by the bits of the same layers pruned kernel-level to the same density (one index per kept kernel), a ratio"
    ),
    "energy_reduction": (
        "estimated inference energy of the dense network divided by that of the compressed network, from the reproduction's stated per-access energy model, a ratio"
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
    "bc_sr_gap_pp": Label("gain of BinaryConnect over stochastic rounding, 1 bit", "pp", signed=True),
    "bc_sr_gap_2bit_pp": Label("gain of BinaryConnect over stochastic rounding, 2 bits", "pp", signed=True),
    "gain_over_no_fusing_pp": Label("gain from fusing the removed neurons", "pp", signed=True),
    "gain_over_random_pp": Label("gain over a random subset of neurons", "pp", signed=True),
    "gain_over_xnor_pp": Label("gain over XNOR-Net", "pp", signed=True),
    "accuracy_vs_equal_pp": Label("accuracy gain over equal bit-widths", "pp", signed=True),
    "correlation_gain": Label("gain in neuron correlation from noise outputs", "1 = perfect"),
    "dot_correlation": Label("correlation of binary and real dot products", "1 = perfect"),
    "gain_over_binaryconnect_pp": Label("gain over BinaryConnect", "pp", signed=True),
    "gain_over_bwn_pp": Label("gain over binary-weight networks", "pp", signed=True),
    "gain_over_dropout_pp": Label("gain over dropout", "pp", signed=True),
    "gain_over_narrow_pp": Label("gain of sparse over narrowed dense", "pp", signed=True),
    "gain_over_weight_norm_pp": Label("gain over the weight-norm criterion", "pp", signed=True),
    "noise_gain_pp": Label("gain from noise outputs", "pp", signed=True),
    "obs_advantage_over_magnitude_db": Label("objective advantage of OBS over magnitude deletion", "dB", signed=True),
    "obs_advantage_over_obd_db": Label("objective advantage of OBS over OBD", "dB", signed=True),
    "order2_gain_pp": Label("gain of order-two over order-one binarization", "pp", signed=True),
    "pruned_gain_over_dropout_pp": Label("gain over dropout after pruning", "pp", signed=True),
    "random_angle_deg": Label("angle between random vectors and their signs", "°"),
    "residual_error_ratio": Label("order-two over order-one residual", "×"),
    "rounding_gain_pp": Label("gain of stochastic over nearest rounding", "pp", signed=True),
    "size_reduction": Label("size reduction against equal bit-widths", "1 = all"),
    "small_weight_gain_pct": Label("more near-zero weights than dropout", "%"),
    "sq_gain_pp": Label("gain of stochastic over full quantization", "pp", signed=True),
    "training_time_saving_pct": Label("training time saved", "%"),
    "weight_angle_deg": Label("angle between trained weights and their signs", "°"),
    "bound_violations": Label("precisions at which the bound fails", "count"),
    "error_prediction_db": Label("predicted over measured output error", "dB", signed=True),
    "gain_over_hashednets_pp": Label("gain over HashedNets at equal storage", "pp", signed=True),
    "gain_over_hashednets_64x_pp": Label("gain over HashedNets at 64× compression", "pp", signed=True),
    "retraining_gain_pp": Label("gain of retraining over direct quantization", "pp", signed=True),
    "temp_memory_reduction": Label("reduction of temporary memory", "×"),
    "widening_gain_pp": Label("gain of the wider low-precision network", "pp", signed=True),
    "adaptive_gain_pp": Label("gain of adaptive over uniform compression quality", "pp", signed=True),
    "enhancement_gain_pp": Label("smallest gain of one more enhancement layer", "pp", signed=True),
    "gain_over_unbalanced_pp": Label("gain of balanced over extremal-value quantization", "pp", signed=True),
    "regularizer_gain_pp": Label("gain of training with the regulariser over quantizing after training", "pp", signed=True),
    "knq_gain_over_enq_pp": Label("gain of k-means over equal-distance nonuniform quantization", "pp", signed=True),
    "gain_over_layerwise_pp": Label("gain of global over layer-wise pruning", "pp", signed=True),
    "second_over_first_order_pp": Label("gain of second- over first-order ranking", "pp", signed=True),
    "guarantee_ratio": Label("measured discrepancy over the Net-Trim bound", "×"),
    "gain_over_magnitude_pp": Label("gain over magnitude pruning", "pp", signed=True),
    "compensation_gain_pp": Label("gain of mean compensation over removal", "pp", signed=True),
    "gain_over_standard_truncated_pp": Label("gain over the standard network at the same channels", "pp", signed=True),
    "storage_gain_over_fine_grained": Label("storage gain over fine-grained sparsity", "×"),
    "energy_reduction": Label("energy reduction", "×"),
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
