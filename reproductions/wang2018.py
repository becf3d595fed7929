"""Towards Evolutionary Compression (Wang, Xu, Qiu, Xu & Tao, KDD 2018; arXiv:1707.08005, whose v1 is
titled "Towards Evolutional Compression").

Method (abstract and Sec. 1 of arXiv:1707.08005v1; the later sections could not be read here): the
filters of a trained CNN are not ranked one by one ("in contrast to directly recognizing subtle weights
or filters as redundant"); a whole compressed network is an *individual*, a binary string ``b`` with one
bit per convolution filter (``b_j = 1``: filter ``j`` is kept), of a given *fitness*, and a *population*
of individuals is upgraded at each evolutionary iteration by genetic operations (selection, crossover,
mutation). The fittest individual gives the compact network; removing a filter removes its feature
map and so the next layer's channels reading it, which shrinks the network and its FLOPs with no
sparse kernel. "Either large or small convolution filters can be redundant": which filters go is
decided by the network's behaviour without them, not by their norm. The network is then fine-tuned.

Implemented here, as a standard genetic algorithm over those binary strings:

    fitness  F(b) = 1 / L(b),   L(b) = (1/m) sum_{i=1}^{m} CE(f(x_i; W ⊙ b), y_i)

(``L`` the cross-entropy of the trained network with the filters ``b_j = 0`` removed, on ``m`` training
images drawn once per run), fitness-proportional (roulette-wheel) selection of parents, crossover with
probability ``p_c`` (each layer's bits taken whole from one parent or the other), mutation with
probability ``p_m`` per layer (one kept and one removed filter of the layer swap), and elitism (the
fittest individual always survives). The initial population is random. Removing filter ``j`` is the
same network as zeroing its feature map after batch normalisation (the ReLU and pooling keep it
zero), which is how individuals are evaluated; the fittest is then built as the smaller dense network
by li2017's surgery and fine-tuned.

Claims: the KDD 2018 abstract (doi:10.1145/3219819.3219970): "combined with the parameter refining
approach, we can reduce the storage requirement and the floating-point multiplications of ResNet-50 by
a factor of 14.64x and 5.19x, respectively, without affecting its accuracy" (claim
``imagenet-resnet-50``: ImageNet, not checked); and the method's premise, arXiv:1707.08005v1 abstract:
"either large or small convolution filters can be redundant ... Experiments on benchmark deep CNN
models suggest the superiority of the proposed algorithm over the state-of-the-art compression
methods", with "the number of filter channels and the size of feature maps also decreased, naturally
improving both the compression and speed-up ratios" (claim ``evolved-filters``: checked on the
harness as ``gain_over_weight_norm_pp``, the evolved network minus the network keeping the same
number of filters per layer chosen by Li et al.'s L1 norm, the "small filters are redundant" rule,
with the same fine-tuning: at least 0; and ``speedup``, the measured CPU speed-up of the smaller
dense network: above 1). The paper's tables (AlexNet, VGG, ResNet on ImageNet; LeNet on MNIST) were
not read; no number of them is used.

Measured (claim ``evolved-filters``): from one trained network (li2017's ``train_dense``: the harness's
VGG-style conv net), the genetic algorithm chooses which filters each convolution keeps, the same
number per layer as ``layer_rates`` leave; the L1-norm choice and a random choice of the same counts
are fine-tuned with the same steps on the same minibatches. Recorded: ``accuracy`` (evolved),
``weight_accuracy`` (L1 norm), ``random_accuracy``, ``gain_over_weight_norm_pp``,
``gain_over_random_pp``, their one-shot values before fine-tuning (``one_shot_accuracy``,
``one_shot_weight_accuracy``, ``one_shot_gain_pp``), ``baseline_accuracy`` (the dense network trained
for the same fine-tuning steps without pruning), ``accuracy_change_pp``, ``dense_accuracy``,
``fitness_loss`` / ``weight_fitness_loss`` (``L(b)`` of the fittest individual and of the L1-norm
choice on the fitness images), ``removed_large_pct`` (the percentage of the removed filters whose L1
norm is above their layer's median: the abstract's "large filters can be redundant"), and from
li2017's ``smaller_model_metrics`` ``flops`` / ``flop_reduction``, ``dense_latency_ms`` /
``pruned_latency_ms`` / ``speedup`` (CPU, batch 32), ``params`` / ``param_compression`` /
``weight_compression``. Curve: the evolution at ``curve_scales`` times the rates (a search and a
fine-tuning each) against the weight compression reached (the same on every seed, as the counts per
layer are fixed), beside global magnitude pruning of the same dense network with the same steps.

Imports: :mod:`reproductions.li2017` (Li et al., ICLR 2017, "Pruning Filters for Efficient ConvNets"),
the filter pruning by norm the abstract sets the method against ("directly recognizing ... filters as
redundant"): its L1 criterion (the comparison), its filter surgery and its trained network.

Harness differs: Fashion-MNIST instead of ImageNet; li2017's small VGG-style network (three stages of
two 3x3 conv-BN-ReLU layers, 6-12-24 channels in the quick profile) instead of AlexNet, VGG or ResNet.
The paper's individual is free and its fitness, as we understand it, also rewards compression; here
each layer keeps a fixed number of filters (``layer_rates``) and the fitness is the loss alone, so that
every seed reaches the same compression (the curve needs the same levels on every seed) and the
comparison with the L1 norm is at identical counts: the evolution decides which filters, not how
many. The fitness form (``1 / L``), the operators and the population, generations, ``p_c``, ``p_m`` and
fitness images are chosen here (the paper's were not read). No parameter refining (the KDD version's
quantisation step). A hundred SGD steps of fine-tuning (the paper fine-tunes on ImageNet).

Quick verdict: inconclusive (a development run, 3 seeds, one thread on a machine loaded ~7x, 66 s of CPU).
At a quarter of every layer's filters (1.6x fewer FLOPs, 1.7x fewer weights) the evolved network was
better than the L1-norm choice before fine-tuning on every seed (``one_shot_gain_pp`` +1.1, +9.4, +6.4;
its fitness loss 1.15-1.30 against the L1 choice's 1.41-1.51): the evolution finds filter sets that
work better as they are, including large-norm filters removed (``removed_large_pct`` 45-50%). After
the same 100 fine-tuning steps the L1 choice was ahead (``gain_over_weight_norm_pp`` -1.6, -2.5, -0.8;
95% interval -3.7 to +0.5), and a random choice too (-1.3, -2.0, -0.1): the fitness measures the network
before fine-tuning, and on this small network the largest filters recover better. The smaller network
ran 1.03-1.04x faster on the CPU (the 6-12-24 network's latency is mostly overhead), so ``speedup``
passes narrowly. The baseline is the short quick schedule's (82% against the 90.7% reference), so the
accuracy checks are marked "baseline not converged". A first run removing half of every layer left
every individual near chance before fine-tuning (fitness could not rank them; gain -1.9, -10 to +6).
"""

