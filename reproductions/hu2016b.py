"""Network Trimming: A Data-Driven Neuron Pruning Approach towards Efficient Deep Architectures
(Hu, Peng, Tai & Tang, arXiv preprint 2016; arXiv:1607.03250).

Method: a trained network holds neurons whose ReLU output is zero for most inputs, whatever the
input; such neurons are redundant and are removed. The *Average Percentage of Zeros* of neuron (or
channel) ``c`` of layer ``i`` over ``N`` examples, each giving ``M`` outputs of the neuron (``M = 1``
for a fully-connected neuron, the ``H x W`` positions of a channel's map), is

    APoZ_c^(i) = sum_{k=1..N} sum_{j=1..M} f(O_{c,j}^(i)(k) = 0) / (N M),

with ``f`` 1 when its argument is true and 0 otherwise, ``O`` the output after the ReLU. Network
trimming (1) trains the network; (2) computes every neuron's APoZ on a large set of examples; (3)
prunes the neurons of highest APoZ *for real*: a removed neuron takes its incoming weights (its row
and bias) and its outgoing weights (the next layer's column), so the result is a smaller dense
network; (4) retrains the trimmed network, initialised with the weights it kept before pruning
(the paper stresses that this initialisation, not a fresh one, is what recovers the accuracy); and
(5) alternates pruning and retraining, since removing too many neurons at once damages the network
beyond what retraining repairs.

Claims: the abstract (arXiv:1607.03250v1) says that on LeNet and VGG-16 network trimming achieves
"high compression ratio of parameters without losing or even achieving higher accuracy than the
original network". The VGG-16 / ImageNet rows (``imagenet-vgg-16-*``, via ShrinkBench's results
table: parameter compression 1.96-2.7x at a top-1 accuracy above the unpruned 68.36%) are not
measured. The paper's LeNet table could not be read where this file was written (only the abstract
and third-party summaries), so its per-layer neuron counts are not claimed here. Claim
``lenet-trim`` checks the abstract's statement at the compression the ShrinkBench rows report (about
2x): ``accuracy_change_pp`` (trimmed minus the dense network trained for the same total number of
steps) at least -1 pp.

Measured (claim ``lenet-trim``, the middle trimming level, ``trimming.levels[claim_level]``):
``accuracy_change_pp`` / ``accuracy`` / ``baseline_accuracy`` (the dense network continued for the
trimming's total retraining steps, the same minibatches: a paired budget), ``dense_accuracy`` (before
the continuation), ``no_retrain_accuracy_change_pp`` (the first trimming without retraining),
``random_accuracy_change_pp`` (as many neurons per layer removed at random, retrained identically:
what the APoZ adds), ``neurons_removed``, ``params`` / ``param_compression`` (dense over trimmed
parameter count; the trimmed model is dense, so ``nonzero_params`` equals ``params``), ``flops`` /
``flop_reduction`` (``measure.flops``), ``dense_latency_ms`` / ``trimmed_latency_ms`` / ``speedup``
(``measure.latency_ms``, CPU, batch 64, the two dense PyTorch models timed in the same run) and
``mean_apoz_pct`` (the trimmed layers' mean APoZ in the dense network). The curve: the trimmed
network's accuracy at every level of ``trimming.levels`` (fraction of each trimmed layer's neurons
kept), each reached from the dense network in ``trimming.rounds`` rounds of trim-and-retrain, beside
``controls.pruning_curve`` (global magnitude pruning, unstructured) at the same weight compressions
(convolution and fully-connected weights, dense over kept) with the same retraining steps.

Harness differs: Fashion-MNIST for the quick profile (MNIST is not available here) and the harness's
LeNet-300-100 (both hidden layers trimmed) instead of Caffe's LeNet, whose convolutions have no
ReLU (so only its ``ip1`` has an APoZ; the paper profile runs that network on MNIST and trims
``ip1``). The number of neurons removed per round is a fixed fraction of each layer (so that every
seed records the same levels), not the paper's per-layer choice of neurons whose APoZ is above a
threshold; APoZ is computed on ``trimming.apoz_examples`` training examples (the paper uses its
validation set), and retraining is a fixed number of SGD steps per round (two rounds of 150 in the
quick profile, about 0.6 passes over the training set in all; the paper retrains each round until
the accuracy recovers).

Quick verdict history: not reproduced with 2 x 150 retraining steps. On seeds 0-2 (baseline 89.0%, 0.7 pp below its
reference) trimming both hidden layers of LeNet-300-100 to half their neurons (300-100 -> 150-50,
2.1x fewer parameters, 2.1x fewer FLOPs, measured CPU speed-up about 1.8x at batch 64) cost 1.4 pp
(95% interval -1.6 to -1.2) against the dense network continued for the same 300 steps; trimming
without retraining cost 2-5 pp, and as many neurons removed at random and retrained identically cost
1.7 pp (APoZ's gain over random: about 0.3 pp). Unstructured global magnitude pruning at the same
weight compressions (1.5x, 2.1x, 3.3x) loses nothing, as expected of a finer-grained method. The
same profile with four times the retraining (2 x 600 steps, seeds 10-12, run while this file was
written) passed: -0.83 pp (-0.90 to -0.76), random trimming -1.0 pp. So the gap is the quick
profile's retraining budget (a time limit of the harness), not the method: see ``DIAGNOSIS``. The quick
profile now retrains 2 x 300 steps, what fits about a minute; the published record says where that lands.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction


class Trimming(Section):
    levels: list[float] = Field(min_length=3)  # fraction of each trimmed layer's neurons kept, one per curve point
    claim_level: NonNegativeInt  # index into ``levels`` of the level the claim checks (about 2x parameters)
    rounds: PositiveInt  # trim-and-retrain rounds to reach a level (Sec. 3: iterative, not one shot)
    apoz_examples: PositiveInt  # examples the APoZ is computed on


class Config(Profile):
    model: Literal["lenet-300-100", "lenet-5"]  # the harness model (atlas/harness/models.py)
    dense: TrainConfig  # the network that is trimmed
    retrain: TrainConfig  # one round's retraining of the trimmed network (and of the dense baseline)
    trimming: Trimming


_SGD = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}

PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "model": "lenet-300-100",
        "dense": {"steps": 150, "batch_size": 64, **_SGD},
        "retrain": {"steps": 40, "batch_size": 64, **_SGD, "lr": 0.01},
        "trimming": {"levels": [0.7, 0.5, 0.33], "claim_level": 1, "rounds": 2, "apoz_examples": 500},
    },
    "quick": {
        # per seed: 3,000 dense steps (1,500 left the baseline 1.8 pp below its reference), then 2
        # rounds x 300 retraining steps for the baseline's continuation, each of the 3 levels and the
        # random control, and 600 steps for each of the 3 magnitude-control points: 7,800 steps.
        # (2 x 150 was the first setting; 2 x 600 on seeds 10-12 showed the gap closing with the
        # retraining budget: see DIAGNOSIS; 2 x 300 is what fits about a minute.)
        "dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100",
        "dense": {"steps": 3000, "batch_size": 128, **_SGD},
        "retrain": {"steps": 300, "batch_size": 128, **_SGD, "lr": 0.01},
        "trimming": {"levels": [0.7, 0.5, 0.33], "claim_level": 1, "rounds": 2, "apoz_examples": 2000},
    },
    "paper": {
        # MNIST and Caffe's LeNet (conv 20, conv 50, ip1 500, ip2 10) trained as Caffe's LeNet solver
        # does (SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 64, 10,000 iterations); only ip1
        # is followed by a ReLU, so ip1 is trimmed.
        "dataset": "mnist", "seeds": 3, "model": "lenet-5",
        "dense": {"steps": 10000, "batch_size": 64, **_SGD, "lr": 0.01, "schedule": "step"},
        "retrain": {"steps": 2000, "batch_size": 64, **_SGD, "lr": 0.001},
        "trimming": {"levels": [0.7, 0.5, 0.33], "claim_level": 1, "rounds": 3, "apoz_examples": 10000},
    },
}

CLAIM = "lenet-trim"


# ------------------------------------------------------------------------------------------ APoZ
def trimmable(model: nn.Module) -> list[tuple[nn.Sequential, int, int]]:
    """Every Linear layer followed by a ReLU and, later in the same Sequential, by another Linear:
    ``(the Sequential, the layer's index, the next Linear's index)``, in model order. Its output
    neurons can be trimmed (the ReLU gives them an APoZ)."""
    found = []
    for seq in (m for m in model.modules() if isinstance(m, nn.Sequential)):
        mods = list(seq)
        for i, mod in enumerate(mods[:-1]):
            if isinstance(mod, nn.Linear) and isinstance(mods[i + 1], nn.ReLU):
                nxt = next((j for j in range(i + 2, len(mods)) if isinstance(mods[j], nn.Linear)), None)
                if nxt is not None:
                    found.append((seq, i, nxt))
    return found


def apoz_of(outputs: torch.Tensor) -> torch.Tensor:
    """APoZ (a fraction in [0, 1]) of every neuron / channel (dimension 1) of ReLU ``outputs``
    (N, C) or (N, C, H, W): the share of its N x M outputs that are exactly zero."""
    zeros = (outputs == 0).float().transpose(0, 1).reshape(outputs.shape[1], -1)
    return zeros.mean(1)


@torch.no_grad()
def apoz(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> list[torch.Tensor]:
    """The APoZ of every trimmable layer's neurons (:func:`trimmable` order) on the examples ``x``."""
    layers = trimmable(model)
    zeros: list[torch.Tensor | None] = [None] * len(layers)
    hooks = []
    for k, (seq, i, _) in enumerate(layers):
        def hook(_m: nn.Module, _in: tuple, out: torch.Tensor, k: int = k) -> None:
            z = apoz_of(out) * len(out)
            zeros[k] = z if zeros[k] is None else zeros[k] + z
        hooks.append(seq[i + 1].register_forward_hook(hook))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, len(x), batch):
            model(x[start:start + batch].to(device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [z.cpu() / len(x) for z in zeros]


# --------------------------------------------------------------------------------------- surgery
@torch.no_grad()
def trim(model: nn.Module, kept: Sequence[torch.Tensor]) -> nn.Module:
    """A copy of ``model`` in which trimmable layer ``k`` keeps only the neurons ``kept[k]`` (indices):
    their rows of the layer's weights and bias, and their columns of the next Linear's weights. The
    result is a smaller dense network computing the same function minus the removed neurons."""
    out = copy.deepcopy(model)
    for (seq, i, j), idx in zip(trimmable(out), kept, strict=True):
        idx = torch.as_tensor(idx, dtype=torch.long).sort().values.to(seq[i].weight.device)
        first, second = seq[i], seq[j]
        new_first = nn.Linear(first.in_features, len(idx), bias=first.bias is not None).to(first.weight)
        new_first.weight.copy_(first.weight[idx])
        if first.bias is not None:
            new_first.bias.copy_(first.bias[idx])
        new_second = nn.Linear(len(idx), second.out_features, bias=second.bias is not None).to(second.weight)
        new_second.weight.copy_(second.weight[:, idx])
        if second.bias is not None:
            new_second.bias.copy_(second.bias)
        seq[i], seq[j] = new_first, new_second
    return out


def weight_count(model: nn.Module) -> int:
    """The convolution and fully-connected weights of ``model`` (the control's compression counts these)."""
    params = dict(model.named_parameters())
    return sum(params[name].numel() for name in controls.weight_names(model))


def keep_lowest(score: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices (ascending) of the ``keep`` lowest scores (ties: the lower index)."""
    order = torch.sort(score, stable=True).indices
    return order[:keep].sort().values


def widths(model: nn.Module) -> list[int]:
    """The number of neurons of every trimmable layer."""
    return [seq[i].out_features for seq, i, _ in trimmable(model)]


def targets(start: Sequence[int], level: float, rounds: int) -> list[list[int]]:
    """The widths after each of ``rounds`` rounds that take layers of widths ``start`` to ``level``
    of their neurons, removing the same fraction of the neurons left each round."""
    per_round = level ** (1.0 / rounds)
    out = [[max(1, round(n * per_round ** (r + 1))) for n in start] for r in range(rounds - 1)]
    return out + [[max(1, round(n * level)) for n in start]]


def trim_by_apoz(model: nn.Module, x: torch.Tensor, keep: Sequence[int]) -> nn.Module:
    """One trimming step: every trimmable layer keeps its ``keep[k]`` neurons of lowest APoZ on ``x``."""
    return trim(model, [keep_lowest(a, n) for a, n in zip(apoz(model, x), keep, strict=True)])


def trim_at_random(model: nn.Module, keep: Sequence[int], generator: torch.Generator) -> nn.Module:
    """The control: every trimmable layer keeps ``keep[k]`` neurons drawn at random."""
    return trim(model, [keep_lowest(torch.rand(n, generator=generator), k)
                        for n, k in zip(widths(model), keep, strict=True)])


# ------------------------------------------------------------------------------------ the paper
def train_dense(run: Run) -> nn.Module:
    """The trained network that is trimmed, one per seed (cached)."""
    cfg = run.train_config("dense")
    return run.cached_model(
        "hu2016b-dense", {"model": run.config["model"], "train": cfg.model_dump()},
        build=lambda: run.model(run.config["model"]),
        fit=lambda m: run.train(m, run.dataset().train, cfg, desc="dense"),
    )


def retrain(run: Run, model: nn.Module, stage: str, rnd: int) -> nn.Module:
    """One round of retraining from the weights kept (Sec. 3). Round ``rnd`` of every model of a seed
    sees the same minibatches, so that their differences are paired."""
    run.reseed(f"hu2016b retrain round {rnd}")
    run.train(model, run.dataset().train, run.train_config("retrain"), desc=f"{stage}, round {rnd + 1}")
    return model.eval()


def network_trimming(run: Run, dense: nn.Module, x_apoz: torch.Tensor, level: float,
                     rounds: int) -> tuple[nn.Module, float]:
    """The method: ``rounds`` rounds of APoZ trimming and retraining from ``dense`` down to ``level``
    of each layer's neurons. Returns the trimmed, retrained network and the accuracy of the first
    trimming before any retraining."""
    model = controls.trainable_copy(dense)
    one_shot = float("nan")
    for rnd, keep in enumerate(targets(widths(dense), level, rounds)):
        model = trim_by_apoz(model, x_apoz, keep)
        if rnd == 0:
            one_shot = run.accuracy(model, run.dataset().test)
        model = retrain(run, model, f"trimmed to {level:g}", rnd)
    return model, one_shot


#: Why the quick profile's "not reproduced" is believed to be its retraining budget; shown beside it.
DIAGNOSIS = """
APoZ, the surgery and the retraining were checked against the paper's method section (unit tests
hold that removing always-zero neurons leaves the output unchanged and that the removed neurons take
their incoming and outgoing weights). The baseline converged (0.7 pp below its reference) and is
the dense network retrained for the same steps. With the quick profile's retraining (2 rounds of 150
SGD steps, about 0.6 epochs in all) trimming LeNet-300-100 to half its neurons (2.1x fewer
parameters) cost 1.4 pp on Fashion-MNIST; with four times the retraining (2 x 600 steps, seeds 10-12)
it cost 0.83 pp (interval -0.90 to -0.76) and passed the 1 pp check. The paper retrains each round
until the accuracy recovers; the quick profile's minute cannot (the longer run took about 4x the time;
the profile now retrains 2 x 300 steps, half of it).
The gap is the harness's time budget, not the method; the data set (Fashion-MNIST, harder than MNIST)
may also make 2x trimming costlier than on the paper's LeNet.
"""


@reproduction("hu2016b", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = run.config
    data = run.dataset()
    shape = data.input_shape
    trim_cfg = cfg["trimming"]
    rounds, levels = trim_cfg["rounds"], trim_cfg["levels"]
    x_apoz = data.train.subset(trim_cfg["apoz_examples"]).x

    dense = train_dense(run)
    dense_acc = run.accuracy(dense, data.test)
    baseline = controls.trainable_copy(dense)
    for rnd in range(rounds):
        baseline = retrain(run, baseline, "dense, continued", rnd)
    base = run.accuracy(baseline, data.test)

    curve: dict[float, float] = {}
    for n, level in enumerate(levels):
        trimmed, one_shot_level = network_trimming(run, dense, x_apoz, level, rounds)
        ratio = round(weight_count(dense) / weight_count(trimmed), 2)
        curve[ratio] = acc_level = run.accuracy(trimmed, data.test)
        if n == trim_cfg["claim_level"]:
            claim_model, acc, one_shot = trimmed, acc_level, one_shot_level

    generator = torch.Generator().manual_seed(run.seed)
    random_model = controls.trainable_copy(dense)
    for rnd, keep in enumerate(targets(widths(dense), levels[trim_cfg["claim_level"]], rounds)):
        random_model = retrain(run, trim_at_random(random_model, keep, generator), "random trimming", rnd)
    acc_random = run.accuracy(random_model, data.test)

    apoz_dense = torch.cat(apoz(dense, x_apoz))
    flops_dense, flops_trimmed = measure.flops(dense, shape), measure.flops(claim_model, shape)
    lat_dense = measure.latency_ms(dense, shape, batch=64, repeats=20)
    lat_trimmed = measure.latency_ms(claim_model, shape, batch=64, repeats=20)
    params_dense, params_trimmed = measure.count_params(dense), measure.count_params(claim_model)
    kept = widths(claim_model)
    total_steps = rounds * cfg["retrain"]["steps"]
    run.record(
        CLAIM,
        model=f"{cfg['model']}: trimmable layers {widths(dense)} -> {kept} by APoZ, {rounds} rounds of retraining",
        metrics={
            **measure.accuracy_change(base, acc),
            "dense_accuracy": dense_acc,
            "no_retrain_accuracy_change_pp": one_shot - base,
            "random_accuracy_change_pp": acc_random - base,
            "gain_over_random_pp": acc - acc_random,
            "neurons_removed": sum(widths(dense)) - sum(kept),
            "params": params_trimmed,
            "param_compression": params_dense / params_trimmed,
            "flops": flops_trimmed,
            "flop_reduction": flops_dense / flops_trimmed,
            "dense_latency_ms": lat_dense,
            "trimmed_latency_ms": lat_trimmed,
            "speedup": lat_dense / lat_trimmed,
            "mean_apoz_pct": 100.0 * float(apoz_dense.mean()),
        },
        baseline=(cfg["model"], "baseline_accuracy"),
        differs=(f"{data.name} instead of MNIST; the harness's {cfg['model']} trained for {cfg['dense']['steps']} "
                 f"steps, then {rounds} rounds of {cfg['retrain']['steps']} retraining steps (the baseline is the "
                 f"dense network continued for the same {total_steps} steps); a fixed fraction of every trimmable "
                 f"layer's neurons removed per round, not an APoZ threshold; APoZ on {trim_cfg['apoz_examples']} "
                 "training examples"),
        curves=[
            controls.Series("Network trimming (APoZ, Hu et al.)", controls.RATIO, controls.ACCURACY, curve),
            controls.pruning_curve(run, dense, sorted(curve),
                                   run.train_config("retrain", steps=total_steps)),
        ],
        diagnosis=DIAGNOSIS,
    )
