"""Extremely Low Bit Neural Network: Squeeze the Last Bit Out with ADMM (Leng, Dou, Li, Zhu & Jin, AAAI 2018;
arXiv:1707.09870).

Method (Sec. 3): training a network whose weights lie in a discrete set is posed as the constrained problem
``min_W f(W)`` s.t. ``W in C``, with per layer ``C_l = {alpha_l q : q in Q}``, a scale ``alpha_l > 0`` and
a small set ``Q``: binary ``{-1, +1}``, ternary ``{-1, 0, +1}``, or powers of two ``{0, +-1, +-2, ...,
+-2^N}`` (``{-2, ..., +2}``, ``{-4, ..., +4}``). An auxiliary copy ``G`` of the weights decouples the
continuous weights from the discrete constraint (``W = G``, ``G in C``), and ADMM alternates, with the
scaled dual ``lambda`` and a penalty ``rho``:

    W^{k+1} = argmin_W  f(W) + rho/2 ||W - G^k + lambda^k||^2            (proximal step)
    G^{k+1} = Proj_C(W^{k+1} + lambda^k)                                  (projection step)
    lambda^{k+1} = lambda^k + W^{k+1} - G^{k+1}                            (dual update)

The proximal step is taken by the extragradient method: a predictor ``W_bar = W - eta grad L(W)`` and the
corrector ``W <- W - eta grad L(W_bar)`` of the augmented loss ``L``. The projection onto ``alpha Q`` with
a free scale is solved by iterative quantization: with ``V = W + lambda``, alternate ``q = Proj_Q(V /
alpha)`` (the nearest element of ``Q``, element-wise) and ``alpha = <V, q> / <q, q>`` (least squares)
until it settles. The deployed weights are ``G``: one fp32 ``alpha`` per layer and a code per weight.

Claims (read: the abstract, AAAI 2018 and arXiv:1707.09870; the result tables, on ImageNet with AlexNet, VGG-16,
ResNet-18/50 and GoogLeNet and on Pascal VOC detection, could not be read here): "the proposed algorithm
is more effective than state-of-the-art approaches when coming to extremely low bit neural network",
and its subproblem solvers converge "considerably faster" than conventional optimization. Checked
(claim ``abstract-low-bit``) as ``gain_over_bwn_pp``: the binary ADMM network's test accuracy minus a
Binary-Weight-Network's (XNOR-Net's BWN, :mod:`atlas_reproductions.rastegari2016`, the binary method
the paper compares with), both fine-tuned from the same trained fp32 network for the same steps; the
gain must be at least 0 (the atlas's reading of "more effective").

What is measured: ``baseline_accuracy`` (the fp32 network fine-tuned for the same steps),
``accuracy`` / ``accuracy_change_pp`` (binary ADMM), ``bwn_accuracy``, ``gain_over_bwn_pp``,
``ternary_accuracy_change_pp`` and ``pow2_accuracy_change_pp`` (ADMM with ``{-1, 0, 1}`` and with
``{-4, -2, -1, 0, 1, 2, 4}``, against the same baseline), ``weight_storage_compression`` (the binary
layers' fp32 weights against their 1-bit codes and fp32 ``alpha``, ``atlas_kernels.encode_binary``;
decodes exactly to ``G``), ``storage_bits`` / ``storage_compression`` (with the fp32 biases). The
curve: ADMM at 1, 2 and 3 bits (binary, ternary, ``{-4..4}``: 7 levels in 3 bits) beside the fp32
network uniformly quantized and fine-tuned with the straight-through estimator for the same steps
(:mod:`atlas.harness.controls`).

Harness differs: the harness LeNet-5 at half width on Fashion-MNIST (quick), trained in fp32 once for
all seeds (2,000 Adam steps of batch 100, zhu2017's quick budget), then fine-tuned per seed and method
for 200 steps of batch 32 from it (the paper quantizes ImageNet networks from pre-trained models).
Every conv / fc layer is quantized, the first and last included; biases stay fp32. The penalty
``rho = 20``, 20 proximal steps per ADMM iteration and 10 alternations of the projection are chosen
here (the paper's values were not read). Every fine-tuning (ADMM, BWN, fp32, the controls) uses plain
SGD at learning rate 0.005 with a cosine schedule, the extragradient predictor the same ``eta``: with
momentum 0.9, or at learning rate 0.01 or more, the extragradient iterations diverged to NaN on seed
100 (for a curvature ``h`` the extragradient factor ``1 - eta h + (eta h)^2`` exceeds 1 once ``eta h >
1``, where plain gradient descent is still stable). An extragradient step costs two gradient
evaluations, a BWN or fp32 step one; the budget counts optimizer steps.

Quick result (seeds 0-2, before publication): the binary ADMM network reaches 73.6 %, 6.1 pp below
BWN (79.7 %; 95 % interval of the gain [-6.4, -5.8] pp): not reproduced. ADMM also stays below the
fine-tuned uniform-quantization control at every bit-width (73.6 / 80.4 / 86.5 % at 1 / 2 / 3 bits
against 84.4 / 88.1 / 89.6 %); the fp32 network fine-tuned for the same steps reaches 90.2 %, 0.6 pp
below its reference (converged). The binary encoding is 30.7x smaller than the fp32 weights (28.4x with
the biases). With 300 fine-tuning steps the gain over BWN was -5.6 pp.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import atlas_kernels as ak
import torch
from atlas_kernels.lowbit import bits_needed
from atlas_reproductions.courbariaux2015 import clip_latent, quantize_layers
from atlas_reproductions.rastegari2016 import BWNConv2d, BWNLinear
from pydantic import PositiveFloat, PositiveInt
from torch import nn
from torch.func import functional_call

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction

SetName = Literal["binary", "ternary", "pow2-1", "pow2-2"]


class Admm(Section):
    rho: PositiveFloat  # the augmented Lagrangian's penalty (chosen here, see the docstring)
    interval: PositiveInt  # proximal (extragradient) steps between two projection / dual updates
    projection_iters: PositiveInt  # alternations of the iterative quantization
    sets: list[SetName]  # the sets Q (the first is the claim's binary network)


class Config(Profile):
    lenet5_width: PositiveFloat  # the harness LeNet-5's width multiplier
    dense: TrainConfig  # the fp32 network every method starts from (trained once, seed 0)
    finetune: TrainConfig  # each of: fp32 same-budget baseline, BWN, ADMM per set, control per bit-width
    admm: Admm
    control_bits: list[PositiveInt]


def _sgd(steps: int, lr: float, batch_size: int) -> dict:
    """Plain SGD (no momentum): the extragradient method's steps."""
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "momentum": 0.0,
            "schedule": "cosine"}


