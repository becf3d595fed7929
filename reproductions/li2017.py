"""Pruning Filters for Efficient ConvNets (Li, Kadav, Durdanovic, Samet & Graf, ICLR 2017;
arXiv:1608.08710).

Method (Sec. 3): the ``i``-th convolution maps ``n_i`` input channels to ``n_{i+1}`` feature maps with
``n_{i+1}`` filters ``F_{i,j}`` of shape ``n_i x k x k``. Each filter is ranked by the L1 norm of its
weights (Sec. 3.1),

    s_j = sum_{l=1}^{n_i} sum |K_l| = ||F_{i,j}||_1,

and the ``m`` filters with the smallest ``s_j`` are removed with their feature maps, together with the
kernels of the next convolution that read those maps (and, Sec. 4, the matching channels of the batch
normalisation after the convolution, and the columns of the linear layer after the last one). A new,
smaller *dense* model is built from the remaining weights: pruning ``m`` of the ``n_{i+1}`` filters of
layer ``i`` removes ``m / n_{i+1}`` of the operations of layer ``i`` and of layer ``i + 1``, with no sparse
kernel needed. Across layers (Sec. 3.3) the filters of each layer are chosen either *independently*
(the sums over all input channels) or *greedily* (the sums leave out the kernels reading feature maps
already removed from the previous layer). One rate is used per stage, sensitive layers are skipped;
the network is pruned once and retrained once (Sec. 3.4), with a constant learning rate of 0.001 for a
quarter of the original training epochs (Sec. 4).

Claims (Table 1 and Sec. 4.1 of the ICLR 2017 text, read in a copy mirrored on GitHub whose arXiv
version could not be identified; the abstract's "up to 34% for VGG-16 and 38% for ResNet-110" are
the same numbers): VGG-16 on CIFAR-10 (BN, no dropout; error 6.75%) pruned by 50% of the filters of
conv1 and conv8-13 (VGG-16-pruned-A) loses 34.2% of its FLOPs (3.13e8 -> 2.06e8, 1.52x) and 64% of its
parameters with error 6.60% after retraining (+0.15 pp accuracy), "for the same original accuracy";
ResNet-56-pruned-A/B: -10.4% / -27.6% FLOPs, error 6.96 -> 6.90 / 6.94; ResNet-110-pruned-A/B: -15.9%
/ -38.6% FLOPs, error 6.47 -> 6.45 / 6.70; ResNet-34 on ImageNet pruned-A/B/C: -15.5% / -24.2% / -7.5%
FLOPs, top-1 error 26.77 -> 27.44 / 27.83 / 27.52. The paper reports no wall-clock times.

Measured here (claim ``cifar-10-vgg-16-vgg-16-pruned-a``): the harness's plain VGG-style conv net
(:class:`atlas.harness.models.ConvNet`, 3x3 conv-BN-ReLU layers in stages, global average pooling, a
linear classifier) is trained, then pruned as VGG-16-pruned-A is: 50% of the filters of the first
convolution and of every convolution of the last stage (``layer_rates``), by L1 norm, and the smaller
dense model is retrained once. ``accuracy_change_pp`` is its test accuracy minus that of the same
dense model trained on for the same retraining steps without pruning (``baseline_accuracy``, the
declared baseline; ``dense_accuracy`` is the dense model before either). ``flops`` /
``flop_reduction`` are counted by ``torch.utils.flop_counter`` on the two dense models (dense over
pruned), ``dense_latency_ms`` / ``pruned_latency_ms`` / ``speedup`` their measured CPU forward time on
a batch of 32, median of 10 (``measure.latency_ms``), ``params`` / ``param_compression`` their parameter counts,
``weight_compression`` the ratio of their convolution and linear weights, ``filters_removed`` the
number of filters removed, ``no_retrain_accuracy_change_pp`` the L1-pruned model before retraining
(Fig. 2b). The curve: the same layers pruned at
``curve_scales`` times their rates (25%, 50%, 75% of their filters), retrained alike, against the
weight compression ratio they reach, beside global magnitude pruning of the same dense model at the
same ratios with the same retraining steps (:func:`atlas.harness.controls.pruning_curve`: unstructured
and so without the smaller dense model's speed-up). Exported for the papers that build on this one:
:func:`conv_layers`, :func:`filter_l1`, :func:`select_filters`, :func:`remove_filters`,
:func:`prune_filters`, :func:`weight_compression`, :func:`smaller_model_metrics`, :func:`train_dense`.

Harness differs: Fashion-MNIST (28x28, one channel) instead of CIFAR-10, and a small VGG-style
network of three stages of two convolutions (6-12-24 channels in the quick profile) instead of
VGG-16's five stages of 64-512; the VGG-16-pruned-A pattern (the first convolution and the last
stages) is mapped onto its first convolution and its last stage, which removes a similar share of the
FLOPs (about 37% here, 34% in the paper). A few hundred SGD steps (cosine learning rate) train the
dense model, one for every seed in the quick profile (``dense_per_seed``); the retraining is a
quarter of the dense budget at a constant rate, as in the paper, but at 0.01 rather than 0.001 in the
smoke and quick profiles (a few hundred steps at 0.001 barely move the weights; see ``PROFILES``;
the paper profile keeps 0.001). The quick profile tests on the first 3,000 test images. The ResNet claims (and the
ImageNet one) are not measured: the harness's ResNet costs several times the quick budget, and its
residual-block pruning rules (Sec. 3.3, Fig. 4) are not implemented here. The paper profile runs
CIFAR-10 with a ten-layer, five-stage VGG-style network of VGG-16's widths (64-128-256-512-512).

Quick verdict: inconclusive in the helper's run (one thread, loaded machine); the published record
(two threads) says where it lands. What was tried, on 3 seeds the pruned network (1.61x fewer FLOPs,
2.1x fewer weights) ended 2.9 pp below the dense network given the same retraining (95% interval -5.9
to +0.1 pp; per seed -1.9, -2.6, -4.2), against a FLOP-reduction check that passes (1.61x >= 1.44x).
Pruning 25% of the same layers' filters instead cost 0.5-2 pp, 75% cost 11-13 pp, while global
magnitude pruning of as many weights (unstructured, no speed-up) cost nothing at 2.1x after the same
retraining. Before the retraining the pruned network is at chance (-73 pp): the harness's net has 6
filters in its first convolution and 24 in its last stage, where VGG-16's pruned layers have 64 and
512 and "can drop at least 60% filters without affecting the accuracy" (Sec. 4.1). The first quick
run retrained at the paper's 0.001 for 100 steps and lost 5.8 pp; at 0.01 for 150 steps 2.9-3.0 pp.
On seed 10 a longer schedule (2,000 dense steps, 600 retraining steps) left -1.8 pp; on seeds 10 and
11 with the quick budget a last stage twice as wide (6-12-48, the 8x ratio of VGG-16's last to first
width) lost 1.5 and 0.8 pp where 6-12-24 lost 3.8 and 2.9. So the gap shrinks with the retraining
budget and with the width of the pruned layers: it is the harness's small network and short budget
more than the method; the paper profile (VGG-16's widths on CIFAR-10) is where the claim is tested
at the paper's scale.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction

#: Why a failed accuracy check is believed to be the harness's small network and budget; shown beside it.
DIAGNOSIS = """
The filter ranking (L1 norm, independent and greedy), the removal of the next layer's input channels
and of batch norm's channels, and the retraining were checked against Sec. 3 (unit tests). The
harness's network has 6 filters in its first convolution and 24 in its last stage; VGG-16's pruned
layers have 64 and 512 (Sec. 4.1: "at least 60% filters" can go without loss). The pruned network is
at chance before retraining. What was tried: the paper's retraining rate 0.001 for 100 steps lost 5.8
pp, 0.01 for 150 steps 2.9-3.0 pp; on seed 10 a longer schedule (2,000 dense, 600 retraining steps)
lost 1.8 pp; on seeds 10 and 11 a last stage twice as wide (6-12-48) lost 1.5 and 0.8 pp where
6-12-24 lost 3.8 and 2.9. The gap shrinks with the retraining budget and the width of the pruned
layers, so it is the quick profile's small network and short budget more than the method; the paper
profile (VGG-16's widths on CIFAR-10) is where the claim is tested at the paper's scale.
"""


class Net(Section):
    """The harness's VGG-style :class:`~atlas.harness.models.ConvNet` (``staged-conv``)."""

    chans: list[PositiveInt] = Field(min_length=1)  # channels of each stage
    per_stage: PositiveInt  # 3x3 conv-BN-ReLU layers per stage


class Config(Profile):
    net: Net
    dense: TrainConfig  # the trained network that is pruned
    retrain: TrainConfig  # Sec. 4: constant learning rate 0.001, a quarter of the original epochs
    # fraction of the filters removed from each convolution, in network order (VGG-16-pruned-A, Table 2:
    # 50% of conv1 and of conv8-13, the last two of VGG-16's five stages; 0 skips a layer)
    layer_rates: list[float] = Field(min_length=1)
    strategy: Literal["independent", "greedy"] = "independent"  # Sec. 3.3's two ways across layers
    curve_scales: list[float] = Field(min_length=3)  # the rates times each scale; 1.0 is the claim's
    dense_per_seed: bool = True  # False: one dense network (from seed 0) for every seed

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if len(self.layer_rates) != len(self.net.chans) * self.net.per_stage:
            raise ValueError("layer_rates needs one rate per convolution (len(chans) * per_stage)")
        if not all(0 <= r < 1 for r in self.layer_rates):
            raise ValueError("every layer rate must lie in [0, 1)")
        if 1.0 not in self.curve_scales or not all(s > 0 and max(self.layer_rates) * s < 1 for s in self.curve_scales):
            raise ValueError("curve_scales must hold 1.0 and keep every scaled rate below 1")
        return self


def _sgd(steps: int, lr: float, batch_size: int, schedule: str = "cosine") -> dict:
    """A training stage: SGD with momentum 0.9 and weight decay 5e-4 (the CIFAR recipe the paper follows)."""
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": schedule}


# VGG-16-pruned-A's pattern on a three-stage, two-per-stage net: the first convolution and the last stage.
RATES_A_3x2 = [0.5, 0.0, 0.0, 0.0, 0.5, 0.5]
# ... and on five stages of two (the paper profile): conv1 and the last two stages (VGG-16's conv8-13).
RATES_A_5x2 = [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5]
CURVE_SCALES = [0.5, 1.0, 1.5]  # 25%, 50% and 75% of the pruned layers' filters

# Budgets are optimizer steps; the retraining is a quarter of the dense budget (Sec. 4). quick: one
# dense network of 600 steps at batch 32 for the 3 seeds, then per seed 7 x 150 steps (the baseline
# continued, the claim's and two more pruned networks, the magnitude control at three ratios): 3,750
# steps of a 6-12-24 net. Its retraining rate is 0.01, not the paper's 0.001: the paper's 40 epochs at
# 0.001 are ~15,600 steps; in 100 steps at 0.001 (the first quick run, 400 dense steps at batch 64)
# the pruned network stayed 5.8 pp below its baseline, its weights barely moved from the pruned
# dense ones (the paper retrains "until the original accuracy is restored", Sec. 3.4).
PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "net": {"chans": [6, 12, 24], "per_stage": 2},
        "dense": _sgd(60, 0.05, 64), "retrain": _sgd(15, 0.01, 64, "constant"),
        "layer_rates": RATES_A_3x2, "curve_scales": CURVE_SCALES,
    },
    "quick": {
        "dataset": "fashion-mnist", "seeds": 3, "test_limit": 3000, "net": {"chans": [6, 12, 24], "per_stage": 2},
        "dense": _sgd(600, 0.05, 32), "retrain": _sgd(150, 0.01, 32, "constant"),
        "layer_rates": RATES_A_3x2, "curve_scales": CURVE_SCALES, "dense_per_seed": False,
    },
    "paper": {
        # CIFAR-10; VGG-16's widths on five stages of two convolutions. The dense network follows the
        # ResNet recipe the paper follows (164 epochs at batch 128, ~64,000 steps); the retraining 40
        # epochs (15,600 steps) at a constant 0.001 (Sec. 4).
        "dataset": "cifar10", "seeds": 3, "net": {"chans": [64, 128, 256, 512, 512], "per_stage": 2},
        "dense": _sgd(64000, 0.1, 128, "step"), "retrain": _sgd(15600, 0.001, 128, "constant"),
        "layer_rates": RATES_A_5x2, "curve_scales": CURVE_SCALES,
    },
}

