"""Prune the Convolutional Neural Networks with Sparse Shrink (Li & Liu, arXiv preprint 2017;
arXiv:1708.02439).

Method (as the abstract of arXiv:1708.02439 states it; the paper's sections could not be read where
this file was written): "by analyzing the importance of each channel via sparse reconstruction, the
algorithm is able to prune redundant feature maps accordingly", and the pruned model, with fewer
feature maps, directly saves computation. Sparse reconstruction of a layer's channels by a few of
them is read here as the row-sparse self-representation of sparse modelling representative selection:
with ``Y`` the layer's feature maps after the ReLU (one column per channel, one row per image and
position, on ``examples`` training images),

    C* = argmin_C  1/2 ||Y - Y C||_F^2 + lambda ||C||_{2,1},   ||C||_{2,1} = sum_i ||C_{i,:}||_2,

each channel is reconstructed from the others and the group penalty leaves non-zero only the rows of
the channels that are needed to reconstruct the layer; channel ``i``'s importance is ``||C*_{i,:}||_2``.
The problem depends on ``Y`` only through the Gram matrix ``G = Y^T Y`` (``c x c``) and is solved by
proximal gradient steps (ISTA, step ``1 / ||G||_2``, row-wise shrinkage), with ``lambda`` a fraction
``lambda_fraction`` of ``lambda_max = max_i ||G_{i,:}||_2`` (above which ``C* = 0``). In each
convolution the ``rate`` fraction of the channels of smallest importance is removed, with its filter,
its batch-norm channel and the next layer's kernels that read it (Li et al.'s filter surgery,
:func:`reproductions.li2017.remove_filters`), and the smaller dense network is retrained.

Claim (the abstract of arXiv:1708.02439): on CIFAR-100, "we can reduce 56.77% parameters and 73.84%
multiplication in total with only minor decrease in accuracy" (claim ``cifar-100``: 2.31x fewer
parameters, 3.82x fewer multiplications; checked: ``accuracy_change_pp`` at least -1 pp, "minor"
read as one point, against the dense network retrained for the same steps; ``flop_reduction``,
``param_compression`` and the measured CPU ``speedup`` of the smaller dense network are recorded, not
checked, since the harness's network and its rates differ from the paper's).

Measured here: the harness's VGG-style net (Li et al.'s dense network, shared with
:mod:`reproductions.li2017`) pruned at ``layer_rates`` by Sparse Shrink, all layers' importances
computed on the dense network, then retrained once. ``accuracy_change_pp`` against
``baseline_accuracy`` (the dense network trained on for the same retraining steps; ``dense_accuracy``
before), ``flops`` / ``flop_reduction`` / ``flops_removed_pct`` (``torch.utils.flop_counter``), the two
dense models' CPU forward time ``dense_latency_ms`` / ``pruned_latency_ms`` / ``speedup`` (batch 32,
median of 10), ``params`` / ``param_compression`` / ``params_removed_pct`` / ``weight_compression``,
``filters_removed``, ``no_retrain_accuracy_change_pp`` (before retraining), and the same channels'
count removed by Li et al.'s weight L1 norm with the same retraining (``weight_accuracy``,
``gain_over_weight_norm_pp``, recorded, not checked: the abstract compares with no criterion). The
curve: the rates times ``curve_scales`` (25%, 50%, 75% of the pruned layers' filters), each retrained
alike, against the weight compression it reaches, beside global magnitude pruning of the same dense
network at the same ratios with the same retraining steps (:func:`atlas.harness.controls.pruning_curve`;
unstructured, so without the speed-up).

Harness differs: the sparse reconstruction's exact form, its ``lambda``, the images it is computed on
and the per-layer rates are the atlas's choices (the abstract gives none); Fashion-MNIST and a
three-stage 6-12-24-channel VGG-style net instead of CIFAR-100 and the paper's network (not read), its
rates (half of the first two stages' filters, a quarter of the last stage's) chosen so that the
parameters fall as in the paper (2.2x here, 2.31x there; multiplications 2.9x here, 3.82x there); one
pruning of all layers and one retraining of a few hundred SGD steps. The paper profile runs CIFAR-100
with VGG-16's widths on five stages of two convolutions.

Quick verdict (a development run, one thread on a machine loaded about 13 deep, 64 s of CPU): inconclusive,
the dense baseline 7.5 pp below its long-schedule reference (the quick budget). With 30 of 84 channels
removed (2.2x fewer parameters, 2.9x fewer FLOPs) the network ended 3.1 pp below the dense one given
the same 150 retraining steps (95% interval -7.2 to +1.0; per seed -5.0, -2.2, -2.0), 0.5 pp above
Li et al.'s weight L1 norm on average (-2.5, +1.7, +2.3). The CPU speed-up was not measurable on the
loaded machine (0.4x to 1.8x). See ``DIAGNOSIS``.
"""

