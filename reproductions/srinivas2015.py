"""Data-free Parameter Pruning for Deep Neural Networks (Srinivas & Babu, BMVC 2015; arXiv:1507.06149).

Method: a trained network is made smaller by removing whole neurons of its fully-connected layers,
one at a time, without the training data and without retraining. Write a hidden neuron ``j`` by its
incoming weights ``W_j`` (its bias included) and its outgoing weights ``a_j`` (one per neuron of the
next layer), so that the next layer receives ``z = sum_j a_j h(W_j . x)``. Two neurons with the same
incoming weights compute the same activation, ``h(W_i . x) = h(W_j . x)`` for every input, so

    a_i h(W_i . x) + a_j h(W_j . x) = (a_i + a_j) h(W_i . x):

neuron ``j`` can be removed and its outgoing weights added to those of ``i`` (the *surgery*) without
changing the network's output on any input. When ``W_i`` and ``W_j`` differ by ``eps = W_i - W_j``
the change is no longer zero; for a ReLU, ``|h(u) - h(v)| <= |u - v|``, so the expected squared
change of the next layer's input is bounded by a term proportional to the *saliency*

    s_ij = <a_j^2> ||W_i - W_j||^2,

where ``<a_j^2>`` is the mean of the squares of ``j``'s outgoing weights. The algorithm computes
``s_ij`` for every ordered pair of neurons of a layer, removes the neuron ``j`` of the pair with the
smallest saliency (merging it into its most similar neuron ``i``), performs the surgery, and
repeats, one neuron at a time (a merged neuron's outgoing weights, and so its saliency as a
candidate for removal, change with every merge it receives). The result is a smaller dense network:
``k`` neurons fewer in a layer with ``d`` inputs whose next layer has ``m`` neurons is ``k (d + 1 +
m)`` parameters fewer.

Claims (Abstract, arXiv:1507.06149v1): pruning the densely connected layers removes up to 85% of the
total parameters of an MNIST-trained network and about 35% of AlexNet's "without significantly
affecting performance", with no data and no retraining. The paper's body (its sections and tables)
could not be read where this file was written: only the abstract's numbers are checked, and the
controls below carry no check.

Measured here (claim ``mnist-fc``): the first hidden layer of a trained network is pruned by
saliency and surgery until the network has lost ``pruning.param_fraction`` (0.85) of its
parameters; ``accuracy_change_pp`` is the pruned network's test accuracy minus the same network's
before pruning (the declared baseline), and the check reads "without significantly affecting
performance" as a loss of at most 1 percentage point. Controls, from the same trained network with
the same number of neurons removed and no surgery: ``random_accuracy_change_pp`` (neurons drawn at
random, per seed), ``magnitude_accuracy_change_pp`` (the neurons with the smallest L2 norm of their
incoming weights and bias removed) and ``no_surgery_accuracy_change_pp`` (the saliency's choice of
neurons, removed without adding their outgoing weights to the kept neurons: what the surgery
contributes). ``gain_over_random_pp`` and ``gain_over_magnitude_pp`` are the method's accuracy minus
each control's. ``params_removed_pct_within_1pp`` is the largest fraction of the parameters (in
steps of 5%, up to the claim's 85%) that the method removes at a cost of at most 1 pp: the greedy
merges are one sequence, so every point of this curve is a prefix of the merges made for 85%. Also
recorded: ``params`` (of the pruned network), ``param_compression`` (dense over pruned parameters),
``params_removed_pct`` and ``neurons_removed``.

Harness differs: Fashion-MNIST instead of MNIST for the quick profile (MNIST is not available here)
and the harness's LeNet-300-100 (the first hidden layer holds 88% of its parameters, as the single
500-neuron hidden layer of a LeNet-5 holds 93% of that network's) trained for a few thousand SGD
steps; the paper's MNIST network is not named in its abstract. The paper profile runs the harness's
LeNet-5 on MNIST. The number of neurons removed is the one that removes the abstract's 85% of the
parameters (summaries of the paper say it chooses the number from the curve of saliencies). AlexNet
on ImageNet (``imagenet-alexnet``) is not measured.

Quick verdict: not reproduced, and why. On 5 seeds (the profile had 5 before it was cut to 4 for its
time budget; a seed gives the same values either way) removing 85% of the parameters (257 of the
first layer's 300 neurons) by saliency and surgery cost 12.4 pp of Fashion-MNIST test accuracy (95%
interval -14.4 to -10.4 pp; baseline 89.1%, 0.5 pp below its reference), against 30.4 pp for random
and 29.6 pp for weight-magnitude removal of as many neurons, and 19.7 pp for the saliency's neurons
removed without the surgery; within 1 pp the method removed 50-55% of the parameters. Tried on seed 0
before the profile was fixed: the same network trained with Adam (-11.7 pp at 85%), and with dropout
0.5 on both hidden layers (-2.6 pp at 85%, against -13.3 pp random and -19.3 pp magnitude, from a
weaker baseline, 87.4%). So the method does what its derivation promises, relative to the controls:
merging similar neurons keeps 17-18 pp more accuracy than removing as many by chance or by magnitude,
and the surgery itself about 7 pp of that. What fails is the abstract's 85%: removal without
retraining is free only where the trained layer holds near-duplicate neurons, and a LeNet-300-100
trained on Fashion-MNIST without dropout holds too few; dropout makes the layer far more redundant.
The gap is the method's on this harness's network (no retraining can recover what the merges lose);
whether the paper's network was trained with dropout, and how much easier MNIST makes it, could not be
checked here: the paper profile measures LeNet-5 on MNIST.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from pydantic import Field, NonNegativeInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, measure, reproduction
from atlas.harness.run import stable_hash


class Pruning(Section):
    layer: NonNegativeInt = 0  # the hidden layer whose neurons are removed (0: the first)
    param_fraction: float = Field(gt=0, lt=1)  # of the whole network's parameters (Abstract: 0.85)


class Config(Profile):
    model: Literal["lenet-300-100", "lenet-5"]  # the harness model (atlas/harness/models.py)
    dense: TrainConfig  # the trained network that is pruned (and the baseline)
    pruning: Pruning


PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "model": "lenet-300-100",
        "dense": {"steps": 150, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4},
        "pruning": {"layer": 0, "param_fraction": 0.85},
    },
    "quick": {
        # 4 seeds: 12,000 SGD steps of about 2.7 ms on 2 cores, about 45 s cold with the pruning.
        "dataset": "fashion-mnist", "seeds": 4, "model": "lenet-300-100",
        "dense": {"steps": 3000, "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4},
        "pruning": {"layer": 0, "param_fraction": 0.85},
    },
    "paper": {
        # MNIST and the Caffe LeNet-5 (conv 20, conv 50, fc 500, fc 10), trained as Caffe's LeNet
        # solver does (SGD, lr 0.01, momentum 0.9, weight decay 5e-4, batch 64, 10,000 iterations);
        # its 500-neuron fully-connected layer is pruned.
        "dataset": "mnist", "seeds": 3, "model": "lenet-5",
        "dense": {"steps": 10000, "batch_size": 64, "optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4},
        "pruning": {"layer": 0, "param_fraction": 0.85},
    },
}


# ------------------------------------------------------------------------------------- saliency
def incoming(layer: nn.Linear) -> torch.Tensor:
    """``W_j`` for every neuron ``j`` of ``layer``: its incoming weights with its bias appended, (n, d + 1)."""
    w = layer.weight.detach()
    b = layer.bias.detach() if layer.bias is not None else torch.zeros(len(w), dtype=w.dtype, device=w.device)
    return torch.cat([w, b[:, None]], dim=1)


def squared_distances(w_in: torch.Tensor) -> torch.Tensor:
    """``||W_i - W_j||^2`` for every pair of rows of ``w_in`` (n, d), in float64, (n, n)."""
    w = w_in.detach().double()
    gram = w @ w.T
    norms = gram.diagonal()
    return (norms[:, None] + norms[None, :] - 2.0 * gram).clamp_min(0.0).fill_diagonal_(0.0)


def saliency(w_in: torch.Tensor, a_out: torch.Tensor, dist2: torch.Tensor | None = None) -> torch.Tensor:
    """``s[i, j] = <a_j^2> ||W_i - W_j||^2``: the saliency of removing neuron ``j`` into neuron ``i``.

    ``w_in`` (n, d): each neuron's incoming weights (and bias); ``a_out`` (m, n): the next layer's
    weights, column ``j`` holding neuron ``j``'s outgoing weights; ``dist2``: the squared distances of
    ``w_in``'s rows, when already computed. The diagonal is ``inf`` (a neuron is not merged into
    itself)."""
    dist2 = squared_distances(w_in) if dist2 is None else dist2
    s = dist2 * (a_out.detach().double() ** 2).mean(0)[None, :]
    return s.fill_diagonal_(math.inf)


def merge_order(w_in: torch.Tensor, a_out: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The first ``k`` merges of the greedy algorithm, as ``(j, i)`` pairs: neuron ``j`` removed into
    neuron ``i``. Each merge takes the pair of least saliency among the neurons left and adds ``j``'s
    outgoing weights to ``i``'s (the surgery) before the next saliencies are computed."""
    n = len(w_in)
    if not 0 <= k < n:
        raise ValueError(f"cannot remove {k} of {n} neurons")
    a = a_out.detach().double().clone()
    dist2 = squared_distances(w_in)  # the incoming weights never change: computed once
    s = saliency(w_in, a, dist2)
    order = []
    for _ in range(k):
        i, j = divmod(int(torch.argmin(s)), n)
        a[:, i] += a[:, j]
        order.append((j, i))
        s[:, j] = math.inf  # j is gone: neither removed again nor merged into
        s[j, :] = math.inf
        alive = torch.isfinite(s[i])  # the neurons left besides i
        s[:, i] = torch.where(alive, dist2[:, i] * (a[:, i] ** 2).mean(), math.inf)  # <a_i^2> changed
    return order


