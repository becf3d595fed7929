"""Sparse Activity and Sparse Connectivity in Supervised Learning (Thom & Palm, JMLR 14:1091-1143,
2013; arXiv:1603.08367).

The survey lists this paper under pruning for its *sparse connectivity*: every neuron keeps only a
few non-zero incoming weights, enforced during training by a sparseness-enforcing projection. Its
main contribution is that projection (and its use as a transfer function for sparse *activity*);
what is reproduced here is the claim the survey lists it for, sparse connectivity at an accuracy
change, with the compression it gives measured.

Method (as the abstract describes it; the section numbers of the paper were not read). Sparseness is Hoyer's measure of a vector ``x`` in R^n,

    sigma(x) = (sqrt(n) - ||x||_1 / ||x||_2) / (sqrt(n) - 1)    in [0, 1]

(0 for a vector with all entries of equal magnitude, 1 for a vector with one non-zero entry). For a
target ``sigma*`` the projection maps ``x`` to the closest vector ``s`` (Euclidean distance) with
``||s||_2 = lambda_2`` and ``||s||_1 = lambda_1 = lambda_2 (sqrt(n) - sigma* (sqrt(n) - 1))``, so
that ``sigma(s) = sigma*``. For a non-negative vector it is Hoyer's (2004) alternating algorithm,
whose theory the paper develops (the zero set only grows, so it stops within n rounds):

    s <- x + (lambda_1 - sum x) / n                       (onto the L1 hyperplane)
    repeat:  m_i = lambda_1 / (n - |Z|) off Z, 0 on Z     (the centre of the L1 simplex face)
             s <- m + alpha (s - m), alpha >= 0 with ||s||_2 = lambda_2   (onto the L2 sphere)
             stop if s >= 0; else Z <- Z u {i : s_i < 0}, s_Z <- 0 and
             s <- s - (sum s - lambda_1) / (n - |Z|) off Z    (back onto the L1 hyperplane)

An arbitrary vector is projected through its magnitudes and keeps its signs (the usual reduction for
vectors of either sign). The result
has exact zeros: the sparser the target, the more of them. Sparse connectivity: each hidden
neuron's vector of incoming weights is projected onto the target sparseness ``sigma_W``, here after
every gradient step (projected gradient descent), at the norm it has (the measure is scale-invariant, so
only the direction is constrained). Sparse activity: the same projection as the hidden
layer's transfer function, differentiable almost everywhere (abstract) (:class:`SparseActivity`, provided and
tested here; not measured, see below).

Claims (the abstract, as on arXiv:1603.08367v1 and the JMLR page; the experiment section was not
read): "classification performance can be boosted by
sparse activity or sparse connectivity. With a combination of both, performance can be significantly
better compared to classical non-sparse approaches" (MNIST). Claim ``mnist-sparse-connectivity`` is
checked as the accuracy change of the sparsely connected network against the same network trained
with the same steps without the projection (``accuracy_change_pp``; "boosted" read here as a loss of
at most 1 pp, with the sign recorded), at the profile's headline target ``sigma_W``; the compression
the projection gives is measured, not claimed (the paper reports error rates, not ratios; its tables
were not read here, so no number from them is quoted).

What is measured: a dense LeNet-300-100 is trained (``dense``, once for all seeds in the quick
profile); from it, per seed and with the same data order and number of steps (``finetune``): (i) the
same network trained on without projection (``baseline_accuracy``), (ii) projected gradient descent at
each target ``sigma_W`` of ``sigma_levels`` (the hidden layers' rows projected before the first step
and after every step; the output layer stays dense, chosen here). Metrics:
``accuracy`` / ``accuracy_change_pp`` at ``headline_sigma``, ``param_compression`` (conv/fc weights
over their non-zero ones, :func:`atlas.harness.controls.compression_ratio`), ``flop_reduction``
(dense FLOPs over the FLOPs left when each layer skips its zero weights), ``dense_accuracy``,
``hoyer_sparseness`` (mean Hoyer sparseness of the projected rows, equal to the target up to rounding)
and, per level, ``ratio_at_sigma_<level>`` and ``gain_over_magnitude_at_sigma_<level>_pp`` (the
method minus global magnitude pruning at the very ratio the method reached on that seed, fine-tuned
with the same steps).

Curves. A sparseness target does not fix the compression ratio: the zeros it leaves depend on the
weights, so the ratio differs slightly from seed to seed. The method's curve therefore has as x the
quantity set here, the target Hoyer sparseness ``sigma_W`` (same levels every seed), and is drawn
beside global magnitude pruning at the ratio the method reached on the same seed at each level
(same x, same fine-tuning steps: a paired comparison at equal compression). The shared control
(:func:`atlas.harness.controls.pruning_curve`) is recorded too, at fixed ratios ``control_ratios``
(2x, 4x, 10x, chosen here: projecting the trained dense rows once gives 6.4x at 0.75 and 26x at
0.9, but after projected training the targets give less than 2x, where the paired control above is
the comparison at equal compression), fine-tuned with the method's steps.

Harness differs: Fashion-MNIST and the harness LeNet-300-100 (784-300-100-10, ReLU) instead of the
paper's MNIST networks; projected gradient descent starts from a trained dense network and runs for
the fine-tuning budget (the paper tunes the entire model end to end with the projection, as its
abstract says); Adam with a cosine schedule; sparse activity is not measured (it changes the transfer function, not the number of
weights: no compression), nor the combination of both.

Quick result (before publication; seeds 0-2, 200 fine-tuning steps): at sigma_W = 0.75 the projected
network ends 2.04 pp below the same-budget dense one, 95 % interval [-2.33, -1.75] pp: not reproduced
against the 1 pp reading (the baseline is 0.97 pp below its reference, converged); with 300 steps it
was -1.65 pp [-1.91, -1.39]. And it compresses little: the projection of the trained dense rows alone
leaves 85 % zeros at 0.75 (6.4x), but during projected training the rows grow a few large weights
that carry the L2 norm, so the target L1/L2 ratio is met with few exact zeros (1.02x at 0.75, 1.66x
at 0.9). At those ratios global magnitude pruning keeps the dense accuracy (88.6-88.9 %), 0.5-8.4 pp
above the method. Trained end to end with the projection (2,200 steps from scratch, seed 100) the
network came within 0.8 pp of the dense one, again at 1.003x. See DIAGNOSIS.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction


class Config(Profile):
    model: Literal["lenet-300-100"]  # the harness model (784-300-100-10)
    dense_per_seed: bool  # False: one dense network (seed 0) for every seed
    dense: TrainConfig  # the dense network projected gradient descent starts from
    finetune: TrainConfig  # each of: the same-budget baseline, each sparseness level, each control ratio
    sigma_levels: list[float] = Field(min_length=3)  # target Hoyer sparseness sigma_W of each hidden row
    headline_sigma: float = Field(gt=0, lt=1)  # the level the claim is checked at (one of sigma_levels)
    control_ratios: list[float] = Field(min_length=3)  # the shared control's fixed compression ratios


def _adam(steps: int, lr: float, batch_size: int) -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "adam", "schedule": "cosine"}


# The levels (chosen here, not read in the paper): trained dense rows have Hoyer sparseness 0.21-0.24
# on Fashion-MNIST; projecting them once to 0.75 / 0.9 keeps about 15 % / 3 % of their weights.
LEVELS = [0.6, 0.75, 0.9]

PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "model": "lenet-300-100", "dense_per_seed": False,
        "dense": _adam(150, 0.002, 64), "finetune": _adam(40, 0.001, 64),
        "sigma_levels": LEVELS, "headline_sigma": 0.75, "control_ratios": [2.0, 4.0, 10.0],
    },
    "quick": {
        # one dense network for all seeds, then per seed 1 + 3 + 3 + 3 fine-tunings of 200 steps
        "dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100", "dense_per_seed": False,
        "dense": _adam(2000, 0.002, 128), "finetune": _adam(200, 0.001, 128),
        "sigma_levels": LEVELS, "headline_sigma": 0.75, "control_ratios": [2.0, 4.0, 10.0],
    },
    "paper": {
        # MNIST (the paper's data set); the schedule is chosen here, the paper's was not read:
        # 50 passes of 60k examples at batch 32 = 93,750 steps, as many projected steps again
        "dataset": "mnist", "seeds": 5, "model": "lenet-300-100", "dense_per_seed": True,
        "dense": _adam(93750, 0.001, 32), "finetune": _adam(93750, 0.0005, 32),
        "sigma_levels": LEVELS, "headline_sigma": 0.75, "control_ratios": [2.0, 4.0, 10.0],
    },
}


# ------------------------------------------------------------------------------------ the method
def hoyer_sparseness(x: torch.Tensor) -> torch.Tensor:
    """Hoyer's sparseness of each row of ``x`` (last dimension): ``(sqrt(n) - L1/L2) / (sqrt(n) - 1)``."""
    n = x.shape[-1]
    l1 = x.abs().sum(-1)
    l2 = x.norm(dim=-1).clamp_min(torch.finfo(x.dtype).tiny)
    return (math.sqrt(n) - l1 / l2) / (math.sqrt(n) - 1)