CLAIM = "cifar-10-vgg-16-vgg-16-pruned-a"


# --------------------------------------------------------------------------------------- ranking
def conv_layers(model: nn.Module) -> list[str]:
    """The names of the model's convolutions, in network order."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def filter_l1(conv: nn.Conv2d, kept_inputs: torch.Tensor | None = None) -> torch.Tensor:
    """``s_j = ||F_j||_1`` for every filter ``j`` of ``conv`` (Sec. 3.1); with ``kept_inputs`` (the greedy
    strategy, Sec. 3.3) only the kernels reading those input channels are summed."""
    w = conv.weight.detach()
    if kept_inputs is not None:
        w = w[:, kept_inputs]
    return w.abs().sum(dim=(1, 2, 3))


def n_pruned(n: int, rate: float) -> int:
    """How many of ``n`` filters a rate removes (at least one is always kept)."""
    return min(n - 1, int(math.floor(rate * n + 1e-9)))


def keep_largest(score: torch.Tensor, n_remove: int) -> torch.Tensor:
    """The indices (ascending) of all but the ``n_remove`` smallest scores."""
    return torch.topk(score, len(score) - n_remove).indices.sort().values


def select_filters(model: nn.Module, rates: list[float], strategy: str = "independent",
                   generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The filters each convolution keeps: all but the ``rate`` fraction with the smallest L1 norm
    (``strategy``: ``independent`` or ``greedy``, Sec. 3.3); with ``generator``, chosen at random
    instead (the control)."""
    convs = [model.get_submodule(name) for name in conv_layers(model)]
    if len(rates) != len(convs):
        raise ValueError(f"{len(rates)} rates for {len(convs)} convolutions")
    kept: list[torch.Tensor] = []
    previous: torch.Tensor | None = None
    for conv, rate in zip(convs, rates, strict=True):
        if generator is not None:
            score = torch.rand(conv.out_channels, generator=generator)
        else:
            score = filter_l1(conv, previous if strategy == "greedy" else None).cpu()
        kept.append(keep_largest(score, n_pruned(conv.out_channels, rate)))
        previous = kept[-1]
    return kept


