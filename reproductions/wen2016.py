"""Learning Structured Sparsity in Deep Neural Networks (Wen, Wu, Wang, Chen & Li, NIPS 2016;
arXiv:1608.03665).

Method (Sec. 3): Structured Sparsity Learning (SSL) adds group Lasso terms over *structures* of the
weights to the training loss, so that whole structures reach zero and can be removed, leaving a
smaller dense network that off-the-shelf dense kernels run faster. With ``E_D`` the data loss,
``R`` a non-structured regulariser (here weight decay) and ``||w^(g)||_2`` the Euclidean norm of the
weights of group ``g`` (Eq. 1-2):

    E(W) = E_D(W) + lambda R(W) + lambda_g sum_l R_g(W^(l)),    R_g(w) = sum_g ||w^(g)||_2 .

For a convolution ``W^(l)`` of shape ``N_l x C_l x M_l x K_l`` the filter-wise and channel-wise
groups are its filters ``W^(l)_{n_l,:,:,:}`` and its channels ``W^(l)_{:,c_l,:,:}`` (Eq. 3):

    E(W) = E_D(W) + lambda_n sum_l sum_{n_l} ||W^(l)_{n_l,:,:,:}||_2
                  + lambda_c sum_l sum_{c_l} ||W^(l)_{:,c_l,:,:}||_2 ;

a zero filter removes an output feature map, and with it the matching channel of the next layer; a
zero channel removes an input feature map (Sec. 3.3 adds shape-wise groups ``W_{:,c,m,k}`` and
depth-wise groups, not implemented here). A fully-connected layer is the 1 x 1 case: its rows
(a neuron's incoming weights) and its columns (a neuron's, or an input feature's, outgoing weights)
are the groups, so SSL removes neurons and input features (the MLP experiment, Sec. 4.1). The loss
is minimised by SGD with the group Lasso's (sub)gradient ``lambda_g w^(g) / ||w^(g)||_2``; the
released Caffe (``wenwei202/caffe``, branch ``scnn``, README "Stabilizing sparsity") zeroes every
weight below ``1e-4`` in magnitude after each update, so that groups driven to zero stay exactly
zero. Then the zero groups are removed and the smaller network is fine-tuned (the released recipe:
"train with group Lasso, remove zero groups and fine-tune", as in Distiller's SSL schedule).

The surgery here: a unit (a neuron, or a convolution's output feature map) is removed when its
outgoing group (its column in the next layer) is zero, or when its incoming group (its row, its
filter) is zero: then the unit outputs the constant ``act(b)`` of its bias, which is added to the next
layer's bias (exact for a next layer that is fully connected or an unpadded convolution; a unit
feeding a padded convolution is kept). An input feature is removed when its column in the first
layer is zero. The result is a smaller dense network computing exactly what the regularised one
computes (a unit test holds it).

Claims: ``mnist-mlp`` (Table 3 of the paper, quoted in Liu et al. 2017 "Network Slimming",
arXiv:1708.06519, Table 3, read there): SSL takes the MLP 784-500-300-10 to 434-174-78-10 neurons,
83.5% of the parameters pruned (6.06x), test error 1.43% -> 1.53% (-0.10 pp). Checked as
``param_compression`` (the dense network's parameters over the smaller network's, biases counted)
and ``accuracy_change_pp`` against the harness's own dense network given the same steps. The LeNet
table (Table 1: filters 20-50 -> 5-19 and 3-12, conv FLOPs to 25%/7.6% and 15%/3.6%, layer
speed-ups) could not be read here and is unconfirmed: its claim
(``mnist-lenet-on-mnist-filter-channel-wise``) is measured without a check by the smoke and paper
profiles (LeNet-5, filter-wise and channel-wise groups). AlexNet (5.1x CPU, 3.1x GPU conv speed-up,
Abstract) and ResNet-20 depth (Abstract) are outside the harness.

Measured per claim: ``baseline_accuracy`` (the dense network trained for the same SSL and
fine-tuning steps without the group Lasso: the declared baseline), ``dense_accuracy`` (the network SSL
starts from), ``ssl_accuracy`` (after the group-Lasso stage, before removal), ``accuracy`` (the
smaller network after fine-tuning), ``accuracy_change_pp``, ``params`` / ``param_compression``,
``flops`` / ``flop_reduction`` (``measure.flops`` of the dense over the smaller network),
``dense_latency_ms`` / ``latency_ms`` / ``speedup`` (``measure.latency_ms``, real CPU wall time of a
forward pass of 64 examples, the smaller dense network against the dense one, in the same run),
``removal_exact`` (1 when the smaller network's test logits equal the regularised network's within
1e-4) and ``units_<layer>`` (units kept at each boundary: inputs, each hidden layer). Curves: SSL at
three group-Lasso strengths (``curve``: ratio -> ``lambda_g``), each level's network read from the
group norms at the level's compression ratio (the units with the smallest group RMS removed until the
ratio is reached, so that every seed has the same levels), fine-tuned, beside the shared control
(global magnitude pruning of the same dense network, fine-tuned for the same SSL + fine-tuning steps:
:func:`atlas.harness.controls.pruning_curve`); the method's x is its parameter compression.

Harness differs: Fashion-MNIST instead of MNIST and the harness's LeNet-300-100 (784-300-100-10)
instead of the paper's 784-500-300-10 for the quick profile (a step of the wider MLP with the group
Lasso cost 19 ms on the shared 2 cores; the paper profile runs 784-500-300-10 on MNIST); 300 SSL
and 300 fine-tuning steps of SGD with momentum (a cosine schedule per stage) instead of training to
convergence; one ``lambda_g`` for rows and columns (the paper's MLP strengths were not read), chosen
on seed 1000 (not a published seed) so that the zero groups give about the paper's 6x; the quick
profile's curve reads that one SSL network at its three ratios (three strengths would cost 600 more
SSL steps a seed: the paper profile trains one per level). The dense network is trained once for
every seed in the quick profile (``dense_per_seed: False``), so the seeds' spread is that of SSL and
fine-tuning.

Quick verdict: partly, and why (seeds 0-2; baseline 88.8%, 0.8 pp below its reference). The zero
groups give 6.07x (5.5 to 6.6; 784-51-50-10 of 784-300-100-10, every input kept), 3.5-3.9x faster on
the CPU and 6x fewer FLOPs, and the removal is exact; but the smaller network is 4.4 pp less accurate
than the same-budget dense one (95% interval -4.65 to -4.20 against the check's -0.6), while global
magnitude pruning of the same dense network with the same 600 steps loses nothing at 3x and 6x and
0.3 pp at 12x. See ``DIAGNOSIS``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction


class Arch(Section):
    """One claim's network and its SSL pipeline."""

    model: Literal["lenet-300-100", "mlp", "lenet-5"]  # the harness model
    hidden: list[PositiveInt] | None = None  # the MLP's hidden widths ("mlp" only)
    width: PositiveFloat | None = None  # LeNet-5's width multiplier ("lenet-5" only)
    dense: TrainConfig  # the dense network SSL starts from
    dense_per_seed: bool = True  # False: one dense network (seed 0) for every seed
    ssl: TrainConfig  # the group-Lasso stage (Eq. 3), from the dense network
    finetune: TrainConfig  # the smaller network after the zero groups are removed
    strength: PositiveFloat  # lambda_g of the claim's network (rows and columns alike)
    zero_below: NonNegativeFloat = 1e-4  # released code: |w| below this is zeroed after each update
    curve: dict[float, PositiveFloat]  # compression ratio of a curve level -> its lambda_g