from __future__ import annotations

import math

import torch
from atlas_reproductions.li2017 import (
    Net,
    conv_layers,
    filter_l1,
    keep_largest,
    n_pruned,
    remove_filters,
    smaller_model_metrics,
    train_dense,
    weight_compression,
)
from pydantic import Field, PositiveInt
from torch import nn
from torch.nn import functional as F

from atlas.harness import Profile, Run, Section, TrainConfig, controls, reproduction


class Evolution(Section):
    population: PositiveInt  # individuals per generation
    steps: PositiveInt  # generations (the evolution's steps)
    batch_size: PositiveInt  # m: training images the fitness L(b) is computed on (drawn once per seed)
    crossover: float = Field(ge=0, le=1)  # p_c: probability that two parents exchange layers
    mutation: float = Field(ge=0, le=1)  # p_m: probability, per layer of a child, of one swap


class Config(Profile):
    net: Net  # li2017's VGG-style network (its train_dense reads net, dense, dense_per_seed)
    dense: TrainConfig
    dense_per_seed: bool = True
    finetune: TrainConfig  # the compact network's fine-tuning (the baseline and the control: as many steps)
    layer_rates: list[float] = Field(min_length=1)  # fraction of each convolution's filters removed
    curve_scales: list[float] = Field(min_length=3)  # the rates times each scale; 1.0 is the claim's
    evolution: Evolution


def _sgd(steps: int, lr: float, batch_size: int, schedule: str = "cosine") -> dict:
    """SGD with momentum 0.9 and weight decay 5e-4, as li2017's network is trained."""
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": schedule}


