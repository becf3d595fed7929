"""Tensorizing Neural Networks (Novikov, Podoprikhin, Osokin & Vetrov, NIPS 2015; arXiv:1509.06569).

Method: the weight matrix ``W`` (``M x N``) of a fully-connected layer is stored in the Tensor Train
(TT) format. With ``N = n_1 ... n_d`` and ``M = m_1 ... m_d``, an input index ``j`` and an output index
``i`` are read as multi-indices ``(j_1, ..., j_d)`` and ``(i_1, ..., i_d)``, and every entry of ``W`` is
a product of ``d`` small matrices, one slice of each *TT-core* ``G_k`` (``r_{k-1} x m_k x n_k x r_k``):

.. math:: W((i_1, j_1), \\ldots, (i_d, j_d)) = G_1[i_1, j_1]\\, G_2[i_2, j_2] \\cdots G_d[i_d, j_d],
          \\qquad r_0 = r_d = 1.

The *TT-layer* computes ``y = W x + b`` without ever forming ``W``: the input is reshaped to an
``n_1 x ... x n_d`` tensor and contracted with the cores one after the other (:func:`tt_matvec`), so
the layer stores ``sum_k r_{k-1} m_k n_k r_k`` numbers instead of ``M N`` and costs
``O(d r^2 m max(M, N))`` multiply-adds. The TT-ranks ``r_k`` set the compression. The network is
trained end to end: back-propagation computes the gradient with respect to each core (here autograd
through the same contractions; the paper derives them in Sec. 5). Beside it the paper's comparison
(Sec. 6) is a layer of the same number of parameters in the *matrix rank* format, ``W = U V``
(``U`` ``M x r``, ``V`` ``r x N``), also trained end to end (:class:`LowRankLinear`).

Claims (the Abstract, read in the ar5iv rendering of arXiv:1509.06569 (its latest version, v2) and in
the NIPS proceedings' abstract; the body's tables could not be read where this file was written): "we
convert the dense weight matrices of the fully-connected layers to the Tensor Train format such that
the number of parameters is reduced by a huge factor and at the same time the expressive power of the
layer is preserved"; "for the Very Deep VGG networks we report the compression factor of the dense
weight matrix of a fully-connected layer up to 200000 times leading to the compression factor of the
whole network up to 7 times" (``imagenet-vgg-16-19-with-fc-layers-replac``: ImageNet, unchecked).
``abstract-tt-layer`` checks the first sentence on the harness, read as at most 1 pp of test accuracy
lost against the same network with the dense layer, both trained from scratch with the same schedule
(the reading chen2015 gives "mostly preserving"). ``mnist-cifar-10-mlp-with-1024x1024-tt-lay``
(Sec. 6.1-6.2, unconfirmed, unchecked) gets the comparison with the matrix rank format and the TT-rank
curve, for the reader.

Measured: ``baseline_accuracy`` (the dense network), ``accuracy`` / ``accuracy_change_pp`` of the
TT network at the claim's TT-ranks (paired per seed), ``tt_layer_compression`` (the dense layer's
``M N`` weights over its TT-cores' numbers), ``compression_metrics`` of the whole network
(``param_compression``, ``storage_bits`` / ``storage_compression``: the cores, biases and the
classifier in fp32, what the network stores; ``flops`` / ``flop_reduction`` counted by
``torch.utils.flop_counter`` on the contractions), and ``speedup`` (CPU latency of the dense network
over the TT network, batch 64, ``measure.latency_ms``; orientation only). For
``mnist-cifar-10-...``: ``matrix_rank_accuracy`` of the network whose hidden layer is ``U V`` with
the rank whose parameter count is closest to the TT layer's, ``gain_over_matrix_rank_pp``, and
``accuracy_rank_<r>`` for each TT-rank of the curve. The curve: the TT network at each TT-rank of
``curve_ranks`` (x: the whole network's weights over the stored ones) beside the pruning control,
:func:`atlas.harness.controls.pruning_curve` (global magnitude pruning of the dense network to the
same ratios, fine-tuned ``control_finetune`` steps after the dense network's training).

Harness differs: Fashion-MNIST (28 x 28 = 784 = 4 x 7 x 4 x 7 inputs, as the authors' released
Lasagne example factors it) instead of MNIST padded to 32 x 32 (Sec. 6.1) and ImageNet. The network is
Sec. 6.1's two-layer net, a TT-layer with ReLU, then a dense classifier; its hidden layer has 256 units
(4 x 4 x 4 x 4) in the quick profile, not Sec. 6.1's 1024 (the paper profile's): at TT-rank 8 a TT-layer
of this size needs as many multiply-adds as the dense layer, in thinner products, and the quick budget
trains five networks per seed. Every network (dense, TT, matrix rank) gets the same Adam schedule (the
paper: SGD with momentum, the released MATLAB script 100 epochs with a decaying learning rate); the
cores are initialised Gaussian so that the product ``W`` has He's variance ``2 / N`` (chosen here; the
released Lasagne layer draws the cores from N(0, 0.01^2), the MATLAB one from the TT-Toolbox's
``tt_rand``). The TT-ranks of the claim (8) and of the curve (2, 4, 8) are chosen here, within the range
of Sec. 6.1's experiments as a replication's notes report them (all ranks 8 for the 1024-unit layer),
not read in the paper. The pruning control is fine-tuned after the dense network's training, so it has
more training in total than the TT network.

Quick verdict (3 seeds; 64 s of one core, run at load 13): ``abstract-tt-layer`` not reproduced. The
TT-layer of TT-rank 8 (63x fewer numbers than the 256 x 784 matrix; 34x for the whole network, its fp32
storage) loses 2.82 pp against the same network with the dense layer (95% interval -2.98 to -2.67;
dense 86.7%, TT 83.9%). Beside it the format's advantage over the alternatives at the same size is
clear: the TT network beats the matrix rank format with about as many weights (rank 3, 78.6%) by 5.3 pp,
and global magnitude pruning of the dense network to the same ratios by 2.8 pp at 35x, 8.0 pp at 59x and
11.4 pp at 72x (TT-ranks 8, 4, 2: 83.9, 83.1 and 82.8%). The TT network needs 1.3x the dense network's
FLOPs and ran 0.27x as fast on the CPU at batch 64 (thin products; the paper's speed-ups are for
layers of 25088 x 4096). Why the gap is believed to be the method's at this compression is in
``DIAGNOSIS``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction

DIAGNOSIS = """The TT-layer is checked against the paper's definition by the unit tests (each entry of
the represented matrix is the product of the cores' slices, the contraction equals the product with that
matrix, the cores' parameter count) and trained end to end with the dense network's schedule and data
order. On seed 100 (not the published 0-2) the gap does not close with training: after 3,000 Adam steps
instead of 1,000 the dense network reaches 88.5% and the TT network of TT-rank 8 85.8% (-2.6 pp, against
-2.8 at 1,000 steps); doubling the TT-rank to 16 (17x fewer numbers than the layer) halves it (-1.6
pp at 1,000 steps). So the loss is the capacity of a 63x smaller layer on Fashion-MNIST, not the
schedule: the abstract's 'expressive power preserved' holds here in the weaker sense that the TT-layer
keeps far more accuracy than the matrix rank format or magnitude pruning at the same size. The quick
profile's layer is 256 units, not Sec. 6.1's 1024 (the time budget); the paper profile runs the
1024-unit layer on MNIST. The paper's own accuracy figures were not read here (only the abstract)."""


