"""Data-Driven Sparse Structure Selection for Deep Neural Networks (Huang & Wang, ECCV 2018;
arXiv:1707.01213v3).

Method: a new parameter, a *scaling factor* ``lambda_i``, multiplies the output of each structure ``i``
of a network (a neuron, a group of a grouped convolution, a residual block). The weights ``W`` and the
factors are trained together on

    min_(W, lambda)  1/N sum_n L(y_n, C(x_n, W, lambda)) + R(W) + gamma * ||lambda||_1

and the sparse term is handled by a *modified stochastic Accelerated Proximal Gradient* (APG): with
``G`` the data loss, learning rate ``eta_t`` and momentum ``mu``, every step of the factors is (the
authors' released MXNet optimizer ``APGNAG``, Eq. 10-12 there)

    z_t = lambda_(t-1) - eta_t * grad G(lambda_(t-1))
    z_t = S_(eta_t * gamma)(z_t)                       S_a(z) = sign(z) * max(0, |z| - a)
    v_t = z_t - lambda_(t-1) + mu * v_(t-1)
    lambda_t = max(0, z_t + mu * v_t)

(the soft-threshold gives exact zeros, and the released code keeps the factors non-negative); the
weights take ordinary momentum SGD with weight decay. A structure whose factor is exactly zero
contributes nothing and is removed: one training pass, no pruning heuristic and no fine-tuning.

Claims (papers.yaml, from ShrinkBench's results table, Blalock et al. 2020): ImageNet top-1 accuracy of
ResNet-50 with blocks selected (76.12% -> 75.44% at 25.3M parameters, 74.18% at 18.6M, 71.82% at
15.6M) and of VGG-16 (72.46% -> 68.53% at 130.5M parameters). The paper's own tables were not read
here (which structures its VGG-16 selects included), so the claims carry no checks: the record is "not
comparable" and shows the harness's measurement and its curve beside the control.

What the harness measures (recorded with claim ``imagenet-vgg-16-380``; the structures here are
neurons): the harness's LeNet-300-100 with a scaling factor on each of its 400 hidden neurons, trained
with APG on the factors, against the same network trained without factors or penalty for the same
steps (the baseline). The selected network is the trained one with its zero-factor neurons removed
(each kept factor folded into the next layer's weights: a smaller dense MLP that computes exactly the
same function, tested). Recorded: ``baseline_accuracy``, ``accuracy`` (the selected network),
``accuracy_change_pp``, ``params``, ``param_compression``, ``flops``, ``flop_reduction``,
``neurons_kept_<layer>``, ``zero_factor_pct`` (share of factors the APG set to exactly zero), and
``dense_latency_ms`` / ``selected_latency_ms`` / ``speedup`` (``measure.latency_ms``, a batch of 64,
same run).

The curve: the trained network cut to 4x, 8x and 16x fewer weights by removing neurons in increasing
order of their factors (the zero ones first, which costs nothing; then the smallest), without
fine-tuning, as the method has none; beside global magnitude pruning of the baseline at the same
ratios, also without retraining (:mod:`atlas.harness.controls`): both get the training budget alone.

Harness differs: Fashion-MNIST (quick) and the digits (smoke) with an MLP instead of ImageNet with
VGG-16 / ResNet-50 (the structures are the MLP's neurons; the harness's ResNet-20 costs too much per
step on 2 cores for the block-level variant); plain momentum instead of Nesterov for the weights;
1,500 steps with a cosine schedule. ``gamma`` (the sparsity weight; the paper's values were not read
here) was looked at on a validation split (the training set's last 10,000 images, seed 1000): 0.001
zeroed no factor (-0.16 pp), 0.003 a third of them (1.6x fewer weights, -1.16 pp), 0.01 nine in ten
(12.7x, -2.37 pp, against -4.9 pp for magnitude pruning without retraining at 8x); the profiles use
0.01, the strength at which the method selects a structure much smaller than the network, as the
paper's pruned ResNets and VGG do. Standing alone: network slimming (Liu et al., ICCV 2017;
``liu2017``) imposes the same idea on batch-norm scales, but appeared after this paper's first version
(arXiv v1, July 2017), so nothing is imported from it.

Measured (quick, seeds 0-2, not judged): the APG zeroed 87-89% of the factors; the selected MLP has
9.7-13.6x fewer weights and FLOPs, runs 4.5-6.1x faster at batch 64 on one CPU thread, and loses
2.4-2.6 pp against the baseline; cut to 16x it keeps 84.7-84.9% where magnitude pruning of the
baseline without retraining falls to 72-76%.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from pydantic import Field, PositiveFloat
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction


class Selection(Section):
    gamma: PositiveFloat  # the weight of ||lambda||_1 (chosen on a validation split: docstring)
    factor_init: PositiveFloat = 1.0  # every scaling factor starts at 1 (the structure unchanged)
    ratios: list[PositiveFloat] = Field(min_length=1)  # the curve's weight compression levels


class Config(Profile):
    model: str = "lenet-300-100"  # the harness MLP whose hidden neurons are the structures
    train: TrainConfig  # each of the baseline and the network trained with scaling factors
    selection: Selection


def _sgd(steps: int, lr: float) -> dict:
    return {"steps": steps, "batch_size": 64, "optimizer": "sgd", "lr": lr, "momentum": 0.9,
            "weight_decay": 1e-4, "schedule": "cosine"}


PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "train": _sgd(200, 0.05),
        "selection": {"gamma": 0.01, "ratios": [4.0, 8.0, 16.0]},
    },
    "quick": {
        # 1,500 steps of batch 64 (1.6 passes over Fashion-MNIST) for each of the baseline and the
        # network with scaling factors. gamma = 0.01: chosen on a validation split (docstring).
        "dataset": "fashion-mnist", "seeds": 3, "train": _sgd(1500, 0.05),
        "selection": {"gamma": 0.01, "ratios": [4.0, 8.0, 16.0]},
    },
    "paper": {
        # ImageNet with VGG-16 is not in the harness; the MLP on CIFAR-10 with a longer schedule.
        "dataset": "cifar10", "seeds": 3, "train": _sgd(40000, 0.05),
        "selection": {"gamma": 0.01, "ratios": [4.0, 8.0, 16.0]},
    },
}


# ------------------------------------------------------------------------------ scaling factors
class ScalingFactors(nn.Module):
    """``lambda``: one factor per structure (here a neuron), multiplied into its output."""

    def __init__(self, n: int, init: float = 1.0) -> None:
        super().__init__()
        self.factor = nn.Parameter(torch.full((n,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def with_scaling_factors(mlp: nn.Sequential, init: float = 1.0) -> nn.Sequential:
    """``mlp`` (Flatten, Linear, ReLU, ..., Linear) with a factor after each hidden ReLU."""
    layers: list[nn.Module] = []
    for module in mlp:
        layers.append(module)
        if isinstance(module, nn.ReLU):
            width = next(m for m in reversed(layers) if isinstance(m, nn.Linear)).out_features
            layers.append(ScalingFactors(width, init))
    return nn.Sequential(*layers)


def factors(model: nn.Module) -> list[nn.Parameter]:
    return [m.factor for m in model.modules() if isinstance(m, ScalingFactors)]


def soft_threshold(z: torch.Tensor, a: float) -> torch.Tensor:
    """``S_a(z) = sign(z) * max(0, |z| - a)``, the proximal operator of ``a * ||.||_1``."""
    return torch.sign(z) * (z.abs() - a).clamp_min(0.0)


class APG(torch.optim.Optimizer):
    """The modified stochastic APG on the groups that set ``gamma`` (the scaling factors), momentum SGD
    with weight decay on the others (the weights), as the authors' ``APGNAG`` optimizer."""

    def __init__(self, groups: Iterable[dict], lr: float, momentum: float, weight_decay: float) -> None:
        super().__init__(list(groups), {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                        "gamma": None})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                if group["gamma"] is None:  # the weights
                    buf.mul_(mu).add_(p.grad + group["weight_decay"] * p)
                    p.sub_(lr * buf)
                    continue
                z = soft_threshold(p - lr * p.grad, lr * group["gamma"])
                buf.mul_(mu).add_(z - p)  # v_t = z_t - lambda_(t-1) + mu v_(t-1)
                p.copy_((z + mu * buf).clamp_min(0.0))  # lambda_t = max(0, z_t + mu v_t)
        return None