def _evolution(population: int, generations: int, images: int) -> dict:
    return {"population": population, "steps": generations, "batch_size": images, "crossover": 0.7,
            "mutation": 0.2}


# a quarter of every convolution's filters (the curve: an eighth, a quarter, a half). Half of every
# layer of the quick profile's 6-12-24 network (the first run) left every individual near chance before
# fine-tuning (fitness loss 2.25-2.32, chance 2.30): the fitness could not tell the individuals apart.
RATES_3x2 = [0.25] * 6
RATES_5x2 = [0.25] * 10

PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "net": {"chans": [6, 12, 24], "per_stage": 2},
        "dense": _sgd(60, 0.05, 64), "finetune": _sgd(15, 0.01, 64, "constant"),
        "layer_rates": RATES_3x2, "curve_scales": [0.5, 1.0, 2.0], "evolution": _evolution(8, 4, 128),
    },
    "quick": {
        # li2017's quick network and dense training (the same cached model); per seed 9 fine-tunings of
        # 100 steps (the continued baseline, the evolved networks at three levels, the L1-norm and random
        # choices, the control at three ratios) and three searches of 12 individuals x 8 generations on
        # 64 images (100 evaluations each: one evaluation of 512 images costs ~0.15 s of CPU here, so
        # 16 x 20 on 512 took minutes a seed).
        "dataset": "fashion-mnist", "seeds": 3, "test_limit": 3000,
        "net": {"chans": [6, 12, 24], "per_stage": 2}, "dense": _sgd(600, 0.05, 32), "dense_per_seed": False,
        "finetune": _sgd(100, 0.01, 32, "constant"), "layer_rates": RATES_3x2, "curve_scales": [0.5, 1.0, 2.0],
        "evolution": _evolution(12, 8, 64),
    },
    "paper": {
        # CIFAR-10 with li2017's five-stage network at VGG-16's widths and its dense recipe; the
        # compact network fine-tuned 40 epochs at 0.001 (li2017's retraining); 32 individuals, 100
        # generations, fitness on 2,048 training images.
        "dataset": "cifar10", "seeds": 3, "net": {"chans": [64, 128, 256, 512, 512], "per_stage": 2},
        "dense": _sgd(64000, 0.1, 128, "step"), "finetune": _sgd(15600, 0.001, 128, "constant"),
        "layer_rates": RATES_5x2, "curve_scales": [0.5, 1.0, 2.0], "evolution": _evolution(32, 100, 2048),
    },
}

CLAIM = "evolved-filters"

Individual = list[torch.Tensor]  # per convolution, a boolean vector over its filters (True: kept)


# --------------------------------------------------------------------------------- the fitness
def feature_norms(model: nn.Module) -> list[nn.Module]:
    """The batch normalisation after each convolution (where a removed filter's map is zeroed)."""
    mods = list(model.modules())
    out = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if not isinstance(nxt, nn.BatchNorm2d):
                raise ValueError("every convolution must be followed by its batch normalisation")
            out.append(nxt)
    return out


@torch.no_grad()
def masked_loss(model: nn.Module, individual: Individual, x: torch.Tensor, y: torch.Tensor) -> float:
    """``L(b)``: the mean cross-entropy of ``model`` (in eval mode) with every filter ``b_j = 0`` removed,
    i.e. its feature map zeroed after batch normalisation."""
    norms = feature_norms(model)
    if len(norms) != len(individual):
        raise ValueError(f"{len(individual)} layers in the individual, {len(norms)} convolutions")
    handles = [bn.register_forward_hook(lambda m, i, o, keep=keep: o * keep.to(o)[None, :, None, None])
               for bn, keep in zip(norms, individual, strict=True)]
    was_training = model.training
    model.eval()
    try:
        return float(F.cross_entropy(model(x), y))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def fitness(loss: float) -> float:
    """``F(b) = 1 / L(b)``: positive, larger for a better network (roulette-wheel selection)."""
    return 1.0 / max(loss, 1e-12)


# ------------------------------------------------------------------------------ genetic operations
def random_individual(sizes: list[int], kept: list[int], gen: torch.Generator) -> Individual:
    """Each layer keeps ``kept[l]`` of its ``sizes[l]`` filters, chosen at random."""
    out = []
    for n, k in zip(sizes, kept, strict=True):
        bits = torch.zeros(n, dtype=torch.bool)
        bits[torch.randperm(n, generator=gen)[:k]] = True
        out.append(bits)
    return out


