"""Compact Deep Convolutional Neural Networks With Coarse Pruning (Anwar & Sung, 2016;
arXiv:1610.09639).

Method: two coarse pruning granularities for the convolution layers. A convolution ``l`` maps ``n_l``
input feature maps to ``n_{l+1}`` output maps through ``n_{l+1} x n_l`` kernels ``K_{j,i}`` (each ``k x k``).

* *Feature map pruning* removes output map ``j`` of layer ``l`` with every kernel that produces it
  (``K_{j,:}``) and every kernel of layer ``l + 1`` that reads it: the layer gets narrower, and the
  network stays dense, with no sparse representation needed.
* *Kernel pruning* removes single ``k x k`` kernels ``K_{j,i}``: the connection from input map ``i`` to
  output map ``j``. The dense connectivity between two layers becomes sparse at the granularity of a
  whole kernel, which a GPU or a VLSI design can skip.

Which maps and kernels to remove is decided by the paper's "simple and generic strategy to choose the
least adversarial pruning masks" (abstract): for one layer and one granularity at a time, ``N``
random pruning masks of the wanted pruning ratio are drawn, each is applied to the trained network,
the network's misclassification rate (MCR) with each mask is evaluated on held-aside examples, and
the mask with the least MCR is kept,

    M*_l = argmin_{M in {M_1, ..., M_N}} MCR(W with layer l masked by M),

then the next layer is pruned with the masks chosen so far in place. The pruned network is retrained
with the masks held fixed, which compensates the loss in accuracy. The best pruning ratios come from
applying both granularities (abstract): maps first, then kernels of the remaining maps.

Claims (abstract of arXiv:1610.09639v1; the body of the paper, its tables, its network and its ``N``
were not readable here): on CIFAR-10, "more than 85% sparsity can be induced in the
convolution layers with less than 1% increase in the missclassification rate of the baseline
network", pruning with both granularities and retraining (claim ``cifar-10-conv-85``, checked as
``accuracy_change_pp`` >= -1: the pruned network against the same dense network retrained for the
same steps without pruning). The sparsity is the profile's: the feature-map and kernel rates of
``PROFILES`` remove 85% of the convolution weights (``conv_sparsity``, recorded each seed).

Measured: ``baseline_accuracy`` (the dense network continued for the retraining steps), ``accuracy``
and ``accuracy_change_pp`` (the pruned network after retraining), ``dense_accuracy`` (the dense network
before either), ``conv_sparsity`` (the share of the dense network's convolution weights that are gone:
removed with their maps, or zero in a pruned kernel) and ``conv_weight_compression`` (its inverse
ratio), ``no_retrain_accuracy_change_pp`` (the pruned network before retraining), and
``selection_gain_no_retrain_pp``: before retraining, the network pruned with the best-of-``N`` masks
minus the same network pruned at the same rates with one random mask per draw (``N = 1``), which
says what the selection adds. The pruned maps are cut out into a smaller dense network (the
harness's staged-conv net at the kept widths), whose ``flops`` and ``effective_flops`` (kernel
sparsity counted, :mod:`atlas.harness.measure`), ``flop_reduction`` (dense over effective FLOPs),
``dense_latency_ms`` / ``pruned_latency_ms`` / ``speedup`` (CPU forward time at batch 32, median of
10: the smaller dense network runs as is; its pruned kernels are stored as zeros, as a CPU without a
sparse convolution would run them, so only the map pruning shows in the time), ``params`` and
``param_compression`` are measured. The curve: the method at ``curve_scales`` times both rates,
retrained alike, against the compression ratio of the convolution and linear weights, beside global
magnitude pruning of the same dense network with the same retraining steps
(:func:`atlas.harness.controls.pruning_curve`; unstructured, so without the narrower network's
speed-up). Exported for the paper that extends this one (anwar2017): :func:`conv_modules`,
:func:`full_masks`, :func:`apply_masks`, :func:`misclassification_rate`, :func:`random_mask`,
:func:`best_of_random`, :func:`conv_sparsity`, :func:`shrink`, :func:`train_dense`, :func:`retrain`.

Harness differs: Fashion-MNIST instead of CIFAR-10; the harness's VGG-style staged-conv network with
one 3x3 conv-BN-ReLU layer in each of three stages (8-16-32 channels in the quick profile) instead of
the paper's CIFAR-10 network; a removed map also removes its batch-normalisation channel. The masks
are scored on a fixed sample of training examples (the run has no separate validation split; never
the test set). One dense network (seed 0) serves every seed of the quick profile; the retraining is a
fixed number of SGD steps at a constant rate (the paper retrains until the accuracy recovers). The
rates per layer are chosen here to reach the claim's 85% (the paper's per-layer ratios were not read).

Quick verdict: inconclusive (baseline not converged: the dense network continued for the retraining
steps ends 1.5 pp below the long-schedule reference of the same net), and far from the claim: at
85.5% convolution sparsity the pruned network ends 15 pp below the dense one (interval -22.4 to -7.7),
where the global magnitude control at the same ratio loses 3 pp. See ``DIAGNOSIS``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, models, reproduction

#: Why the accuracy check is far from the claim; shown beside the verdict.
DIAGNOSIS = """
The masks (feature maps with their batch-norm channels and the next layer's kernels, single kernels),
the best-of-N selection and the surgery into the narrower network were checked by unit tests, and the
selection does its job: before retraining the best of 10 masks is 8-16 pp better than one random mask.
But the harness's network is tiny: 8-16-32 channels, 5,832 convolution weights, where the paper prunes
a CIFAR-10 network of far more maps. Removing half of the second and third layers' maps and half of the
remaining kernels leaves 6, 8 and 16 maps; before retraining the network is near chance (-62 to -68
pp), and 80-100 retraining steps recover it to 11-17 pp below the dense network (seeds 0-2 with the
quick profile's 80 cosine steps: -15.1 pp, interval -22.4 to -7.7; with 100 steps at a constant rate:
-11.3 pp, interval -13.7 to -9.0; seed 10: -15.5 pp). Global magnitude pruning of as many weights,
unstructured and with the same retraining, loses 3 pp, and the method is below it at every level of
the curve (2.1x: 82-83 against 87; 9.3x: 48-57 against 80-81). The dense network itself is
1.1 pp below the net's long-schedule reference, so the verdict reads baseline not converged. Width
matters: on seed 10 the same rates on a network twice as wide (16-32-64, the same budget) lost 9.2 pp
(85.5% sparsity) where 8-16-32 lost 15.5 pp, and the control lost 1.6 pp at that ratio. The gap is the
coarse granularity on a network with a handful of maps per layer and a short retraining, not a fault
of the selection; the paper's 85% with under 1 pp is not reproduced at this scale, and the
paper profile (CIFAR-10) is where it would be tested at the paper's scale.
"""


class Net(Section):
    """The harness's staged-conv network with one convolution a stage (each layer its own width)."""

    chans: list[PositiveInt] = Field(min_length=1)  # channels of each convolution


class Pruning(Section):
    # fraction of each convolution's output feature maps removed (network order; 0 skips a layer)
    map_rates: list[float] = Field(min_length=1)
    # fraction of each convolution's remaining kernels removed, after the maps
    kernel_rates: list[float] = Field(min_length=1)
    candidates: PositiveInt  # N: random masks drawn and evaluated per layer and granularity
    eval_examples: PositiveInt  # training examples the masks' misclassification rate is measured on


class Config(Profile):
    net: Net
    dense: TrainConfig  # the trained network that is pruned
    retrain: TrainConfig  # the pruned network retrained with its masks fixed (and the dense one continued)
    pruning: Pruning
    curve_scales: list[float] = Field(min_length=3)  # both rates times each scale; 1.0 is the claim's
    dense_per_seed: bool = True  # False: one dense network (from seed 0) for every seed

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        p, n = self.pruning, len(self.net.chans)
        if len(p.map_rates) != n or len(p.kernel_rates) != n:
            raise ValueError("pruning needs one map rate and one kernel rate per convolution")
        if 1.0 not in self.curve_scales:
            raise ValueError("curve_scales must hold 1.0 (the claim's rates)")
        top = max(self.curve_scales)
        if not all(0 <= r * top < 1 for r in p.map_rates + p.kernel_rates):
            raise ValueError("every (scaled) rate must lie in [0, 1)")
        return self


def _sgd(steps: int, lr: float, batch_size: int, schedule: str = "cosine") -> dict:
    """A training stage: SGD with momentum 0.9 and weight decay 5e-4."""
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": schedule}


# Maps: a quarter of the first layer's, half of the two others'; kernels: half of the remaining ones of
# the last two layers. On 8-16-32 (one conv a stage) that leaves 14.5% of the convolution weights:
# 85.5% sparsity, the claim's "more than 85%".
MAP_RATES = [0.25, 0.5, 0.5]
KERNEL_RATES = [0.0, 0.5, 0.5]
CURVE_SCALES = [0.5, 1.0, 1.3]

# Budgets are optimizer steps. quick: one dense network (seed 0) of 1,500 steps at batch 64 for the three
# seeds (about 1 pp below the long-schedule reference of the same net, 88.9%: 900 steps left it 2-3 pp
# below, so that its accuracy checks could only read "baseline not converged"); per seed 7 x 100
# retraining steps at batch 64 (the dense network continued, the method at three levels, the control
# at three ratios) and 5 layer-granularity draws of N = 10 masks, each scored on 1,000 training examples.
PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "net": {"chans": [8, 16, 32]},
        "dense": _sgd(60, 0.05, 64), "retrain": _sgd(15, 0.01, 64, "constant"),
        "pruning": {"map_rates": MAP_RATES, "kernel_rates": KERNEL_RATES, "candidates": 3, "eval_examples": 256},
        "curve_scales": CURVE_SCALES,
    },
    "quick": {
        "dataset": "fashion-mnist", "seeds": 3, "test_limit": 3000, "net": {"chans": [8, 16, 32]},
        "dense": _sgd(1500, 0.05, 64), "retrain": _sgd(80, 0.01, 64), "dense_per_seed": False,
        "pruning": {"map_rates": MAP_RATES, "kernel_rates": KERNEL_RATES, "candidates": 10,
                    "eval_examples": 1000},
        "curve_scales": CURVE_SCALES,
    },
    "paper": {
        # CIFAR-10 with a three-stage network of 32-64-128 channels (the paper's own network and its N were
        # not read; every candidate mask costs a pass over the scoring sample, which the contract test
        # runs on a CPU); ~160 epochs of dense training at batch 128, 20 epochs of retraining at 0.001.
        "dataset": "cifar10", "seeds": 3, "net": {"chans": [32, 64, 128]},
        "dense": _sgd(64000, 0.1, 128, "step"), "retrain": _sgd(7800, 0.001, 128, "constant"),
        "pruning": {"map_rates": MAP_RATES, "kernel_rates": KERNEL_RATES, "candidates": 5,
                    "eval_examples": 256},
        "curve_scales": CURVE_SCALES,
    },
}

