"""Optimal Brain Damage (LeCun, Denker & Solla, NIPS 1989 [Advances in Neural Information Processing
Systems 2, pp. 598-605]; no arXiv version: the proceedings text was read).

Method (Sec. 2): the *saliency* of a parameter is the increase of the training objective ``E`` when
the parameter is deleted (set to zero and frozen there). A second-order Taylor model of ``E`` around
the trained parameters ``U`` (Eq. 1),

    dE = sum_i g_i du_i + 1/2 sum_i h_ii du_i^2 + 1/2 sum_{i != j} h_ij du_i du_j + O(||dU||^3),

with three approximations: *diagonal* (the cross terms are dropped: deleting several parameters
costs the sum of their single costs), *extremal* (training has converged, so ``g = 0``) and
*quadratic* (the cubic rest is dropped), reduces deleting parameter ``k`` (``du_k = -u_k``) to

    s_k = h_kk u_k^2 / 2                                                              (Eq. 3)

The diagonal second derivatives ``h_kk = d^2E / du_k^2`` are computed by a back-propagation of second
derivatives, averaged over the training set (Sec. 2.1, Eqs. 5-8), with the Levenberg-Marquardt
approximation (the terms in ``f''`` dropped), i.e. the diagonal of the Gauss-Newton matrix
``G = mean_n J_n^T A_n J_n`` (``J_n`` the Jacobian of the network's outputs for example ``n``, ``A_n``
the objective's second derivative with respect to them). The recipe (Sec. 2.2): train; compute the
``h_kk``; compute the saliencies; delete the parameters of lowest saliency; retrain with them frozen
at zero; iterate.

The objective (``loss``): the paper's, the squared error ``E_n = sum_c (z_c - d_c)^2`` of the
network's (here linear) outputs ``z`` against one-hot targets ``d``, whose output Hessian is ``A = 2 I``
(Eq. 8 with ``f' = 1``, ``f'' = 0``); the network is trained, retrained and pruned on it. The
harness's cross-entropy (``A = diag(p) - p p^T``, ``p = softmax(z)``) is the alternative.

How ``h_kk`` is computed here: exactly, the diagonal of the Gauss-Newton matrix. ``A`` factors as
``A = S S^T`` (``S = sqrt(2) I``; for the cross-entropy, columns ``S_c = sqrt(p_c) (e_c - p)``); each
column is back-propagated through the network (one backward pass per output, as the gradient is)
to give every layer's per-example output sensitivities ``b_{n,c}``, and for a fully-connected weight
``h_ij = mean_n sum_c b_{n,c,i}^2 x_{n,j}^2`` (for a convolution's shared weight, the square of the
per-example gradient summed over the positions that share it). The paper's recursion (Eq. 7) also
drops the cross terms between the units of a layer, so on a network of more than one layer it is
an approximation of this diagonal; the exact diagonal is what it approximates. For a ReLU network
(piecewise linear in any single weight) the Levenberg-Marquardt approximation drops nothing: the
``h_kk`` here are the exact diagonal of the true Hessian, which a unit test checks against autograd.

Claims (the proceedings text, Sec. 2.3 and 3; a network of 2578 free parameters, 10^5 connections,
on ~9300 handwritten zip-code digits, trained and measured with the mean squared error):
``fig1a-obd-vs-magnitude`` (Fig. 1a): deleting parameters by order of saliency increases the
objective significantly less than deleting them by magnitude (random deletion far worse still);
``fig1b-prediction`` (Fig. 1b): the sum of the deleted parameters' saliencies predicts the increase
well up to ~800 deleted parameters (~30%); ``fig2-retraining`` (Fig. 2): after retraining, training
and test performance stay almost the same with up to 1500 parameters (60% of the total) deleted;
``usps-like-digits-handwritten-digit-cnn`` (Sec. 3): OBD used interactively reduced the parameters
by a factor of four and automatically by a further factor of more than two, accuracy increasing
slightly (not measured: the interactive part is a designer's architecture changes);
``interactive-layer-excision`` (Sec. 2.3, not measured).

What is measured (per seed). ``fig1a-obd-vs-magnitude``, without retraining, the dense network's
weights deleted once by saliency, by global magnitude (one threshold over every weight, the
harness's control) or at random, to the paper's level (1500 of 2578 deleted: compression ratio
2578/1078 = 2.39): ``dense_objective``, ``obd_objective``, ``magnitude_objective``,
``random_objective`` (``E``, the mean cross-entropy over the training examples ``h_kk`` is averaged
over), ``obd_advantage_db`` = ``10 log10(E_magnitude / E_OBD)`` (Fig. 1a's axis is the objective in
dB: the gap between its two curves; positive when OBD's increase is smaller),
``obd_advantage_over_random_db``, the same gap at the curve's other ratios
(``obd_advantage_db_5x``, ``obd_advantage_db_10x``), ``obd_accuracy``, ``magnitude_accuracy``,
``random_accuracy`` and ``gain_over_magnitude_pp`` (test accuracy); curves: OBD without retraining
over ``controls.pruning_curve`` without fine-tuning at every ratio of ``deletion.ratios``.
``fig1b-prediction``, at ~800 of 2578 deleted (ratio 2578/1778 = 1.45): ``predicted_increase`` (the
sum of the deleted weights' saliencies), ``actual_increase``, ``predicted_over_actual_db``, and
``first_order_increase`` (``sum_k -g_k u_k`` over the deleted weights: the term the extremal
approximation drops) with ``predicted_with_gradient_over_actual_db``. ``fig2-retraining``, at the
paper's ratio: iterative OBD (``deletion.rounds`` rounds, each deleting the surviving weights of
lowest saliency recomputed on the retrained network, then retraining with them frozen) against the
dense network trained for the same extra steps without deletion (``baseline_accuracy``):
``accuracy``, ``accuracy_change_pp``, ``dense_accuracy``, ``param_compression`` (biases counted),
``nonzero_params``, ``compression_ratio`` (weights only, the curves' axis), ``objective_change_db``
(training objective after retraining against the baseline's); curves: OBD with retraining at every
ratio of ``deletion.ratios`` over ``controls.pruning_curve`` fine-tuned for the same total number
of steps (``rounds`` x ``retrain.steps``).

Harness differs: Fashion-MNIST (quick) or MNIST (paper) instead of the zip-code digits; the
harness's LeNet-300-100 (266K weights, ReLU, no weight sharing; paper profile LeNet-5) instead of
the 2578-parameter constrained network of sigmoid units; linear output units under the squared error
instead of sigmoid ones; the Hessian and ``E`` are averaged over the first ``deletion.examples``
training examples, not the whole set; only the Conv/Linear weights are deleted (not biases: the
harness's compression ratio and its control count weights); the paper's levels are taken as
fractions of the weights (1500 and 800 of 2578); the paper's training and retraining schedules are
not stated (here SGD with momentum and a cosine schedule per stage, without weight decay: the paper
minimises the plain training error, and weight decay would leave the network at a minimum of
another objective than the one whose saliencies are computed); ``h_kk`` is the exact diagonal
rather than the paper's recursion (see above). The control's fine-tuning
(``controls.pruning_curve``) trains with the harness's cross-entropy, which the shared control does
not let a paper change, while OBD retrains on the squared error its network was trained on: at 2.39x
the control fine-tuned for 250 steps ends 0.56 pp *below* the same control without fine-tuning
(88.01% against 88.57%), so the retrained curves' gap (OBD 0.8-1.0 pp above the control at every
ratio) is partly the switch of objective, not OBD; the curves without retraining compare like with
like.
"Almost the same" (Fig. 2) is read as a test-accuracy change of at least -1 pp against the
same-budget baseline, and "good agreement" (Fig. 1b) as a prediction within 3 dB (a factor of two)
of the actual increase.

Results (quick, 5 seeds, 95% intervals). Fig. 1a reproduced: OBD's objective is 0.92 dB [0.80, 1.04]
below magnitude deletion's at 2.39x and 2.2 dB below at 5x and 10x (test accuracy +0.3, +1.0 and
+7.2 pp), 7.9 dB below random deletion's. Fig. 2 reproduced: -0.06 pp [-0.17, 0.06] against the
same-budget baseline at 2.39x. Fig. 1b inconclusive (see ``DIAGNOSIS_FIG1B``). With the harness's
cross-entropy instead (``loss: cross-entropy``, the same schedule but 2 x 150 retraining steps,
seeds 0-2) Fig. 1a was not reproduced: 0.06 dB [-0.09, 0.21] at 2.39x and OBD *worse* than magnitude beyond (-0.34 dB at 5x,
-2.5 dB at 10x): on nearly fitted data the cross-entropy has no finite minimum, the gradient term
the extremal approximation drops (``sum_k -g_k u_k`` over the deleted weights) exceeded the summed
saliencies, and a ranking by ``h_kk u_k^2`` alone misses it; the paper's squared error has a minimum.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn
from torch.nn import functional as F

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction
from atlas.harness.training import LossFn

Masks = dict[str, torch.Tensor]
Loss = Literal["mse", "cross-entropy"]

#: The paper's network: 2578 free parameters (Sec. 2.3); its levels, as numbers of deleted ones.
PAPER_PARAMS = 2578
FIG2_DELETED = 1500  # Fig. 2: performance almost unchanged after retraining with up to 1500 deleted
FIG1B_DELETED = 800  # Fig. 1b: prediction and actual increase agree up to ~800 deleted


def ratio_after_deleting(deleted: int, total: int = PAPER_PARAMS) -> float:
    """The compression ratio (parameters / those left) after deleting ``deleted`` of ``total``."""
    return total / (total - deleted)


class Deletion(Section):
    """OBD's deletion and retraining (Sec. 2.2) and the levels it is measured at."""

    examples: PositiveInt  # training examples E and h_kk are averaged over (Sec. 2.1: the training set)
    hessian_batch: PositiveInt = 1000  # examples per second-derivative pass (memory only)
    rounds: PositiveInt  # delete/retrain iterations (Sec. 2.2, step 6) to reach each ratio
    retrain: TrainConfig  # ONE round's retraining, the deleted weights frozen at zero
    ratios: list[PositiveFloat] = Field(min_length=3)  # compression ratios of the recorded curves
    claim_ratio: PositiveFloat = ratio_after_deleting(FIG2_DELETED)  # Fig. 1a / Fig. 2: 2578/1078
    prediction_ratio: PositiveFloat = ratio_after_deleting(FIG1B_DELETED)  # Fig. 1b: 2578/1778