ADMM = {"rho": 20.0, "interval": 20, "projection_iters": 10, "sets": ["binary", "ternary", "pow2-2"]}

PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "lenet5_width": 0.5,
        "dense": {"steps": 60, "batch_size": 64, "optimizer": "adam", "lr": 0.003, "schedule": "cosine"},
        "finetune": _sgd(40, 0.005, 32), "admm": {**ADMM, "interval": 10}, "control_bits": [1, 2, 3],
    },
    "quick": {
        "dataset": "fashion-mnist", "seeds": 3, "lenet5_width": 0.5,
        "dense": {"steps": 2000, "batch_size": 100, "optimizer": "adam", "lr": 0.003, "schedule": "cosine"},
        "finetune": _sgd(200, 0.005, 32), "admm": ADMM, "control_bits": [1, 2, 3],
    },
    "paper": {
        # Sec. 4: ImageNet networks quantized from pre-trained ones; here LeNet-5 on MNIST with the
        # harness's schedules (the paper's ImageNet schedule was not read)
        "dataset": "mnist", "seeds": 3, "lenet5_width": 1.0,
        "dense": {"steps": 12000, "batch_size": 100, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
        "finetune": _sgd(12000, 0.001, 100), "admm": {**ADMM, "interval": 100}, "control_bits": [1, 2, 3],
    },
}


# ------------------------------------------------------------------------------ the constraint sets
def levels(name: str) -> torch.Tensor:
    """``Q``: binary ``{-1, 1}``, ternary ``{-1, 0, 1}``, ``pow2-N``: ``{0, +-1, +-2, ..., +-2^N}``."""
    if name == "binary":
        return torch.tensor([-1.0, 1.0])
    if name == "ternary":
        return torch.tensor([-1.0, 0.0, 1.0])
    if name.startswith("pow2-"):
        mags = [2.0**i for i in range(int(name.split("-")[1]) + 1)]
        return torch.tensor(sorted([-m for m in mags] + [0.0] + mags))
    raise ValueError(f"unknown set {name!r}")


