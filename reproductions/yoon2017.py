"""Combined Group and Exclusive Sparsity for Deep Neural Networks (Yoon & Hwang, ICML 2017, PMLR 70:
3958-3966; no arXiv version).

Method: a network is trained from scratch with a regulariser that combines two sparsities over the
same groups of weights. Group ``g`` of layer ``l`` is the set of weights that leave one input unit of
the layer (an input feature or neuron of a fully-connected layer: its column ``W_l[:, g]``; one
input channel and kernel position of a convolution: ``W_l[:, c, i, j]``). The *group sparsity*, the
(2,1)-norm ``||W_l||_{2,1} = sum_g ||W_l[:, g]||_2``, makes units share features or vanish as a
whole; the *exclusive sparsity*, the (1,2)-norm ``||W_l||_{1,2}^2 = sum_g ||W_l[:, g]||_1^2``, makes
the units of the next layer compete for each input unit, so that each fits a disjoint set of
features. CGES mixes them per layer with ``mu_l``:

    Omega(W) = sum_l [ mu_l ||W_l||_{2,1} + (1 - mu_l) / 2 ||W_l||_{1,2}^2 ] ,
    min_W  L(W) + lambda Omega(W) ,

with more group sparsity at the lower layers and more exclusive sparsity at the upper ones. It is
optimised by proximal gradient descent: after every SGD step of step size ``eta`` on the loss, each
group is first shrunk by the group Lasso's proximal operator and then each weight is soft-thresholded
by its group's l1 norm (the exclusive Lasso's proximal step):

    w_g <- max(0, 1 - eta lambda mu_l / ||w_g||_2) w_g ,
    w_gi <- sign(w_gi) max(0, |w_gi| - eta lambda (1 - mu_l) ||w_g||_1) .

This is what the authors' released TensorFlow code does (``jaehong31/CGES``, ``main.py``, read here):
groups over the output axis of each weight (``reduce_sum(square(var), -1)``: an input unit's
outgoing weights), ``mu_l = mu - l * chvar`` for the group term and ``1 - mu + l * chvar`` for the
exclusive term (``mu = 0.8``, ``chvar = 0.2``: 0.8, 0.6, 0.4, 0.2 over its four layers),
``lambda = 4e-5`` with plain SGD at a constant ``eta = 0.05`` for 30,000 steps of 100 MNIST examples,
a 32-64-1024-10 convolutional network with dropout, and a per-layer normalisation of each term
(``[1, 1, 1/15, 1/144]`` and ``[1, 1, 15, 144]``, written for that network; not used here: 1 for
every layer). Its baseline is the same network without the regulariser (the README: "turn off the
cges option").

Claims: the paper's tables (accuracy, parameters used and FLOPs on MNIST, CIFAR-10, CIFAR-100 and
ImageNet) could not be read where this file was written: no number of the paper is in the catalogue.
The checked claim is the abstract's (``compact-and-accurate``, PMLR abstract): CGES "can obtain more
compact and efficient networks while also improving the performance over the base networks with full
weights, as opposed to existing sparsity regularizations that often obtain efficiency at the expense
of prediction accuracy". Read here as: the CGES network is at least as accurate as the same network
trained for the same steps without the regulariser (``accuracy_change_pp`` >= 0, with the atlas's
usual 0.5 pp tolerance for "no loss").

Measured: ``baseline_accuracy`` (the same network, same initial weights, data order and steps, no
regulariser: the declared baseline), ``accuracy``, ``accuracy_change_pp``; how compact it is:
``param_compression`` (the network's layer weights over their non-zeros,
:func:`atlas.harness.controls.compression_ratio`), ``weight_sparsity``, ``flop_reduction`` (dense
FLOPs over ``measure.effective_flops`` of the sparse network), ``units_<layer>`` (input units of each
layer whose outgoing group is not zero: what the group sparsity removed), and the smaller dense network
those units make (:func:`compact`, exact: ``removal_exact``), its ``structured_compression`` and its
measured CPU ``speedup`` (``measure.latency_ms``, a forward pass of 64 examples, against the baseline,
in the same run), ``exclusivity`` (the mean over hidden layers of the fraction of each surviving input
unit's outgoing weights that are zero: what the exclusive sparsity adds inside groups). The curve: the
CGES network pruned further by global weight magnitude (its own zeros kept) to each ``curve_ratios``
level without retraining, beside the shared control, the baseline pruned the same way
(:func:`atlas.harness.controls.pruning_curve`, no retraining: both networks had the same steps).

Harness differs: Fashion-MNIST (quick) and the 8x8 digits (smoke) instead of MNIST, CIFAR and ImageNet;
the harness's LeNet-300-100 (784-300-100-10, three layers: ``mu_l`` 0.8, 0.6, 0.4 by the code's
rule) instead of the code's convolutional network (the paper profile: MNIST and the harness's LeNet-5
for the code's 30,000 plain SGD steps and ``lambda``); 3,000 steps of SGD with momentum and a cosine
schedule in the quick profile (the code's plain SGD at a constant rate left the baseline 2.7 pp below
its reference accuracy in 3,000 steps); no dropout; the code's per-layer normalisation left out (it
was written for its network's layer sizes). ``lambda`` was chosen on the validation split (the
training set's last 10,000 examples; seeds 1000 and 1001, never the published seeds), as the smallest
value of a grid that at least halves the non-zero weights, so that "more compact" means something:

    lambda   seed   param. compression   hidden units kept   accuracy change
    8e-4     1000   1.06x                300, 100            +0.09 pp
    3e-3     1000   2.08x                220, 100            -0.75 pp
    3e-3     1001   2.03x                231, 100            -0.93 pp
    1e-2     1000   7.65x                57, 64              -1.90 pp

(8e-4 keeps the code's total proximal shrinkage, ``sum_t eta_t lambda`` = 0.05 x 4e-5 x 30,000, under
the cosine schedule.)

Quick verdict: not reproduced, and why (seeds 0-2; baseline 88.98%, 0.66 pp below its reference).
CGES halves the non-zero weights (1.94-2.07x; 225-228 of 300 first-layer units and 99-100 of 100
second-layer units keep an outgoing group; 22-25% of the weights inside surviving groups are zero) and
costs 1.44 pp (95% interval -1.62 to -1.26 against the check's -0.5). Its smaller dense network (the
removed units) is 1.32x smaller but not faster on this CPU (0.92-0.94x). Its curve beats the control:
pruned further by magnitude without retraining it keeps 87.5% at 8x and 86.5% at 16x, where the
baseline pruned the same way falls to 83-84% and 72-75%. See ``DIAGNOSIS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction
from atlas.harness.training import _lr_factor


class Config(Profile):
    model: Literal["lenet-300-100", "lenet-5"]  # the harness model
    train: TrainConfig  # CGES and the baseline alike, from the same initial weights (code: plain SGD, eta 0.05)
    strength: PositiveFloat  # lambda (code: 4e-5 for 30,000 steps; scaled by 30,000 / steps here)
    mu: float = Field(0.8, ge=0, le=1)  # code: mu, the first layer's group-sparsity share
    chvar: float = Field(0.2, ge=0, le=1)  # code: chvar, mu's change per layer
    curve_ratios: list[PositiveFloat]  # global magnitude pruning levels of the curve (no retraining)


def _train(steps: int, batch: int = 100, momentum: float = 0.9, schedule: str = "cosine") -> dict:
    # the released code: plain SGD (no momentum) at a constant lr 0.05 for 30,000 steps (the paper
    # profile); the quick profile's 3,000 steps use momentum and a cosine schedule, so that the
    # baseline converges within the atlas's 1 pp of its reference
    return {"steps": steps, "batch_size": batch, "optimizer": "sgd", "momentum": momentum, "lr": 0.05,
            "schedule": schedule}


PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "model": "lenet-300-100", "train": _train(300, 64),
              "strength": 1e-2, "curve_ratios": [4.0, 8.0, 16.0]},
    "quick": {
        # two networks of 3,000 steps of batch 100 a seed (CGES and the baseline); lambda chosen on the
        # validation split (the training set's last 10,000 examples, seeds 1000-1001): see the docstring
        "dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100", "train": _train(3000),
        "strength": 3e-3, "curve_ratios": [4.0, 8.0, 16.0],
    },
    "paper": {
        # the released code's MNIST run: 30,000 plain SGD steps of 100 at lr 0.05, lambda 4e-5, mu 0.8, chvar 0.2
        "dataset": "mnist", "seeds": 3, "model": "lenet-5", "train": _train(30000, momentum=0.0, schedule="constant"),
        "strength": 4e-5, "curve_ratios": [8.0, 16.0, 32.0],
    },
}


# ------------------------------------------------------------------------------ the groups
def layers(model: nn.Module) -> list[nn.Linear | nn.Conv2d]:
    """The convolutions and fully-connected layers, input to output."""
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def groups(w: torch.Tensor) -> torch.Tensor:
    """A layer's weights as (outputs, groups): column ``g`` holds the weights that leave input unit
    ``g`` (a fully-connected layer's input; a convolution's input channel at one kernel position)."""
    return w.flatten(1)


def layer_shares(n_layers: int, mu: float, chvar: float) -> list[float]:
    """``mu_l = mu - l * chvar`` (the group term's share; the exclusive term gets ``1 - mu_l``), as the
    released code, kept within [0, 1]."""
    return [min(1.0, max(0.0, mu - i * chvar)) for i in range(n_layers)]


def omega(model: nn.Module, mu: float, chvar: float) -> torch.Tensor:
    """``sum_l mu_l ||W_l||_{2,1} + (1 - mu_l) / 2 ||W_l||_{1,2}^2`` (the regulariser whose proximal
    steps :func:`cges_prox` takes)."""
    ls = layers(model)
    total = torch.zeros(())
    for m, share in zip(ls, layer_shares(len(ls), mu, chvar), strict=True):
        g = groups(m.weight)
        total = total + share * g.norm(dim=0).sum() + (1 - share) / 2 * (g.abs().sum(0) ** 2).sum()
    return total


@torch.no_grad()
def group_prox(w: torch.Tensor, threshold: float) -> torch.Tensor:
    """The (2,1)-norm's proximal operator: every group scaled by ``max(0, 1 - t / ||w_g||_2)``."""
    g = groups(w)
    scale = (1 - threshold / g.norm(dim=0).clamp_min(1e-12)).clamp_min(0)
    return (g * scale).view_as(w)


@torch.no_grad()
def exclusive_prox(w: torch.Tensor, threshold: float) -> torch.Tensor:
    """The exclusive sparsity's proximal step of the released code: each weight soft-thresholded by
    ``t`` times the l1 norm of its group (the weights that leave the same input unit)."""
    g = groups(w)
    cut = threshold * g.abs().sum(0, keepdim=True)
    return (g.sign() * (g.abs() - cut).clamp_min(0)).view_as(w)


@torch.no_grad()
def cges_prox(model: nn.Module, eta: float, strength: float, mu: float, chvar: float) -> None:
    """One proximal step of CGES after an SGD step of size ``eta``: the group step, then the exclusive
    step on its result, layer by layer with the layer's ``mu_l``."""
    ls = layers(model)
    for m, share in zip(ls, layer_shares(len(ls), mu, chvar), strict=True):
        w = group_prox(m.weight, eta * strength * share)
        m.weight.copy_(exclusive_prox(w, eta * strength * (1 - share)))


def prox_hook(cfg: TrainConfig, strength: float, mu: float, chvar: float) -> Callable[[nn.Module], None]:
    """``after_step``: the proximal step with the step size the optimizer just used (the schedule's)."""
    step = [0]

    def hook(model: nn.Module) -> None:
        eta = cfg.lr * _lr_factor(cfg.schedule, step[0], cfg.steps)
        cges_prox(model, eta, strength, mu, chvar)
        step[0] += 1

    return hook


# ------------------------------------------------------------------------ what it leaves
def units_kept(model: nn.Module) -> list[torch.Tensor]:
    """Per layer, which of its input units still have a non-zero outgoing group (boolean)."""
    out = []
    for m in layers(model):
        w = m.weight.detach()
        per_unit = w.transpose(0, 1).flatten(1) if w.dim() == 4 else w.t()
        out.append(per_unit.abs().sum(1) > 0)
    return out


def exclusivity(model: nn.Module) -> float:
    """Mean over the hidden layers (every layer but the first) of the fraction of zero weights inside
    the surviving input units' outgoing groups."""
    fracs = []
    for m in layers(model)[1:]:
        g = groups(m.weight.detach())
        alive = g.abs().sum(0) > 0
        if alive.any():
            fracs.append(float((g[:, alive] == 0).float().mean()))
    return sum(fracs) / max(1, len(fracs))


class CompactMLP(nn.Module):
    """The dense network the surviving units of an MLP make: the kept inputs gathered, then each layer
    with the kept neurons only (ReLU between them, as the harness's MLPs)."""

    def __init__(self, features: torch.Tensor, linears: list[nn.Linear]) -> None:
        super().__init__()
        self.register_buffer("features", features)
        self.layers = nn.ModuleList(linears)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)[:, self.features]
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i + 1 < len(self.layers):
                h = torch.relu(h)
        return h