class Config(Profile):
    archs: dict[str, Arch]  # claim id -> its network and pipeline


def _sgd(steps: int, lr: float, batch: int = 64) -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch, "optimizer": "sgd", "weight_decay": 1e-4,
            "schedule": "cosine"}


MLP_CLAIM = "mnist-mlp"
LENET_CLAIM = "mnist-lenet-on-mnist-filter-channel-wise"

PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2,
        "archs": {
            MLP_CLAIM: {"model": "lenet-300-100", "dense": _sgd(150, 0.05), "dense_per_seed": False,
                        "ssl": _sgd(60, 0.05), "finetune": _sgd(30, 0.02), "strength": 3e-2,
                        "curve": {2.0: 2e-2, 4.0: 3e-2, 8.0: 5e-2}},
            LENET_CLAIM: {"model": "lenet-5", "dense": _sgd(45, 0.05), "dense_per_seed": False,
                          "ssl": _sgd(30, 0.03), "finetune": _sgd(15, 0.01), "strength": 3e-2,
                          "curve": {2.0: 2e-2, 4.0: 3e-2, 8.0: 5e-2}},
        },
    },
    "quick": {
        # LeNet-300-100 only: one dense network (3,000 steps), then per seed 300 SSL + 300
        # fine-tuning steps for the claim and for the baseline, 300 fine-tuning steps at each curve
        # level (one group-Lasso strength read at three ratios: three strengths would add 600 SSL
        # steps a seed), and the control's 600 steps at each level: 14,700 steps of batch 128.
        "dataset": "fashion-mnist", "seeds": 3,
        "archs": {
            MLP_CLAIM: {"model": "lenet-300-100", "dense": _sgd(3000, 0.05, 128), "dense_per_seed": False,
                        "ssl": _sgd(300, 0.05, 128), "finetune": _sgd(300, 0.05, 128), "strength": 1e-2,
                        "curve": {3.0: 1e-2, 6.0: 1e-2, 12.0: 1e-2}},
        },
    },
    "paper": {
        # MNIST, the paper's MLP 784-500-300-10 and Caffe's LeNet (20-50-500-10); Caffe's LeNet
        # solver (SGD, lr 0.01, momentum 0.9, batch 64, 10,000 iterations) for the dense networks.
        "dataset": "mnist", "seeds": 3,
        "archs": {
            MLP_CLAIM: {"model": "mlp", "hidden": [500, 300], "dense": _sgd(10000, 0.01),
                        "ssl": _sgd(10000, 0.01), "finetune": _sgd(5000, 0.001), "strength": 7e-3,
                        "curve": {3.0: 5e-3, 6.0: 7e-3, 12.0: 1e-2}},
            LENET_CLAIM: {"model": "lenet-5", "width": 1.0, "dense": _sgd(10000, 0.01),
                          "ssl": _sgd(10000, 0.01), "finetune": _sgd(5000, 0.001), "strength": 2e-3,
                          "curve": {2.0: 1e-3, 4.0: 2e-3, 8.0: 4e-3}},
        },
    },
}


