"""Diversity Networks: Neural Network Compression Using Determinantal Point Processes (Mariet & Sra,
ICLR 2016; arXiv:1511.05077).

Method (Divnet): a trained layer keeps a *diverse* subset of its neurons, chosen by a determinantal
point process (DPP) over the neurons' activations, and the neurons it drops are *fused* into the ones
it keeps. Let ``v_i`` be neuron ``i``'s activations over a subset of the training inputs (one entry
per input). The DPP's kernel is the Gaussian kernel of these vectors,

    L_ij = exp(-beta ||v_i - v_j||^2),

so that a subset ``S`` is drawn with probability proportional to ``det(L_S)``: neurons with similar
activations are unlikely to be kept together. Here a k-DPP draws exactly ``k`` neurons (the DPP
conditioned on ``|S| = k``, sampled with Kulesza & Taskar's eigendecomposition algorithm), and
``beta`` is one over the mean squared distance between the neurons' activation vectors. Fusing: the
next layer receives ``sum_j w_j v_j`` (``w_j`` neuron ``j``'s outgoing weights); Divnet keeps ``S``
and chooses new outgoing weights ``w~_i`` for ``i`` in ``S`` minimising

    || sum_j w_j v_j - sum_{i in S} w~_i v_i ||^2,

a least-squares problem: ``A = argmin ||V_S A - V||`` (``V`` the activation matrix, ``V_S`` its kept
columns) and ``W~ = W A^T``. A removed neuron whose activation is a combination of kept ones costs
nothing. No retraining.

Claims (Abstract, arXiv:1511.05077v6): Divnet "leads to smaller network sizes without hurting
performance" and, "for pruning neural networks, Divnet is seen to be notably superior to competing
approaches". The paper's figures and tables could not be read where this file was written: their
numbers are not catalogued.

Measured here: LeNet-300-100 trained for the dense budget; its first hidden layer keeps
``pruning.keep`` of its 300 neurons at each level (a k-DPP draw per seed, on ``pruning.examples``
training inputs), fused, without retraining: a smaller dense network. Claim ``abstract-size``, at the
level ``pruning.checked``: ``baseline_accuracy``, ``accuracy``, ``accuracy_change_pp``, ``params``,
``param_compression``, ``flops``, ``flop_reduction``, ``latency_ms`` and ``speedup`` (real CPU
latency, dense over pruned, batch 64). Claim ``abstract-superior``, at the same level:
``gain_over_random_pp`` (Divnet minus a uniformly random subset of the same size with the same
fusing: what the DPP adds) and ``gain_over_no_fusing_pp`` (Divnet minus the DPP's subset with the
outgoing weights left as they were: what the fusing adds). The curve: Divnet at every level beside
``controls.pruning_curve`` without retraining.

Harness differs: Fashion-MNIST for the quick profile; LeNet-300-100 trained a few thousand SGD
steps; a k-DPP of fixed size per level, rather than the paper's DPP sampling; the kernel's bandwidth
and the checked level (25% of the neurons kept) are chosen here.

Quick verdict: partly. On 5 seeds, keeping 75 of 300 neurons (3.95x fewer parameters and FLOPs,
2.6-2.8x lower measured CPU latency at batch 64, one thread, load ~8 on 2 shared cores) cost 1.54 pp
without retraining (95% interval -1.95 to -1.14; baseline 88.8%, 0.8 pp below its reference): not
within the 1 pp read as "without hurting performance". Divnet beat a random subset fused the same
way by 1.2 pp (0.5 to 1.9) and its own subset unfused by 8.5 pp (3.7 to 13.4): both reproduced.
Curve (no retraining): Divnet -2.0, -1.5 and -7.6 pp at 2x, 4x and 9.7x; global magnitude pruning
(unstructured, no speed-up) -0.2, -1.4 and -8.0 pp. See ``DIAGNOSIS``.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction
from atlas.harness.run import stable_hash


class Pruning(Section):
    keep: list[float]  # fraction of the first hidden layer's neurons kept at each level
    checked: float = Field(gt=0, lt=1)  # the level the claims are judged at (one of ``keep``)
    examples: PositiveInt = 1000  # training inputs whose activations form the kernel and the fit


class Config(Profile):
    model: Literal["lenet-300-100"]  # the harness model (atlas/harness/models.py)
    dense: TrainConfig  # the trained network that is pruned (and the baseline)
    pruning: Pruning


_SGD = {"batch_size": 128, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4}
PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "model": "lenet-300-100", "dense": {"steps": 150, **_SGD},
        "pruning": {"keep": [0.5, 0.25, 0.1], "checked": 0.25, "examples": 300},
    },
    "quick": {
        # 5 seeds x 2,400 dense steps (the budget whose baseline comes within 1 pp of its reference,
        # zhu2018), about 11 s a seed; the pruning needs no training.
        "dataset": "fashion-mnist", "seeds": 5, "model": "lenet-300-100", "dense": {"steps": 2400, **_SGD},
        "pruning": {"keep": [0.5, 0.25, 0.1], "checked": 0.25, "examples": 1000},
    },
    "paper": {
        "dataset": "mnist", "seeds": 3, "model": "lenet-300-100", "dense": {"steps": 10000, **_SGD},
        "pruning": {"keep": [0.5, 0.25, 0.1], "checked": 0.25, "examples": 5000},
    },
}


# ------------------------------------------------------------------------------------------- DPP
def gaussian_kernel(acts: torch.Tensor) -> torch.Tensor:
    """``L_ij = exp(-beta ||v_i - v_j||^2)`` over the columns ``v_i`` of ``acts`` (examples, neurons),
    ``beta`` one over the mean squared distance between distinct columns; float64, (n, n)."""
    v = acts.detach().double().T
    d2 = torch.cdist(v, v).pow(2)
    n = len(v)
    mean = float(d2.sum()) / max(1, n * (n - 1))
    return torch.exp(-d2 / max(mean, 1e-12))


def elementary_symmetric(lam: torch.Tensor, k: int) -> torch.Tensor:
    """``E[l, m]``: the elementary symmetric polynomial of degree ``l`` of ``lam[:m]``, (k + 1, n + 1)."""
    lam_ = lam.double().tolist()
    rows = [[1.0] * (len(lam_) + 1)]
    for _ in range(k):
        prev, row = rows[-1], [0.0]
        for m, x in enumerate(lam_, start=1):
            row.append(row[m - 1] + x * prev[m - 1])
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def sample_kdpp(kernel: torch.Tensor, k: int, generator: torch.Generator) -> list[int]:
    """A draw of exactly ``k`` items from the k-DPP of ``kernel`` (Kulesza & Taskar 2012, Alg. 8):
    choose ``k`` eigenvectors by the elementary symmetric polynomials, then sample the items of the
    elementary DPP they span. Returned ascending."""
    lam, vecs = torch.linalg.eigh(kernel.double())
    lam = lam.clamp_min(0.0)
    n = len(lam)
    if not 0 < k <= n:
        raise ValueError(f"cannot draw {k} of {n} items")
    lam = lam / lam.max()  # the k-DPP is unchanged by scaling the kernel; keeps E finite
    e = elementary_symmetric(lam, k)
    chosen, left = [], k
    for m in range(n, 0, -1):
        if left == 0:
            break
        if m == left or float(torch.rand((), generator=generator, dtype=torch.float64)) < (
                lam[m - 1] * e[left - 1, m - 1] / e[left, m]):
            chosen.append(m - 1)
            left -= 1
    v = vecs[:, chosen]
    items = []
    while v.shape[1] > 0:
        p = v.pow(2).sum(1)
        i = int(torch.multinomial(p / p.sum(), 1, generator=generator))
        items.append(i)
        j = int(torch.argmax(v[i].abs()))
        vj = v[:, j]
        v = v - torch.outer(vj, v[i] / vj[i])
        v = torch.cat([v[:, :j], v[:, j + 1:]], dim=1)
        if v.shape[1]:
            v, _ = torch.linalg.qr(v)
    return sorted(items)


# ---------------------------------------------------------------------------------------- fusing
def fuse(acts: torch.Tensor, w_next: torch.Tensor, kept: list[int]) -> torch.Tensor:
    """The kept neurons' new outgoing weights ``W A^T``, ``A = argmin ||V_S A - V||`` (least squares):
    the next layer's input from the kept neurons closest to the one from all of them. (m, |S|)."""
    v = acts.detach().double()
    a = torch.linalg.lstsq(v[:, kept], v, driver="gelsd").solution  # (|S|, n)
    return (w_next.detach().double() @ a.T).to(w_next.dtype)