from __future__ import annotations

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
from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction


class Reconstruction(Section):
    """The sparse self-representation of each layer's channels."""

    examples: PositiveInt  # training images whose feature maps form Y
    positions: PositiveInt  # positions sampled per image (rows of Y per image)
    lambda_fraction: float = Field(gt=0, lt=1)  # lambda / lambda_max
    iterations: PositiveInt  # ISTA steps
    tolerance: PositiveFloat = 1e-6  # stop when the relative change of C falls below it


class Config(Profile):
    net: Net  # the ancestor's VGG-style ConvNet (li2017's ``net`` section)
    dense: TrainConfig  # the trained network that is pruned (li2017's ``dense`` section)
    dense_per_seed: bool = True  # False: one dense network (from seed 0) for every seed
    retrain: TrainConfig  # the retraining of the pruned network
    # fraction of each convolution's channels removed, in network order (chosen: the abstract gives none)
    layer_rates: list[float] = Field(min_length=1)
    curve_scales: list[float] = Field(min_length=3)  # the rates times each scale; 1.0 is the claim's
    reconstruction: Reconstruction

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if len(self.layer_rates) != len(self.net.chans) * self.net.per_stage:
            raise ValueError("layer_rates needs one rate per convolution (len(chans) * per_stage)")
        if 1.0 not in self.curve_scales or not all(s > 0 and max(self.layer_rates) * s < 1 for s in self.curve_scales):
            raise ValueError("curve_scales must hold 1.0 and keep every scaled rate below 1")
        return self


def _sgd(steps: int, lr: float, batch_size: int, schedule: str = "cosine") -> dict:
    """A training stage: SGD with momentum 0.9 and weight decay 5e-4 (li2017's recipe, whose dense net is used)."""
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": schedule}


RATES_3x2 = [0.5, 0.5, 0.5, 0.5, 0.25, 0.25]  # 2.2x fewer parameters on 6-12-24 (the paper: 2.31x)
RATES_5x2 = [0.5] * 6 + [0.25] * 4  # the same pattern on five stages
CURVE_SCALES = [0.5, 1.0, 1.5]
RECONSTRUCTION = {"examples": 200, "positions": 16, "lambda_fraction": 0.1, "iterations": 300}

# quick: li2017's dense network (600 steps at batch 32, one for the 3 seeds); per seed 150 retraining
# steps (li2017's) for the continued baseline, the three curve levels, the weight-norm criterion and the
# control's three points: 8 x 150 = 1,200 steps of a 6-12-24 net.
PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "net": {"chans": [6, 12, 24], "per_stage": 2},
        "dense": _sgd(60, 0.05, 64), "retrain": _sgd(15, 0.01, 64, "constant"),
        "layer_rates": RATES_3x2, "curve_scales": CURVE_SCALES, "reconstruction": RECONSTRUCTION,
    },
    "quick": {
        "dataset": "fashion-mnist", "seeds": 3, "test_limit": 3000, "net": {"chans": [6, 12, 24], "per_stage": 2},
        "dense": _sgd(600, 0.05, 32), "dense_per_seed": False, "retrain": _sgd(150, 0.01, 32, "constant"),
        "layer_rates": RATES_3x2, "curve_scales": CURVE_SCALES, "reconstruction": RECONSTRUCTION,
    },
    "paper": {
        # CIFAR-100 and VGG-16's widths on five stages of two convolutions (li2017's paper network; the
        # paper's own network and schedule were not read); li2017's dense and retraining budgets.
        "dataset": "cifar100", "seeds": 3, "net": {"chans": [64, 128, 256, 512, 512], "per_stage": 2},
        "dense": _sgd(64000, 0.1, 128, "step"), "retrain": _sgd(15600, 0.001, 128, "constant"),
        "layer_rates": RATES_5x2, "curve_scales": CURVE_SCALES,
        "reconstruction": {**RECONSTRUCTION, "examples": 500},
    },
}

CLAIM = "cifar-100"