class Config(Profile):
    model: str  # the harness model
    # The objective trained, whose saliencies are computed and whose increase is measured: the paper's
    # squared error (Sec. 2.1; linear output units here) or the harness's cross-entropy.
    loss: Loss = "mse"
    dense: TrainConfig  # step 2 of the recipe: the network trained before deletion
    deletion: Deletion


def _sgd(steps: int, lr: float, batch_size: int) -> dict:
    """A training section: SGD with momentum and a cosine schedule, no weight decay: the paper trains the
    plain training error by back-propagation (weight decay is the alternative its introduction
    discusses), and the extremal approximation assumes a minimum of the objective being measured."""
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 0.0,
            "schedule": "cosine"}


#: The curves' compression ratios: the paper's Fig. 2 level (2578/1078 = 2.39x) and two beyond it.
CURVE_RATIOS = [ratio_after_deleting(FIG2_DELETED), 5.0, 10.0]

# Budgets are optimizer steps.
PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "model": "lenet-300-100",
        "dense": _sgd(150, 0.05, 64),
        "deletion": {"examples": 1000, "rounds": 2, "retrain": _sgd(20, 0.02, 64), "ratios": CURVE_RATIOS},
    },
    "quick": {
        # 5 seeds: 46 s cold on 2 cores (21,250 SGD steps, 35 Hessian diagonals over 5,000 examples).
        "dataset": "fashion-mnist", "seeds": 5, "model": "lenet-300-100",
        "dense": _sgd(2500, 0.05, 128),
        "deletion": {"examples": 5000, "rounds": 2, "retrain": _sgd(125, 0.02, 128), "ratios": CURVE_RATIOS},
    },
    "paper": {
        # MNIST and LeNet-5 (the closest harness network to the paper's constrained digit net), trained
        # with Caffe's LeNet solver's SGD (lr 0.01, momentum 0.9, batch 64, 10,000 iterations) without its
        # weight decay (see _sgd); H and E over 10,000 training examples (the paper's set had ~9300);
        # the paper's retraining schedule is not stated: 3 rounds of 2,000 steps.
        "dataset": "mnist", "seeds": 3, "model": "lenet-5",
        "dense": _sgd(10000, 0.01, 64),
        "deletion": {"examples": 10000, "hessian_batch": 100, "rounds": 3, "retrain": _sgd(2000, 0.005, 64),
                     "ratios": CURVE_RATIOS},
    },
}