@torch.no_grad()
def compact(model: nn.Module) -> CompactMLP | None:
    """The smaller dense network of an MLP: a unit whose outgoing group is zero contributes nothing
    downstream, so it goes with its incoming weights and bias (exact). None for a convolutional
    network (its groups are kernel positions, not whole channels)."""
    ls = layers(model)
    if not all(isinstance(m, nn.Linear) for m in ls):
        return None
    kept = units_kept(model)
    small = []
    for i, layer in enumerate(ls):
        rows = kept[i + 1] if i + 1 < len(ls) else torch.ones(layer.out_features, dtype=torch.bool)
        w = layer.weight.detach()[rows][:, kept[i]]
        new = nn.Linear(w.shape[1], w.shape[0]).to(w)
        new.weight.copy_(w)
        new.bias.copy_(layer.bias.detach()[rows])
        small.append(new)
    return CompactMLP(kept[0].nonzero().flatten(), small).eval()


# ------------------------------------------------------------------------------- the runs
def train_network(run: Run, cges: bool) -> nn.Module:
    """The network from scratch, with the CGES proximal steps or without (the baseline): the same
    initial weights and data order for both."""
    cfg = run.config
    train = run.train_config("train")
    run.reseed("yoon2017 initial weights")
    model = run.model(cfg["model"])
    run.reseed("yoon2017 data order")
    hook = prox_hook(train, cfg["strength"], cfg["mu"], cfg["chvar"]) if cges else None
    return run.train(model, run.dataset().train, train, desc="CGES" if cges else "baseline", after_step=hook)


