"""Pruning ConvNets Online for Efficient Specialist Models (Guo & Potkonjak, CVPR Workshops 2017;
doi:10.1109/CVPRW.2017.58; no arXiv version).

Method (the abstract; the paper's sections could not be read here): a CNN trained on many classes is
used where only a subset of them needs to be classified, a *specialist*. For that subset the network
is pruned "online", without the costly retraining step: the filters the subset does not need are
removed, and to compensate, the redundancy among filters and class-specific features is used; "even
simple methods such as replacing channels with mean or with the most correlated channel" raise the
pruned model's accuracy. Implemented here, one shot and without any training:

* The specialist: the network's logits restricted to the ``k`` classes of the subset (its prediction
  is the arg-max over them), evaluated on the test images of those classes.
* Which filters go: in each convolution, the ``rate`` fraction of filters whose feature maps (after
  batch normalisation and ReLU) have the smallest mean activation over ``samples`` training images of
  the subset (class-specific statistics; the criterion is chosen here).
* Compensation, for every removed channel ``c`` of a layer, in the feature maps the next layer reads:
  ``zero`` (plain removal), ``mean`` (the channel replaced by its mean map over the subset's images,
  ``E[a_c]`` at each position: a constant input, which the next layer can fold into its bias), and
  ``correlated`` (the channel replaced by a copy of the kept channel of the same layer most correlated
  with it over the subset's images).

Claims (the abstract, CVPR 2017 Workshops text): "when only a subset of the classes need to be
classified, we could prune a model and achieve reasonable classification accuracy without retraining
... We show that even simple methods such as replacing channels with mean or with the most correlated
channel can boost the accuracy of the pruned model to reasonable levels." Claim
``specialist-compensation``: checked on the harness as ``compensation_gain_pp``, the specialist's
accuracy with the removed channels replaced by their mean minus with them removed, at the same
filters, no retraining: above 0. The paper's numbers (its models, data sets and tables) were not read;
none is used.

Measured (claim ``specialist-compensation``): per seed a random subset of ``specialist_classes``
classes; from one trained network (li2017's ``train_dense``: the harness's VGG-style conv net), the
filters of ``layer_rates`` chosen as above. Recorded: ``baseline_accuracy`` (the unpruned network as
the specialist), ``zero_accuracy``, ``mean_accuracy`` (= ``accuracy``), ``correlated_accuracy``,
``compensation_gain_pp`` (mean minus zero), ``correlated_gain_pp`` (correlated minus zero),
``accuracy_change_pp`` (mean against the unpruned specialist), ``generalist_mean_accuracy`` (the same
pruning and mean compensation with the statistics of all classes' images: what the specialisation
adds), and from li2017's ``smaller_model_metrics`` the smaller dense network's ``flops`` /
``flop_reduction``, ``dense_latency_ms`` / ``pruned_latency_ms`` / ``speedup`` (CPU, batch 32),
``params`` / ``param_compression`` / ``weight_compression``. Curve: the mean-compensated specialist
at ``curve_scales`` times the rates against the weight compression of the smaller network, beside
global magnitude pruning of the same network at the same ratios, without retraining (the method
retrains nothing), evaluated as the same specialist.

Imports: :mod:`reproductions.li2017` (Li et al., ICLR 2017): its filter surgery for the smaller
network's FLOPs and latency, and its trained network (plumbing of the filter-pruning family; the paper
prunes filters as Li et al. do, by a different criterion and without retraining).

Harness differs: Fashion-MNIST instead of the paper's data sets; li2017's small VGG-style network
(6-12-24 channels in the quick profile) instead of the paper's ImageNet models; the criterion (mean
activation), the subset size, the statistics' images and the per-position mean are chosen here. The
mean compensation is evaluated with the removed maps held at their means (its accuracy); the smaller
network whose FLOPs and latency are measured drops them (folding the constant into the next
convolution's bias map is not built).

Quick verdict: inconclusive (a development run, 5 seeds, one thread on a machine loaded ~6x, 33 s of CPU).
With a quarter of every layer's filters removed (1.6x fewer FLOPs) and no retraining, replacing the
removed maps by their means raised the specialist's accuracy over plain removal on four seeds of
five (``compensation_gain_pp`` +10.2, -0.7, +2.6, +18.1, +32.6; 95% interval -4.0 to +29.1: the seeds'
class subsets differ, and how much plain removal hurts differs with them); the most correlated channel
did about as well (+8.0, -1.3, +5.5, +16.7, +33.3). The mean-compensated specialist stayed within
0.9-4.5 pp of the unpruned one, and the class-specific statistics mattered: the same pruning chosen
and compensated with all classes' images lost 4-33 pp more. Global magnitude pruning without
retraining (unstructured, no smaller network) kept the unpruned accuracy at 1.2x and 1.7x; at 3.9x both
fell to 34-76%.
"""

from __future__ import annotations

import math

import torch
from atlas_reproductions.li2017 import (
    Net,
    n_pruned,
    remove_filters,
    smaller_model_metrics,
    train_dense,
    weight_compression,
)
from pydantic import Field, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, reproduction
from atlas.harness.data import Split