class TT(Section):
    input_modes: list[PositiveInt] = Field(min_length=2)  # n_1..n_d, their product the input size
    output_modes: list[PositiveInt] = Field(min_length=2)  # m_1..m_d, their product the hidden width
    rank: PositiveInt  # the claim's TT-rank (every inner r_k)
    curve_ranks: list[PositiveInt] = Field(min_length=3)  # the curve's TT-ranks (the claim's among them)

    @model_validator(mode="after")
    def _shapes(self) -> TT:
        if len(self.input_modes) != len(self.output_modes):
            raise ValueError("input_modes and output_modes need the same number of modes d")
        if self.rank not in self.curve_ranks:
            raise ValueError("the claim's rank must be one of curve_ranks")
        return self


class Config(Profile):
    tt: TT
    train: TrainConfig  # every network from scratch: dense, TT, matrix rank
    control_finetune: TrainConfig  # the pruning control's masked fine-tuning after the dense training


_ADAM = {"optimizer": "adam", "lr": 1e-3, "schedule": "cosine"}
PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2,
        "tt": {"input_modes": [4, 4, 4], "output_modes": [4, 4, 4], "rank": 4, "curve_ranks": [1, 2, 4]},
        "train": {"steps": 150, "batch_size": 64, **_ADAM},
        "control_finetune": {"steps": 30, "batch_size": 64, **_ADAM},
    },
    "quick": {
        # Sec. 6.1's network with a 256-unit layer (4 x 4 x 4 x 4; the quick time budget: at TT-rank 8 a
        # TT-layer of this size costs as many multiply-adds as the dense one, in thinner products) on
        # Fashion-MNIST's 784 inputs; 1,000 Adam steps of 100 (1.7 passes) for each of the five networks
        # of a seed, 150 fine-tuning steps per point of the control.
        "dataset": "fashion-mnist", "seeds": 3,
        "tt": {"input_modes": [4, 7, 4, 7], "output_modes": [4, 4, 4, 4], "rank": 8, "curve_ranks": [2, 4, 8]},
        "train": {"steps": 1000, "batch_size": 100, **_ADAM},
        "control_finetune": {"steps": 150, "batch_size": 100, **_ADAM},
    },
    "paper": {
        # Sec. 6.1 on the harness's 28 x 28 MNIST; the released MATLAB script: batch 100, 100 epochs
        # (60,000 steps), SGD with momentum and a learning rate decaying from 1e-2 (cosine here).
        "dataset": "mnist", "seeds": 3,
        "tt": {"input_modes": [4, 7, 4, 7], "output_modes": [4, 8, 8, 4], "rank": 8,
               "curve_ranks": [1, 2, 4, 8, 16]},
        "train": {"steps": 60000, "batch_size": 100, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
                  "schedule": "cosine"},
        "control_finetune": {"steps": 6000, "batch_size": 100, "optimizer": "sgd", "lr": 0.001, "momentum": 0.9,
                             "schedule": "cosine"},
    },
}


