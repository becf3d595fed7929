"""Optimal Brain Surgeon (Hassibi & Stork, "Second Order Derivatives for Network Pruning: Optimal Brain
Surgeon", NIPS 1992 [Advances in Neural Information Processing Systems 5, pp. 164-171]; no arXiv
version: the proceedings' abstract was read, the body could not be).

Method. Around a trained minimum the increase of the training error ``E`` for a change ``dw`` of all the
weights is ``dE = 1/2 dw^T H dw`` (the gradient vanishes; higher orders dropped). Deleting weight ``q``
is the constraint ``e_q^T dw + w_q = 0``; minimising ``dE`` under it (a Lagrangian) gives the optimal
change of *every* remaining weight and the error that deletion costs, its saliency:

    dw = -(w_q / [H^-1]_qq) H^-1 e_q,        L_q = w_q^2 / (2 [H^-1]_qq).

The recipe: train to a minimum; compute ``H^-1``; delete the weight of least ``L_q`` and apply ``dw``;
recompute and repeat while ``L_q`` is small against ``E``; no retraining is needed (the update is the
retraining). ``H`` is the outer-product (Gauss-Newton / Fisher) approximation ``H = 1/P sum_k X_k
X_k^T`` (``X_k`` the gradient of the network's output for pattern ``k``) and its inverse is built
pattern by pattern with the Woodbury identity,

    H_{k+1}^-1 = H_k^-1 - H_k^-1 X_{k+1} X_{k+1}^T H_k^-1 / (P + X_{k+1}^T H_k^-1 X_{k+1}),
    H_0^-1 = alpha^-1 I  (alpha small),

so that ``H_P^-1 = (alpha I + 1/P sum_k X_k X_k^T)^-1`` (:func:`inverse_hessian_recursive`; a unit test
checks it against the direct inverse). Deleting weights one by one with the updated inverse (the rows
and columns of the deleted weight removed: a Schur complement) is :func:`obs_sequential`; OBD
(``reproductions.lecun1989``, imported) is the special case of a diagonal ``H`` with no update.

The Hessian used here: layer-wise. The full ``H`` of the harness's LeNet-300-100 has 266,200^2 entries
(283 GB in float32), far beyond the harness; OBS is applied layer by layer as Dong, Chen & Pan do
("Learning to Prune Deep Neural Networks via Layer-wise Optimal Brain Surgeon", NIPS 2017, arXiv
1705.07565): each Linear layer's error is the squared change of its own outputs on the dense network's
inputs to it, ``E_l = 1/(2P) sum_k ||(W' - W) x~_k||^2`` (``x~ = [x, 1]``, the bias a weight of a constant
input), whose Hessian for each output row is the same ``H_l = 1/P sum_k x~_k x~_k^T`` (785^2, 301^2 and
101^2 here): exactly the outer-product form the recursion builds, with ``X_k = x~_k``. On this quadratic
the OBS steps are exact, and a sequence of them reaches the minimiser of ``E_l`` with the deleted set
``D`` held at zero, ``w_K = w0_K + H_KK^-1 H_KD w0_D`` (:func:`optimal_update`; a test checks that it
equals :func:`obs_sequential`'s result for the same set). Deleting 60-90% of 266K weights one at a time
with a re-inverted ``H`` per row is too slow for two cores, so, as L-OBS does, the saliencies use the
dense layer's ``[H_l^-1]_qq`` and the current (updated) weights, and the deletions come in rounds: the
levels of the curve are points of one deletion sequence (as the paper's loop is), with ``obs.rounds``
rounds between two levels, each deleting the lowest saliencies over the whole layer and then moving
every row to its exact update (:func:`prune_layer`); the layer's share of the deletions is the global magnitude control's
(the layer-wise errors are not comparable across layers; Dong et al. set each layer's ratio by hand).
The bias is updated, never deleted.

Claims (Abstract): OBS is "significantly better than magnitude-based methods and Optimal Brain Damage
[...] which often remove the wrong weights" and "permits the pruning of more weights than other methods
(for the same error on the training set)" (``obs-vs-obd-magnitude``, checked on the harness); "a 90%, a
76%, and a 62% reduction in weights over backpropagation with weight decay on three benchmark MONK's
problems" and "only OBS deletes the correct weights from a trained XOR network in every case"
(``monk-s-problems-mlps-on-monk-s-problems``, not measured: MONK's and XOR are not harness data sets);
NETtalk pruned from 18,000 to 1,560 weights (``nettalk-nettalk``, not measured). The body's tables and
figures could not be read.

What is measured (per seed), ``obs-vs-obd-magnitude``: the dense network (``reproductions.lecun1989``'s:
LeNet-300-100 trained on the squared error of its linear outputs, the objective OBD's saliencies are
reproduced on) is pruned once, without retraining, at each ratio of ``obs.ratios`` by (i) layer-wise OBS,
(ii) OBD (lecun1989's diagonal saliency, one global ranking), (iii) global magnitude (the harness
control) and (iv) OBS's choice of weights without its update (``selection only``: which part of OBS
matters). Recorded: ``dense_objective`` and, per method, the training objective ``E`` (the squared error
over the ``obs.examples`` training examples the Hessians are built from) at the claim's ratio
(``obs_objective``, ``obd_objective``, ``magnitude_objective``, ``selection_only_objective``), the gaps
``obs_advantage_over_obd_db = 10 log10(E_OBD / E_OBS)`` and ``obs_advantage_over_magnitude_db`` at every
ratio (suffixes ``_2_5x``, ``_5x``, ``_10x``), test accuracies (``obs_accuracy``, ``obd_accuracy``,
``magnitude_accuracy``), ``gain_over_magnitude_pp``, ``gain_over_obd_pp`` and ``compression_ratio``
(weights); curves: OBS without retraining over ``controls.pruning_curve`` without fine-tuning (the
same, zero, retraining budget), and OBD without retraining. "The pruning of more weights for the same
error" is checked as its equivalent at a fixed number of weights: a lower training error, i.e. both
gaps above 0 dB over the whole 95% interval, at 10x (90% of the weights deleted, the abstract's largest
reduction).

Harness differs: Fashion-MNIST (quick) or MNIST (paper) and the harness's LeNet-300-100 instead of
MONK's, XOR and NETtalk networks; layer-wise Hessians (Dong et al. 2017) instead of the whole network's,
with the dense layer's ``[H^-1]_qq`` in the saliency and deletions in rounds (see above); the layers'
shares of the deletions are the magnitude control's; the Hessians over ``obs.examples`` training
examples, ``alpha`` a fixed fraction of the mean diagonal of ``H_l``; a fixed ratio rather than the
paper's stopping rule (``L_q`` small against ``E``).

Results (quick, seeds 0-2, 95% intervals; 36 s of CPU cold, 113 s wall with the machine's two cores
shared at load 10). Reproduced: at 10x, without retraining, OBS's training error is 3.3 dB [2.4, 4.3]
below OBD's and 5.2 dB [4.6, 5.8] below magnitude's (test accuracy 88.3% against OBD's 81.6-85.6% and
magnitude's 75.5-83.6%, the dense network's 88.9%); the gaps grow with the ratio (0.1-0.3 dB over OBD at
2.5x, 1.1-1.6 dB at 5x). OBS's choice of weights without its update is no better than magnitude
(``selection_only_*``): the gain is the update of the remaining weights. On the smoke profile (the 8x8
digits, 150 training steps, far from a minimum) layer-wise OBS beats magnitude (2.9 dB) but not
clearly OBD (-0.4 dB [-2.0, 1.2]).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from atlas_reproductions.lecun1989 import (
    Masks,
    db,
    delete,
    gauss_newton_diagonal,
    kept_for,
    lowest_saliency_masks,
    objective,
    ratio_name,
    saliencies,
    train_dense,
)
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, reproduction


class Obs(Section):
    """Layer-wise OBS and the levels it is measured at."""

    examples: PositiveInt  # training examples the Hessians and E are built from (the paper: the training set)
    alpha: PositiveFloat = 1e-4  # H_0 = alpha I, as a fraction of mean(diag H_l) (the paper: 1e-8 to 1e-4)
    rounds: PositiveInt  # deletion rounds between two levels (the paper: one weight at a time; see the docstring)
    ratios: list[PositiveFloat] = Field(min_length=3)  # compression ratios of the curves
    claim_ratio: PositiveFloat = 10.0  # Abstract: the largest reduction quoted, 90% of the weights


class Config(Profile):
    model: Literal["lenet-300-100"]  # the harness model (lecun1989's network, pruned without retraining)
    loss: Literal["mse"] = "mse"  # the objective trained and measured: lecun1989's squared error
    dense: TrainConfig  # the trained network (lecun1989's train_dense: the same cached model)
    obs: Obs


def _sgd(steps: int, lr: float, batch_size: int) -> dict:
    """lecun1989's training section: SGD with momentum, cosine schedule, no weight decay (a minimum of
    the plain training error, which OBS's extremal assumption needs too)."""
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 0.0,
            "schedule": "cosine"}