def apply_merges(a_out: torch.Tensor, merges: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The surgery of ``merges`` (``(j, i)``: ``j`` removed into ``i``, in order) on the next layer's
    weights ``a_out`` (m, n): the indices of the neurons kept (ascending) and their outgoing weights,
    (m, n - len(merges))."""
    a = a_out.detach().double().clone()
    alive = torch.ones(a.shape[1], dtype=torch.bool, device=a.device)
    for j, i in merges:
        a[:, i] += a[:, j]
        alive[j] = False
    kept = alive.nonzero().flatten()
    return kept, a[:, kept].to(a_out.dtype)


def merge_neurons(w_in: torch.Tensor, a_out: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove ``k`` neurons by the greedy merges of :func:`merge_order`: the indices of the neurons
    kept (ascending) and the next layer's weights for them, (m, n - k)."""
    return apply_merges(a_out, merge_order(w_in, a_out, k))


# -------------------------------------------------------------------------------------- surgery
def hidden_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The names of every two consecutive Linear layers (a hidden layer of neurons and the layer it
    feeds), in model order."""
    names = [name for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    return list(zip(names, names[1:], strict=False))


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


@torch.no_grad()
def shrink(model: nn.Module, layer: int, kept: torch.Tensor, a_out: torch.Tensor | None = None) -> nn.Module:
    """A copy of ``model`` whose hidden layer ``layer`` keeps only the neurons ``kept``: the rows of
    the layer's weights and bias, and the columns of the next layer's weights (``a_out`` where the
    surgery gives them, else the original columns). The copy is a smaller dense network."""
    first_name, second_name = hidden_pairs(model)[layer]
    out = copy.deepcopy(model)
    first, second = out.get_submodule(first_name), out.get_submodule(second_name)
    assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)
    new_first = nn.Linear(first.in_features, len(kept), bias=first.bias is not None).to(first.weight)
    new_first.weight.copy_(first.weight[kept])
    if first.bias is not None:
        new_first.bias.copy_(first.bias[kept])
    new_second = nn.Linear(len(kept), second.out_features, bias=second.bias is not None).to(second.weight)
    new_second.weight.copy_(a_out if a_out is not None else second.weight[:, kept])
    if second.bias is not None:
        new_second.bias.copy_(second.bias)
    _set(out, first_name, new_first)
    _set(out, second_name, new_second)
    return out.eval()


def prune_by_saliency(model: nn.Module, layer: int, k: int) -> tuple[nn.Module, torch.Tensor]:
    """The method: ``k`` neurons of hidden layer ``layer`` merged away by saliency and surgery.
    Returns the smaller network and the indices of the neurons it kept."""
    first_name, second_name = hidden_pairs(model)[layer]
    first, second = model.get_submodule(first_name), model.get_submodule(second_name)
    kept, a_out = merge_neurons(incoming(first), second.weight, k)
    return shrink(model, layer, kept, a_out), kept


def neurons_for_fraction(model: nn.Module, layer: int, fraction: float) -> int:
    """The fewest neurons of hidden layer ``layer`` whose removal takes away ``fraction`` of the
    model's parameters (each takes its incoming weights, its bias and its outgoing weights)."""
    first_name, second_name = hidden_pairs(model)[layer]
    first, second = model.get_submodule(first_name), model.get_submodule(second_name)
    assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)
    per_neuron = first.in_features + (first.bias is not None) + second.out_features
    k = math.ceil(fraction * measure.count_params(model) / per_neuron)
    if k >= first.out_features:
        raise ValueError(f"removing {fraction:.0%} of the parameters needs {k} of the layer's "
                         f"{first.out_features} neurons")
    return k