class Config(Profile):
    net: Net  # li2017's VGG-style network (its train_dense reads net, dense, dense_per_seed)
    dense: TrainConfig
    dense_per_seed: bool = True
    specialist_classes: PositiveInt  # k: the classes the specialist is asked to tell apart
    samples: PositiveInt  # training images of the subset whose feature maps give the statistics
    layer_rates: list[float] = Field(min_length=1)  # fraction of each convolution's filters removed
    curve_scales: list[float] = Field(min_length=3)  # the rates times each scale; 1.0 is the claim's


def _sgd(steps: int, lr: float, batch_size: int, schedule: str = "cosine") -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": schedule}


PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "net": {"chans": [6, 12, 24], "per_stage": 2}, "dense": _sgd(60, 0.05, 64),
        "specialist_classes": 3, "samples": 64, "layer_rates": [0.25] * 6, "curve_scales": [0.5, 1.0, 2.0],
    },
    "quick": {
        # li2017's quick network and dense training (the same cached model); no training after it.
        "dataset": "fashion-mnist", "seeds": 5, "net": {"chans": [6, 12, 24], "per_stage": 2},
        "dense": _sgd(600, 0.05, 32), "dense_per_seed": False, "specialist_classes": 3, "samples": 256,
        "layer_rates": [0.25] * 6, "curve_scales": [0.5, 1.0, 2.0],
    },
    "paper": {
        # CIFAR-10 with li2017's five-stage network at VGG-16's widths and its dense recipe.
        "dataset": "cifar10", "seeds": 3, "net": {"chans": [64, 128, 256, 512, 512], "per_stage": 2},
        "dense": _sgd(64000, 0.1, 128, "step"), "specialist_classes": 3, "samples": 1024,
        "layer_rates": [0.25] * 10, "curve_scales": [0.5, 1.0, 2.0],
    },
}

CLAIM = "specialist-compensation"  # the claim id in papers.yaml
MODES = ("zero", "mean", "correlated")


# ------------------------------------------------------------------------------------ the specialist
class Specialist(nn.Module):
    """The network's logits restricted to the subset's classes (in the subset's order)."""

    def __init__(self, model: nn.Module, classes: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("classes", classes.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.classes]


def specialist_split(split: Split, classes: torch.Tensor) -> Split:
    """The examples of ``classes``, labelled by their position in ``classes``."""
    pos = torch.full((int(split.y.max()) + 1,), -1, dtype=torch.long)
    pos[classes] = torch.arange(len(classes))
    keep = pos[split.y] >= 0
    return Split(split.x[keep], pos[split.y[keep]])


def feature_maps(model: nn.Module) -> list[nn.Module]:
    """The ReLU after each convolution (conv, batch norm, ReLU): where each layer's feature maps leave it."""
    mods = list(model.modules())
    out = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            if not (i + 2 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d) and isinstance(mods[i + 2], nn.ReLU)):
                raise ValueError("every convolution must be followed by batch normalisation and a ReLU")
            out.append(mods[i + 2])
    return out


@torch.no_grad()
def activations(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's feature maps (after its ReLU) on ``x``, the model in eval mode."""
    maps: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda mod, i, o: maps.append(o.detach())) for m in feature_maps(model)]
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return maps


# ------------------------------------------------------------------------------------- the pruning
def removed_filters(maps: list[torch.Tensor], rates: list[float]) -> list[torch.Tensor]:
    """In each layer, the ``n_pruned(C, rate)`` channels of smallest mean activation (ascending indices)."""
    if len(maps) != len(rates):
        raise ValueError(f"{len(rates)} rates for {len(maps)} layers")
    out = []
    for a, r in zip(maps, rates, strict=True):
        score = a.mean(dim=(0, 2, 3))
        out.append(torch.argsort(score)[: n_pruned(a.shape[1], r)].sort().values)
    return out