def nearest(v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Each element of ``v`` replaced by its nearest element of the sorted set ``q``."""
    q = q.to(v.device, v.dtype)
    mid = (q[1:] + q[:-1]) / 2
    return q[torch.bucketize(v, mid)]


def project(v: torch.Tensor, q: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Iterative quantization: ``(alpha, codes)`` minimising ``||v - alpha codes||`` over ``alpha > 0`` and
    ``codes in Q^n`` by alternating ``codes = Proj_Q(v / alpha)`` and ``alpha = <v, codes> / <codes, codes>``,
    starting from ``alpha = mean|v| / mean|Q \\ 0|`` ."""
    nonzero = q[q != 0].abs().mean()
    alpha = (v.abs().mean() / nonzero).clamp_min(torch.finfo(v.dtype).tiny)
    codes = nearest(v / alpha, q)
    for _ in range(iters):
        denom = (codes * codes).sum()
        if denom == 0:
            break
        alpha = ((v * codes).sum() / denom).clamp_min(torch.finfo(v.dtype).tiny)
        new = nearest(v / alpha, q)
        if torch.equal(new, codes):
            break
        codes = new
    return alpha, codes


def weight_names(model: nn.Module) -> list[str]:
    return controls.weight_names(model)


class AdmmState:
    """``G`` and ``lambda`` of every quantized weight, and ``rho``."""

    def __init__(self, model: nn.Module, q: torch.Tensor, rho: float, iters: int) -> None:
        self.q, self.iters = q, iters
        params = dict(model.named_parameters())
        self.names = weight_names(model)
        self.rho = rho
        self.dual = {n: torch.zeros_like(params[n]) for n in self.names}
        self.g: dict[str, torch.Tensor] = {}
        self.codes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.update(model, dual=False)

    @torch.no_grad()
    def update(self, model: nn.Module, dual: bool = True) -> None:
        """The projection step ``G = Proj_C(W + lambda)`` and, after it, the dual update."""
        params = dict(model.named_parameters())
        for n in self.names:
            w = params[n].detach()
            alpha, codes = project(w + self.dual[n], self.q, self.iters)
            self.codes[n] = (alpha, codes)
            self.g[n] = alpha * codes
            if dual:
                self.dual[n] += w - self.g[n]

    def penalty(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """``rho / 2 sum_l ||W_l - G_l + lambda_l||^2``."""
        return sum(self.rho / 2 * (weights[n] - self.g[n] + self.dual[n]).pow(2).sum() for n in self.names)


def extragradient_loss(state: AdmmState, optimizer: torch.optim.Optimizer):
    """The training loop's ``loss_fn``: the augmented loss at the predictor ``W_bar = W - eta grad L(W)``,
    written as a function of ``W`` (``W_bar`` shifts ``W`` by a constant), so that the optimizer's step at
    ``W`` follows ``grad L(W_bar)``: the extragradient corrector."""
    ce = nn.CrossEntropyLoss()

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        params = dict(model.named_parameters())
        loss = ce(model(x), y) + state.penalty(params)
        grads = torch.autograd.grad(loss, list(params.values()))
        eta = optimizer.param_groups[0]["lr"]
        shifted = {n: p - eta * g.detach() for (n, p), g in zip(params.items(), grads, strict=True)}
        return ce(functional_call(model, shifted, (x,)), y) + state.penalty(shifted)

    return loss_fn


def train_admm(run: Run, dense: nn.Module, set_name: str) -> tuple[nn.Module, AdmmState]:
    """Fine-tune ``dense`` by ADMM towards ``set_name``; the returned network carries ``G``."""
    cfg = run.config["admm"]
    model = controls.trainable_copy(dense)
    state = AdmmState(model, levels(set_name), cfg["rho"], cfg["projection_iters"])
    ft = run.train_config("finetune")
    opt = torch.optim.SGD(model.parameters(), lr=ft.lr, momentum=ft.momentum, weight_decay=ft.weight_decay)
    step = [0]

    def after(m: nn.Module) -> None:
        step[0] += 1
        if step[0] % cfg["interval"] == 0:
            state.update(m)

    run.reseed("leng2018 finetune data")
    run.train(model, run.dataset().train, ft, desc=f"ADMM {set_name}", loss_fn=extragradient_loss(state, opt),
              after_step=after, optimizer=opt)
    state.update(model, dual=False)  # the final projection: the deployed G
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n in state.names:
            params[n].copy_(state.g[n])
    return model.eval(), state


def train_bwn(run: Run, dense: nn.Module) -> nn.Module:
    """XNOR-Net's Binary-Weight-Network (rastegari2016's layers: per-filter ``alpha sign(W)``, latent
    weights clipped to [-1, 1]) fine-tuned from the same fp32 network for the same steps."""
    model = quantize_layers(controls.trainable_copy(dense), BWNLinear, BWNConv2d)
    run.reseed("leng2018 finetune data")
    return run.train(model, run.dataset().train, run.train_config("finetune"), desc="BWN", after_step=clip_latent)


# ------------------------------------------------------------------------------ storage
def encode_binary_layers(state: AdmmState, shapes: dict[str, Sequence[int]]) -> dict[str, ak.LowBitWeight]:
    """The binary ADMM network's layers as 1-bit codes with their fp32 ``alpha``; decodes to ``G``."""
    out = {}
    for n in state.names:
        alpha, codes = state.codes[n]
        out[n] = ak.encode_binary(codes.reshape(shapes[n][0], -1), alpha)
    return out


def train_dense(run: Run) -> nn.Module:
    width = run.config["lenet5_width"]

    def fit(model: nn.Module) -> None:
        run.reseed("leng2018 dense data", seed=0)
        run.train(model, run.dataset().train, run.train_config("dense"), desc="fp32 dense")

    spec = {"model": "lenet-5", "width": width, "dense": run.config["dense"]}
    return run.cached_model("leng2018-dense", spec, build=lambda: run.model("lenet-5", width=width), fit=fit,
                            per_seed=False)


DIAGNOSIS = """
The binary ADMM network ends about 5.5 pp below XNOR-Net's Binary-Weight-Network fine-tuned from the
same fp32 LeNet-5 for the same steps (seeds 0-2), and below the fine-tuned uniform-quantization control
at 1, 2 and 3 bits. Checked on seed 100, outside the published seeds: the extragradient step equals a
gradient step taken at the predictor (unit test), the projection is the least-squares scale and
nearest codes (unit test), and the ADMM updates follow the scaled form W, then G = Proj(W + lambda),
then lambda += W - G. With a small penalty (rho 0.1 to 1) W keeps its accuracy (82 to 86 %) but is far
from G, whose accuracy is 58 to 65 %; with rho 5 to 20 W and G meet near 74 to 78 %; with momentum or a
learning rate of 0.01 or more the extragradient iterations diverge. Three times the fine-tuning steps
(900) leave the gap at 6.6 pp (ADMM 76.8 %, BWN 83.4 %). Part of the gap is BWN's scale per output
filter against ADMM's one scale per layer (as the paper's sets are defined); the rest the atlas
attributes to the method at this budget: the penalty anchors W to a G recomputed every 20 steps, so the
loss is lowered at W rather than at the binary weights the network deploys, where the straight-through
estimator trains the deployed weights directly. The paper's ImageNet schedules and penalty were not
read; a longer schedule with a growing penalty may close the gap.
"""


@reproduction("leng2018", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    cfg = run.config
    width = cfg["lenet5_width"]
    dense = train_dense(run)
    run.reseed("leng2018 finetune data")
    baseline = run.train(controls.trainable_copy(dense), data.train, run.train_config("finetune"),
                         desc="fp32 same-budget baseline")
    base_acc = run.accuracy(baseline, data.test)
    bwn_acc = run.accuracy(train_bwn(run, dense), data.test)

    accs: dict[str, float] = {}
    first: tuple[nn.Module, AdmmState] | None = None
    for name in cfg["admm"]["sets"]:
        model, state = train_admm(run, dense, name)
        accs[name] = run.accuracy(model, data.test)
        first = first or (model, state)
    assert first is not None
    binary, state = first
    main = cfg["admm"]["sets"][0]
    params = dict(binary.named_parameters())
    encoded = encode_binary_layers(state, {n: params[n].shape for n in state.names})
    parts = [measure.encoded(n, q, "1-bit codes and alpha") for n, q in encoded.items()]
    parts += measure.fp32_parts(binary, skip=sorted(encoded))
    bits = measure.storage_bits(parts)
    code_bits = sum(p.bits for p in parts if p.what == "1-bit codes and alpha")
    n_weights = sum(params[n].numel() for n in state.names)
    extra = {f"{'pow2' if n.startswith('pow2') else n}_accuracy_change_pp": accs[n] - base_acc
             for n in cfg["admm"]["sets"][1:]}
    ft = run.train_config("finetune")
    bits_of = {n: float(bits_needed(len(levels(n)))) for n in cfg["admm"]["sets"]}
    run.record(
        "abstract-low-bit",
        model=f"LeNet-5 (20C5-MP2-50C5-MP2-500FC-10) at width {width:g}, every conv/fc layer {main} by ADMM",
        metrics={
            **measure.accuracy_change(base_acc, accs[main]),
            "bwn_accuracy": bwn_acc,
            "gain_over_bwn_pp": accs[main] - bwn_acc,
            **extra,
            "storage_bits": float(bits),
            "storage_compression": measure.dense_bits(baseline) / bits,
            "weight_storage_compression": 32 * n_weights / code_bits,
        },
        differs=(f"harness LeNet-5 at width {width:g} instead of ImageNet networks; one fp32 network trained for "
                 f"{cfg['dense']['steps']} steps, then {ft.steps} fine-tuning steps of batch {ft.batch_size} each "
                 "for ADMM (per set), BWN, the fp32 baseline and the controls, from the same network and data order"),
        baseline=("lenet-5", "baseline_accuracy"),
        baseline_spec={"width": width} if width != 1.0 else {},
        diagnosis=DIAGNOSIS,
        curves=[controls.Series("ADMM (binary, ternary, {-4..4})", controls.BITS, controls.ACCURACY,
                                {bits_of[n]: accs[n] for n in cfg["admm"]["sets"]}),
                controls.quantization_curve(run, dense, cfg["control_bits"], ft)],
    )