# ------------------------------------------------------------------------------------- controls
def keep_largest(score: torch.Tensor, keep: int) -> torch.Tensor:
    """The indices (ascending) of the ``keep`` largest scores."""
    return torch.topk(score, keep).indices.sort().values


def prune_control(model: nn.Module, layer: int, k: int, rule: str, generator: torch.Generator) -> nn.Module:
    """``k`` neurons of hidden layer ``layer`` removed without surgery, chosen by ``rule``:
    ``random`` or ``magnitude`` (the smallest L2 norm of incoming weights and bias)."""
    first = model.get_submodule(hidden_pairs(model)[layer][0])
    assert isinstance(first, nn.Linear)
    n = first.out_features
    if rule == "random":
        score = torch.rand(n, generator=generator)
    elif rule == "magnitude":
        score = incoming(first).norm(dim=1).cpu()
    else:
        raise ValueError(f"unknown control '{rule}'")
    return shrink(model, layer, keep_largest(score, n - k))


# ------------------------------------------------------------------------------------ the paper
def train_dense(run: Run) -> nn.Module:
    """The trained network that is pruned, one per seed (cached)."""
    cfg = run.train_config("dense")
    data = run.dataset()
    return run.cached_model(
        "srinivas2015-dense", {"model": run.config["model"], "train": cfg.model_dump()},
        build=lambda: run.model(run.config["model"]),
        fit=lambda m: run.train(m, data.train, cfg, desc="dense"),
    )