# ----------------------------------------------------------------------------------- the TT format
def tt_ranks(d: int, rank: int) -> list[int]:
    """``r_0, ..., r_d``: 1 at both ends, ``rank`` inside."""
    return [1] + [rank] * (d - 1) + [1]


def tt_matvec(x: torch.Tensor, cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """``x W^T`` for ``x`` ``[B, N]`` and ``W`` in TT format (cores ``[r_{k-1}, m_k, n_k, r_k]``), without
    forming ``W``: the input's modes are contracted with the cores from the last to the first, each step
    one matrix product turning the input mode ``n_k`` (with the rank ``r_k``) into the output mode ``m_k``
    (with ``r_{k-1}``), then one transpose that moves ``m_k`` out of the way (row-major multi-indices)."""
    b = x.shape[0]
    done = 1  # m_{k+1} ... m_d, the output modes made so far (outermost)
    t = x.reshape(1, -1, 1)  # [output modes made, B n_1 .. n_k, r_k]
    for core in reversed(cores):
        r0, m, n, r1 = core.shape
        t = t.reshape(-1, n * r1) @ core.permute(2, 3, 0, 1).reshape(n * r1, r0 * m)
        t = t.reshape(done, -1, r0, m).permute(3, 0, 1, 2)  # [m_k, made, B n_1 .. n_{k-1}, r_{k-1}]
        done *= m
        t = t.reshape(done, -1, r0)
    return t.reshape(done, b).T


def tt_full(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """The dense ``M x N`` matrix the cores represent (for tests and inspection):
    ``W((i_1, j_1), ..., (i_d, j_d)) = G_1[i_1, j_1] ... G_d[i_d, j_d]``."""
    full = cores[0][0]  # [m_1, n_1, r_1]
    for core in cores[1:]:
        full = torch.einsum("ijr,rmns->imjns", full, core)
        i, m, j, n, s = full.shape
        full = full.reshape(i * m, j * n, s)
    return full[..., 0]


def tt_params(input_modes: Sequence[int], output_modes: Sequence[int], rank: int) -> int:
    """``sum_k r_{k-1} m_k n_k r_k``: the numbers a TT-layer's cores hold."""
    r = tt_ranks(len(input_modes), rank)
    return sum(r[k] * m * n * r[k + 1] for k, (m, n) in enumerate(zip(output_modes, input_modes, strict=True)))


class TTLinear(nn.Module):
    """A fully-connected layer whose ``M x N`` weight is in TT format: ``cores`` (``r_{k-1} x m_k x n_k x
    r_k``) and a dense bias."""

    def __init__(self, input_modes: Sequence[int], output_modes: Sequence[int], rank: int) -> None:
        super().__init__()
        self.input_modes, self.output_modes, self.rank = list(input_modes), list(output_modes), rank
        self.in_features, self.out_features = math.prod(input_modes), math.prod(output_modes)
        r = tt_ranks(len(input_modes), rank)
        # Var(W_ij) = (prod of inner ranks) * s^(2d) = 2 / N (He's variance for a ReLU layer)
        d = len(input_modes)
        std = (2.0 / self.in_features / math.prod(r[1:-1])) ** (1.0 / (2 * d))
        self.cores = nn.ParameterList(
            nn.Parameter(torch.randn(r[k], m, n, r[k + 1]) * std)
            for k, (m, n) in enumerate(zip(output_modes, input_modes, strict=True)))
        self.bias = nn.Parameter(torch.zeros(self.out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tt_matvec(x.flatten(1), list(self.cores)) + self.bias

    def weight_full(self) -> torch.Tensor:
        return tt_full(list(self.cores))

    def extra_repr(self) -> str:
        return f"input_modes={self.input_modes}, output_modes={self.output_modes}, rank={self.rank}"


class LowRankLinear(nn.Module):
    """The matrix rank format the paper compares with: ``W = U V``, ``U`` ``M x r``, ``V`` ``r x N``."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.v = nn.Linear(in_features, rank, bias=False)
        self.u = nn.Linear(rank, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.u(self.v(x.flatten(1)))


def matrix_rank_for(in_features: int, out_features: int, budget: int) -> int:
    """The rank whose ``U V`` has the number of weights closest to ``budget`` (at least 1)."""
    return max(1, round(budget / (in_features + out_features)))


def hidden_layer_net(first: nn.Module, hidden: int, num_classes: int) -> nn.Sequential:
    """Sec. 6.1's network: the (TT, matrix rank or dense) hidden layer, ReLU, a dense classifier."""
    return nn.Sequential(nn.Flatten(), first, nn.ReLU(), nn.Linear(hidden, num_classes))


def stored_weights(model: nn.Module) -> int:
    """Weights the network stores: TT-cores, ``U`` and ``V``, and the dense layers' weights (no biases;
    the pruning control's ratio counts weights only too)."""
    total = 0
    for module in model.modules():
        if isinstance(module, TTLinear):
            total += sum(c.numel() for c in module.cores)
        elif isinstance(module, nn.Linear):
            total += module.weight.numel()
    return total


# ----------------------------------------------------------------------------------------- the run
def train_network(run: Run, model: nn.Module, stage: str) -> nn.Module:
    """Train ``model`` from scratch with the profile's schedule (the same data order for every network)."""
    run.reseed("novikov2015 data")
    return run.train(model, run.dataset().train, run.train_config("train"), desc=stage)


def build(run: Run, kind: str, tt: TT, rank: int) -> nn.Module:
    data = run.dataset()
    n, m = math.prod(tt.input_modes), math.prod(tt.output_modes)
    if n != math.prod(data.input_shape):
        raise ValueError(f"novikov2015: input modes {tt.input_modes} do not multiply to the input size "
                         f"{math.prod(data.input_shape)}")
    run.reseed(f"novikov2015 init {kind} {rank}")
    first: nn.Module
    if kind == "dense":
        first = nn.Linear(n, m)
    elif kind == "tt":
        first = TTLinear(tt.input_modes, tt.output_modes, rank)
    else:
        first = LowRankLinear(n, m, rank)
    return hidden_layer_net(first, m, data.num_classes).to(run.device)


@reproduction("novikov2015", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    tt = cfg.tt
    data = run.dataset()
    n, m = math.prod(tt.input_modes), math.prod(tt.output_modes)

    dense = train_network(run, build(run, "dense", tt, 0), f"dense {n}-{m}-{data.num_classes}")
    base = run.accuracy(dense, data.test)
    nets = {r: train_network(run, build(run, "tt", tt, r), f"TT-layer rank {r}") for r in tt.curve_ranks}
    acc = {r: run.accuracy(net, data.test) for r, net in nets.items()}
    net = nets[tt.rank]

    dense_weights = stored_weights(dense)
    ratios = {r: dense_weights / stored_weights(nets[r]) for r in tt.curve_ranks}
    metrics = {
        **measure.accuracy_change(base, acc[tt.rank]),
        **measure.compression_metrics(dense, net, data.input_shape, measure.fp32_parts(net)),
        "tt_layer_compression": n * m / tt_params(tt.input_modes, tt.output_modes, tt.rank),
        "weight_compression": ratios[tt.rank],
        "speedup": measure.latency_ms(dense, data.input_shape) / measure.latency_ms(net, data.input_shape),
    }
    modes = f"{'x'.join(map(str, tt.output_modes))} <- {'x'.join(map(str, tt.input_modes))}"
    schedule = cfg.train
    differs = (f"{n}-{m}-{data.num_classes} network on {cfg.dataset}, its {m}-unit hidden layer a TT-layer "
               f"(modes {modes}), every network {schedule.steps} {schedule.optimizer} steps of batch "
               f"{schedule.batch_size} from scratch (lr {schedule.lr:g}, {schedule.schedule}); the paper: "
               "MNIST padded to 32 x 32 with SGD, and VGG on ImageNet")
    record = {"baseline": ("mlp", "baseline_accuracy"), "baseline_spec": {"hidden": [m]}}
    curves = [
        controls.Series("TT-layer (TT-ranks " + ", ".join(map(str, tt.curve_ranks)) + ")", controls.RATIO,
                        controls.ACCURACY, {ratios[r]: acc[r] for r in tt.curve_ranks}),
        controls.pruning_curve(run, dense, [ratios[r] for r in tt.curve_ranks], run.train_config("control_finetune")),
    ]
    run.record("abstract-tt-layer", model=f"{n}-{m}-{data.num_classes} network, TT-layer of TT-rank {tt.rank}",
               metrics=metrics, curves=curves, differs=differs + f"; pruning control fine-tuned "
               f"{cfg.control_finetune.steps} steps after the dense network's training", **record, diagnosis=DIAGNOSIS,
               notes=f"TT-layer compression {metrics['tt_layer_compression']:.0f}x of the {m} x {n} matrix; "
                     "speedup: CPU latency at batch 64, orientation only")

    rank_mr = matrix_rank_for(n, m, tt_params(tt.input_modes, tt.output_modes, tt.rank))
    mr_acc = run.accuracy(train_network(run, build(run, "mr", tt, rank_mr), f"matrix rank {rank_mr}"), data.test)
    run.record("mnist-cifar-10-mlp-with-1024x1024-tt-lay", model=f"TT-layer against matrix rank {rank_mr}",
               differs=differs, **record, metrics={
                   "baseline_accuracy": base, "accuracy": acc[tt.rank], "matrix_rank_accuracy": mr_acc,
                   "gain_over_matrix_rank_pp": acc[tt.rank] - mr_acc, "matrix_rank": float(rank_mr),
                   **{f"accuracy_rank_{r}": acc[r] for r in tt.curve_ranks}},
               notes=f"matrix rank {rank_mr}: {rank_mr * (n + m)} weights in U V against "
                     f"{tt_params(tt.input_modes, tt.output_modes, tt.rank)} in the TT-cores")
