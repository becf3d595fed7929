"""Training Compressed Fully-Connected Networks with a Density-Diversity Penalty (Wang, Cai, Bilmes &
Noble, ICLR 2017; OpenReview Hku9NK5lx; no arXiv version).

Method: the fully-connected layers are trained with a regulariser that makes each weight matrix both
sparse (low *density*: few non-zero entries) and of low *diversity* (few distinct values), so that the
trained matrices store in little memory (a sparse index and a small codebook, as Deep Compression's
pruning and weight sharing store them) without a separate compression stage. For layer ``j`` with
weights ``W_j`` the density-diversity penalty is

    DP(W_j) = lambda_j ( sum_{(a,b)} sum_{(a',b')} |w_ab - w_a'b'|  +  ||W_j||_p ) ,

the first term (the sum of the absolute differences of every pair of weights of the layer) pulling
the weights towards each other, so that they gather in a few values, and the second pulling them
towards zero (``p = 2`` in the paper's experiments: "with p = 2 for now", Section 4). The pairwise
term has ``n^2`` summands for ``n`` weights; the paper's Algorithm 1 ("sorting trick") computes it and
its gradient from the sorted weights in ``O(n log n)``: with ``w_(0) <= ... <= w_(n-1)``,

    sum_{i,k} |w_i - w_k| = 2 sum_k (2k - n + 1) w_(k) ,   d/dw_(k) = 2 (2k - n + 1) ,

which is what :func:`diversity` computes (autograd on the sorted form gives Algorithm 1's gradient).
The paper's text could not be read where this file was written. What was read (a reproducibility
summary of the paper, ri.k117.org, quoting it): Algorithm 1 is a "Sorting Trick for Efficiently
Calculating the Gradient of Density Diversity Penalty on Weight Matrix W_j", the penalty is applied
"with p = 2 for now" to the fully-connected layers on MNIST and TIMIT, in a modified mxnet. The
pairwise form of the diversity term is the one such a sorting trick computes; the exact equation, the
paper's schedule (whatever else it trains with, e.g. tied weights), ``lambda_j`` and its numbers were
not read, and are not reproduced.

Claim: Abstract (OpenReview/ICLR 2017): "using this regularizer results in significantly fewer
parameters (i.e., high sparsity), and also significantly fewer distinct values (i.e., low
diversity), so that the trained weight matrices can be highly compressed without any appreciable loss
in performance" (MNIST and TIMIT). Read here (claim ``compressed-without-loss``): the network trained
with the penalty, compressed after training *without retraining* to the level Deep Compression reports
for the same LeNet-300-100 (Han et al. 2016, Table 2: 8% of the weights kept, 6-bit shared values;
``reproductions/han2016.py``'s weight sharing) loses at most 0.5 pp of test accuracy against the same
network trained for the same steps without the penalty, uncompressed (``accuracy_change_pp``).

Measured: ``baseline_accuracy`` (no penalty, same initial weights, data order and steps: the declared
baseline), ``dp_accuracy`` (the penalised network before compression), ``accuracy`` and
``accuracy_change_pp`` (after compression); ``control_accuracy`` and ``control_change_pp`` (the
baseline compressed the same way: what the penalty adds); ``param_compression`` (layer weights over
non-zeros after pruning, :func:`atlas.harness.controls.compression_ratio`), ``distinct_values`` (the
most distinct non-zero values of a layer after sharing), ``diversity_reduction`` (the mean absolute
pairwise difference of the baseline's weights over the penalised network's, averaged over layers)
and ``near_zero_fraction`` (the fraction of the penalised network's weights below 1e-3 in magnitude,
before pruning). The curve: the penalised network pruned by global weight magnitude to each
``curve_ratios`` level without retraining, beside the shared control, the baseline pruned the same way
(:func:`atlas.harness.controls.pruning_curve`, no retraining: both networks had the same steps).

Harness differs: Fashion-MNIST (quick) and the 8x8 digits (smoke) instead of MNIST and TIMIT; the
harness's LeNet-300-100; 3,000 steps of SGD with momentum and a cosine schedule for both networks
instead of the paper's schedule (not read); ``lambda_j = strength / n_j`` for a layer of ``n_j``
weights (so that the pairwise term's pull on one weight, at most ``2 (n_j - 1) lambda_j``, is the same
in every layer; the paper's per-layer values were not read), ``strength`` chosen on the validation
split; the compression after training is Deep Compression's magnitude pruning and k-means weight
sharing at fixed levels (the paper's own way of storing the matrices was not read); the pairwise
term's ranks (one sort of each layer's weights) are recomputed every 10 steps in the smoke and quick
profiles (every step in the paper profile): a sort of the first layer's 235,200 weights cost 40-190 ms
on the shared CPU, several times the training step. ``strength`` was chosen on the validation split
(the training set's last 10,000 examples; seeds 1000 and 1001, never the published seeds) as the
grid value whose network, compressed to the claim's level, is the most accurate:

    strength  seed   dense acc.  compressed 12.5x, 6 bits   near-zero weights   baseline compressed
    1e-5      1000   89.44%      81.47%                     3%                  81.80% (dense 89.24%)
    3e-5      1000   89.25%      85.30%                     20%
    5e-5      1000   89.03%      87.81%                     67%
    1e-4      1000   88.18%      88.15%                     92%
    3e-4      1000   85.98%      85.90%                     87%
    1e-4      1001   88.21%      88.27%                     92%                 79.50% (dense 89.44%)

Quick verdict: not reproduced, and why (seeds 0-2; baseline 88.81%, 0.83 pp below its reference).
The penalty does what the abstract says of the weights: 91-92% of them end below 1e-3, the mean
pairwise difference falls 5.7-6.0x, and the network survives Deep Compression's 12.5x pruning and
6-bit sharing without retraining at no cost (87.1-87.4% before and after), where the baseline
compressed the same way falls to 77.7-78.4% (-10.4 to -11.1 pp). But the penalised network is itself
1.4-1.7 pp less accurate than the baseline trained for the same steps (95% interval -1.93 to -1.22
against the check's -0.5): the loss is the penalty's, paid in training. Its curve lies far above the
control's from 12.5x on (86.8-87.4% at 25x against 51-58%). See ``DIAGNOSIS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from atlas_reproductions.han2016 import kmeans_1d
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction


class Config(Profile):
    model: Literal["lenet-300-100"]  # the harness model (fully connected: the paper penalises FC layers)
    train: TrainConfig  # the penalised network and the baseline alike, from the same initial weights
    strength: NonNegativeFloat  # lambda_j * n_j (chosen on the validation split)
    p: PositiveFloat = 2.0  # the density term's norm (Section 4: p = 2)
    rank_every: PositiveInt = 1  # steps between two sorts of the weights (Algorithm 1's ranks); 1: every step
    keep_ratio: PositiveFloat  # compression after training: global magnitude pruning to this ratio ...
    bits: PositiveInt  # ... then 2^bits - 1 shared non-zero values per layer (Deep Compression, Table 2)
    curve_ratios: list[PositiveFloat]  # global magnitude pruning levels of the curve (no retraining)


def _train(steps: int, batch: int = 100) -> dict:
    return {"steps": steps, "batch_size": batch, "optimizer": "sgd", "momentum": 0.9, "lr": 0.05,
            "schedule": "cosine"}


PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "model": "lenet-300-100", "train": _train(300, 64),
              "strength": 3e-4, "rank_every": 10, "keep_ratio": 12.5, "bits": 6,
              "curve_ratios": [4.0, 12.5, 25.0]},
    "quick": {
        # two networks of 3,000 steps of batch 100 a seed (penalised and baseline); strength chosen on
        # the validation split (see the docstring); Deep Compression's LeNet-300-100 level: 8% kept, 6 bits
        "dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100", "train": _train(3000),
        "strength": 1e-4, "rank_every": 10, "keep_ratio": 12.5, "bits": 6, "curve_ratios": [4.0, 12.5, 25.0],
    },
    "paper": {
        # MNIST, LeNet-300-100, 20 passes of batch 100; the paper's schedule and lambda were not read
        "dataset": "mnist", "seeds": 3, "model": "lenet-300-100", "train": _train(12000),
        "strength": 1e-4, "keep_ratio": 12.5, "bits": 6, "curve_ratios": [4.0, 12.5, 25.0],
    },
}


# ------------------------------------------------------------------------------ the penalty
def linears(model: nn.Module) -> list[nn.Linear]:
    """The fully-connected layers, input to output."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def diversity(w: torch.Tensor) -> torch.Tensor:
    """``sum_{i,k} |w_i - w_k|`` over every ordered pair of entries of ``w``, from the sorted entries
    (Algorithm 1's sorting trick): ``2 sum_k (2k - n + 1) w_(k)``."""
    v = w.flatten().sort().values
    n = v.numel()
    k = torch.arange(n, dtype=v.dtype, device=v.device)
    return 2 * (v * (2 * k - n + 1)).sum()