CLAIM = "cifar-10-conv-85"


# ------------------------------------------------------------------------------------------ masks
@dataclass
class Masks:
    """The pruning state of a chain of convolutions: ``maps[l]`` (``n_{l+1}``, bool) the output maps
    layer ``l`` keeps, ``kernels[l]`` (``n_{l+1} x n_l``, bool) the kernels it keeps."""

    maps: list[torch.Tensor]
    kernels: list[torch.Tensor]

    def clone(self) -> Masks:
        return Masks([m.clone() for m in self.maps], [k.clone() for k in self.kernels])

    def effective_kernels(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s kernels that still compute something: kept, producing a kept map, and
        reading a kept map of the previous layer."""
        k = self.kernels[layer] & self.maps[layer][:, None]
        return k & self.maps[layer - 1][None, :] if layer > 0 else k


def conv_modules(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """Each convolution of the chain with the batch normalisation that follows it (if any)."""
    mods = list(model.modules())
    out = []
    for i, mod in enumerate(mods):
        if isinstance(mod, nn.Conv2d):
            bn = next((m for m in mods[i + 1:] if isinstance(m, nn.BatchNorm2d | nn.Conv2d)), None)
            out.append((mod, bn if isinstance(bn, nn.BatchNorm2d) else None))
    return out


def full_masks(model: nn.Module) -> Masks:
    """Every map and kernel kept."""
    convs = [conv for conv, _ in conv_modules(model)]
    return Masks([torch.ones(c.out_channels, dtype=torch.bool) for c in convs],
                 [torch.ones(c.out_channels, c.in_channels, dtype=torch.bool) for c in convs])


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> nn.Module:
    """Zero what the masks remove, in place: the kernels of every pruned connection, and for a pruned
    map its kernels and its batch-normalisation scale and shift (so that the map is 0 after it)."""
    for layer, (conv, bn) in enumerate(conv_modules(model)):
        keep = masks.effective_kernels(layer).to(conv.weight)
        conv.weight.mul_(keep[:, :, None, None])
        if conv.bias is not None:
            conv.bias.mul_(masks.maps[layer].to(conv.bias))
        if bn is not None:
            bn.weight.mul_(masks.maps[layer].to(bn.weight))
            bn.bias.mul_(masks.maps[layer].to(bn.bias))
    return model


@torch.no_grad()
def misclassification_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """MCR, the fraction of ``x`` the model gets wrong."""
    model.eval()
    return float((model(x).argmax(1) != y).float().mean())


def random_mask(alive: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """``alive`` (bool, any shape) with ``round(rate * alive.sum())`` of its true entries, chosen
    uniformly at random, set false (at least one entry stays true)."""
    idx = alive.flatten().nonzero().flatten()
    n_remove = min(len(idx) - 1, round(rate * len(idx)))
    out = alive.clone().flatten()
    if n_remove > 0:
        out[idx[torch.randperm(len(idx), generator=generator)[:n_remove]]] = False
    return out.view_as(alive)


def best_of_random(model: nn.Module, masks: Masks, layer: int, granularity: str, rate: float, candidates: int,
                   x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[Masks, list[float]]:
    """The paper's selection: ``candidates`` random masks of layer ``layer`` at ``granularity``
    (``"map"`` or ``"kernel"``) removing ``rate`` of what is left, each applied to a copy of ``model``
    with ``masks`` in place; returns the masks with the one of least MCR on ``(x, y)`` (the first on
    ties), and every candidate's MCR."""
    best, scores = masks, []
    best_score = float("inf")
    for _ in range(candidates):
        trial = masks.clone()
        if granularity == "map":
            trial.maps[layer] = random_mask(masks.maps[layer], rate, generator)
        elif granularity == "kernel":
            alive = masks.effective_kernels(layer)
            trial.kernels[layer] = random_mask(alive, rate, generator) | (masks.kernels[layer] & ~alive)
        else:
            raise ValueError(f"unknown granularity {granularity!r}")
        scores.append(misclassification_rate(apply_masks(copy.deepcopy(model), trial), x, y))
        if scores[-1] < best_score:
            best, best_score = trial, scores[-1]
    return best, scores


def coarse_prune(model: nn.Module, map_rates: list[float], kernel_rates: list[float], candidates: int,
                 x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> Masks:
    """Feature maps layer by layer, then kernels layer by layer, each the best of ``candidates``
    random masks given the masks already chosen (``candidates=1``: random masks)."""
    masks = full_masks(model)
    for granularity, rates in (("map", map_rates), ("kernel", kernel_rates)):
        for layer, rate in enumerate(rates):
            if rate > 0:
                masks, _ = best_of_random(model, masks, layer, granularity, rate, candidates, x, y, generator)
    return masks


def conv_sparsity(dense: nn.Module, masks: Masks) -> float:
    """The share of the dense network's convolution weights the masks remove (with their maps or
    their kernels)."""
    total = kept = 0
    for layer, (conv, _) in enumerate(conv_modules(dense)):
        per_kernel = conv.weight[0, 0].numel()
        total += conv.weight.numel()
        kept += int(masks.effective_kernels(layer).sum()) * per_kernel
    return 1.0 - kept / total


# ----------------------------------------------------------------------------------- the surgery
@torch.no_grad()
def shrink(model: nn.Module, masks: Masks) -> nn.Module:
    """The harness's staged-conv network (one convolution a stage) at the kept widths, with the kept
    maps' weights of ``model`` (masked first): a narrower dense network computing the same function;
    pruned kernels stay as zeros in it."""
    masked = apply_masks(copy.deepcopy(model), masks)
    kept = [m.nonzero().flatten() for m in masks.maps]
    first, classifier = conv_modules(model)[0][0], next(m for m in model.modules() if isinstance(m, nn.Linear))
    small = models.ConvNet((first.in_channels,), classifier.out_features, chans=[len(k) for k in kept],
                           per_stage=1).to(first.weight)
    src, dst = dict(masked.named_modules()), dict(small.named_modules())
    if set(src) != set(dst):
        raise ValueError("shrink expects the harness's staged-conv network with one convolution a stage")
    layer, prev = -1, None
    for name, mod in masked.named_modules():
        new = dst.get(name)
        if isinstance(mod, nn.Conv2d):
            layer += 1
            w = mod.weight[kept[layer]]
            new.weight.copy_(w if prev is None else w[:, prev])
            prev = kept[layer]
        elif isinstance(mod, nn.BatchNorm2d):
            for attr in ("weight", "bias", "running_mean", "running_var"):
                getattr(new, attr).copy_(getattr(mod, attr)[prev])
        elif isinstance(mod, nn.Linear):
            new.weight.copy_(mod.weight[:, prev])  # after global average pooling: one input per map
            new.bias.copy_(mod.bias)
    return small.eval()


# ------------------------------------------------------------------------------------- the paper
def train_dense(run: Run) -> nn.Module:
    """The trained network that is pruned: per seed, or once from seed 0 (``dense_per_seed``); cached."""
    cfg, net = run.train_config("dense"), run.config["net"]
    per_seed = run.config["dense_per_seed"]

    def fit(model: nn.Module) -> None:
        run.reseed("anwar2016 dense data", seed=None if per_seed else 0)
        run.train(model, run.dataset().train, cfg, desc="dense")

    return run.cached_model("anwar2016-dense", {"net": net, "train": cfg.model_dump()},
                            build=lambda: run.model("staged-conv", chans=net["chans"], per_stage=1), fit=fit,
                            per_seed=per_seed)


def retrain(run: Run, model: nn.Module, masks: Masks | None, stage: str) -> nn.Module:
    """``model`` retrained with the ``retrain`` section, the masks re-applied after every step. Every
    retraining of a seed sees the same minibatches, so that the differences between them are paired."""
    run.reseed("anwar2016 retrain")
    hook = None if masks is None else (lambda m: apply_masks(m, masks))
    if masks is not None:
        apply_masks(model, masks)
    run.train(model, run.dataset().train, run.train_config("retrain"), desc=stage, after_step=hook)
    return model.eval()


def mask_sample(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples the masks are scored on: a fixed random sample of the training set (never the test set)."""
    train = run.dataset().train
    run.reseed("anwar2016 mask sample")
    idx = torch.randperm(len(train), generator=run.generator)[: run.config["pruning"]["eval_examples"]]
    return train.x[idx].to(run.device), train.y[idx].to(run.device)


@reproduction("anwar2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg, data = run.config, run.dataset()
    shape, p = data.input_shape, cfg["pruning"]
    dense = train_dense(run)
    dense_acc = run.accuracy(dense, data.test)
    base = run.accuracy(retrain(run, controls.trainable_copy(dense), None, "dense, continued"), data.test)
    x, y = mask_sample(run)

    curve: dict[float, float] = {}
    for scale in cfg["curve_scales"]:
        maps, kernels = [r * scale for r in p["map_rates"]], [r * scale for r in p["kernel_rates"]]
        run.reseed(f"anwar2016 masks x{scale:g}")
        masks = coarse_prune(dense, maps, kernels, p["candidates"], x, y, run.generator)
        pruned = apply_masks(controls.trainable_copy(dense), masks)
        if scale == 1.0:
            claim_masks, one_shot = masks, run.accuracy(pruned, data.test)
            run.reseed("anwar2016 masks x1")  # the same random stream, one candidate per draw
            random_masks = coarse_prune(dense, maps, kernels, 1, x, y, run.generator)
            random_acc = run.accuracy(apply_masks(controls.trainable_copy(dense), random_masks), data.test)
        model = retrain(run, pruned, masks, f"coarse pruning x{scale:g}")
        acc_scale = run.accuracy(model, data.test)
        curve[round(controls.compression_ratio(model), 2)] = acc_scale
        if scale == 1.0:
            claim_model, acc = model, acc_scale

    small = shrink(claim_model, claim_masks)
    sparsity = conv_sparsity(dense, claim_masks)
    lat_dense = measure.latency_ms(dense, shape, batch=32, repeats=10)
    lat_small = measure.latency_ms(small, shape, batch=32, repeats=10)
    flops_dense, eff = measure.flops(dense, shape), measure.effective_flops(small, shape)
    chans = "-".join(map(str, cfg["net"]["chans"]))
    run.record(
        CLAIM,
        model=(f"staged-conv {chans} x1: maps {p['map_rates']} then kernels {p['kernel_rates']} removed, "
               f"best of {p['candidates']} random masks each, retrained"),
        metrics={
            **measure.accuracy_change(base, acc),
            "dense_accuracy": dense_acc,
            "no_retrain_accuracy_change_pp": one_shot - base,
            "selection_gain_no_retrain_pp": one_shot - random_acc,
            "conv_sparsity": sparsity,
            "conv_weight_compression": 1.0 / (1.0 - sparsity),
            "weight_compression": controls.compression_ratio(claim_model),
            "flops": measure.flops(small, shape), "effective_flops": eff, "flop_reduction": flops_dense / eff,
            "dense_latency_ms": lat_dense, "pruned_latency_ms": lat_small, "speedup": lat_dense / lat_small,
            "params": measure.count_params(small),
            "param_compression": measure.count_params(dense) / measure.count_nonzero(small),
        },
        baseline=("staged-conv", "baseline_accuracy"),
        baseline_spec={"chans": cfg["net"]["chans"], "per_stage": 1},
        diagnosis=DIAGNOSIS,
        differs=(f"{data.name} instead of CIFAR-10; the harness's staged-conv net ({chans}, one conv a stage) "
                 f"instead of the paper's network; {cfg['dense']['steps']} dense steps, "
                 f"{cfg['retrain']['steps']} retraining steps ({cfg['retrain']['schedule']}, lr {cfg['retrain']['lr']:g}); masks scored "
                 f"on {p['eval_examples']} training examples"),
        notes=("latency: the narrower dense network (pruned maps cut out, pruned kernels kept as zeros) against "
               "the dense one, CPU, batch 32, median of 10"),
        curves=[controls.Series("coarse pruning, maps and kernels (Anwar & Sung)", controls.RATIO,
                                controls.ACCURACY, curve),
                controls.pruning_curve(run, dense, sorted(curve), run.train_config("retrain"))],
    )