# ------------------------------------------------------------------------------------- surgery
def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def _sliced_conv(conv: nn.Conv2d, out_idx: torch.Tensor, in_idx: torch.Tensor) -> nn.Conv2d:
    new = nn.Conv2d(len(in_idx), len(out_idx), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None).to(conv.weight)
    new.weight.copy_(conv.weight[out_idx][:, in_idx])
    if conv.bias is not None:
        new.bias.copy_(conv.bias[out_idx])
    return new


def _sliced_bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats).to(bn.running_mean)
    if bn.affine:
        new.weight.copy_(bn.weight[idx])
        new.bias.copy_(bn.bias[idx])
    if bn.track_running_stats:
        new.running_mean.copy_(bn.running_mean[idx])
        new.running_var.copy_(bn.running_var[idx])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


@torch.no_grad()
def remove_filters(model: nn.Module, kept: list[torch.Tensor]) -> nn.Module:
    """A smaller dense copy of ``model`` whose ``i``-th convolution keeps only the filters ``kept[i]``:
    its weights (and bias), the batch normalisation after it, the next convolution's kernels reading
    the removed maps, and, after the last convolution, the first linear layer's columns of the removed
    maps (``in_features`` a multiple of the channels: channel-major flattening) are sliced. The model's
    modules must come in network order (a VGG-style chain, as :class:`~atlas.harness.models.ConvNet`)."""
    out = copy.deepcopy(model)
    modules = [(name, mod) for name, mod in out.named_modules()
               if isinstance(mod, nn.Conv2d | nn.BatchNorm2d | nn.Linear)]
    kept = [k.to(torch.long).cpu() for k in kept]
    conv_i, channels = -1, None  # the index of the last convolution seen, the channels it kept
    for name, mod in modules:
        if isinstance(mod, nn.Conv2d):
            conv_i += 1
            device = mod.weight.device
            in_idx = torch.arange(mod.in_channels) if channels is None else channels
            channels = kept[conv_i]
            _set(out, name, _sliced_conv(mod, channels.to(device), in_idx.to(device)))
        elif isinstance(mod, nn.BatchNorm2d) and channels is not None:
            _set(out, name, _sliced_bn(mod, channels.to(mod.running_mean.device)))
        elif isinstance(mod, nn.Linear) and channels is not None:
            old_c = model.get_submodule(conv_layers(model)[conv_i]).out_channels
            per = mod.in_features // old_c
            if per * old_c != mod.in_features:
                raise ValueError(f"{name}: {mod.in_features} inputs are not a multiple of {old_c} channels")
            cols = (channels[:, None] * per + torch.arange(per)[None, :]).flatten().to(mod.weight.device)
            new = nn.Linear(len(cols), mod.out_features, bias=mod.bias is not None).to(mod.weight)
            new.weight.copy_(mod.weight[:, cols])
            if mod.bias is not None:
                new.bias.copy_(mod.bias)
            _set(out, name, new)
            channels = None  # only the first linear layer reads feature maps
    if conv_i + 1 != len(kept):
        raise ValueError(f"{len(kept)} kept-filter sets for {conv_i + 1} convolutions")
    return out.train(model.training)  # the new modules in the mode of the model they came from