CURVE_RATIOS = [2.5, 5.0, 10.0]

# Budgets are optimizer steps; dense sections equal lecun1989's so the cached network is shared.
PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "model": "lenet-300-100",
        "dense": _sgd(150, 0.05, 64),
        "obs": {"examples": 1000, "rounds": 1, "ratios": CURVE_RATIOS},
    },
    "quick": {
        "dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100",
        "dense": _sgd(2500, 0.05, 128),
        "obs": {"examples": 5000, "rounds": 1, "ratios": CURVE_RATIOS},
    },
    "paper": {
        # MNIST, lecun1989's paper-profile schedule (Caffe's LeNet solver without weight decay) on
        # LeNet-300-100 (the full Hessian of any harness network is out of reach); the Hessians over
        # 10,000 training examples; 4 rounds between levels.
        "dataset": "mnist", "seeds": 3, "model": "lenet-300-100",
        "dense": _sgd(10000, 0.01, 64),
        "obs": {"examples": 10000, "rounds": 4, "ratios": CURVE_RATIOS},
    },
}


# ------------------------------------------------------------------------------- the Hessian
def inverse_hessian_recursive(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """The paper's recursion: ``H^-1`` of ``H = alpha I + 1/P sum_k x_k x_k^T`` built one pattern at a
    time with the Woodbury identity from ``H_0^-1 = I / alpha``. ``x`` (P, n): the ``X_k``."""
    p, n = x.shape
    h_inv = torch.eye(n, dtype=torch.float64) / alpha
    for xk in x.double():
        hx = h_inv @ xk
        h_inv = h_inv - torch.outer(hx, hx) / (p + xk @ hx)
    return h_inv


def layer_hessian(inputs: torch.Tensor, alpha: float) -> torch.Tensor:
    """``H_l = 1/P sum_k x~_k x~_k^T + alpha' I`` (float64) of a Linear layer's inputs ``(P, d)``, ``x~``
    with a constant 1 appended (the bias); ``alpha' = alpha * mean(diag)``."""
    x = torch.cat([inputs.double(), torch.ones(len(inputs), 1, dtype=torch.float64)], dim=1)
    h = x.T @ x / len(x)
    return h + alpha * h.diagonal().mean() * torch.eye(len(h), dtype=h.dtype)


# ---------------------------------------------------------------------------- OBS on a vector
def saliency(w: torch.Tensor, h_inv: torch.Tensor) -> torch.Tensor:
    """``L_q = w_q^2 / (2 [H^-1]_qq)`` for every weight of ``w`` (the last dimension)."""
    return w.double() ** 2 / (2.0 * h_inv.diagonal())


def obs_step(w: torch.Tensor, h_inv: torch.Tensor, q: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Delete weight ``q``: ``w + dw`` with ``dw = -(w_q / [H^-1]_qq) H^-1 e_q`` (``w_q`` lands on zero),
    and the inverse Hessian of the remaining weights (row and column ``q`` eliminated: the Schur
    complement, which leaves ``q``'s row and column zero)."""
    col = h_inv[:, q]
    w = w.double() - (w[q] / col[q]) * col
    w[q] = 0.0
    h_inv = h_inv - torch.outer(col, col) / col[q]
    return w, h_inv


def obs_sequential(w: torch.Tensor, h_inv: torch.Tensor, k: int,
                   deletable: torch.Tensor | None = None) -> tuple[torch.Tensor, list[int]]:
    """The paper's loop: ``k`` times delete the weight of least saliency among the ``deletable`` ones
    still present and update all the others. Returns the weights and the deletion order."""
    w, h_inv = w.double().clone(), h_inv.double().clone()
    alive = torch.ones(len(w), dtype=torch.bool) if deletable is None else deletable.clone()
    order = []
    for _ in range(k):
        s = torch.where(alive, w**2 / (2.0 * h_inv.diagonal().clamp_min(1e-300)), math.inf)
        q = int(torch.argmin(s))
        w, h_inv = obs_step(w, h_inv, q)
        alive[q] = False
        order.append(q)
    return w, order


def optimal_update(w0: torch.Tensor, h: torch.Tensor, deleted: torch.Tensor,
                   h_inv: torch.Tensor | None = None) -> torch.Tensor:
    """The minimiser of ``(w - w0)^T H (w - w0)`` with the ``deleted`` weights at zero (where a sequence
    of OBS steps on a quadratic error lands): ``w_K = w0_K + H_KK^-1 H_KD w0_D``, or, the same with
    ``G = H^-1`` when fewer weights are deleted than kept, ``w = w0 - G_:D G_DD^-1 w0_D`` (the
    multi-weight form of the paper's ``dw``)."""
    w0 = w0.double()
    d_idx, k_idx = deleted.nonzero().flatten(), (~deleted).nonzero().flatten()
    if len(d_idx) == 0:
        return w0.clone()
    out = torch.zeros_like(w0)
    if h_inv is not None and len(d_idx) < len(k_idx):
        g_dd = h_inv[d_idx[:, None], d_idx[None, :]]
        out = w0 - h_inv[:, d_idx] @ torch.cholesky_solve(w0[d_idx, None], torch.linalg.cholesky(g_dd)).squeeze(1)
        out[d_idx] = 0.0
        return out
    h_kk = h[k_idx[:, None], k_idx[None, :]]
    rhs = h[k_idx[:, None], d_idx[None, :]] @ w0[d_idx]
    out[k_idx] = w0[k_idx] + torch.cholesky_solve(rhs[:, None], torch.linalg.cholesky(h_kk)).squeeze(1)
    return out


# --------------------------------------------------------------------------- layer-wise OBS
def prune_layer(weight: torch.Tensor, bias: torch.Tensor, h: torch.Tensor, keeps: list[int],
                rounds: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Layer-wise OBS (Dong et al. 2017) of one Linear layer along one deletion sequence, as the paper's
    loop is one sequence: for each number of kept weights in ``keeps`` (decreasing), ``rounds`` rounds
    from the previous level, each deleting the weights of least saliency ``w_q^2 / (2 [H^-1]_qq)`` over
    the whole layer (the dense layer's ``H^-1``, the current weights), then moving every row to the
    optimal update for its deleted set. Returns each level's weight, bias and mask (True: kept)."""
    rows, d = weight.shape
    w0 = torch.cat([weight.detach().double(), bias.detach().double()[:, None]], dim=1)  # (rows, d + 1)
    h_inv = torch.linalg.inv(h)
    h_inv_diag = h_inv.diagonal()
    w = w0.clone()
    alive = torch.ones(rows, d, dtype=torch.bool)
    levels, previous = [], rows * d
    for keep in keeps:
        if keep > previous:
            raise ValueError(f"the levels must keep fewer and fewer weights: {keeps}")
        for t in range(1, rounds + 1):
            target = max(keep, round(previous * (keep / previous) ** (t / rounds)))
            n_delete = int(alive.sum()) - target
            if n_delete <= 0:
                continue
            s = torch.where(alive, w[:, :d] ** 2 / (2.0 * h_inv_diag[:d]), math.inf)
            alive.view(-1)[torch.topk(s.flatten(), n_delete, largest=False).indices] = False
            for i in range(rows):
                deleted = torch.cat([~alive[i], torch.zeros(1, dtype=torch.bool)])
                w[i] = optimal_update(w0[i], h, deleted, h_inv)
        w[:, :d] *= alive
        levels.append((w[:, :d].to(weight.dtype, copy=True), w[:, d].to(bias.dtype, copy=True), alive.clone()))
        previous = keep
    return levels


def linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


@torch.no_grad()
def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every Linear layer's input on ``x`` in the (dense) ``model``."""
    seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, inp, _out, n=n: seen.__setitem__(n, inp[0].detach()))
               for n, m in linears(model).items()]
    try:
        model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def layer_hessians(model: nn.Module, x: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    return {n: layer_hessian(inp.flatten(1), alpha) for n, inp in layer_inputs(model, x).items()}


@torch.no_grad()
def obs_prune(model: nn.Module, hessians: dict[str, torch.Tensor], keeps: list[dict[str, int]],
              rounds: int) -> list[tuple[nn.Module, Masks]]:
    """Copies of ``model`` with each Linear layer pruned by layer-wise OBS to ``keep[<name>.weight]``
    weights for each ``keep`` of ``keeps`` (one deletion sequence), with their masks (True: kept)."""
    outs = [(controls.trainable_copy(model), {}) for _ in keeps]
    for name, layer in linears(model).items():
        key = f"{name}.weight"
        levels = prune_layer(layer.weight, layer.bias, hessians[name], [k[key] for k in keeps], rounds)
        for (out, masks), (w, b, alive) in zip(outs, levels, strict=True):
            target = out.get_submodule(name)
            target.weight.copy_(w)
            target.bias.copy_(b)
            masks[key] = alive
    return [(out.eval(), masks) for out, masks in outs]


def magnitude_allocation(model: nn.Module, ratio: float) -> dict[str, int]:
    """Each layer's number of kept weights under the global magnitude control at ``ratio``."""
    return {n: int(m.sum()) for n, m in controls.global_magnitude_masks(model, ratio).items()}


@reproduction("hassibi1992", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    o = cfg.obs
    data = run.dataset()
    x, y = data.train.x[: o.examples].to(run.device), data.train.y[: o.examples].to(run.device)
    dense = train_dense(run)

    def e(model: nn.Module) -> float:
        return objective(model, x, y, loss=cfg.loss)

    hessians = layer_hessians(dense, x, o.alpha)
    obd_scores = saliencies(dense, gauss_newton_diagonal(dense, x, loss=cfg.loss))
    ratios = sorted({float(r) for r in o.ratios} | {float(o.claim_ratio)})
    models: dict[str, dict[float, nn.Module]] = {"obs": {}, "obd": {}, "magnitude": {}, "selection": {}}
    pruned = obs_prune(dense, hessians, [magnitude_allocation(dense, r) for r in ratios], o.rounds)
    for r, (obs_model, obs_masks) in zip(ratios, pruned, strict=True):
        models["obs"][r] = obs_model
        models["obd"][r] = delete(dense, lowest_saliency_masks(obd_scores, kept_for(dense, r)))
        models["magnitude"][r] = delete(dense, controls.global_magnitude_masks(dense, r))
        if r == float(o.claim_ratio):  # OBS's choice of weights deleted without its update (the ablation)
            models["selection"][r] = delete(dense, obs_masks)
    objectives = {k: {r: e(m) for r, m in v.items()} for k, v in models.items()}
    acc = {k: {r: run.accuracy(m, data.test) for r, m in v.items()} for k, v in models.items()}
    c = float(o.claim_ratio)
    gaps = {}
    for r in ratios:
        gaps[f"obs_advantage_over_obd_db_{ratio_name(r)}"] = db(objectives["obd"][r] / objectives["obs"][r])
        gaps[f"obs_advantage_over_magnitude_db_{ratio_name(r)}"] = db(objectives["magnitude"][r] / objectives["obs"][r])
    run.record(
        "obs-vs-obd-magnitude",
        model=f"{cfg.model}, layer-wise OBS (Dong et al. 2017), no retraining",
        metrics={
            "dense_objective": e(dense), "obs_objective": objectives["obs"][c], "obd_objective": objectives["obd"][c],
            "magnitude_objective": objectives["magnitude"][c],
            "selection_only_objective": objectives["selection"][c],
            "obs_advantage_over_obd_db": db(objectives["obd"][c] / objectives["obs"][c]),
            "obs_advantage_over_magnitude_db": db(objectives["magnitude"][c] / objectives["obs"][c]),
            **gaps,
            "dense_accuracy": run.accuracy(dense, data.test), "obs_accuracy": acc["obs"][c],
            "obd_accuracy": acc["obd"][c], "magnitude_accuracy": acc["magnitude"][c],
            "selection_only_accuracy": acc["selection"][c],
            "gain_over_magnitude_pp": acc["obs"][c] - acc["magnitude"][c],
            "gain_over_obd_pp": acc["obs"][c] - acc["obd"][c],
            "compression_ratio": controls.compression_ratio(models["obs"][c]),
        },
        curves=[controls.Series("layer-wise OBS, no retraining", controls.RATIO, controls.ACCURACY,
                                {r: acc["obs"][r] for r in map(float, o.ratios)}),
                controls.Series("OBD (lecun1989), no retraining", controls.RATIO, controls.ACCURACY,
                                {r: acc["obd"][r] for r in map(float, o.ratios)}),
                controls.pruning_curve(run, dense, o.ratios, None)],
        differs=f"{data.name} and the harness's {cfg.model} (squared error of linear outputs) instead of MONK's, "
                f"XOR and NETtalk networks; layer-wise Hessians (Dong et al. 2017) over {o.examples} training "
                f"examples, the dense layer's [H^-1]_qq in the saliency, {o.rounds} deletion round(s) between levels, each "
                "layer's share of the deletions the magnitude control's; no retraining",
    )