def project_nonnegative(x: torch.Tensor, l1: torch.Tensor, l2: torch.Tensor) -> torch.Tensor:
    """The closest non-negative vector to each row of ``x`` with L1 norm ``l1`` and L2 norm ``l2``
    (Hoyer's alternating algorithm, exact within n rounds). Differentiable
    almost everywhere (the zero set is locally constant)."""
    n = x.shape[-1]
    l1, l2 = l1.unsqueeze(-1), l2.unsqueeze(-1)
    s = x + (l1 - x.sum(-1, keepdim=True)) / n
    zero = torch.zeros_like(s, dtype=torch.bool)
    for _ in range(n + 1):
        free = (~zero).sum(-1, keepdim=True).to(s.dtype)
        m = torch.where(zero, torch.zeros_like(s), l1 / free)
        d = s - m
        a = (d * d).sum(-1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
        b = 2 * (m * d).sum(-1, keepdim=True)
        c = (m * m).sum(-1, keepdim=True) - l2 * l2
        alpha = (-b + (b * b - 4 * a * c).clamp_min(0).sqrt()) / (2 * a)
        s = m + alpha * d
        negative = s < 0
        if not bool(negative.any()):
            break
        zero = zero | negative
        s = torch.where(zero, torch.zeros_like(s), s)
        free = (~zero).sum(-1, keepdim=True).to(s.dtype)
        s = torch.where(zero, s, s - (s.sum(-1, keepdim=True) - l1) / free)
    return s


def target_l1(l2: torch.Tensor, n: int, sigma: float) -> torch.Tensor:
    """The L1 norm a vector of ``n`` entries and L2 norm ``l2`` has at Hoyer sparseness ``sigma``."""
    return l2 * (math.sqrt(n) - sigma * (math.sqrt(n) - 1))


def sparseness_projection(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each row of ``x`` projected onto the vectors of Hoyer sparseness ``sigma`` with the same L2
    norm: the magnitudes projected onto the non-negative ones, the signs kept."""
    l2 = x.norm(dim=-1)
    s = project_nonnegative(x.abs(), target_l1(l2, x.shape[-1], sigma), l2)
    return torch.sign(x) * s


class SparseActivity(nn.Module):
    """Sparse activity: the hidden activity of each example projected onto the non-negative
    vectors of Hoyer sparseness ``sigma`` (at its own L2 norm), a transfer function trained through
    by back-propagation."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(x)
        l2 = x.norm(dim=-1)
        return project_nonnegative(x, target_l1(l2, x.shape[-1], self.sigma), l2)


def hidden_layers(model: nn.Module) -> list[nn.Linear]:
    """The layers whose rows (each neuron's incoming weights) are projected: every fully-connected
    layer but the last (the classifier stays dense)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]


@torch.no_grad()
def project_connectivity(model: nn.Module, sigma: float) -> None:
    """Sparse connectivity: each hidden neuron's incoming weights projected to sparseness ``sigma``."""
    for layer in hidden_layers(model):
        layer.weight.copy_(sparseness_projection(layer.weight, sigma))


# ------------------------------------------------------------------------------------ the run
def train_dense(run: Run) -> nn.Module:
    cfg = run.config
    per_seed = cfg["dense_per_seed"]

    def fit(model: nn.Module) -> None:
        run.reseed("thom2013 dense data", seed=None if per_seed else 0)
        run.train(model, run.dataset().train, run.train_config("dense"), desc="dense")

    spec = {"model": cfg["model"], "dense": cfg["dense"], "per_seed": per_seed}
    return run.cached_model("thom2013-dense", spec, build=lambda: run.model(cfg["model"]), fit=fit,
                            per_seed=per_seed)


def finetune(run: Run, model: nn.Module, desc: str, **hooks: object) -> nn.Module:
    """The profile's ``finetune`` budget, every model with the same data order."""
    run.reseed("thom2013 finetune data")
    return run.train(model, run.dataset().train, run.train_config("finetune"), desc=desc, **hooks).eval()


def sparse_connectivity(run: Run, dense: nn.Module, sigma: float) -> nn.Module:
    """Projected gradient descent from ``dense``: the rows projected before the first step and after
    every step."""
    model = controls.trainable_copy(dense)
    project_connectivity(model, sigma)
    return finetune(run, model, f"sparse connectivity sigma_W={sigma:g}",
                    after_step=lambda m: project_connectivity(m, sigma))


DIAGNOSIS = """Not reproduced at the headline target sparseness 0.75 (chosen here before the runs; the
paper's tables, with its own sparseness degrees, were not read). Checked: the projection is exact
(unit tests: the target sparseness at the same L2 norm, signs kept, idempotent, the soft-threshold form
of the closest point, closer than random feasible points); the baseline is within 1 pp of its
reference; the loss is the harness cross-entropy. Adam at lr 0.001 on seeds 0-2: -2.04 pp (1.02x)
with 200 steps, -1.65 pp (1.01x) with 300 steps; with 300 steps on seed 100 (not a published seed) SGD with momentum at lr 0.05 (-1.5 pp, 1.03x)
and lr 0.01 (-2.6 pp, 1.04x); at target 0.9 the loss is 4 to 8 pp. The loss comes with almost no compression:
Hoyer's measure constrains the ratio of the L1 to the L2 norm, not the number of non-zero weights, and
under projected training each row concentrates its norm on a few large weights so that the other
weights stay small but non-zero. The harness differs from the paper in training with the projection
only for a short fine-tuning budget from a trained dense network (the paper trains end to end with
the projection for many epochs, and on MNIST, where the paper reports that sparse connectivity
improves accuracy). A longer budget closes much of the gap: on seed 100, LeNet-300-100 trained from
scratch with the projection at 0.75 for 2,200 Adam steps (the quick profile's dense plus fine-tuning
steps) ended 0.79 pp below the dense network trained the same steps (88.10 against 88.89 %), within
the 1 pp reading, but at 1.003x: no compression. Running that schedule per level and seed is about
ten times the quick profile's time. The paper profile runs a far longer projected schedule on MNIST."""


@reproduction("thom2013", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    cfg = run.config
    if cfg["headline_sigma"] not in cfg["sigma_levels"]:
        raise ValueError("headline_sigma must be one of sigma_levels")
    ft = run.train_config("finetune")
    dense = train_dense(run)
    dense_acc = run.accuracy(dense, data.test)
    base_acc = run.accuracy(finetune(run, controls.trainable_copy(dense), "same-budget dense baseline"), data.test)
    shape = data.input_shape
    dense_flops = measure.flops(dense, shape)

    method: dict[float, float] = {}
    same_ratio: dict[float, float] = {}
    per_level: dict[str, float] = {}
    headline: dict[str, float] = {}
    for sigma in cfg["sigma_levels"]:
        model = sparse_connectivity(run, dense, sigma)
        acc = run.accuracy(model, data.test)
        ratio = controls.compression_ratio(model)
        magnitude = controls.global_magnitude_prune(run, dense, ratio, ft)
        mag_acc = run.accuracy(magnitude, data.test)
        method[float(sigma)], same_ratio[float(sigma)] = acc, mag_acc
        per_level[f"ratio_at_sigma_{sigma:g}"] = ratio
        per_level[f"gain_over_magnitude_at_sigma_{sigma:g}_pp"] = acc - mag_acc
        if sigma == cfg["headline_sigma"]:
            headline = {
                **measure.accuracy_change(base_acc, acc),
                "param_compression": ratio,
                "flop_reduction": dense_flops / measure.effective_flops(model, shape),
                "hoyer_sparseness": float(torch.cat([hoyer_sparseness(layer.weight.detach())
                                                      for layer in hidden_layers(model)]).mean()),
                "magnitude_accuracy_same_ratio": mag_acc,
            }

    x = "target Hoyer sparseness σ_W"
    run.record(
        "mnist-sparse-connectivity",
        model=f"{cfg['model']}, hidden neurons' incoming weights projected to Hoyer sparseness "
              f"{cfg['headline_sigma']:g}",
        metrics={**headline, "dense_accuracy": dense_acc, **per_level},
        baseline=(cfg["model"], "baseline_accuracy"),
        diagnosis=DIAGNOSIS,
        differs=f"{data.name} and the harness {cfg['model']} instead of the paper's MNIST networks; projected "
                f"gradient descent for {ft.steps} steps from a dense network trained {cfg['dense']['steps']} steps"
                + ("" if cfg["dense_per_seed"] else " (one for all seeds)")
                + "; baseline = the dense network given the same steps without projection; sparse activity "
                  "not measured",
        notes="method curve and its paired control: x is the target sparseness set here (the ratio it gives "
              "varies by seed; ratio_at_sigma_* records it), the control pruned to that very ratio",
        curves=[
            controls.Series("sparseness-enforcing projection (sparse connectivity)", x, controls.ACCURACY, method),
            controls.Series(controls.PRUNING_CONTROL + ", at the ratio each target gives", x, controls.ACCURACY,
                            same_ratio, control=True),
            controls.pruning_curve(run, dense, cfg["control_ratios"], ft),
        ],
    )