def apg_optimizer(model: nn.Module, cfg: TrainConfig, gamma: float) -> APG:
    scale_ids = {id(f) for f in factors(model)}
    weights = [p for p in model.parameters() if id(p) not in scale_ids]
    return APG([{"params": weights}, {"params": factors(model), "gamma": gamma, "weight_decay": 0.0}],
               lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


# ------------------------------------------------------------------------------ selection
def hidden_linears(model: nn.Sequential) -> list[int]:
    """Indices (in ``model``) of the Linear layers whose neurons carry a scaling factor."""
    return [i for i, m in enumerate(model) if isinstance(m, nn.Linear) and i + 2 < len(model)
            and isinstance(model[i + 2], ScalingFactors)]


def selected_neurons(model: nn.Sequential) -> list[torch.Tensor]:
    """The method's structure: the neurons whose factor is not zero, per hidden layer."""
    return [(f.detach() != 0).nonzero().flatten() for f in factors(model)]


def neurons_for_ratio(model: nn.Sequential, ratio: float) -> list[torch.Tensor]:
    """Neurons removed in increasing order of their factors over all hidden layers (every zero one
    first) until the Linear weights are at most ``1 / ratio`` of the network's; each layer keeps one."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    sizes = [linears[0].in_features] + [m.out_features for m in linears]

    def weights(widths: list[int]) -> int:
        return sum(a * b for a, b in zip(widths, widths[1:], strict=False))

    widths = list(sizes)
    target = weights(sizes) / ratio
    values = [f.detach() for f in factors(model)]
    order = sorted((float(v), layer, int(j)) for layer, f in enumerate(values) for j, v in enumerate(f))
    removed: list[set[int]] = [set() for _ in values]
    for _, layer, j in order:
        if weights(widths) <= target:
            break
        if widths[layer + 1] > 1:
            removed[layer].add(j)
            widths[layer + 1] -= 1
    return [torch.tensor(sorted(set(range(len(f))) - r), dtype=torch.long) for f, r in zip(values, removed,
                                                                                          strict=True)]


@torch.no_grad()
def remove_neurons(model: nn.Sequential, kept: list[torch.Tensor]) -> nn.Sequential:
    """The smaller plain MLP: each hidden layer keeps the rows of ``kept``; its factors are folded
    into the next layer's columns (``W' = W[:, kept] * lambda[kept]``), so that where only zero-factor
    neurons go the function is unchanged."""
    layers: list[nn.Module] = []
    prev: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    hidden = iter(kept)
    for i, module in enumerate(model):
        if isinstance(module, ScalingFactors):
            continue
        if not isinstance(module, nn.Linear):
            layers.append(controls.trainable_copy(module))
            continue
        rows = next(hidden) if i in hidden_linears(model) else torch.arange(module.out_features)
        w = module.weight[rows]
        if prev is not None:
            w = w[:, prev] * scale[prev]
        new = nn.Linear(w.shape[1], w.shape[0], bias=module.bias is not None).to(w)
        new.weight.copy_(w)
        if module.bias is not None:
            new.bias.copy_(module.bias[rows])
        layers.append(new)
        if i in hidden_linears(model):
            prev, scale = rows, model[i + 2].factor.detach()
        else:
            prev, scale = None, None
    return nn.Sequential(*layers).eval()


def weight_count(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


# ------------------------------------------------------------------------------ the run
@reproduction("huang2018", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    cfg, sel = run.train_config("train"), run.config["selection"]
    run.reseed("network")
    initial = run.model(run.config["model"])
    run.reseed("training")
    dense = run.train(controls.trainable_copy(initial), data.train, cfg, desc="baseline")
    model = with_scaling_factors(controls.trainable_copy(initial), sel["factor_init"])
    run.reseed("training")
    run.train(model, data.train, cfg, desc="with scaling factors (APG)",
              optimizer=apg_optimizer(model, cfg, sel["gamma"]))
    base_acc = run.accuracy(dense, data.test)

    kept = selected_neurons(model)
    selected = remove_neurons(model, kept)
    acc = run.accuracy(selected, data.test)
    curve = {float(r): run.accuracy(remove_neurons(model, neurons_for_ratio(model, r)), data.test)
             for r in sel["ratios"]}
    sizes = measure.compression_metrics(dense, selected, data.input_shape)
    dense_ms = measure.latency_ms(dense, data.input_shape)
    sel_ms = measure.latency_ms(selected, data.input_shape)
    n_factors = sum(f.numel() for f in factors(model))
    run.record(
        "imagenet-vgg-16-380",
        model=f"{run.config['model']} with a scaling factor per hidden neuron (APG), zero-factor neurons removed",
        metrics={
            **measure.accuracy_change(base_acc, acc),
            **{name: sizes[name] for name in ("params", "param_compression", "flops", "flop_reduction")},
            "weight_compression": weight_count(dense) / weight_count(selected),
            "zero_factor_pct": 100.0 * (1 - sum(len(k) for k in kept) / n_factors),
            **{f"neurons_kept_{i}": float(len(k)) for i, k in enumerate(kept)},
            "dense_latency_ms": dense_ms, "selected_latency_ms": sel_ms, "speedup": dense_ms / sel_ms,
        },
        differs=f"harness {run.config['model']} on {data.name} (neurons as the structures) instead of VGG-16 "
                f"on ImageNet; {cfg.steps} steps of batch {cfg.batch_size} for each of the baseline and the "
                f"network with factors; gamma {sel['gamma']:g}; momentum SGD (not Nesterov) for the weights",
        notes="latency: measure.latency_ms, batch 64, baseline vs selected network in the same run",
        baseline=(run.config["model"], "baseline_accuracy"),
        curves=[controls.Series("sparse structure selection (neurons removed by factor)", controls.RATIO,
                                controls.ACCURACY, curve),
                controls.pruning_curve(run, dense, sel["ratios"], None)],
    )