def removal_curve(run: Run, dense: nn.Module, layer: int, merges: list[tuple[int, int]],
                  fractions: list[float]) -> dict[float, float]:
    """Test accuracy of the network after the first merges of ``merges`` that remove each of
    ``fractions`` of its parameters (the greedy merges are one sequence: each point is a prefix)."""
    second = dense.get_submodule(hidden_pairs(dense)[layer][1])
    curve = {}
    for fraction in fractions:
        kept, a_out = apply_merges(second.weight, merges[: neurons_for_fraction(dense, layer, fraction)])
        curve[fraction] = run.accuracy(shrink(dense, layer, kept, a_out), run.dataset().test)
    return curve


#: Why the atlas publishes "not reproduced" for the 85% claim; shown beside the verdict.
DIAGNOSIS = """
The saliency and surgery were checked against the derivation (merging two identical neurons leaves
the output unchanged exactly; a unit test holds it). The method beats both controls by a wide margin
(17-18 pp more accuracy than removing as many neurons at random or by weight magnitude, about 7 pp
of it from the surgery), but removing the abstract's 85% of the parameters without retraining costs
about 12 pp on this harness's LeNet-300-100 (within 1 pp it removes 50-55%). On seed 0 the same
network trained with dropout 0.5 lost only 2.6 pp at 85% (13.3 pp random): removal is free only
where the trained layer holds near-duplicate neurons. The paper's body (its network and training)
could not be read here, so the gap is the method's on a network trained without dropout, not a
refutation of the paper's network.
"""

@reproduction("srinivas2015", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = run.config
    data = run.dataset()
    layer, target = cfg["pruning"]["layer"], cfg["pruning"]["param_fraction"]
    dense = train_dense(run)
    first, second = (dense.get_submodule(name) for name in hidden_pairs(dense)[layer])
    k = neurons_for_fraction(dense, layer, target)
    merges = merge_order(incoming(first), second.weight, k)
    kept, a_out = apply_merges(second.weight, merges)
    pruned = shrink(dense, layer, kept, a_out)
    no_surgery = shrink(dense, layer, kept)  # the same neurons removed, their outgoing weights dropped

    generator = torch.Generator().manual_seed(int(stable_hash([run.seed, "random-control"])[:15], 16))
    base = run.accuracy(dense, data.test)
    acc = run.accuracy(pruned, data.test)
    acc_random = run.accuracy(prune_control(dense, layer, k, "random", generator), data.test)
    acc_magnitude = run.accuracy(prune_control(dense, layer, k, "magnitude", generator), data.test)
    acc_no_surgery = run.accuracy(no_surgery, data.test)
    grid = [f / 20 for f in range(1, 20) if f / 20 < target] + [target]
    curve = removal_curve(run, dense, layer, merges, grid)
    within = max((f for f, a in curve.items() if a - base >= -1.0), default=0.0)
    params_dense, params_pruned = measure.count_params(dense), measure.count_params(pruned)
    run.record(
        "mnist-fc",
        model=f"{cfg['model']}: {k} of the {first.out_features} neurons of hidden layer {layer + 1} merged away",
        metrics={
            **measure.accuracy_change(base, acc),
            "random_accuracy_change_pp": acc_random - base,
            "magnitude_accuracy_change_pp": acc_magnitude - base,
            "no_surgery_accuracy_change_pp": acc_no_surgery - base,
            "gain_over_random_pp": acc - acc_random,
            "gain_over_magnitude_pp": acc - acc_magnitude,
            "params_removed_pct_within_1pp": 100.0 * within,
            "params": params_pruned,
            "param_compression": params_dense / params_pruned,
            "params_removed_pct": 100.0 * (params_dense - params_pruned) / params_dense,
            "neurons_removed": k,
        },
        baseline=(cfg["model"], "baseline_accuracy"),
        differs=f"{data.name} instead of MNIST; the harness's {cfg['model']} trained for {cfg['dense']['steps']} "
                f"steps; {k} neurons removed (the abstract's {target:.0%} of the parameters), not chosen from "
                "the saliency curve",
        diagnosis=DIAGNOSIS,
    )