# ------------------------------------------------------------------------------- the weights
def deletable(model: nn.Module) -> dict[str, nn.Module]:
    """The layers whose weights OBD may delete (every Linear and Conv2d), by weight parameter name."""
    return {f"{name}.weight": module for name, module in model.named_modules()
            if isinstance(module, nn.Linear | nn.Conv2d)}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero every deleted weight (in place)."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].dtype))


# ------------------------------------------------------------------------ second derivatives
def training_loss(loss: Loss) -> LossFn:
    """The objective as a training loss (``run.train``'s ``loss_fn``): its mean over the batch."""

    def fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return per_example_loss(model(x), y, loss).mean()

    return fn


def per_example_loss(logits: torch.Tensor, y: torch.Tensor, loss: Loss = "cross-entropy") -> torch.Tensor:
    """The objective's per-example term: the harness's softmax cross-entropy, or the paper's squared
    error ``sum_c (z_c - d_c)^2`` of linear output units against one-hot targets ``d``."""
    if loss == "mse":
        return ((logits - F.one_hot(y, logits.shape[-1]).to(logits.dtype)) ** 2).sum(-1)
    return F.cross_entropy(logits, y, reduction="none")


def output_hessian_factor(logits: torch.Tensor, loss: Loss = "cross-entropy") -> torch.Tensor:
    """``S`` (n, C, C) with ``S S^T = diag(p) - p p^T``, the Hessian of the cross-entropy with respect
    to the logits (``p = softmax(logits)``): column ``c`` is ``sqrt(p_c) (e_c - p)``. For the squared
    error of linear outputs the Hessian is ``2 I`` (Eq. 8 with ``f' = 1``, ``f'' = 0``): ``S = sqrt(2) I``."""
    if loss == "mse":
        eye = torch.eye(logits.shape[-1], dtype=torch.float64, device=logits.device)
        return (2.0**0.5 * eye).repeat(len(logits), 1, 1)
    p = logits.detach().double().softmax(-1)
    eye = torch.eye(p.shape[-1], dtype=p.dtype, device=p.device)
    return ((eye[None] - p[:, None, :]) * p.sqrt()[:, :, None]).transpose(1, 2)