def density_diversity(w: torch.Tensor, lam: float, p: float) -> torch.Tensor:
    """``DP(W) = lambda (sum |w_ab - w_a'b'| + ||W||_p)``."""
    return lam * (diversity(w) + w.flatten().norm(p=p))


def rank_coefficients(w: torch.Tensor) -> torch.Tensor:
    """Algorithm 1's gradient of :func:`diversity`: ``2 (2k - n + 1)`` for the weight of rank ``k``."""
    flat = w.detach().flatten()
    n = flat.numel()
    coeff = torch.empty_like(flat)
    coeff[flat.argsort()] = 2 * (2 * torch.arange(n, dtype=flat.dtype, device=flat.device) - n + 1)
    return coeff.view_as(w)


def penalised_loss(strength: float, p: float, rank_every: int = 1
                   ) -> Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy plus ``DP(W_j)`` of every fully-connected layer, ``lambda_j = strength / n_j``. The
    pairwise term enters through its gradient, ``lambda_j sum_i c_i w_i`` with ``c`` Algorithm 1's rank
    coefficients (:func:`rank_coefficients`), recomputed every ``rank_every`` steps (1: exact at every
    step; a sort of LeNet-300-100's 235,200 first-layer weights costs several times the step it
    penalises on the CPU)."""
    state: dict[str, object] = {"step": 0, "coeffs": None}

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        layers = linears(model)
        if state["step"] % rank_every == 0 or state["coeffs"] is None:
            state["coeffs"] = [rank_coefficients(m.weight) for m in layers]
        state["step"] += 1
        reg = sum(strength / m.weight.numel() * ((c * m.weight).sum() + m.weight.flatten().norm(p=p))
                  for m, c in zip(layers, state["coeffs"], strict=True))
        return nn.functional.cross_entropy(model(x), y) + reg

    return loss


# --------------------------------------------------------------------- compression after training
@torch.no_grad()
def share_values(model: nn.Module, bits: int) -> int:
    """Deep Compression's weight sharing, in place: each layer's non-zero weights replaced by the
    nearest of ``2^bits - 1`` k-means centroids (zeros stay zero); returns the most distinct non-zero
    values of a layer."""
    most = 0
    for m in linears(model):
        w = m.weight
        nz = w != 0
        if int(nz.sum()) == 0:
            continue
        centroids, labels = kmeans_1d(w[nz], min(2 ** bits - 1, int(nz.sum())))
        w[nz] = centroids[labels]
        most = max(most, int(torch.unique(w[nz]).numel()))
    return most


def compress(run: Run, model: nn.Module, ratio: float, bits: int) -> tuple[nn.Module, int]:
    """Global magnitude pruning to ``ratio`` (no retraining), then weight sharing at ``bits``."""
    pruned = controls.global_magnitude_prune(run, model, ratio, None)
    return pruned, share_values(pruned, bits)


def mean_pairwise_distance(model: nn.Module) -> list[float]:
    """Per layer, the mean absolute difference of two of its weights (``diversity / n^2``)."""
    return [float(diversity(m.weight.detach())) / m.weight.numel() ** 2 for m in linears(model)]


# ------------------------------------------------------------------------------- the runs
def train_network(run: Run, penalised: bool) -> nn.Module:
    """The network from scratch, with the density-diversity penalty or without (the baseline): the
    same initial weights and data order for both."""
    cfg = run.config
    run.reseed("wang2017b initial weights")
    model = run.model(cfg["model"])
    run.reseed("wang2017b data order")
    hooks = {"loss_fn": penalised_loss(cfg["strength"], cfg["p"], cfg["rank_every"])} if penalised else {}
    return run.train(model, run.dataset().train, run.train_config("train"),
                     desc="density-diversity" if penalised else "baseline", **hooks)


#: Why the atlas publishes "not reproduced"; shown beside the verdict.
DIAGNOSIS = """
The penalty was checked against its definition: the sorting trick's value and gradient equal the sum
over every pair and its gradient (unit tests), the p = 2 norm is added, and the ranks reused for 10
steps give the exact gradient when fresh. The compression after training costs nothing (the
penalised network's accuracy is the same before and after 12.5x pruning and 6-bit sharing); the gap
is the accuracy the penalised network loses in training. On the validation split (seeds 1000 and
1001) no strength kept the dense accuracy and compressed well: 1e-5 and 3e-5 kept it (89.4%, 89.3%)
but compressed to 81.5% and 85.3%; 5e-5 and 1e-4 compressed without loss but trained to 89.0% and
88.2% (-0.2 and -1.1 pp); the chosen 1e-4 had the best compressed accuracy. We believe the gap is the
penalty's at this budget and on this data set, with two limits of the harness that may matter: the
paper's schedule, its per-layer lambda and anything it trains after the penalty (a retraining of the
shared values, as Deep Compression does, would recover part of the loss) were not read and are not
reproduced, and 3,000 steps give the network little time to fit
the data again once the penalty has gathered its weights. The paper's MNIST and TIMIT numbers
could not be read, so its own loss at its compression is not known here.
"""


@reproduction("wang2017b", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg, data = run.config, run.dataset()
    baseline = train_network(run, penalised=False)
    dp = train_network(run, penalised=True)
    base_acc = run.accuracy(baseline, data.test)
    compressed, distinct = compress(run, dp, cfg["keep_ratio"], cfg["bits"])
    control, _ = compress(run, baseline, cfg["keep_ratio"], cfg["bits"])
    acc, control_acc = run.accuracy(compressed, data.test), run.accuracy(control, data.test)
    spread_dp, spread_base = mean_pairwise_distance(dp), mean_pairwise_distance(baseline)
    weights = torch.cat([m.weight.detach().flatten() for m in linears(dp)])
    metrics = {
        **measure.accuracy_change(base_acc, acc),
        "dp_accuracy": run.accuracy(dp, data.test),
        "control_accuracy": control_acc,
        "control_change_pp": control_acc - base_acc,
        "param_compression": controls.compression_ratio(compressed),
        "distinct_values": float(distinct),
        "diversity_reduction": sum(b / d for b, d in zip(spread_base, spread_dp, strict=True)) / len(spread_dp),
        "near_zero_fraction": float((weights.abs() < 1e-3).float().mean()),
    }
    method = {float(r): run.accuracy(controls.global_magnitude_prune(run, dp, r, None), data.test)
              for r in cfg["curve_ratios"]}
    train = cfg["train"]
    run.record(
        "compressed-without-loss",
        model=f"{cfg['model']} trained with the density-diversity penalty (strength={cfg['strength']:g}, "
              f"p={cfg['p']:g}), then pruned to {cfg['keep_ratio']:g}x and shared at {cfg['bits']} bits without "
              "retraining",
        metrics=metrics, baseline=(cfg["model"], "baseline_accuracy"), diagnosis=DIAGNOSIS,
        differs=f"{data.name}; the harness's {cfg['model']}; {train['steps']} SGD steps of batch "
                f"{train['batch_size']} for both networks from the same initial weights; baseline = the same "
                "network without the penalty, uncompressed; compression after training: global magnitude "
                "pruning and k-means weight sharing (Deep Compression's), no retraining",
        curves=[controls.Series("density-diversity penalty, then global magnitude pruning", controls.RATIO,
                                controls.ACCURACY, method),
                controls.pruning_curve(run, baseline, sorted(method), None)],
    )