def prune_filters(model: nn.Module, rates: list[float], strategy: str = "independent",
                  generator: torch.Generator | None = None) -> nn.Module:
    """The method: each convolution's ``rate`` fraction of smallest-L1 filters removed (at random with
    ``generator``), as a smaller dense model."""
    return remove_filters(model, select_filters(model, rates, strategy, generator))


def weight_compression(dense: nn.Module, pruned: nn.Module) -> float:
    """Convolution and linear weights of ``dense`` over those of the smaller ``pruned`` model: the
    compression ratio of the curve (structured pruning removes the weights from the model)."""
    def count(m: nn.Module) -> int:
        params = dict(m.named_parameters())
        return sum(params[n].numel() for n in controls.weight_names(m))
    return count(dense) / count(pruned)


def smaller_model_metrics(dense: nn.Module, pruned: nn.Module, shape: tuple[int, ...]) -> dict[str, float]:
    """What structured pruning buys, measured on the two dense models: ``flops`` (of ``pruned``),
    ``flop_reduction`` and ``flops_removed_pct`` (``torch.utils.flop_counter``), ``dense_latency_ms`` /
    ``pruned_latency_ms`` / ``speedup`` (CPU forward time, batch 32, median of 10), ``params``,
    ``param_compression`` and ``weight_compression`` (convolution and linear weights)."""
    flops_dense, flops_pruned = measure.flops(dense, shape), measure.flops(pruned, shape)
    lat_dense = measure.latency_ms(dense, shape, batch=32, repeats=10)
    lat_pruned = measure.latency_ms(pruned, shape, batch=32, repeats=10)
    return {
        "flops": flops_pruned, "flop_reduction": flops_dense / flops_pruned,
        "flops_removed_pct": 100.0 * (flops_dense - flops_pruned) / flops_dense,
        "dense_latency_ms": lat_dense, "pruned_latency_ms": lat_pruned, "speedup": lat_dense / lat_pruned,
        "params": measure.count_params(pruned),
        "param_compression": measure.count_params(dense) / measure.count_params(pruned),
        "weight_compression": weight_compression(dense, pruned),
    }


