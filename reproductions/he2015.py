"""Convolutional Neural Networks at Constrained Time Cost (Kaiming He & Jian Sun, CVPR 2015;
arXiv:1412.1710v1).

Not a compression method: the survey lists it in the pruning section for its controlled comparisons
of architectures at a *fixed* time cost, the budget a pruned or compact network is designed for. The
atlas reproduces that claim: at one constant cost, depth buys more accuracy than filter size or
width.

Method (Sec. 2-3, "layer replacement"): the time complexity of a conv net's convolutional layers is

    O( sum_l  n_{l-1} * s_l^2 * n_l * m_l^2 )                                    (Eqn. 1)

(``n_l`` filters of spatial size ``s_l`` in layer ``l``, output maps of size ``m_l``). A baseline model
is modified progressively by replacing a few layers with others of the *same* cost, so that each
comparison trades one factor against another: (i) depth against filter size, a large filter (e.g.
5x5) replaced by a stack of 3x3 layers (more layers, smaller filters, a similar receptive field), and
(ii) depth against width, more layers with fewer filters each. Every model is trained with the same
recipe and budget and compared by its error.

Claims (arXiv:1412.1710v1, abstract and the paper's summary of its observations; Table 1's per-model
errors were not read): (1) "The network depth is clearly of high priority for improving accuracy,
even if the width and/or filter sizes are reduced to compensate the time cost" (claims
``depth-vs-filter-size`` and ``depth-vs-width``); (2) "the accuracy gets stagnant or even degraded
if the depth is overly increased" (claim ``overly-deep``, not measured); (3) the final model reaches
11.8% top-5 error (10-view) on ImageNet and is 20% faster than AlexNet (16.0%) (claim
``imagenet-top5``, not measurable here).

Measured: three staged conv nets (a fixed stem, one 3x3 conv of ``stem`` filters and a max pool,
the same in every net as the paper keeps its first layer; then stages of conv-BN-ReLU layers, a 2x2
max pool closing each stage; global average pooling, a linear classifier) with the same FLOPs
(:func:`atlas.harness.measure.flops`; the stages' widths are searched so that each net's FLOPs are
within ``flops.tolerance`` of the reference's):

- ``large``: the reference, one 5x5 conv per stage (``chans``);
- ``stacked``: each 5x5 conv replaced by two 3x3 convs (deeper, smaller filters), widths scaled to
  the reference's FLOPs;
- ``wide``: one 3x3 conv per stage (shallow, small filters), widths scaled up to the same FLOPs.

Each net is trained from the same seed with the same ``train`` steps. Claim ``depth-vs-filter-size``:
``accuracy_change_pp`` = accuracy(stacked) - accuracy(large), paired per seed (checked: the whole
95% interval above 0), and ``flop_reduction`` = FLOPs(large) / FLOPs(stacked) (checked: within 5% of
1, the constant-cost premise). Claim ``depth-vs-width``: ``accuracy_change_pp`` = accuracy(stacked) -
accuracy(wide), ``flop_reduction`` = FLOPs(wide) / FLOPs(stacked), the same checks. Also recorded,
per net (suffix ``_large``, ``_stacked``, ``_wide``): ``accuracy``, ``flops``, ``params`` and
``latency_ms`` (measured CPU forward time, one thread, :func:`atlas.harness.measure.latency_ms`);
per claim ``baseline_accuracy`` (the shallower net's), ``speedup`` (the shallower net's latency over
the deeper one's: Eqn. 1's equal cost is not an equal measured time on a CPU, and the paper's cost is
the theoretical one) and ``params_ratio``. No accuracy-compression curve: nothing is compressed.

Harness differs: Fashion-MNIST (quick, its first 6,000 training images) and the 8x8 digits (smoke)
instead of ImageNet; nets of a fixed stem and two traded stages (about 16,000 parameters in quick) instead of the paper's eight- to
eleven-layer models with spatial pyramid pooling and fully-connected layers; a few hundred SGD steps
(cosine) instead of 75 epochs; the widths are found by bisection on one width multiplier applied to
every stage, each stage then moved by at most two filters (the paper chooses each layer's filters by
hand); BN after every conv (the paper has
none). A short schedule favours whichever net trains fastest, so a gap here mixes capacity with
optimisation speed.

Quick result (first run, 3 seeds, 380 steps): both claims inconclusive. Depth against filter size:
accuracy change of the two-3x3 net over the 5x5 net -0.13 pp, 95% interval [-3.9, 3.6]; depth
against width: -0.59 pp [-1.9, 0.7]; FLOPs equal within 1% (checks pass). The accuracies (80-83%)
are far from converged; see ``DIAGNOSIS``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, measure, reproduction


class Flops(Section):
    tolerance: PositiveFloat = 0.05  # largest relative FLOP difference to the reference ("same time cost")
    spread: NonNegativeInt = 2  # filters a stage may move from the common width multiplier to match FLOPs


class Timing(Section):
    batch: PositiveInt = 32  # images per timed forward pass
    repeats: PositiveInt = 10  # timed passes (median)


class Config(Profile):
    stem: PositiveInt  # filters of the fixed first layer (3x3 conv and max pool), the same in every net
    chans: list[PositiveInt] = Field(min_length=1)  # the reference net's filters per stage (one 5x5 conv each)
    large_kernel: PositiveInt = 5  # the reference's filter size, replaced by a stack of 3x3 (Sec. 3.2)
    train: TrainConfig  # every net's training from scratch, the same for all three
    flops: Flops
    timing: Timing


def _sgd(steps: int, lr: float, batch_size: int) -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": "cosine"}


PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "stem": 8, "chans": [16, 32], "train": _sgd(60, 0.05, 64),
        "flops": {}, "timing": {"batch": 16, "repeats": 3},
    },
    "quick": {
        # per seed three nets of 380 steps of batch 32 (two passes over the first 6,000 images)
        "dataset": "fashion-mnist", "seeds": 3, "train_limit": 6000, "stem": 8, "chans": [16, 32],
        "train": _sgd(380, 0.1, 32), "flops": {}, "timing": {},
    },
    "paper": {
        # CIFAR-10 with three stages at VGG-like widths, 160 epochs of batch 128 (62,500 steps); the
        # paper's ImageNet models and 75-epoch schedule are not emulated
        "dataset": "cifar10", "seeds": 3, "stem": 64, "chans": [128, 256], "train": _sgd(62500, 0.1, 128),
        "flops": {}, "timing": {},
    },
}


DIAGNOSIS = """At the same measured FLOPs, the harness's deeper net (two 3x3 layers per stage) was
neither clearly better nor clearly worse than the 5x5 net or than the wider one-layer 3x3 net: the
paired differences are within about 1 pp of zero with intervals of several pp. Tried: two-stage and
three-stage nets, with and without a fixed stem, 200 to 380 SGD steps; with three stages and no stem
(200 steps, 75-78% accuracy) the deeper net was 1.8 pp worse than the 5x5 net, so the sign depends on
the setup rather than on the trade-off. The FLOPs were checked equal within 1% by the harness's
counter and Eqn. 1. The likely reason is the harness, not the paper: the paper's gains come from
eight- to eleven-layer ImageNet models trained for 75 epochs, where depth adds abstraction the task
needs; here the nets have two traded stages, about 16,000 parameters, on 28x28 grey images,
train for two passes over 6,000 images and are still improving with steps (77-80% test accuracy
after 250 steps, 80-83% after 380), so a deeper net's slower early optimisation may offset what its
depth adds. A fair test needs the
paper profile (CIFAR-10, long schedule) on a GPU."""


# --------------------------------------------------------------------------- the compared nets
STEM_KERNEL = 3  # the fixed first layer's filter size


class StagedNet(nn.Module):
    """A fixed stem (one 3x3 conv-BN-ReLU of ``stem`` filters and a 2x2 max pool, the same in every
    compared net, as the paper keeps its first layer), then stages of ``per_stage`` ``kernel x kernel``
    conv-BN-ReLU layers (``chans[i]`` filters, 'same' padding) each closed by a 2x2 max pool; global
    average pooling and a linear classifier."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, chans: Sequence[int], per_stage: int,
                 kernel: int, stem: int) -> None:
        super().__init__()
        c = input_shape[0]
        layers: list[nn.Module] = [nn.Conv2d(c, stem, STEM_KERNEL, padding=STEM_KERNEL // 2, bias=False),
                                   nn.BatchNorm2d(stem), nn.ReLU(), nn.MaxPool2d(2)]
        c = stem
        for out in chans:
            for _ in range(per_stage):
                layers += [nn.Conv2d(c, out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(out),
                           nn.ReLU()]
                c = out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
        self.chans, self.per_stage, self.kernel = list(chans), per_stage, kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def conv_cost(input_shape: Sequence[int], chans: Sequence[int], per_stage: int, kernel: int, stem: int) -> int:
    """Eqn. 1: the multiply-adds of the convolutional layers, sum_l n_{l-1} s_l^2 n_l m_l^2."""
    c, h, w = input_shape
    total = c * STEM_KERNEL**2 * stem * h * w
    c, h, w = stem, h // 2, w // 2
    for out in chans:
        for _ in range(per_stage):
            total += c * kernel * kernel * out * h * w
            c = out
        h, w = h // 2, w // 2
    return total


def scaled(chans: Sequence[int], multiplier: float) -> list[int]:
    """``chans`` times ``multiplier``, rounded, at least one filter."""
    return [max(1, round(c * multiplier)) for c in chans]


def net_flops(input_shape: Sequence[int], num_classes: int, chans: Sequence[int], per_stage: int,
              kernel: int, stem: int) -> int:
    """The FLOPs :func:`atlas.harness.measure.flops` counts for a :class:`StagedNet`: two per
    multiply-add of its convolutions (Eqn. 1) and of its classifier."""
    return 2 * (conv_cost(input_shape, chans, per_stage, kernel, stem) + chans[-1] * num_classes)


def match_width(input_shape: Sequence[int], num_classes: int, chans: Sequence[int], per_stage: int,
                kernel: int, stem: int, target_flops: int, spread: int = 2) -> list[int]:
    """Filters per stage of a ``per_stage`` x ``kernel`` net with FLOPs closest to ``target_flops``:
    the reference's ``chans`` times the multiplier ``m`` found by bisection on Eqn. 1, each stage then
    moved by at most ``spread`` filters (integer widths cannot all be scaled exactly), ties going to
    the widths nearest one common multiplier."""
    lo, hi = 1e-3, 64.0  # bisection on the common multiplier: the cost grows with it
    for _ in range(60):
        m = (lo + hi) / 2
        lo, hi = (m, hi) if net_flops(input_shape, num_classes, scaled(chans, m), per_stage, kernel,
                                      stem) < target_flops else (lo, m)
    centre = scaled(chans, (lo + hi) / 2)
    best: tuple[float, float, list[int]] | None = None
    for cand in itertools.product(*(range(max(1, c - spread), c + spread + 1) for c in centre)):
        err = abs(net_flops(input_shape, num_classes, cand, per_stage, kernel, stem) / target_flops - 1)
        ratios = [c / r for c, r in zip(cand, chans, strict=True)]
        key = (round(err, 3), max(ratios) - min(ratios), list(cand))
        if best is None or key[:2] < best[:2]:
            best = key
    assert best is not None
    return best[2]


# ------------------------------------------------------------------------------------ the paper
@reproduction("he2015", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    shape = tuple(data.input_shape)
    ncls = data.num_classes
    cfg = run.train_config("train")
    chans, stem = list(run.config["chans"]), run.config["stem"]
    k = run.config["large_kernel"]
    fl, timing = run.config["flops"], run.config["timing"]

    ref_flops = measure.flops(StagedNet(shape, ncls, chans, 1, k, stem), shape)
    # two 3x3 layers per stage for each kxk one (a 5x5's receptive field), and one wider 3x3 per stage
    layouts = {"large": (chans, 1, k),
               "stacked": (match_width(shape, ncls, chans, 2, 3, stem, ref_flops, fl["spread"]), 2, 3),
               "wide": (match_width(shape, ncls, chans, 1, 3, stem, ref_flops, fl["spread"]), 1, 3)}
    m: dict[str, float] = {}
    for name, (c, per_stage, kernel) in layouts.items():
        run.reseed("net")  # every net starts from the same seed and sees the same minibatches
        net = StagedNet(shape, ncls, c, per_stage, kernel, stem).to(run.device)
        desc = f"{name}: {per_stage}x{kernel}x{kernel} per stage, filters {c}"
        net = run.train(net, data.train, cfg, desc=desc).eval()
        flops = measure.flops(net, shape)
        if abs(flops / ref_flops - 1) > fl["tolerance"]:
            raise ValueError(f"{name}: {flops} FLOPs, not within {fl['tolerance']:.0%} of {ref_flops}")
        m |= {f"accuracy_{name}": run.accuracy(net, data.test), f"flops_{name}": flops,
              f"params_{name}": measure.count_params(net),
              f"latency_ms_{name}": measure.latency_ms(net, shape, batch=timing["batch"],
                                                       repeats=timing["repeats"])}

    def desc(name: str) -> str:
        c, per_stage, kernel = layouts[name]
        return f"{per_stage} {kernel}x{kernel} conv per stage, filters {'-'.join(map(str, c))}"

    train = run.config["train"]
    limit = run.config.get("train_limit")
    common = (f"conv nets with BN (a fixed stem and {len(chans)} traded stages) on {data.name}"
              + (f" (first {limit} training images)" if limit else "")
              + f" instead of ImageNet models; {train['steps']} SGD steps of batch {train['batch_size']} "
              f"(cosine) from scratch for every net; widths matched to within {fl['tolerance']:.0%} of "
              f"the reference's FLOPs by one width multiplier (each stage within {fl['spread']} filters); "
              f"CPU latency at batch {timing['batch']}, "
              "one thread, PyTorch")
    for claim, shallow in (("depth-vs-filter-size", "large"), ("depth-vs-width", "wide")):
        metrics = {**m,
                   "baseline_accuracy": m[f"accuracy_{shallow}"], "accuracy": m["accuracy_stacked"],
                   "accuracy_change_pp": m["accuracy_stacked"] - m[f"accuracy_{shallow}"],
                   "flop_reduction": m[f"flops_{shallow}"] / m["flops_stacked"],
                   "params_ratio": m[f"params_{shallow}"] / m["params_stacked"],
                   "speedup": m[f"latency_ms_{shallow}"] / m["latency_ms_stacked"]}
        run.record(claim, model=f"{desc('stacked')} against {desc(shallow)}, at {ref_flops} FLOPs",
                   metrics=metrics, differs=common, diagnosis=DIAGNOSIS)