def _weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in layers(model))


#: Why the atlas publishes "not reproduced"; shown beside the verdict.
DIAGNOSIS = """
Checked against the released TensorFlow code (jaehong31/CGES, main.py): the groups (each input unit's
outgoing weights), the group proximal step followed by the exclusive soft threshold by the group's l1
norm, mu_l = 0.8 - 0.2 l for the group term and 1 - mu_l for the exclusive term, lambda scaled by the
step size, applied after every SGD step; unit tests hold each step's values. The baseline is the
same network from the same initial weights and data order without the regulariser, within 1 pp of
its reference. On the validation split (seeds 1000 and 1001) no lambda of the grid was compact and
accurate together: the code's total shrinkage (lambda 8e-4 here) leaves 1.06x and no loss (+0.09 pp),
3e-3 gives 2x at -0.75 and -0.93 pp, 1e-2 gives 7.7x at -1.9 pp; the code's own optimizer (plain SGD,
constant rate 0.05, lambda 4e-4) gave 1.03x at -1.9 pp on the published seeds with a baseline that
had not converged. The accuracy falls before the weights go. We believe the gap is the budget's
regime rather than an error in the paper: the paper's gains over the full network come from a
regulariser on networks trained to overfit (the code: 50 passes over MNIST with dropout); 3,000
steps (5 passes) leave little overfitting for the shrinkage to remove, so here it costs accuracy
(not verified with a long schedule: time). The paper's tables could not be read, so the compression
at which the paper reports its gains is not known.
"""