def most_correlated(a: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """For each removed channel, the kept channel of the layer whose maps correlate most with it (over
    images and positions); a constant channel is correlated with none and gets the first kept one."""
    c = a.shape[1]
    flat = a.transpose(0, 1).reshape(c, -1).double()
    flat = flat - flat.mean(1, keepdim=True)
    norm = flat.norm(dim=1).clamp_min(1e-12)
    corr = (flat @ flat.T) / (norm[:, None] * norm[None, :])
    kept = torch.tensor([j for j in range(c) if j not in set(removed.tolist())], dtype=torch.long)
    return kept[corr[removed][:, kept].argmax(1)]


class Compensation:
    """Hooks on each layer's ReLU replacing the removed channels (``zero``, ``mean``, ``correlated``)."""

    def __init__(self, model: nn.Module, removed: list[torch.Tensor], maps: list[torch.Tensor], mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown compensation {mode!r}")
        self.handles = []
        for relu, rem, a in zip(feature_maps(model), removed, maps, strict=True):
            if not len(rem):
                continue
            mean = a[:, rem].mean(0)  # C_removed x H x W
            src = most_correlated(a, rem) if mode == "correlated" else None

            def hook(mod: nn.Module, i: tuple, o: torch.Tensor, rem: torch.Tensor = rem, mean: torch.Tensor = mean,
                     src: torch.Tensor | None = src) -> torch.Tensor:
                o = o.clone()
                if mode == "zero":
                    o[:, rem] = 0.0
                elif mode == "mean":
                    o[:, rem] = mean.to(o)
                else:
                    o[:, rem] = o[:, src]
                return o

            self.handles.append(relu.register_forward_hook(hook))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def specialist_accuracy(run: Run, model: nn.Module, classes: torch.Tensor, test: Split,
                        removed: list[torch.Tensor] | None = None, maps: list[torch.Tensor] | None = None,
                        mode: str = "zero") -> float:
    """Test accuracy (%) of the specialist, with ``removed`` channels compensated by ``mode``."""
    comp = Compensation(model, removed, maps, mode) if removed is not None else None
    try:
        return run.accuracy(Specialist(model, classes).eval(), test)
    finally:
        if comp is not None:
            comp.remove()


def subset_classes(run: Run, k: int, num_classes: int) -> torch.Tensor:
    """The seed's subset of ``k`` classes (sorted)."""
    return torch.randperm(num_classes, generator=torch.Generator().manual_seed(run.seed))[:k].sort().values


def statistics_images(run: Run, classes: torch.Tensor | None) -> torch.Tensor:
    """``samples`` training images of ``classes`` (all classes with ``None``), drawn once per seed."""
    train = run.dataset().train
    idx = torch.arange(len(train)) if classes is None else torch.isin(train.y, classes).nonzero().flatten()
    perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(10_000 + run.seed))
    return train.x[idx[perm[: run.config["samples"]]]]


@reproduction("guo2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = run.config
    data = run.dataset()
    rates = cfg["layer_rates"]
    dense = train_dense(run).eval()
    net = controls.trainable_copy(dense).eval()  # carries the compensation hooks
    device = next(net.parameters()).device
    classes = subset_classes(run, cfg["specialist_classes"], data.num_classes)
    test = specialist_split(data.test, classes)
    maps = activations(net, statistics_images(run, classes).to(device))
    generic_maps = activations(net, statistics_images(run, None).to(device))

    base = specialist_accuracy(run, net, classes.to(device), test)
    removed = removed_filters(maps, rates)
    acc = {m: specialist_accuracy(run, net, classes.to(device), test, removed, maps, m) for m in MODES}
    generic = specialist_accuracy(run, net, classes.to(device), test, removed_filters(generic_maps, rates),
                                  generic_maps, "mean")

    def smaller(rem: list[torch.Tensor]) -> nn.Module:
        kept = [torch.tensor([j for j in range(a.shape[1]) if j not in set(r.tolist())], dtype=torch.long)
                for a, r in zip(maps, rem, strict=True)]
        return remove_filters(dense, kept)

    curve: dict[float, float] = {}
    control: dict[float, float] = {}
    for scale in cfg["curve_scales"]:
        rem = removed_filters(maps, [r * scale for r in rates])
        small = smaller(rem)
        ratio = round(weight_compression(dense, small), 4)
        curve[ratio] = specialist_accuracy(run, net, classes.to(device), test, rem, maps, "mean")
        magnitude = controls.global_magnitude_prune(run, dense, ratio, None)
        control[ratio] = specialist_accuracy(run, magnitude, classes.to(device), test)
    metrics = {
        "baseline_accuracy": base, "accuracy": acc["mean"], "accuracy_change_pp": acc["mean"] - base,
        "zero_accuracy": acc["zero"], "mean_accuracy": acc["mean"], "correlated_accuracy": acc["correlated"],
        "compensation_gain_pp": acc["mean"] - acc["zero"], "correlated_gain_pp": acc["correlated"] - acc["zero"],
        "generalist_mean_accuracy": generic,
        **smaller_model_metrics(dense, smaller(removed), data.input_shape),
    }
    assert all(math.isfinite(v) for v in metrics.values())
    run.record(
        CLAIM, model=f"staged-conv {'-'.join(map(str, cfg['net']['chans']))} x{cfg['net']['per_stage']}, "
                     f"specialist for {len(classes)} random classes",
        metrics=metrics,
        curves=[controls.Series("specialist pruning, mean compensation (Guo & Potkonjak)", controls.RATIO,
                                controls.ACCURACY, curve),
                controls.Series(controls.PRUNING_CONTROL_ONE_SHOT, controls.RATIO, controls.ACCURACY, control,
                                control=True)],
        differs=f"{data.name}; li2017's VGG-style network; a specialist for {len(classes)} random classes per seed; "
                f"filters of smallest mean activation on {cfg['samples']} of the subset's training images, rates "
                f"{rates}; no retraining",
        notes="accuracies are the specialist's: test images of the subset, arg-max over the subset's logits; "
              "the control is evaluated as the same specialist",
    )