# ---------------------------------------------------------------------------- sparse reconstruction
def row_shrink(c: torch.Tensor, threshold: float) -> torch.Tensor:
    """The proximal operator of ``threshold * ||C||_{2,1}``: each row scaled by ``max(0, 1 - threshold / ||row||)``."""
    norms = c.norm(dim=1, keepdim=True)
    return c * (1 - threshold / norms.clamp_min(1e-30)).clamp_min(0)


def sparse_self_representation(gram: torch.Tensor, lam: float, iterations: int,
                               tolerance: float = 1e-6) -> torch.Tensor:
    """``argmin_C 1/2 ||Y - Y C||_F^2 + lam ||C||_{2,1}`` from ``G = Y^T Y`` by ISTA (the gradient of the
    smooth part is ``G C - G``; step ``1 / ||G||_2``), started from ``C = 0``."""
    g = gram.double()
    step = 1.0 / torch.linalg.matrix_norm(g, ord=2).clamp_min(1e-30)
    c = torch.zeros_like(g)
    for _ in range(iterations):
        new = row_shrink(c - step * (g @ c - g), float(step * lam))
        if (new - c).norm() <= tolerance * max(float(new.norm()), 1e-30):
            return new
        c = new
    return c


def channel_importance(y: torch.Tensor, lambda_fraction: float, iterations: int,
                       tolerance: float = 1e-6) -> torch.Tensor:
    """Each channel's importance, the row norm ``||C*_{i,:}||_2`` of the sparse self-representation of
    the columns of ``y`` (rows: samples, columns: channels); ``lambda = lambda_fraction * max_i ||G_i||``."""
    g = y.double().T @ y.double()
    lam = lambda_fraction * float(g.norm(dim=1).max())
    return sparse_self_representation(g, lam, iterations, tolerance).norm(dim=1)


def feature_relus(model: nn.Module) -> list[nn.Module]:
    """The ReLUs whose outputs are the convolutions' maps: in a VGG-style chain, one after each convolution."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if len(relus) != len(conv_layers(model)):
        raise ValueError(f"{len(relus)} ReLUs for {len(conv_layers(model))} convolutions: not a VGG-style chain")
    return relus


@torch.no_grad()
def layer_features(model: nn.Module, x: torch.Tensor, positions: int, generator: torch.Generator) -> list[torch.Tensor]:
    """For every convolution, ``Y``: its maps after the ReLU on the images ``x`` at ``positions`` random
    positions per image, one row per (image, position), one column per channel."""
    captured: list[torch.Tensor] = []
    handles = [relu.register_forward_hook(lambda _m, _i, out: captured.append(out.detach().cpu()))
               for relu in feature_relus(model)]
    was = model.training
    model.eval()
    try:
        model(x.to(next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was)
    out = []
    for maps in captured:
        n, c, h, w = maps.shape
        flat = maps.permute(0, 2, 3, 1).reshape(n, h * w, c)
        pick = torch.randint(h * w, (n, min(positions, h * w)), generator=generator)
        out.append(torch.gather(flat, 1, pick[..., None].expand(-1, -1, c)).reshape(-1, c))
    return out


def sparse_shrink_scores(model: nn.Module, x: torch.Tensor, cfg: dict, generator: torch.Generator) -> list[torch.Tensor]:
    """Sparse Shrink's importance of every channel of every convolution (on the network as it is)."""
    return [channel_importance(y, cfg["lambda_fraction"], cfg["iterations"], cfg["tolerance"])
            for y in layer_features(model, x, cfg["positions"], generator)]


def prune_by_scores(model: nn.Module, scores: list[torch.Tensor], rates: list[float]) -> nn.Module:
    """A smaller dense copy of ``model``: each convolution keeps all but its ``rate`` fraction of
    channels of smallest score (with Li et al.'s surgery)."""
    convs = [model.get_submodule(n) for n in conv_layers(model)]
    kept = [keep_largest(s.float(), n_pruned(c.out_channels, r)) for s, c, r in zip(scores, convs, rates, strict=True)]
    return remove_filters(model, kept)