def roulette(fit: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` parents drawn with probability proportional to their fitness."""
    return torch.multinomial(fit / fit.sum(), n, replacement=True, generator=gen)


def crossover(a: Individual, b: Individual, gen: torch.Generator) -> tuple[Individual, Individual]:
    """Two children exchanging whole layers: each layer from one parent or the other, at random (the
    number of filters a layer keeps is preserved)."""
    swap = torch.rand(len(a), generator=gen) < 0.5
    c1 = [(y if s else x).clone() for x, y, s in zip(a, b, swap.tolist(), strict=True)]
    c2 = [(x if s else y).clone() for x, y, s in zip(a, b, swap.tolist(), strict=True)]
    return c1, c2


def mutate(ind: Individual, p: float, gen: torch.Generator) -> Individual:
    """With probability ``p`` per layer, one kept filter is removed and one removed filter kept."""
    out = []
    for bits in ind:
        bits = bits.clone()
        on, off = bits.nonzero().flatten(), (~bits).nonzero().flatten()
        if len(on) and len(off) and float(torch.rand(1, generator=gen)) < p:
            bits[on[torch.randint(len(on), (1,), generator=gen)]] = False
            bits[off[torch.randint(len(off), (1,), generator=gen)]] = True
        out.append(bits)
    return out


def evolve(model: nn.Module, kept: list[int], x: torch.Tensor, y: torch.Tensor, evo: Evolution,
           gen: torch.Generator) -> tuple[Individual, float]:
    """The genetic algorithm: a random population, then ``evo.steps`` generations of roulette-wheel
    selection, crossover, mutation and elitism. Returns the fittest individual and its loss."""
    sizes = [m.out_channels for m in (model.get_submodule(n) for n in conv_layers(model))]
    pop = [random_individual(sizes, kept, gen) for _ in range(evo.population)]
    losses = torch.tensor([masked_loss(model, ind, x, y) for ind in pop])
    for _ in range(evo.steps):
        fit = torch.tensor([fitness(float(v)) for v in losses])
        best = int(losses.argmin())
        children: list[Individual] = [pop[best]]  # elitism
        parents = roulette(fit, 2 * evo.population, gen).tolist()
        for i in range(0, len(parents), 2):
            a, b = pop[parents[i]], pop[parents[i + 1]]
            if float(torch.rand(1, generator=gen)) < evo.crossover:
                a, b = crossover(a, b, gen)
            children += [mutate(a, evo.mutation, gen), mutate(b, evo.mutation, gen)]
        pop = children[: evo.population]
        losses = torch.cat([losses[best : best + 1],
                            torch.tensor([masked_loss(model, ind, x, y) for ind in pop[1:]])])
    best = int(losses.argmin())
    return pop[best], float(losses[best])


# ------------------------------------------------------------------------------------ selections
def kept_counts(model: nn.Module, rates: list[float]) -> list[int]:
    """Filters each convolution keeps at ``rates`` (li2017's count)."""
    convs = [model.get_submodule(n) for n in conv_layers(model)]
    if len(rates) != len(convs):
        raise ValueError(f"{len(rates)} rates for {len(convs)} convolutions")
    return [c.out_channels - n_pruned(c.out_channels, r) for c, r in zip(convs, rates, strict=True)]


def l1_individual(model: nn.Module, kept: list[int]) -> Individual:
    """Li et al.'s choice of the same counts: the filters of largest L1 norm."""
    out = []
    for name, k in zip(conv_layers(model), kept, strict=True):
        conv = model.get_submodule(name)
        bits = torch.zeros(conv.out_channels, dtype=torch.bool)
        bits[keep_largest(filter_l1(conv).cpu(), conv.out_channels - k)] = True
        out.append(bits)
    return out


def build(model: nn.Module, ind: Individual) -> nn.Module:
    """The smaller dense network keeping the filters of ``ind`` (li2017's surgery)."""
    return remove_filters(controls.trainable_copy(model), [bits.nonzero().flatten() for bits in ind])


def removed_large_pct(model: nn.Module, ind: Individual) -> float:
    """Of the removed filters, the percentage whose L1 norm is above their layer's median."""
    large = removed = 0
    for name, bits in zip(conv_layers(model), ind, strict=True):
        norms = filter_l1(model.get_submodule(name)).cpu()
        large += int(((norms > norms.median()) & ~bits).sum())
        removed += int((~bits).sum())
    return 100.0 * large / max(1, removed)


def fitness_images(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``m`` training images (and labels) the fitness is computed on, drawn once per seed."""
    train = run.dataset().train
    m = min(Evolution.model_validate(run.config["evolution"]).batch_size, len(train))
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(run.seed))[:m]
    return train.x[idx], train.y[idx]


def finetuned(run: Run, model: nn.Module, stage: str) -> nn.Module:
    """``model`` fine-tuned; every fine-tuning of a seed sees the same minibatches (paired differences)."""
    run.reseed("wang2018 finetune")
    run.train(model, run.dataset().train, run.train_config("finetune"), desc=stage)
    return model.eval()


@reproduction("wang2018", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = run.config
    data = run.dataset()
    evo = Evolution.model_validate(cfg["evolution"])
    rates = cfg["layer_rates"]
    dense = train_dense(run).eval()
    device = next(dense.parameters()).device
    x, y = (t.to(device) for t in fitness_images(run))
    gen = torch.Generator().manual_seed(run.seed)

    base = finetuned(run, controls.trainable_copy(dense), "dense, continued")
    kept = kept_counts(dense, rates)
    l1 = l1_individual(dense, kept)
    rand = random_individual([len(b) for b in l1], kept, torch.Generator().manual_seed(10_000 + run.seed))

    curve: dict[float, float] = {}
    best: Individual | None = None
    acc = loss = math.nan
    pruned: nn.Module | None = None
    for scale in cfg["curve_scales"]:
        ind, level_loss = evolve(dense, kept_counts(dense, [r * scale for r in rates]), x, y, evo, gen)
        net = build(dense, ind)
        if scale == 1.0:
            best, loss, one_shot = ind, level_loss, run.accuracy(net.eval(), data.test)
        level_acc = run.accuracy(finetuned(run, net, f"evolved x{scale:g}"), data.test)
        curve[round(weight_compression(dense, net), 4)] = level_acc
        if scale == 1.0:
            pruned, acc = net, level_acc
    assert pruned is not None and best is not None
    weight_net = build(dense, l1)
    one_shot_w = run.accuracy(weight_net.eval(), data.test)
    weight_acc = run.accuracy(finetuned(run, weight_net, "L1 norm"), data.test)
    random_acc = run.accuracy(finetuned(run, build(dense, rand), "random"), data.test)
    base_acc = run.accuracy(base, data.test)
    metrics = {
        "dense_accuracy": run.accuracy(dense, data.test),
        "baseline_accuracy": base_acc, "accuracy": acc, "accuracy_change_pp": acc - base_acc,
        "weight_accuracy": weight_acc, "gain_over_weight_norm_pp": acc - weight_acc,
        "random_accuracy": random_acc, "gain_over_random_pp": acc - random_acc,
        "one_shot_accuracy": one_shot, "one_shot_weight_accuracy": one_shot_w, "one_shot_gain_pp": one_shot - one_shot_w,
        "fitness_loss": loss, "weight_fitness_loss": masked_loss(dense, l1, x, y),
        "removed_large_pct": removed_large_pct(dense, best),
        **smaller_model_metrics(dense, pruned, data.input_shape),
    }
    steps = run.train_config("finetune").steps
    run.record(
        CLAIM, model=f"staged-conv {'-'.join(map(str, cfg['net']['chans']))} x{cfg['net']['per_stage']}, evolved filters",
        metrics=metrics, baseline=("staged-conv", "baseline_accuracy"), baseline_spec=cfg["net"],
        curves=[controls.Series("evolutionary filter selection (Wang et al.)", controls.RATIO, controls.ACCURACY, curve),
                controls.pruning_curve(run, dense, sorted(curve), run.train_config("finetune"))],
        differs=f"{data.name} instead of ImageNet; li2017's VGG-style network; the counts per layer fixed by the "
                f"rates {rates} (the evolution chooses which filters); {evo.population} individuals, {evo.steps} "
                f"generations, fitness 1/L on {len(x)} training images; {steps} fine-tuning steps (the baseline, "
                "the L1-norm and random choices and the control as many)",
        notes="weight norm: Li et al.'s largest-L1 filters, the same counts per layer and the same fine-tuning; "
              "one-shot: before fine-tuning",
    )