# ------------------------------------------------------------------------------ the groups
def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Linear | nn.Conv2d]]:
    """The model's convolutions and fully-connected layers, in order: a chain, each feeding the next."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def row_norms(w: torch.Tensor) -> torch.Tensor:
    """``||W_{n,:,:,:}||_2`` for every filter (row) ``n``: the filter-wise groups."""
    return w.flatten(1).norm(dim=1)


def column_norms(w: torch.Tensor) -> torch.Tensor:
    """``||W_{:,c,:,:}||_2`` for every channel (column) ``c``: the channel-wise groups."""
    return w.transpose(0, 1).flatten(1).norm(dim=1)


def group_lasso(model: nn.Module) -> torch.Tensor:
    """``sum_l (sum_n ||W^(l)_{n,:,:,:}||_2 + sum_c ||W^(l)_{:,c,:,:}||_2)`` over every layer (Eq. 3 with
    ``lambda_n = lambda_c``; a fully-connected layer's rows and columns)."""
    return sum(row_norms(m.weight).sum() + column_norms(m.weight).sum() for _, m in weighted_layers(model))


def ssl_loss(strength: float) -> Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training objective: cross-entropy plus ``lambda_g`` times the group Lasso (weight decay is
    the optimizer's, Eq. 1's ``lambda R(W)``)."""

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), y) + strength * group_lasso(model)

    return loss


@torch.no_grad()
def zero_small(model: nn.Module, below: float) -> None:
    """The released code's stabiliser: every layer weight of magnitude below ``below`` is set to zero."""
    for _, m in weighted_layers(model):
        m.weight.masked_fill_(m.weight.abs() < below, 0.0)


# ----------------------------------------------------------------------------- the surgery
@dataclass
class Boundary:
    """The units between layer ``l - 1`` and layer ``l`` (``l = 0``: the input features)."""

    size: int  # units (neurons or feature maps; input features for the first)
    expand: int  # columns of the next layer per unit (a flattened feature map's positions)


def _after(model: nn.Module, name: str) -> nn.Module | None:
    """The module that follows ``name`` in its parent ``nn.Sequential`` (None at its end)."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(parent, nn.Sequential):
        return None
    keys = list(parent._modules)
    i = keys.index(attr)
    return parent._modules[keys[i + 1]] if i + 1 < len(keys) else None


def _activation(model: nn.Module, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """What a constant output of layer ``name`` becomes before the next layer: ReLU where one follows,
    else unchanged (max pooling and flattening keep a constant map constant)."""
    return torch.relu if isinstance(_after(model, name), nn.ReLU) else (lambda t: t)


def _column_groups(w: torch.Tensor, expand: int) -> torch.Tensor:
    """``w``'s columns gathered per unit of the previous boundary: (units, everything else)."""
    if w.dim() == 2:
        return w.reshape(w.shape[0], -1, expand).transpose(0, 1).flatten(1)
    return w.transpose(0, 1).flatten(1)


def boundaries(model: nn.Module) -> list[Boundary]:
    """The units at each boundary of the chain of layers: the inputs of the first layer, then each
    layer's outputs but the last's."""
    layers = [m for _, m in weighted_layers(model)]
    out = [Boundary(layers[0].weight.shape[1], 1)]
    for prev, nxt in zip(layers, layers[1:], strict=False):
        units = prev.weight.shape[0]
        out.append(Boundary(units, nxt.weight.shape[1] // units))
    return out


def _foldable(layer: nn.Module) -> bool:
    """A constant input map of ``layer`` can be folded into its bias exactly: fully connected, or an
    unpadded convolution (every output position sees the whole kernel)."""
    return isinstance(layer, nn.Linear) or all(p == 0 for p in layer.padding)


def zero_structure(model: nn.Module) -> list[torch.Tensor]:
    """The units SSL removed, per boundary (boolean, True = kept): a hidden unit goes when its
    outgoing group is zero, or when its incoming group is zero and its constant output folds into the
    next layer's bias exactly; an input feature goes when its column in the first layer is zero (a
    first convolution keeps its input channels)."""
    layers = [m for _, m in weighted_layers(model)]
    kept = []
    for i, b in enumerate(boundaries(model)):
        nxt = layers[i]
        out_zero = _column_groups(nxt.weight.detach(), b.expand).abs().sum(1) == 0
        if i == 0:
            kept.append(~out_zero if isinstance(nxt, nn.Linear) else torch.ones(b.size, dtype=torch.bool))
            continue
        in_zero = layers[i - 1].weight.detach().flatten(1).abs().sum(1) == 0
        kept.append(~(out_zero | (in_zero & _foldable(nxt))))
    return kept


class InputSelect(nn.Module):
    """The input features a smaller network still reads: ``x.flatten(1)[:, index]``."""

    def __init__(self, index: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("index", index.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).index_select(1, self.index)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


@torch.no_grad()
def shrink(model: nn.Module, kept: list[torch.Tensor]) -> nn.Module:
    """The smaller dense network keeping the units ``kept`` (per boundary, as :func:`zero_structure`
    gives them). A removed hidden unit whose incoming weights are zero outputs the constant ``act(b)``,
    which is added to the next layer's bias; any other removed unit is dropped (its outgoing weights
    are zero, or :func:`structure_at_ratio` removed it)."""
    out = copy.deepcopy(model)
    out.__dict__.pop("_atlas_shared", None)
    names = [n for n, _ in weighted_layers(model)]
    layers = [m for _, m in weighted_layers(model)]
    bounds = boundaries(model)
    for i, (name, layer) in enumerate(zip(names, layers, strict=True)):
        w = layer.weight.detach()
        b = layer.bias.detach().clone() if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
        rows = kept[i + 1] if i + 1 < len(kept) else torch.ones(w.shape[0], dtype=torch.bool)
        into, expand = kept[i], bounds[i].expand
        if i > 0:  # fold the removed units' constant outputs into this layer's bias
            prev = layers[i - 1]
            gone = (~into & (prev.weight.detach().flatten(1).abs().sum(1) == 0)).nonzero().flatten()
            if len(gone):
                const = _activation(model, names[i - 1])(
                    prev.bias.detach()[gone] if prev.bias is not None else torch.zeros(len(gone)))
                cols = _column_groups(w, expand)[gone].reshape(len(gone), w.shape[0], -1).sum(2)
                b += (const[:, None] * cols).sum(0)
        cols_kept = into.repeat_interleave(expand) if w.dim() == 2 else into
        w_new = w[rows][:, cols_kept]
        if isinstance(layer, nn.Linear):
            new: nn.Module = nn.Linear(w_new.shape[1], w_new.shape[0], bias=True)
        else:
            new = nn.Conv2d(w_new.shape[1], w_new.shape[0], layer.kernel_size, layer.stride, layer.padding,
                            layer.dilation, bias=True)
        new.weight.copy_(w_new)
        new.bias.copy_(b[rows])
        if i == 0 and isinstance(layer, nn.Linear) and not bool(into.all()):
            new = nn.Sequential(InputSelect(into.nonzero().flatten()), new)
        _set(out, name, new)
    return out.eval()


def unit_scores(model: nn.Module) -> list[torch.Tensor]:
    """Each unit's group RMS, per boundary: the smaller of the RMS of its incoming and of its outgoing
    group (an input feature: its outgoing group). Zero when SSL zeroed either group."""
    layers = [m for _, m in weighted_layers(model)]
    scores = []
    for i, b in enumerate(boundaries(model)):
        out_groups = _column_groups(layers[i].weight.detach(), b.expand)
        out_rms = out_groups.pow(2).mean(1).sqrt()
        if i == 0:
            scores.append(out_rms if isinstance(layers[0], nn.Linear) else torch.full((b.size,), torch.inf))
            continue
        in_rms = layers[i - 1].weight.detach().flatten(1).pow(2).mean(1).sqrt()
        scores.append(torch.minimum(in_rms, out_rms))
    return scores


def _weights_at(model: nn.Module, counts: list[int]) -> int:
    """Weights of the chain's layers with ``counts`` units at each boundary (as the control's
    compression ratio counts them: convolution and fully-connected weights, no biases)."""
    layers = [m for _, m in weighted_layers(model)]
    bounds = boundaries(model)
    total = 0
    for i, layer in enumerate(layers):
        rows = counts[i + 1] if i + 1 < len(counts) else layer.weight.shape[0]
        per = layer.weight[0, 0].numel() if layer.weight.dim() == 4 else 1
        total += rows * counts[i] * bounds[i].expand * per
    return total


def structure_at_ratio(model: nn.Module, ratio: float) -> list[torch.Tensor]:
    """The units kept when those of smallest group RMS (:func:`unit_scores`, over every boundary) are
    removed one by one until the network's weights are at most ``1 / ratio`` of the dense network's
    (the ratio the control's curve uses); every boundary keeps at least one unit."""
    scores = unit_scores(model)
    kept = [torch.ones(len(s), dtype=torch.bool) for s in scores]
    counts = [len(s) for s in scores]
    target = _weights_at(model, counts) / ratio
    order = sorted(((float(v), i, j) for i, s in enumerate(scores) for j, v in enumerate(s.tolist())))
    for _, i, j in order:
        if _weights_at(model, counts) <= target:
            break
        if counts[i] > 1 and scores[i][j] != torch.inf:
            kept[i][j] = False
            counts[i] -= 1
    return kept


# ------------------------------------------------------------------------------- the runs
def arch_config(run: Run, claim: str) -> Arch:
    return Arch.model_validate(run.config["archs"][claim])


def model_kwargs(cfg: Arch) -> dict:
    """The harness model's arguments (also the baseline's spec for its reference accuracy)."""
    if cfg.model == "mlp":
        return {"hidden": list(cfg.hidden or (500, 300))}
    if cfg.model == "lenet-5" and cfg.width not in (None, 1.0):
        return {"width": cfg.width}
    return {}


def train_dense(run: Run, claim: str) -> nn.Module:
    """The dense network SSL starts from (cached; with ``dense_per_seed: False`` one for every seed)."""
    cfg = arch_config(run, claim)

    def fit(model: nn.Module) -> None:
        run.reseed(f"wen2016 {claim} dense", seed=None if cfg.dense_per_seed else 0)
        run.train(model, run.dataset().train, cfg.dense, desc=f"{claim} dense")

    return run.cached_model(f"wen2016-{cfg.model}-dense", {"model": cfg.model, **model_kwargs(cfg),
                            "dense": cfg.dense.model_dump(), "per_seed": cfg.dense_per_seed},
                            build=lambda: run.model(cfg.model, **model_kwargs(cfg)), fit=fit,
                            per_seed=cfg.dense_per_seed)


def train_ssl(run: Run, claim: str, dense: nn.Module, strength: float) -> nn.Module:
    """The group-Lasso stage from the dense network: SGD on Eq. 3's objective, small weights zeroed
    after every update (the released code's stabiliser)."""
    cfg = arch_config(run, claim)
    model = controls.trainable_copy(dense)
    run.reseed(f"wen2016 {claim} ssl {strength:g}")
    return run.train(model, run.dataset().train, cfg.ssl, desc=f"SSL lambda_g={strength:g}",
                     loss_fn=ssl_loss(strength), after_step=lambda m: zero_small(m, cfg.zero_below))


def finetune(run: Run, claim: str, model: nn.Module, desc: str) -> nn.Module:
    """Fine-tune the smaller network (plain cross-entropy, weight decay)."""
    run.reseed(f"wen2016 {claim} finetune")
    return run.train(model, run.dataset().train, arch_config(run, claim).finetune, desc=desc)


def train_baseline(run: Run, claim: str, dense: nn.Module) -> nn.Module:
    """The dense network given the same SSL and fine-tuning steps without the group Lasso."""
    cfg = arch_config(run, claim)
    model = controls.trainable_copy(dense)
    run.reseed(f"wen2016 {claim} ssl baseline")
    run.train(model, run.dataset().train, cfg.ssl, desc="baseline (no group Lasso)")
    return finetune(run, claim, model, "baseline fine-tuning steps")


def same_budget(cfg: Arch) -> TrainConfig:
    """The control's fine-tuning: as many steps as SSL and fine-tuning together, the SSL stage's optimizer."""
    return cfg.ssl.model_copy(update={"steps": cfg.ssl.steps + cfg.finetune.steps})


def _weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for _, m in weighted_layers(model))


def speed(dense: nn.Module, small: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """Real CPU latency of a forward pass (64 examples) of the dense and the smaller network, and FLOPs."""
    dense_ms = measure.latency_ms(dense, input_shape)
    small_ms = measure.latency_ms(small, input_shape)
    dense_flops, small_flops = measure.flops(dense, input_shape), measure.flops(small, input_shape)
    return {"dense_latency_ms": dense_ms, "latency_ms": small_ms, "speedup": dense_ms / small_ms,
            "flops": float(small_flops), "flop_reduction": dense_flops / max(1, small_flops)}


#: Why the MLP claim's accuracy check fails (the claim is "partly" reproduced); shown beside the verdict.
DIAGNOSIS = """
The group Lasso (rows and columns, Eq. 3), the released code's zeroing of weights below 1e-4 and the
removal of zero groups were checked: the smaller network computes the regularised one's logits
(removal_exact = 1 on every seed; unit tests hold the fold of a zero-input unit's constant output).
The compression is the paper's (6.07x), the accuracy is not: -4.4 pp against the same-budget dense
network, where unstructured global magnitude pruning at 6x costs nothing. To zero whole groups in
300 steps the group Lasso must be strong (seed 1000, 400 steps: lambda_g 2e-3, 4e-3, 6e-3, 1e-2 give
1.0x, 1.8x, 4.4x, 13x), and the regularised network falls to 77-78% before fine-tuning, which 300
steps do not recover (the curve's 3x network, with twice the units, is no better). With five times
the budget (1,500 SSL and 1,500 fine-tuning steps) the loss shrank: seed 1000, lambda_g 4e-3: 3.0 pp at
15x; seed 1001, lambda_g 2.5e-3: 2.1 pp at 6.2x (784-56-48-10 from 712 inputs); so a longer schedule
closes about half of the gap, not all of it. Part of the gap is the data set: on MNIST SSL removed 350 of the 784 inputs (the blank
border pixels, free to drop), so the paper's 6x left 174-78 hidden units of 500-300; Fashion-MNIST
has no blank inputs (SSL kept all 784), so 6x here takes LeNet-300-100 to about 50-50 hidden units,
far narrower hidden layers than the paper's. The gap is the method's at this budget on this data set,
not an error in the paper's MNIST result, which the paper profile measures.
"""


@reproduction("wen2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    for claim in run.config["archs"]:
        cfg = arch_config(run, claim)
        dense = train_dense(run, claim)
        baseline = train_baseline(run, claim, dense)
        regularised = train_ssl(run, claim, dense, cfg.strength)
        kept = zero_structure(regularised)
        small = shrink(regularised, kept)
        exact = torch.allclose(run.predict(small, data.test), run.predict(regularised, data.test), atol=1e-4)
        ssl_acc = run.accuracy(regularised, data.test)
        small = finetune(run, claim, small, "fine-tune the smaller network")
        acc, base = run.accuracy(small, data.test), run.accuracy(baseline, data.test)

        curve = {}
        for ratio, strength in sorted(cfg.curve.items()):
            trained = regularised if strength == cfg.strength else train_ssl(run, claim, dense, strength)
            level = finetune(run, claim, shrink(trained, structure_at_ratio(trained, ratio)), f"curve {ratio:g}x")
            curve[float(ratio)] = run.accuracy(level, data.test)

        params_dense, params_small = measure.count_params(dense), measure.count_params(small)
        metrics = {
            **measure.accuracy_change(base, acc),
            "dense_accuracy": run.accuracy(dense, data.test),
            "ssl_accuracy": ssl_acc,
            "params": params_small,
            "param_compression": params_dense / params_small,
            "weight_compression": _weights(dense) / _weights(small),
            "removal_exact": float(exact),
            **speed(dense, small, data.input_shape),
            **{f"units_{'input' if i == 0 else f'hidden{i}'}": float(k.sum()) for i, k in enumerate(kept)},
        }
        name = cfg.model + (f" {tuple(cfg.hidden)}" if cfg.hidden else "")
        run.record(
            claim, model=f"{name}: SSL (row/column, filter/channel group Lasso, lambda_g={cfg.strength:g}), "
                         "zero groups removed, fine-tuned",
            metrics=metrics, baseline=(cfg.model, "baseline_accuracy"), baseline_spec=model_kwargs(cfg),
            differs=f"{data.name}; {cfg.dense.steps} dense steps"
                    + ("" if cfg.dense_per_seed else " (one dense network for every seed)")
                    + f", then {cfg.ssl.steps} SSL and {cfg.finetune.steps} fine-tuning steps per seed; "
                    "baseline = the dense network given the same steps without the group Lasso",
            diagnosis=DIAGNOSIS if claim == MLP_CLAIM else "",
            notes="latency: measure.latency_ms, a forward pass of 64 examples on this machine's CPU, the smaller "
                  "dense network against the dense one in the same run",
            curves=[controls.Series("SSL (group Lasso, units of least group norm removed)", controls.RATIO,
                                    controls.ACCURACY, curve),
                    controls.pruning_curve(run, dense, sorted(curve), same_budget(cfg))],
        )