@reproduction("yoon2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg, data = run.config, run.dataset()
    baseline = train_network(run, cges=False)
    cges = train_network(run, cges=True)
    base_acc, acc = run.accuracy(baseline, data.test), run.accuracy(cges, data.test)
    weights = [m.weight.detach() for m in layers(cges)]
    kept = units_kept(cges)
    metrics = {
        **measure.accuracy_change(base_acc, acc),
        "param_compression": controls.compression_ratio(cges),
        "weight_sparsity": 1.0 - sum(int(torch.count_nonzero(w)) for w in weights) / sum(w.numel() for w in weights),
        "flop_reduction": measure.flops(baseline, data.input_shape) / max(1, measure.effective_flops(cges, data.input_shape)),
        "exclusivity": exclusivity(cges),
        **{f"units_{'input' if i == 0 else f'hidden{i}'}": float(k.sum()) for i, k in enumerate(kept)},
    }
    small = compact(cges)
    if small is not None:
        dense_ms = measure.latency_ms(baseline, data.input_shape)
        small_ms = measure.latency_ms(small, data.input_shape)
        exact = torch.allclose(run.predict(small, data.test), run.predict(cges, data.test), atol=1e-4)
        metrics |= {"structured_compression": _weights(baseline) / max(1, _weights(small)),
                    "dense_latency_ms": dense_ms, "latency_ms": small_ms, "speedup": dense_ms / small_ms,
                    "removal_exact": float(exact)}
    method = {float(r): run.accuracy(controls.global_magnitude_prune(run, cges, r, None), data.test)
              for r in cfg["curve_ratios"]}
    train = cfg["train"]
    run.record(
        "compact-and-accurate",
        model=f"{cfg['model']} trained with CGES (lambda={cfg['strength']:g}, mu={cfg['mu']:g}, "
              f"chvar={cfg['chvar']:g}), proximal steps after every SGD step",
        metrics=metrics, baseline=(cfg["model"], "baseline_accuracy"),
        differs=f"{data.name}; the harness's {cfg['model']}; {train['steps']} SGD steps of batch "
                f"{train['batch_size']} (lr {train['lr']:g}, momentum {train['momentum']:g}, {train['schedule']}) "
                "for CGES and the baseline from the same initial weights; baseline = the same network without "
                "the regulariser",
        diagnosis=DIAGNOSIS,
        notes="speedup: measure.latency_ms of the smaller dense network (input units with a zero outgoing group "
              "removed) against the baseline, a forward pass of 64 examples on this CPU",
        curves=[controls.Series("CGES, then global magnitude pruning", controls.RATIO, controls.ACCURACY, method),
                controls.pruning_curve(run, baseline, sorted(method), None)],
    )
