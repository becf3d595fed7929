"""Pruning Convolutional Neural Networks for Resource Efficient Inference (Molchanov, Tyree, Karras,
Aila & Kautz, ICLR 2017; arXiv:1611.06440).

Method: a trained network is pruned one feature map at a time, greedily, with a little fine-tuning by
backpropagation between removals. Each remaining feature map ``z_l^(k)`` of every convolution ``l`` is
scored by a criterion ``Theta``, the map of least score in the whole network is removed (its filter, and
the next layer's kernels reading it), the network is fine-tuned for a few updates, and so on until the
target size is reached. The paper's criterion approximates, by a first-order Taylor expansion of the
cost ``C`` around the map's value, how much the cost changes when the map is set to zero:

    Theta_TE(z_l^(k)) = | (1 / M) sum_m  dC/dz_{l,m}^(k) * z_{l,m}^(k) |,

``M`` the length of the vectorised feature map, computed for each example of a minibatch and averaged
over the examples (and here over the minibatches of the updates since the last removal). The
criterion's scale differs between layers, so it is normalised per layer before the network-wide
ranking, ``Theta^(z_l^(k)) = Theta(z_l^(k)) / sqrt(sum_j Theta(z_l^(j))^2)``. The paper compares it with
other criteria, among them the norm of a filter's weights and the mean activation of its map.

Claims (abstract of the ICLR 2017 text; its sections and tables could not be read where this file
was written, so only the abstract's statements are used): the Taylor criterion "demonstrates superior
performance compared to other criteria, e.g. the norm of kernel weights or feature map activation",
for pruning large CNNs fine-tuned to Birds-200 and Flowers-102; pruning gives "more than 10x
theoretical (5x practical)" reduction of a 3D-convolutional gesture classifier's cost "with a small drop
in accuracy"; results are also shown on ImageNet. No number of the abstract is checked; its
comparison of criteria is (claim ``birds-200-flowers-102-nvidia-gesture-ima``): the Taylor
criterion's pruned network must be more accurate than the weight-norm criterion's at the same size
and with the same fine-tuning.

Measured here: from one trained network (the ancestor's, :mod:`reproductions.li2017`: the harness's
VGG-style ConvNet, trained by :func:`~reproductions.li2017.train_dense`), each criterion prunes one map
every ``prune_every`` fine-tuning steps until the convolution and linear weights of the smaller dense
network are ``1 / target_ratios[-1]`` of the dense ones (one map is always kept in every layer); the
fine-tuning goes on to the end of the ``finetune`` budget, the same for every criterion, on the same
minibatches (a paired comparison). A removed map
is masked to zero while the network fine-tunes (which leaves its output exactly as if it were gone)
and physically removed at the end by Li et al.'s surgery (:func:`~reproductions.li2017.remove_filters`).
The weight-norm criterion is Li et al.'s L1 norm of the filter (:func:`~reproductions.li2017.filter_l1`),
normalised per layer like the Taylor criterion, so that the two differ by the criterion alone; the
profiles may add the mean-activation criterion. Recorded: ``accuracy`` (Taylor),
``weight_accuracy`` and ``gain_over_weight_norm_pp`` (Taylor minus weight norm; the check),
``baseline_accuracy`` (the dense network fine-tuned for the same steps without pruning) and
``accuracy_change_pp``, ``dense_accuracy``, ``flops`` / ``flop_reduction``, ``dense_latency_ms`` /
``pruned_latency_ms`` / ``speedup`` (the smaller dense network's measured CPU forward time, batch 32),
``params`` / ``param_compression``, ``weight_compression`` and ``maps_removed`` of the Taylor network
(``maps_removed_without_finetuning``: maps any criterion still had to remove when the budget ended,
without fine-tuning; 0 in the smoke and quick profiles),
and with the activation criterion ``activation_accuracy`` / ``gain_over_activation_pp``. The curve:
each criterion's network when it first reaches each of ``target_ratios`` (a snapshot of the one
pruning run, fine-tuned for the ``prune_every`` steps since its last removal), beside global magnitude
pruning of the same dense network at the same ratios fine-tuned for the whole ``finetune`` budget
(:func:`atlas.harness.controls.pruning_curve`; so the control has at least the method's retraining at
every level, and exactly it at the last).

Harness differs: Fashion-MNIST trained from scratch instead of transfer learning from ImageNet to
Birds-200 / Flowers-102; the small VGG-style network of li2017's quick profile instead of VGG-16 /
AlexNet; a few hundred steps of fine-tuning in all, a removal every ``prune_every`` (4) steps (the
paper's interval was not read); the target size is a compression ratio of the weights rather than a
FLOP budget, and the paper's FLOP regularisation of the criterion is not used.

Quick verdict: inconclusive. On 3 seeds, both criteria pruning 32-33 of the 84 feature maps to 2.5x
fewer weights (1.9-2.2x fewer FLOPs), the Taylor network ended 1.3 pp below the weight-norm one (95%
interval -3.0 to +0.5 pp; per seed -1.3, -0.5, -1.9) and 5.9 pp below the dense network fine-tuned
alike. A first run of the profile with 200 fine-tuning steps and a removal every 5 (cut for time)
gave +0.3 pp (-0.4 to +1.0; +0.1, +0.2, +0.6): the sign follows the schedule, so the harness cannot
tell the two criteria apart at the end of the run. During the run they differ: at 2.0x, 4 steps
after a removal, the Taylor network stood at 76-79% and the weight-norm one at 71-72% on every seed
(the Taylor criterion removes the maps whose loss the network notices least, which is what it
estimates), but the fine-tuning left after the last removal erases the difference. Global magnitude
pruning (unstructured, no smaller dense model) lost less than 1 pp at every level. The paper's
setting differs in ways that favour a data-driven criterion (large ImageNet networks adapted to small
fine-grained data sets, where many maps are unused by the new task); that setting is beyond the
harness.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from atlas_reproductions.li2017 import (
    Net,
    conv_layers,
    filter_l1,
    remove_filters,
    smaller_model_metrics,
    train_dense,
)
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction

Criterion = Literal["taylor", "weight", "activation"]


class Config(Profile):
    net: Net  # the ancestor's VGG-style ConvNet (li2017's ``net`` section)
    dense: TrainConfig  # the trained network that is pruned (li2017's ``dense`` section)
    dense_per_seed: bool = True  # False: one dense network (from seed 0) for every seed
    finetune: TrainConfig  # the whole pruning phase: fine-tuning, with a removal every prune_every steps
    prune_every: PositiveInt  # fine-tuning updates between two removals (one feature map each)
    target_ratios: list[float] = Field(min_length=3)  # weight compression levels; the last is the claim's
    criteria: list[Criterion] = ["taylor", "weight"]  # the Taylor criterion and those it is compared with

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if sorted(self.target_ratios) != self.target_ratios or self.target_ratios[0] <= 1:
            raise ValueError("target_ratios must rise, above 1")
        if self.criteria[:2] != ["taylor", "weight"]:
            raise ValueError("criteria must start with taylor and weight (the claim's comparison)")
        return self


def _sgd(steps: int, lr: float, batch_size: int, schedule: str = "cosine") -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": schedule}


# The dense network is li2017's (same sections, so the same cached model). quick: per seed, 6 x 160
# fine-tuning steps at batch 32 (the two criteria, the dense baseline, the control at three ratios)
# from one dense network of 600 steps for the 3 seeds: 3,480 steps of the 6-12-24 net. 2.5x of the
# weights takes ~32 removals: 128 steps, then ~30 more of fine-tuning. (A first run with 200 steps and
# a removal every 5 took 76 s of CPU under a load of 10.)
PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "net": {"chans": [6, 12, 24], "per_stage": 2},
        "dense": _sgd(60, 0.05, 64), "finetune": _sgd(80, 0.01, 64, "constant"), "prune_every": 2,
        "target_ratios": [1.5, 2.0, 2.5],
    },
    "quick": {
        "dataset": "fashion-mnist", "seeds": 3, "test_limit": 3000, "net": {"chans": [6, 12, 24], "per_stage": 2},
        "dense": _sgd(600, 0.05, 32), "dense_per_seed": False,
        "finetune": _sgd(160, 0.01, 32, "constant"), "prune_every": 4, "target_ratios": [1.5, 2.0, 2.5],
    },
    "paper": {
        # CIFAR-10 and li2017's paper network (VGG-16's widths, five stages of two convolutions),
        # trained from scratch; the three criteria the abstract names.
        "dataset": "cifar10", "seeds": 3, "net": {"chans": [64, 128, 256, 512, 512], "per_stage": 2},
        "dense": _sgd(64000, 0.1, 128, "step"), "finetune": _sgd(30000, 0.001, 128, "constant"),
        "prune_every": 10, "target_ratios": [1.5, 2.0, 3.0], "criteria": ["taylor", "weight", "activation"],
    },
}

CLAIM = "birds-200-flowers-102-nvidia-gesture-ima"


# ------------------------------------------------------------------------------------ criteria
def feature_maps(model: nn.Module) -> list[nn.Module]:
    """For each convolution (network order), the first ReLU after it: its output is the layer's
    feature maps ``z_l``, where a removed map is masked and the criteria are measured."""
    names = conv_layers(model)
    modules = list(model.named_modules())
    out = []
    for name in names:
        start = next(i for i, (n, _) in enumerate(modules) if n == name)
        out.append(next(m for _, m in modules[start + 1:] if isinstance(m, nn.ReLU)))
    return out


def taylor(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``|(1/M) sum_m dC/dz_m z_m|`` per example and map, averaged over the examples: (C,) for a
    batch of maps (B, C, H, W)."""
    return (activation * grad).mean(dim=(2, 3)).abs().mean(dim=0)