def _conv_squared_gradient(module: nn.Conv2d, x: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over the examples of the squared per-example gradients of a convolution's weight and bias
    for one back-propagated column: input ``x``, output sensitivity ``b``. A weight is shared over the
    output positions, so its per-example gradient is summed over them before it is squared."""
    if module.groups != 1:
        raise ValueError("grouped convolutions are not supported")
    cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)  # (n, k, P)
    g = b.flatten(2)  # (n, out, P)
    per_example = torch.bmm(g, cols.transpose(1, 2))  # (n, out, k)
    return (per_example**2).sum(0).view_as(module.weight), (g.sum(-1) ** 2).sum(0)


def gauss_newton_diagonal(model: nn.Module, x: torch.Tensor, batch_size: int = 1000,
                          with_bias: bool = False, loss: Loss = "cross-entropy") -> dict[str, torch.Tensor]:
    """``h_kk``: the diagonal of the Gauss-Newton (Levenberg-Marquardt) matrix of the mean cross-entropy
    of ``model`` over the examples ``x`` (summed in float64), for the weight (and, ``with_bias``, the bias) of
    every Linear and Conv2d layer. Exact: each column of the output Hessian's factor is
    back-propagated and the per-example squared gradients summed; no label is needed (the
    cross-entropy's Hessian with respect to the logits does not depend on it). A fully-connected
    layer's weight ``w_ij`` gets ``sum_n (sum_c b_{n,c,i}^2) x_{n,j}^2``: one product per batch."""
    layers = deletable(model)
    for name, module in layers.items():
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise ValueError(f"{name}: grouped convolutions are not supported")
    weight = {name: torch.zeros_like(m.weight, dtype=torch.float64) for name, m in layers.items()}
    bias = {name: torch.zeros(m.weight.shape[0], dtype=torch.float64, device=m.weight.device)
            for name, m in layers.items()}
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(name: str):
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            seen[name] = (inputs[0].detach(), output)
        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            seen.clear()
            with torch.enable_grad():
                logits = model(x[start : start + batch_size])
                factor = output_hessian_factor(logits, loss).to(logits.dtype)
                names = list(seen)
                outputs = [seen[n][1] for n in names]
                squares = {n: 0.0 for n in names}  # Linear: sum over the columns of b^2, per example
                for c in range(factor.shape[-1]):
                    sens = torch.autograd.grad(logits, outputs, grad_outputs=factor[:, :, c], retain_graph=True)
                    for name, b in zip(names, sens, strict=True):
                        module, inp = layers[name], seen[name][0]
                        if isinstance(module, nn.Conv2d):
                            w2, b2 = _conv_squared_gradient(module, inp, b)
                            weight[name] += w2.double()
                            bias[name] += b2.double()
                        elif inp.dim() != 2:
                            raise ValueError(f"{name}: a Linear layer on more than a vector per example")
                        else:
                            squares[name] = squares[name] + b * b
            for name in names:
                if isinstance(layers[name], nn.Linear):
                    inp = seen[name][0]
                    weight[name] += (squares[name].T @ (inp * inp)).double()
                    bias[name] += squares[name].sum(0).double()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    out = {name: h / len(x) for name, h in weight.items()}
    if with_bias:
        out |= {name.removesuffix("weight") + "bias": h / len(x) for name, h in bias.items()
                if layers[name].bias is not None}
    return out


def saliencies(model: nn.Module, hessian: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Eq. 3: ``s_k = h_kk u_k^2 / 2`` for every weight ``hessian`` names (float64)."""
    params = dict(model.named_parameters())
    return {name: h * params[name].detach().double() ** 2 / 2 for name, h in hessian.items()}


def lowest_saliency_masks(scores: dict[str, torch.Tensor], keep: int,
                          alive: Masks | None = None) -> Masks:
    """Masks keeping the ``keep`` weights of highest score over the whole network (one ranking of all
    layers' parameters, Sec. 2.2 step 5); with ``alive``, only among the weights not yet deleted."""
    names = list(scores)
    flat = torch.cat([scores[n].flatten() for n in names])
    if alive is not None:
        flat = torch.where(torch.cat([alive[n].flatten() for n in names]), flat, -math.inf)
    keep_flat = torch.zeros_like(flat, dtype=torch.bool)
    keep_flat[torch.topk(flat, max(1, min(keep, flat.numel())), sorted=False).indices] = True
    parts = keep_flat.split([scores[n].numel() for n in names])
    return {n: part.view_as(scores[n]) for n, part in zip(names, parts, strict=True)}


def n_weights(model: nn.Module) -> int:
    """The number of deletable weights (the compression ratio's numerator)."""
    return sum(m.weight.numel() for m in deletable(model).values())


def kept_for(model: nn.Module, ratio: float) -> int:
    """How many weights are left at compression ratio ``ratio`` (the controls' rounding)."""
    return max(1, min(n_weights(model), round(n_weights(model) / ratio)))


@torch.no_grad()
def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000,
              loss: Loss = "cross-entropy") -> float:
    """``E``: the mean of the objective's per-example term over ``(x, y)``."""
    model.eval()
    total = sum(float(per_example_loss(model(x[i : i + batch_size]), y[i : i + batch_size], loss).sum())
                for i in range(0, len(x), batch_size))
    return total / len(x)


def delete(model: nn.Module, masks: Masks) -> nn.Module:
    """A copy of ``model`` with the weights outside ``masks`` deleted."""
    clone = controls.trainable_copy(model)
    apply_masks(clone, masks)
    return clone.eval()


# --------------------------------------------------------------------------- the recipe (Sec. 2.2)
def obd(run: Run, dense: nn.Module, ratio: float, x: torch.Tensor, rounds: int, retrain: TrainConfig,
        hessian_batch: int = 1000, loss: Loss = "cross-entropy") -> tuple[nn.Module, Masks]:
    """Steps 3-6, iterated: ``rounds`` times compute ``h_kk`` on the current network, delete the
    surviving weights of lowest saliency so that after round ``t`` the fraction ``ratio ** (-t /
    rounds)`` of the weights is left, and retrain with the deleted weights frozen at zero. Returns
    the retrained network and its masks."""
    model = controls.trainable_copy(dense).train()
    total = n_weights(model)
    masks: Masks | None = None
    for t in range(1, rounds + 1):
        keep = max(1, round(total * ratio ** (-t / rounds)))
        scores = saliencies(model, gauss_newton_diagonal(model, x, hessian_batch, loss=loss))
        masks = lowest_saliency_masks(scores, keep, masks)
        apply_masks(model, masks)
        run.reseed(f"lecun1989 retrain {ratio:g} round {t}")
        run.train(model, run.dataset().train, retrain, desc=f"OBD {ratio:g}x round {t}/{rounds}",
                  loss_fn=training_loss(loss), after_step=lambda m, frozen=masks: apply_masks(m, frozen))
    assert masks is not None
    return model.eval(), masks


# ------------------------------------------------------------------------- the trained models
def train_dense(run: Run) -> nn.Module:
    """Step 2: the network trained before any deletion, one per seed (cached)."""
    cfg = run.train_config("dense")
    spec = {"model": run.config["model"], "loss": run.config["loss"], "dense": cfg.model_dump()}

    def fit(model: nn.Module) -> None:
        run.reseed("lecun1989 dense data")
        run.train(model, run.dataset().train, cfg, desc="dense", loss_fn=training_loss(run.config["loss"]))

    return run.cached_model("lecun1989-dense", spec, build=lambda: run.model(run.config["model"]), fit=fit)


def retrain_budget(run: Run) -> TrainConfig:
    """The total retraining OBD gets after the dense network (all rounds), as one stage: the budget of
    the same-budget baseline and of the control's fine-tuning."""
    d = Deletion.model_validate(run.config["deletion"])
    return d.retrain.model_copy(update={"steps": d.rounds * d.retrain.steps})


def train_baseline(run: Run, dense: nn.Module) -> nn.Module:
    """The dense network trained for OBD's retraining steps more, nothing deleted: the same budget."""
    model = controls.trainable_copy(dense)
    run.reseed("lecun1989 baseline data")
    run.train(model, run.dataset().train, retrain_budget(run), desc="same-budget dense baseline",
              loss_fn=training_loss(run.config["loss"]))
    return model.eval()


#: Why Fig. 1b's check is not passed on the harness (shown beside its verdict).
DIAGNOSIS_FIG1B = """
At 800/2578 of the weights deleted (82,607 of LeNet-300-100's 266,200) the summed saliencies
underestimate the actual increase of the squared error by 5.5 dB on average (-4.0, -8.7, -4.2, -6.3,
-4.1 dB on seeds 0-4): the interval, [-8.0, -2.9] dB, just reaches the 3 dB read as agreement.
h_kk was checked against autograd's exact Hessian diagonal (equal for a ReLU network) and the
deletion against the recipe. The record splits the gap: adding the gradient term the extremal
approximation drops recovers 1.7 dB (the network is trained for 2,500 steps, not to a minimum);
the whole quadratic model with every cross term (Hessian-vector products, quadratic_over_actual_db)
is no closer than the diagonal one with that term (-3.9 dB on average against -3.8). The rest is
higher than quadratic: deleting a third of the weights switches ReLU units on and off, which a
local quadratic model of a piecewise-linear network cannot see; the paper's sigmoid network is
smooth, and it names the same terms as the reason its curves split beyond ~30%.
"""


def db(ratio: float) -> float:
    """``10 log10(ratio)``, the paper's unit for the objective (finite for any ratio > 0)."""
    return 10.0 * math.log10(max(ratio, 1e-300))


def random_masks(model: nn.Module, keep: int, generator: torch.Generator) -> Masks:
    """Masks keeping ``keep`` weights drawn uniformly at random over the whole network (Fig. 1a's
    random deletion)."""
    names = list(deletable(model))
    scores = {n: torch.rand(dict(model.named_parameters())[n].shape, generator=generator, dtype=torch.float64)
              for n in names}
    return lowest_saliency_masks(scores, keep)


def gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000,
             loss: Loss = "cross-entropy") -> dict[str, torch.Tensor]:
    """``g``: the gradient of ``E`` over ``(x, y)`` for every deletable weight."""
    layers = deletable(model)
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(params[n], dtype=torch.float64) for n in layers}
    model.eval()
    for i in range(0, len(x), batch_size):
        with torch.enable_grad():
            total_loss = per_example_loss(model(x[i : i + batch_size]), y[i : i + batch_size], loss).sum()
            grads = torch.autograd.grad(total_loss, [params[n] for n in layers])
        for n, g in zip(layers, grads, strict=True):
            total[n] += g.double()
    return {n: g / len(x) for n, g in total.items()}


def quadratic_form(model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: dict[str, torch.Tensor],
                   batch_size: int = 1000, loss: Loss = "cross-entropy") -> float:
    """``delta^T H delta`` with the whole Hessian ``H`` of ``E`` over ``(x, y)`` (cross terms included), by
    Hessian-vector products (double back-propagation): the term of Eq. 1 that the diagonal
    approximation reduces to ``sum_k h_kk delta_k^2``. ``delta``: a perturbation of some weights (the
    others stay)."""
    params = dict(model.named_parameters())
    names = list(delta)
    model.eval()
    total = 0.0
    for i in range(0, len(x), batch_size):
        with torch.enable_grad():
            summed = per_example_loss(model(x[i : i + batch_size]), y[i : i + batch_size], loss).sum()
            grads = torch.autograd.grad(summed, [params[n] for n in names], create_graph=True)
            along = sum((g * delta[n].to(g.dtype)).sum() for n, g in zip(names, grads, strict=True))
            hvp = torch.autograd.grad(along, [params[n] for n in names], allow_unused=True)
        total += float(sum((delta[n].double() * h.double()).sum() for n, h in zip(names, hvp, strict=True)
                           if h is not None))
    return total / len(x)


def deleted_sum(values: dict[str, torch.Tensor], masks: Masks) -> float:
    """The sum of ``values`` over the deleted weights (outside ``masks``)."""
    return float(sum((v * ~masks[n]).sum() for n, v in values.items()))


def ratio_name(ratio: float) -> str:
    """A metric-name suffix for a compression ratio: ``5x``, ``2_39x``."""
    return f"{ratio:.2f}".rstrip("0").rstrip(".").replace(".", "_") + "x"


@reproduction("lecun1989", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    d = cfg.deletion
    data = run.dataset()
    x, y = data.train.x[: d.examples].to(run.device), data.train.y[: d.examples].to(run.device)
    dense = train_dense(run)
    loss = cfg.loss

    def e(model: nn.Module) -> float:
        return objective(model, x, y, loss=loss)

    e_dense = e(dense)
    scores = saliencies(dense, gauss_newton_diagonal(dense, x, d.hessian_batch, loss=loss))
    model_name = f"{cfg.model}, {n_weights(dense)} weights"
    objective_name = "the squared error of linear outputs" if loss == "mse" else "the cross-entropy"
    differs = (f"{data.name} and the harness's {cfg.model} instead of the 2578-parameter zip-code network; "
               f"{objective_name} instead of sigmoid outputs' MSE; h_kk and E over {d.examples} training "
               "examples; weights only")

    # ---- Fig. 1a: deletion without retraining, by saliency, by magnitude and at random.
    def by_saliency(ratio: float) -> tuple[nn.Module, Masks]:
        masks = lowest_saliency_masks(scores, kept_for(dense, ratio))
        return delete(dense, masks), masks

    def advantage_db(ratio: float) -> float:
        """The gap between Fig. 1a's two curves: 10 log10(E_magnitude / E_OBD)."""
        by_magnitude = delete(dense, controls.global_magnitude_masks(dense, ratio))
        return db(e(by_magnitude) / e(by_saliency(ratio)[0]))

    by_obd, _ = by_saliency(d.claim_ratio)
    by_magnitude = delete(dense, controls.global_magnitude_masks(dense, d.claim_ratio))
    generator = torch.Generator().manual_seed(run.seed)
    by_random = delete(dense, random_masks(dense, kept_for(dense, d.claim_ratio), generator))
    e_obd, e_mag, e_rand = (e(m) for m in (by_obd, by_magnitude, by_random))
    acc_obd, acc_mag, acc_rand = (run.accuracy(m, data.test) for m in (by_obd, by_magnitude, by_random))
    beyond = {f"obd_advantage_db_{ratio_name(r)}": advantage_db(r) for r in d.ratios if r != d.claim_ratio}
    run.record(
        "fig1a-obd-vs-magnitude", model=model_name,
        metrics={"dense_objective": e_dense, "obd_objective": e_obd, "magnitude_objective": e_mag,
                 "random_objective": e_rand, "obd_advantage_db": db(e_mag / e_obd),
                 "obd_advantage_over_random_db": db(e_rand / e_obd), **beyond,
                 "obd_accuracy": acc_obd, "magnitude_accuracy": acc_mag, "random_accuracy": acc_rand,
                 "gain_over_magnitude_pp": acc_obd - acc_mag, "compression_ratio": controls.compression_ratio(by_obd)},
        curves=[controls.Series("OBD, no retraining", controls.RATIO, controls.ACCURACY,
                                {float(r): run.accuracy(by_saliency(r)[0], data.test) for r in d.ratios}),
                controls.pruning_curve(run, dense, d.ratios, None)],
        differs=f"{differs}; weights deleted once from the dense network to ratio {d.claim_ratio:.2f} "
                "(1500 of 2578 in the paper), no retraining; magnitude = one global threshold",
    )

    # ---- Fig. 1b: the summed saliencies against the actual increase of E.
    deleted_model, masks = by_saliency(d.prediction_ratio)
    predicted = deleted_sum(scores, masks)
    params = dict(dense.named_parameters())
    grads = gradient(dense, x, y, loss=loss)
    first_order = deleted_sum({n: -g * params[n].detach().double() for n, g in grads.items()}, masks)
    actual = e(deleted_model) - e_dense
    deletion = {n: -params[n].detach() * ~masks[n] for n in masks}
    quadratic = first_order + quadratic_form(dense, x, y, deletion, d.hessian_batch, loss) / 2
    run.record(
        "fig1b-prediction", model=model_name,
        metrics={"predicted_increase": predicted, "actual_increase": actual, "first_order_increase": first_order,
                 "predicted_over_actual_db": db(predicted / max(actual, 1e-30)),
                 "predicted_with_gradient_over_actual_db": db((predicted + first_order) / max(actual, 1e-30)),
                 "quadratic_increase": quadratic, "quadratic_over_actual_db": db(quadratic / max(actual, 1e-30)),
                 "compression_ratio": controls.compression_ratio(deleted_model)},
        differs=f"{differs}; {n_weights(dense) - kept_for(dense, d.prediction_ratio)} weights deleted "
                f"(ratio {d.prediction_ratio:.2f}: 800 of 2578 in the paper), no retraining",
        diagnosis=DIAGNOSIS_FIG1B,
    )

    # ---- Fig. 2: the recipe iterated with retraining, against the same-budget dense network.
    baseline = train_baseline(run, dense)
    acc_base = run.accuracy(baseline, data.test)
    retrained = {float(r): obd(run, dense, r, x, d.rounds, d.retrain, d.hessian_batch, loss)[0] for r in d.ratios}
    claim_model = retrained.get(float(d.claim_ratio))
    if claim_model is None:
        claim_model, _ = obd(run, dense, d.claim_ratio, x, d.rounds, d.retrain, d.hessian_batch, loss)
    acc = run.accuracy(claim_model, data.test)
    size = measure.compression_metrics(dense, claim_model, data.input_shape)
    run.record(
        "fig2-retraining", model=model_name,
        metrics={"baseline_accuracy": acc_base, "dense_accuracy": run.accuracy(dense, data.test), "accuracy": acc,
                 "accuracy_change_pp": acc - acc_base, "param_compression": size["param_compression"],
                 "nonzero_params": size["nonzero_params"], "compression_ratio": controls.compression_ratio(claim_model),
                 "objective_change_db": db(e(claim_model) / e(baseline))},
        curves=[controls.Series("OBD, retrained", controls.RATIO, controls.ACCURACY,
                                {r: run.accuracy(m, data.test) for r, m in retrained.items()}),
                controls.pruning_curve(run, dense, d.ratios, retrain_budget(run))],
        baseline=(cfg.model, "baseline_accuracy"),
        notes="" if loss == "cross-entropy" else (
            "the control curve's fine-tuning (controls.pruning_curve) trains with the harness's cross-entropy, "
            "OBD's retraining with the squared error the dense network was trained on: the retrained curves' "
            "gap is partly that switch of objective"),
        differs=f"{differs}; {d.rounds} delete/retrain rounds of {d.retrain.steps} steps to ratio "
                f"{d.claim_ratio:.2f} (1500 of 2578 deleted in the paper); baseline = the dense network "
                f"trained {d.rounds * d.retrain.steps} steps more without deletion",
    )