# ------------------------------------------------------------------------------------ the paper
def train_dense(run: Run) -> nn.Module:
    """The trained network that is pruned: per seed, or once from seed 0 (``dense_per_seed``); cached."""
    cfg, net = run.train_config("dense"), run.config["net"]
    per_seed = run.config["dense_per_seed"]

    def fit(model: nn.Module) -> None:
        run.reseed("li2017 dense data", seed=None if per_seed else 0)
        run.train(model, run.dataset().train, cfg, desc="dense")

    return run.cached_model("li2017-dense", {"net": net, "train": cfg.model_dump()},
                            build=lambda: run.model("staged-conv", **net), fit=fit, per_seed=per_seed)


def retrained(run: Run, model: nn.Module, stage: str) -> nn.Module:
    """``model`` retrained once with the ``retrain`` section (Sec. 3.4). Every retraining of a seed sees
    the same minibatches (one data stream), so that the differences between them are paired."""
    run.reseed("li2017 retrain")
    run.train(model, run.dataset().train, run.train_config("retrain"), desc=stage)
    return model.eval()


@reproduction("li2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = run.config
    data = run.dataset()
    shape = data.input_shape
    rates, strategy = cfg["layer_rates"], cfg["strategy"]
    dense = train_dense(run)
    dense_acc = run.accuracy(dense, data.test)
    base = run.accuracy(retrained(run, controls.trainable_copy(dense), "dense, continued"), data.test)

    curve: dict[float, float] = {}
    for scale in cfg["curve_scales"]:
        pruned = prune_filters(controls.trainable_copy(dense), [r * scale for r in rates], strategy)
        if scale == 1.0:
            one_shot = run.accuracy(pruned, data.test)
            claim_model = retrained(run, pruned, "pruned")
            curve[round(weight_compression(dense, claim_model), 2)] = acc = run.accuracy(claim_model, data.test)
        else:
            curve[round(weight_compression(dense, pruned), 2)] = run.accuracy(
                retrained(run, pruned, f"pruned x{scale:g}"), data.test)

    removed = sum(c.out_channels for c in (dense.get_submodule(n) for n in conv_layers(dense))) - sum(
        c.out_channels for c in (claim_model.get_submodule(n) for n in conv_layers(claim_model)))
    net = cfg["net"]
    run.record(
        CLAIM,
        model=(f"staged-conv {'-'.join(map(str, net['chans']))} x{net['per_stage']}: "
               f"{removed} filters removed by L1 norm ({strategy}), rates {rates}, retrained"),
        metrics={
            **measure.accuracy_change(base, acc),
            "dense_accuracy": dense_acc,
            "no_retrain_accuracy_change_pp": one_shot - base,
            **smaller_model_metrics(dense, claim_model, shape),
            "filters_removed": removed,
        },
        baseline=("staged-conv", "baseline_accuracy"),
        baseline_spec=dict(net),
        diagnosis=DIAGNOSIS,
        differs=(f"{data.name} instead of CIFAR-10; a {len(net['chans'])}-stage VGG-style net "
                 f"({'-'.join(map(str, net['chans']))}, {net['per_stage']} convs a stage) instead of VGG-16, "
                 f"VGG-16-pruned-A's pattern on its first convolution and last stage; {cfg['dense']['steps']} "
                 f"dense steps, {cfg['retrain']['steps']} retraining steps at a constant "
                 f"{cfg['retrain']['lr']:g}"),
        curves=[
            controls.Series("L1-norm filter pruning (Li et al.)", controls.RATIO, controls.ACCURACY, curve),
            controls.pruning_curve(run, dense, sorted(curve), run.train_config("retrain")),
        ],
    )