def mean_activation(activation: torch.Tensor) -> torch.Tensor:
    """The mean activation of each map over its positions and the examples, (C,)."""
    return activation.mean(dim=(2, 3)).mean(dim=0)


def normalise(score: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """``Theta / sqrt(sum_j Theta_j^2)`` over the layer's remaining maps (removed maps: ``inf``)."""
    s = torch.where(alive, score, torch.zeros_like(score))
    norm = s.pow(2).sum().sqrt().clamp_min(torch.finfo(s.dtype).tiny)
    return torch.where(alive, s / norm, torch.full_like(s, float("inf")))


class MapPruner:
    """The iterative pruning of one network: masks on its feature maps, the criterion's statistics
    gathered on every training step, and one removal every ``every`` steps until ``target`` (a
    compression ratio of the weights) is reached; ``snapshots`` keeps a copy of the network when it
    first reaches each of ``levels``."""

    def __init__(self, model: nn.Module, criterion: str, every: int, levels: list[float]) -> None:
        self.model, self.criterion, self.every, self.levels = model, criterion, every, list(levels)
        self.reference = copy.deepcopy(model)  # the dense network: what the ratio is counted against
        self.dense_weights = sum(p.numel() for n, p in model.named_parameters() if n in controls.weight_names(model))
        self.relus = feature_maps(model)
        self.convs = [model.get_submodule(n) for n in conv_layers(model)]
        self.masks = [torch.ones(c.out_channels, dtype=torch.bool, device=c.weight.device) for c in self.convs]
        self.stats = [torch.zeros(c.out_channels, dtype=torch.float64) for c in self.convs]
        self.steps = 0
        self.removed = 0
        self.snapshots: dict[float, nn.Module] = {}
        self.handles = [relu.register_forward_hook(self._hook(i)) for i, relu in enumerate(self.relus)]

    def _hook(self, layer: int):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            out = out * self.masks[layer].to(out.dtype)[None, :, None, None]
            if self.criterion == "taylor" and out.requires_grad:
                a = out.detach()
                out.register_hook(lambda g: self._add(layer, taylor(a, g.detach())))
            elif self.criterion == "activation" and module.training:
                self._add(layer, mean_activation(out.detach()))
            return out
        return hook

    def _add(self, layer: int, value: torch.Tensor) -> None:
        self.stats[layer] += value.double().cpu()

    def kept(self) -> list[torch.Tensor]:
        return [m.nonzero().flatten().cpu() for m in self.masks]

    def ratio(self) -> float:
        """The compression ratio of the convolution and linear weights the masks leave: counted from the
        masks (as :func:`~reproductions.li2017.weight_compression` counts the smaller network), for a
        VGG-style chain whose linear layers follow its last convolution."""
        kept, previous = 0, None
        for conv, mask in zip(self.convs, self.masks, strict=True):
            inputs = conv.in_channels if previous is None else int(previous.sum())
            kept += int(mask.sum()) * inputs * conv.weight[0, 0].numel()
            previous = mask
        linears = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        per = linears[0].in_features // len(self.masks[-1])
        kept += linears[0].out_features * per * int(self.masks[-1].sum())
        kept += sum(m.weight.numel() for m in linears[1:])
        return self.dense_weights / kept

    def scores(self) -> list[torch.Tensor]:
        """Each layer's normalised criterion over its remaining maps (``inf`` where none may go)."""
        out = []
        for conv, stat, mask in zip(self.convs, self.stats, self.masks, strict=True):
            raw = filter_l1(conv).double().cpu() if self.criterion == "weight" else stat
            alive = mask.cpu() if int(mask.sum()) > 1 else torch.zeros_like(mask.cpu())  # keep one map
            out.append(normalise(raw, alive))
        return out

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        """The training hook: every ``every`` steps, snapshot the levels reached, then remove one map."""
        self.steps += 1
        if self.steps % self.every == 0:
            self.remove_one()

    @torch.no_grad()
    def remove_one(self) -> None:
        """Snapshot the levels the network has reached; unless the last is reached, remove the map of
        least normalised criterion in the network (one map is always kept in every layer)."""
        current = self.ratio()
        while self.levels and current >= self.levels[0]:
            self.snapshots[self.levels.pop(0)] = self.pruned()
        if not self.levels:
            return
        scores = self.scores()
        layer = min(range(len(scores)), key=lambda i: float(scores[i].min()))
        j = int(scores[layer].argmin())
        if not torch.isfinite(scores[layer][j]):
            raise RuntimeError("no feature map left to remove")
        self.masks[layer][j] = False
        self.convs[layer].weight[j] = 0.0  # the removed filter stays at zero (its mask alone sets the output)
        self.removed += 1
        for stat in self.stats:
            stat.zero_()

    def finish(self) -> int:
        """Remove maps without fine-tuning until the last level is reached (a budget too short for the
        schedule, as the contract test's); returns how many were removed so."""
        before = self.removed
        while self.levels:
            self.remove_one()
        return self.removed - before

    def pruned(self) -> nn.Module:
        """The smaller dense network the masks describe (the same outputs as the masked one)."""
        was = self.model.training
        self.close()
        small = remove_filters(self.model, self.kept()).eval()
        self.handles = [relu.register_forward_hook(self._hook(i)) for i, relu in enumerate(self.relus)]
        self.model.train(was)
        return small

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def prune_iteratively(run: Run, dense: nn.Module, criterion: str
                      ) -> tuple[nn.Module, dict[float, nn.Module], int, int]:
    """One criterion's pruning run from ``dense``: the final smaller network, the snapshots at the
    profile's ``target_ratios`` (the last one is the final network), the number of maps removed and
    how many of them were removed after the ``finetune`` budget ended (0 when the budget suffices)."""
    cfg = run.config
    model = controls.trainable_copy(dense)
    pruner = MapPruner(model, criterion, cfg["prune_every"], cfg["target_ratios"])
    run.reseed("molchanov2017 fine-tuning")  # every criterion and the baseline see the same minibatches
    run.train(model, run.dataset().train, run.train_config("finetune"), desc=f"{criterion} pruning",
              after_step=pruner.after_step)
    late = pruner.finish()
    final = pruner.pruned()
    pruner.close()
    pruner.snapshots[cfg["target_ratios"][-1]] = final
    return final, pruner.snapshots, pruner.removed, late


@reproduction("molchanov2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = run.config
    data = run.dataset()
    shape = data.input_shape
    dense = train_dense(run)
    dense_acc = run.accuracy(dense, data.test)
    baseline = controls.trainable_copy(dense)
    run.reseed("molchanov2017 fine-tuning")
    run.train(baseline, data.train, run.train_config("finetune"), desc="dense, continued")
    base = run.accuracy(baseline, data.test)

    accuracy: dict[str, float] = {}
    removed_late = 0
    curves: list[controls.Series] = []
    labels = {"taylor": "Taylor criterion (Molchanov et al.)", "weight": "filter L1 norm criterion (Li et al.)",
              "activation": "mean activation criterion"}
    for criterion in cfg["criteria"]:
        final, snapshots, removed, late = prune_iteratively(run, dense, criterion)
        removed_late += late
        accuracy[criterion] = run.accuracy(final, data.test)
        curves.append(controls.Series(labels[criterion], controls.RATIO, controls.ACCURACY,
                                      {r: run.accuracy(m, data.test) for r, m in sorted(snapshots.items())}))
        if criterion == "taylor":
            model, maps_removed = final, removed
    curves.append(controls.pruning_curve(run, dense, cfg["target_ratios"], run.train_config("finetune")))

    extra = ({"activation_accuracy": accuracy["activation"],
              "gain_over_activation_pp": accuracy["taylor"] - accuracy["activation"]}
             if "activation" in accuracy else {})
    net = cfg["net"]
    run.record(
        CLAIM,
        model=(f"staged-conv {'-'.join(map(str, net['chans']))} x{net['per_stage']}: {maps_removed} feature maps "
               f"removed one at a time by the Taylor criterion, to {cfg['target_ratios'][-1]:g}x of the weights"),
        metrics={
            **measure.accuracy_change(base, accuracy["taylor"]),
            "dense_accuracy": dense_acc,
            "weight_accuracy": accuracy["weight"],
            "gain_over_weight_norm_pp": accuracy["taylor"] - accuracy["weight"],
            **extra,
            **smaller_model_metrics(dense, model, shape),
            "maps_removed": maps_removed,
            "maps_removed_without_finetuning": removed_late,  # all criteria; 0 when the budget suffices
        },
        baseline=("staged-conv", "baseline_accuracy"),
        baseline_spec=dict(net),
        differs=(f"{data.name} trained from scratch instead of transfer learning to Birds-200 / Flowers-102; a "
                 f"small VGG-style net ({'-'.join(map(str, net['chans']))}) instead of VGG-16 / AlexNet; one map "
                 f"removed every {cfg['prune_every']} of {cfg['finetune']['steps']} fine-tuning steps; the weight "
                 "criterion is Li et al.'s L1 norm, normalised per layer"),
        curves=curves,
    )