@torch.no_grad()
def keep_neurons(model: nn.Sequential, kept: list[int], w_next: torch.Tensor | None = None) -> nn.Sequential:
    """A copy of the MLP ``model`` whose first hidden layer keeps the neurons ``kept`` (the next
    layer's columns replaced by ``w_next`` when given): a smaller dense network."""
    out = copy.deepcopy(model)
    first, second = out[1], out[3]
    idx = torch.tensor(kept)
    new_first = nn.Linear(first.in_features, len(kept)).to(first.weight)
    new_first.weight.copy_(first.weight[idx])
    new_first.bias.copy_(first.bias[idx])
    new_second = nn.Linear(len(kept), second.out_features).to(second.weight)
    new_second.weight.copy_(w_next if w_next is not None else second.weight[:, idx])
    new_second.bias.copy_(second.bias)
    out[1], out[3] = new_first, new_second
    return out.eval()


@torch.no_grad()
def first_activations(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The first hidden layer's ReLU activations on ``x`` (examples, neurons)."""
    return model[2](model[1](model[0](x)))


def divnet(model: nn.Sequential, x: torch.Tensor, k: int, generator: torch.Generator) -> tuple[nn.Sequential, list[int]]:
    """Divnet on the first hidden layer: a k-DPP draw of ``k`` neurons, the others fused into them."""
    acts = first_activations(model, x)
    kept = sample_kdpp(gaussian_kernel(acts), k, generator)
    return keep_neurons(model, kept, fuse(acts, model[3].weight, kept)), kept


# ------------------------------------------------------------------------------------- the paper
def linear_weights(model: nn.Module) -> int:
    """The weights of the Linear layers (the x axis of the curve, as the control counts them)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def train_dense(run: Run) -> nn.Sequential:
    cfg, data = run.train_config("dense"), run.dataset()
    return run.cached_model(
        "mariet2016-dense", {"model": run.config["model"], "train": cfg.model_dump()},
        build=lambda: run.model(run.config["model"]),
        fit=lambda m: run.train(m, data.train, cfg, desc="dense"),
    )


#: Why the atlas publishes "not reproduced" for the abstract-size claim; shown beside the verdict.
DIAGNOSIS = """
The k-DPP sampler was checked against the determinants (a unit test compares its frequencies with
det(L_S) over every pair) and the fusing against its promise (a removed neuron that is a combination
of kept ones costs nothing; a unit test holds it). The baseline is within 1 pp of its reference.
Both of Divnet's parts help (1.2 pp over a random subset, 8.5 pp over no fusing), but a quarter of
the neurons kept without retraining costs 1.5 pp on Fashion-MNIST, and half of them costs more (2.0
pp) than a quarter. Fitting the kernel and the fusing on 5,000 training inputs instead of 1,000
(seeds 100 and 101, not published) changed neither (-1.9 pp at 4x, -2.3 pp at 2x), so the sample
is not the cause; that a Gaussian kernel favours neurons far from the others, near-silent ones
included, is a possible cause not tested here. No retraining follows, as in the paper.
The level checked is the harness's reading of the abstract (the paper's figures could not be read),
so the gap is the method's on this network at this size, not a refutation of the paper's figures.
"""


@reproduction("mariet2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg, data = run.config, run.dataset()
    dense = train_dense(run).eval()
    x = data.train.x[: cfg["pruning"]["examples"]].to(run.device)
    generator = torch.Generator().manual_seed(int(stable_hash([run.seed, "k-dpp"])[:15], 16))
    n = dense[1].out_features
    base = run.accuracy(dense, data.test)
    levels = {}
    for keep in cfg["pruning"]["keep"]:
        levels[keep] = divnet(dense, x, max(1, round(keep * n)), generator)
    ratio = {keep: round(linear_weights(dense) / linear_weights(pruned), 2) for keep, (pruned, _) in levels.items()}
    curve = {ratio[keep]: run.accuracy(pruned, data.test) for keep, (pruned, _) in levels.items()}
    control = controls.pruning_curve(run, dense, list(curve), None)

    checked = cfg["pruning"]["checked"]
    pruned, kept = levels[checked]
    acts = first_activations(dense, x)
    random_kept = sorted(torch.randperm(n, generator=generator)[: len(kept)].tolist())
    acc = run.accuracy(pruned, data.test)
    acc_random = run.accuracy(keep_neurons(dense, random_kept, fuse(acts, dense[3].weight, random_kept)), data.test)
    acc_no_fusing = run.accuracy(keep_neurons(dense, kept), data.test)
    shape = data.input_shape
    lat_dense, lat_pruned = measure.latency_ms(dense, shape), measure.latency_ms(pruned, shape)
    flops_dense, flops_pruned = measure.flops(dense, shape), measure.flops(pruned, shape)
    params_dense, params_pruned = measure.count_params(dense), measure.count_params(pruned)
    model = f"{cfg['model']}: {len(kept)} of the first hidden layer's {n} neurons kept by a k-DPP, the rest fused"
    differs = (f"{data.name} instead of MNIST; {cfg['dense']['steps']} dense steps; a k-DPP of {len(kept)} neurons; "
               "no retraining")
    run.record(
        "abstract-size", model=model,
        metrics={
            **measure.accuracy_change(base, acc),
            "params": params_pruned,
            "param_compression": params_dense / params_pruned,
            "flops": flops_pruned,
            "flop_reduction": flops_dense / flops_pruned,
            "latency_ms": lat_pruned,
            "speedup": lat_dense / lat_pruned,
        },
        baseline=(cfg["model"], "baseline_accuracy"), differs=differs, diagnosis=DIAGNOSIS,
        curves=[controls.Series("Divnet (k-DPP + fusing)", controls.RATIO, controls.ACCURACY, curve), control],
    )
    run.record(
        "abstract-superior", model=model,
        metrics={
            "baseline_accuracy": base,
            "accuracy": acc,
            "gain_over_random_pp": acc - acc_random,
            "gain_over_no_fusing_pp": acc - acc_no_fusing,
        },
        baseline=(cfg["model"], "baseline_accuracy"), differs=differs,
    )