#: Shown beside a failed check: what was tried and why the gap is believed to be the method's or the harness's.
DIAGNOSIS = """
Only the abstract of arXiv:1708.02439 could be read: the sparse reconstruction is the atlas's reading
(the row-sparse self-representation of each layer's maps, importance the row norm), and its lambda,
the images and the per-layer rates are chosen, not read. The ISTA solver (its optimality conditions)
and the surgery are unit-tested (a dead channel gets importance 0 and its removal leaves the output
unchanged). In a development quick run the pruned network (2.2x fewer parameters, 2.9x fewer FLOPs)
ended 3.1 pp below the dense network retrained for the same 150 steps, interval -7.2 to +1.0, and
before retraining it is at chance; Li et al.'s weight L1 norm with the same rates and retraining did
0.5 pp worse on average, and global magnitude pruning of as many weights (unstructured, no speed-up)
lost nothing. The harness's network is tiny (3 of the first layer's 6 filters removed) and its dense
baseline is 7.5 pp below the long-schedule reference; Li et al.'s filter pruning loses 2-3 pp on the
same network and budget for the same reason (see li2017), so the gap is believed to be the tiny network
and the short retraining more than the criterion. The paper profile (VGG-16's widths on CIFAR-100) is
where the claim is tested at a scale like the paper's.
"""


def retrained(run: Run, model: nn.Module, stage: str) -> nn.Module:
    """``model`` retrained with the ``retrain`` section; every retraining of a seed sees the same minibatches."""
    run.reseed("li2017b retrain")
    run.train(model, run.dataset().train, run.train_config("retrain"), desc=stage)
    return model.eval()


@reproduction("li2017b", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = run.config
    data = run.dataset()
    shape = data.input_shape
    rates = cfg["layer_rates"]
    dense = train_dense(run)
    dense_acc = run.accuracy(dense, data.test)
    base = run.accuracy(retrained(run, controls.trainable_copy(dense), "dense, continued"), data.test)

    rec = cfg["reconstruction"]
    x = data.train.subset(rec["examples"]).x
    scores = sparse_shrink_scores(dense, x, rec, torch.Generator().manual_seed(run.seed))
    curve: dict[float, float] = {}
    for scale in cfg["curve_scales"]:
        pruned = prune_by_scores(controls.trainable_copy(dense), scores, [r * scale for r in rates])
        if scale == 1.0:
            one_shot = run.accuracy(pruned, data.test)
            model = retrained(run, pruned, "sparse shrink")
            curve[round(weight_compression(dense, model), 2)] = acc = run.accuracy(model, data.test)
        else:
            curve[round(weight_compression(dense, pruned), 2)] = run.accuracy(
                retrained(run, pruned, f"sparse shrink x{scale:g}"), data.test)
    l1 = [filter_l1(dense.get_submodule(n)).cpu() for n in conv_layers(dense)]
    weight_acc = run.accuracy(retrained(run, prune_by_scores(controls.trainable_copy(dense), l1, rates),
                                        "weight L1 norm"), data.test)

    removed = sum(dense.get_submodule(n).out_channels for n in conv_layers(dense)) - sum(
        model.get_submodule(n).out_channels for n in conv_layers(model))
    metrics = smaller_model_metrics(dense, model, shape)
    net = cfg["net"]
    run.record(
        CLAIM,
        model=(f"staged-conv {'-'.join(map(str, net['chans']))} x{net['per_stage']}: {removed} channels removed "
               f"by Sparse Shrink, rates {rates}, retrained"),
        metrics={
            **measure.accuracy_change(base, acc),
            "dense_accuracy": dense_acc,
            "no_retrain_accuracy_change_pp": one_shot - base,
            **metrics,
            "params_removed_pct": 100.0 * (1 - 1 / metrics["param_compression"]),
            "filters_removed": removed,
            "weight_accuracy": weight_acc,
            "gain_over_weight_norm_pp": acc - weight_acc,
        },
        baseline=("staged-conv", "baseline_accuracy"),
        baseline_spec=dict(net),
        diagnosis=DIAGNOSIS,
        differs=(f"{data.name} instead of CIFAR-100; a {len(net['chans'])}-stage VGG-style net "
                 f"({'-'.join(map(str, net['chans']))}, {net['per_stage']} convs a stage) instead of the paper's "
                 f"(not read); rates {rates} chosen (the abstract gives none); row-sparse self-representation of "
                 f"each layer's maps on {rec['examples']} training images, lambda {rec['lambda_fraction']:g} of "
                 f"lambda_max; one pruning, {cfg['retrain']['steps']} retraining steps"),
        curves=[
            controls.Series("Sparse Shrink (Li & Liu)", controls.RATIO, controls.ACCURACY, curve),
            controls.pruning_curve(run, dense, sorted(curve), run.train_config("retrain")),
        ],
    )
