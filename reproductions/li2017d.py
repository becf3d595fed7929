"""Performance Guaranteed Network Acceleration via High-Order Residual Quantization (Li, Ni, Zhang, Yang &
Gao, ICCV 2017, arXiv:1708.08687; HORQ).

Method (the Abstract and Fig. 1's caption; Sec. 3 was not read, so the formulas below are the atlas's
reading of the Abstract's "recursively performs residual quantization and yields a series of binary
input images with decreasing magnitude scales"): XNOR-Net (:mod:`atlas_reproductions.rastegari2016`,
imported here) binarises a layer's input once, ``X ~ beta_1 H_1`` with ``H_1 = sign(X)`` and
``beta_1 = mean|X|``: an order-one approximation. HORQ binarises the residual again, recursively:

- ``R_0 = X``; for ``i = 1..K``: ``H_i = sign(R_{i-1})``, ``beta_i = mean|R_{i-1}|``,
  ``R_i = R_{i-1} - beta_i H_i``, so that ``X ~ sum_{i<=K} beta_i H_i`` (order ``K``);
- each term is a binary input: the layer's output is the sum of ``K`` XNOR products with the same
  binary weights ``alpha B`` (XNOR-Net's, Fig. 1: "We use the first-order binary quantization B and
  alpha of weight filter W ... The final output Y is the sum of outputs in different orders"),
  ``Y = sum_i beta_i (H_i (*) B) alpha``;
- the error guarantee (derived here): ``||R_i||^2 = ||R_{i-1}||^2 - n beta_i^2`` (the least-squares
  scale of the signs removes ``n beta_i^2``), so every order reduces the approximation error (the
  Abstract's "approximation error guarantee property");
- training (the "high-order gradient propagation"): every ``sign`` with BNN's straight-through gradient
  (``1_{|r| <= 1}``), the scales ``beta_i`` constants of the input, the weights as in XNOR-Net
  (Sec. 3.1 gradient, latent weights clipped to [-1, 1]). For a convolution (the paper's formulation
  was not read) the residual is taken here per pixel over the channels, ``beta_i`` the map
  ``A_i = mean_c |R_{i-1}|``, and each order's product is scaled by XNOR-Net's ``K_i = A_i * k`` (the
  mean of ``A_i`` over each patch): order one is XNOR-Net's convolution.

At run time every order is one XNOR-popcount product (:func:`atlas_reproductions.rastegari2016.
xnor_popcount` on the packed signs of ``H_i``, scaled by ``beta_i``): order ``K`` costs ``K`` binary
products, with weights stored once (``atlas_kernels.binarize_weight``: 1-bit signs and one fp32 ``alpha``
per filter).

Claims (arXiv:1708.08687v1; only the Abstract and the Fig. 1 caption could be read, the tables
(MNIST, CIFAR-10) and the speed-up figure were not):

- ``approximation-error`` (Abstract): the high-order scheme "achieves more accurate approximation" with
  an "approximation error guarantee". Checked: ``residual_error_ratio`` = ``||X - X^_2|| / ||X - X^_1||``
  over the inputs of every HORQ layer of the trained order-two network on test images (below 1).
- ``accuracy-over-order-one`` (Abstract): order-one input binarisation "suffers a big accuracy loss";
  the high-order scheme "yields great recognition accuracy while being accelerated". Checked:
  ``order2_gain_pp``, the order-two network's test accuracy minus the order-one (XNOR-Net) network's,
  the same initial weights and steps (above 0).

What is measured: ``baseline_accuracy`` (fp32), ``accuracy`` / ``accuracy_change_pp`` (order two),
``order1_accuracy``, ``order2_accuracy``, ``order3_accuracy``, ``order2_gain_pp``, ``order3_gain_pp``
(against order one), ``residual_error_order{1,2,3}`` (``||R_K|| / ||X||`` on the order-two network's
binary-layer inputs), ``residual_error_ratio``, ``deployed_change_pp`` (the order-two network through
the packed XNOR-popcount path against PyTorch: 0 when nothing is lost), ``storage_compression`` /
``weight_storage_compression`` (as in XNOR-Net: the order does not change the weights), and
``speedup_order{1,2,3}``: one 3x3 convolution of 256 channels on a 14x14 map at batch 1, fp32
``F.conv2d`` against the HORQ layer of that order on the packed path, timed in the same run on one
CPU thread (unchecked: the paper's figure was not read).

The curve (``accuracy-over-order-one``): the HORQ network at orders 1, 2 and 3 (x: the bits of the
binarised input representation, ``K`` binary planes; weights 1 bit) beside the fp32 network's weights
uniformly quantized after training to 8, 4, 2 and 1 bits (:func:`atlas.harness.controls.
quantization_curve`, post-training: every HORQ network trains for the fp32 network's steps, no more).
The control quantizes the weights only.

Harness differs: XNOR-Net's quick harness (:mod:`atlas_reproductions.rastegari2016`): BinaryConnect's
3 x 256 MLP with BN on Fashion-MNIST, softmax cross-entropy, hidden-to-hidden layers binarised (the
first and last layers real, as in XNOR-Net's released code), every network trained from the same
initial weights for 350 Adam steps of batch 200 (1.2 passes; XNOR-Net's quick profile: 600, here 4
networks a seed), cosine from 0.01. The paper profile runs XNOR-Net's CIFAR-10 network (the paper's own
CIFAR-10 network and schedule were not read).

Quick verdict (3 seeds, 62 s of one CPU thread, 390 s wall on the shared 2-core machine):
``approximation-error`` reproduced: order two leaves 0.587 [0.584, 0.591] of order one's residual
(``||R||/||X||``: 0.56, 0.33, 0.21 at orders 1, 2, 3). ``accuracy-over-order-one`` inconclusive: order
two gains +0.06 pp [-0.91, 1.03] over order one (order three +0.29 [-0.45, 1.03]), while order one loses
only about 2 pp against fp32 (87.2 %) on this task, so there is little for the better approximation to
win back; the packed path gives PyTorch's predictions exactly (0.00 pp). Measured speed-ups of the
timed convolution against fp32: 0.41x, 0.21x, 0.13x at orders 1, 2, 3 (each order one more XNOR
product; numpy's popcount, see :data:`atlas_reproductions.rastegari2016.DIAGNOSIS`).
"""

from __future__ import annotations

import copy
from functools import partial

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from atlas_reproductions.courbariaux2015 import clip_latent
from atlas_reproductions.courbariaux2016 import binary_tanh
from atlas_reproductions.rastegari2016 import (
    BWNConv2d,
    BWNLinear,
    encode,
    network,
    pack_rows,
    replace_layers,
    storage,
    xnor_popcount,
)
from pydantic import PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction


class Config(Profile):
    conv: list[PositiveInt] = []  # 3x3 conv layers' channels (paper profile: XNOR-Net's CIFAR-10 network)
    pool_every: PositiveInt = 2  # a 2x2 max pool after every this many conv layers
    hidden: list[PositiveInt]  # fully-connected hidden layers (quick: 3 x 256)
    orders: list[PositiveInt] = [1, 2, 3]  # the HORQ orders trained (order 1 = XNOR-Net's input binarisation)
    train: TrainConfig  # each network's training: fp32 and every order, the same budget
    speed_channels: PositiveInt = 256  # the timed convolution: channels in and out
    speed_size: PositiveInt = 14  # its square input map


PROFILES = {
    # XNOR-Net's (rastegari2016) harness and optimizer; quick: 4 networks a seed, so 350 steps (1.2 passes
    # over Fashion-MNIST; XNOR-Net's quick: 600 for 3 networks), to keep the whole profile under a minute
    "smoke": {"dataset": "digits", "seeds": 2, "hidden": [64, 64],
              "train": {"steps": 67, "batch_size": 64, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "hidden": [256, 256, 256],
              "train": {"steps": 350, "batch_size": 200, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    "paper": {
        # XNOR-Net's paper profile (BinaryConnect's CIFAR-10 network); HORQ's CIFAR-10 schedule not read
        "dataset": "cifar10", "seeds": 3, "conv": [128, 128, 256, 256, 512, 512], "pool_every": 2,
        "hidden": [1024, 1024],
        "train": {"steps": 200000, "batch_size": 50, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
    },
}


# ------------------------------------------------------------------------------ residual quantization
def residual_terms(x: torch.Tensor, order: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The order-``order`` expansion of ``x`` over its dim 1 (the features of a row [M, n], or the
    channels of every pixel [B, C, H, W]): ``[(beta_i, H_i)]`` with ``H_i = sign(R_{i-1})`` (``>= 0`` ->
    +1; BNN's straight-through gradient), ``beta_i = mean|R_{i-1}|`` over dim 1 (a constant: no
    gradient) and ``R_i = R_{i-1} - beta_i H_i``, ``R_0 = x``."""
    terms = []
    r = x
    for _ in range(order):
        beta = r.detach().abs().mean(1, keepdim=True)
        h = binary_tanh(r)
        terms.append((beta, h))
        r = r - beta * h
    return terms


def residual_approximation(x: torch.Tensor, order: int) -> torch.Tensor:
    """``sum_i beta_i H_i``: the order-``order`` approximation of ``x`` (over its dim 1)."""
    return sum((b * h for b, h in residual_terms(x, order)), torch.zeros_like(x))


class HorqLinear(BWNLinear):
    """A HORQ fully-connected layer: ``sum_i beta_i (H_i . sign(W)) alpha`` (+ bias)."""

    def __init__(self, *args, order: int = 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.propagation_weight()
        y = sum(F.linear(h, w) * b for b, h in residual_terms(x.flatten(1), self.order))
        return y if self.bias is None else y + self.bias


class HorqConv2d(BWNConv2d):
    """A HORQ convolution: the zero-padded input expanded per pixel over its channels (``beta_i`` the map
    ``A_i = mean_c |R_{i-1}|``), each order's sign convolution scaled by XNOR-Net's ``K_i = A_i * k`` (the
    mean of ``A_i`` over each patch): ``sum_i (H_i (*) sign(W)) (.) K_i alpha`` (+ bias). Order one is
    :class:`~atlas_reproductions.rastegari2016.XnorConv2d`."""

    def __init__(self, *args, order: int = 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.order = order

    def padded_terms(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """:func:`residual_terms` of the zero-padded input, per pixel over the channels, with each
        order's ``K_i`` (the patches' mean of ``A_i``) in place of ``A_i``."""
        if self.groups != 1 or self.dilation != (1, 1):
            raise ValueError("HorqConv2d: groups and dilation other than 1 are not supported")
        ph, pw = self.padding
        terms = residual_terms(F.pad(x, (pw, pw, ph, ph)), self.order)
        return [(F.avg_pool2d(a, self.kernel_size, self.stride), h) for a, h in terms]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.propagation_weight()
        y = sum(F.conv2d(h, w, None, self.stride) * k for k, h in self.padded_terms(x))
        return y if self.bias is None else y + self.bias[None, :, None, None]


def horq_network(model: nn.Sequential, order: int) -> nn.Sequential:
    """The order-``order`` HORQ network of an fp32 network: XNOR-Net's layers and ReLUs
    (:func:`~atlas_reproductions.rastegari2016.replace_layers`), each input expanded to ``order`` terms."""
    return replace_layers(model, partial(HorqLinear, order=order), partial(HorqConv2d, order=order),
                          drop_relu=True)


def train_horq(run: Run, initial: nn.Sequential, order: int) -> nn.Sequential:
    """XNOR-Net's Algorithm 1 with order-``order`` inputs."""
    return run.train(horq_network(initial, order), run.dataset().train, run.train_config("train"),
                     desc=f"horq order {order}", after_step=clip_latent)


# ------------------------------------------------------------------------------ run time and measures
def horq_product(rows: torch.Tensor, w: ak.BinaryWeight, order: int) -> torch.Tensor:
    """A HORQ fully-connected layer's product at run time: every order's signs packed, one
    XNOR-popcount product each (:func:`~atlas_reproductions.rastegari2016.xnor_popcount`), scaled by its
    ``beta_i`` and summed."""
    return sum(xnor_popcount(pack_rows(h), beta.reshape(-1), w) for beta, h in residual_terms(rows, order))


def horq_conv_packed(x: torch.Tensor, w: ak.BinaryWeight, conv: HorqConv2d) -> torch.Tensor:
    """A HORQ convolution at run time: for every order, the padded sign map unfolded into patches and
    packed, one XNOR-popcount product scaled by that order's ``K_i``; summed, folded to [B, N, H', W']."""
    b = x.shape[0]
    y = None
    for k_map, h in conv.padded_terms(x):
        ho, wo = k_map.shape[2:]
        rows = F.unfold(h, conv.kernel_size, stride=conv.stride).transpose(1, 2).reshape(b * ho * wo, -1)
        term = xnor_popcount(pack_rows(rows), k_map.reshape(-1), w)
        y = term if y is None else y + term
    y = y.view(b, ho * wo, -1).transpose(1, 2).reshape(b, -1, ho, wo)
    return y if conv.bias is None else y + conv.bias.detach()[None, :, None, None]


@torch.no_grad()
def deployed_forward(model: nn.Sequential, encoded: dict[str, ak.BinaryWeight], x: torch.Tensor) -> torch.Tensor:
    """The trained HORQ network at run time: its HORQ layers through :func:`horq_product` /
    :func:`horq_conv_packed` on the stored encodings; every other module as in ``model`` (eval mode)."""
    model.eval()
    x = x.cpu()
    for i, m in enumerate(model):
        if isinstance(m, HorqConv2d):
            x = horq_conv_packed(x, encoded[f"{i}.weight"], m)
        elif isinstance(m, HorqLinear):
            x = horq_product(x.flatten(1), encoded[f"{i}.weight"], m.order)
            x = x if m.bias is None else x + m.bias.detach()
        else:
            x = m.cpu()(x)
    return x


@torch.no_grad()
def residual_errors(model: nn.Sequential, x: torch.Tensor, orders: list[int]) -> dict[int, float]:
    """``||X - X^_K|| / ||X||`` over the inputs (rows; a convolution's pixels over its channels) of every
    HORQ layer of ``model`` on ``x``, for each order ``K``."""
    inputs: list[torch.Tensor] = []
    hooks = []
    for m in model:
        if isinstance(m, HorqConv2d):
            hooks.append(m.register_forward_hook(lambda mod, inp, out: inputs.append(inp[0])))
        elif isinstance(m, HorqLinear):
            hooks.append(m.register_forward_hook(lambda mod, inp, out: inputs.append(inp[0].flatten(1))))
    model.eval()(x)
    for h in hooks:
        h.remove()
    total = sum(float(r.pow(2).sum()) for r in inputs)
    return {k: (sum(float((r - residual_approximation(r, k)).pow(2).sum()) for r in inputs) / total) ** 0.5
            for k in orders}


@torch.no_grad()
def conv_speedups(orders: list[int], channels: int, size: int, seed: int = 0) -> dict[int, float]:
    """One 3x3 convolution (``channels`` in and out, ``size`` x ``size``, padding 1, batch 1): fp32
    ``F.conv2d`` against the HORQ layer of each order on the packed path (patches unfolded, every
    order's signs packed, XNOR + popcount), timed in the same run (``measure.kernel_latency``)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(channels, channels, 3, 3, generator=gen)
    x = torch.randn(1, channels, size, size, generator=gen)
    enc = ak.binarize_weight(w.flatten(1), scale=True)
    out = {}
    for k in orders:
        layer = HorqConv2d(channels, channels, 3, padding=1, bias=False, order=k)
        layer.weight.copy_(w)

        def packed(layer: HorqConv2d = layer) -> torch.Tensor:
            return horq_conv_packed(x, enc, layer)

        if not torch.allclose(packed(), layer(x), rtol=1e-4, atol=1e-3):
            raise RuntimeError(f"the packed order-{k} product does not compute the HORQ layer")
        out[k] = measure.kernel_latency(lambda: F.conv2d(x, w, padding=1), packed)["speedup"]
    return out


@reproduction("li2017d", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    cfg = run.config
    conv, hidden = list(cfg.get("conv") or []), list(cfg["hidden"])
    orders = sorted(set(cfg.get("orders", [1, 2, 3])) | {1, 2})
    initial = network(data.input_shape, data.num_classes, conv, hidden, cfg.get("pool_every", 2)).to(run.device)
    baseline = run.train(copy.deepcopy(initial), data.train, run.train_config("train"), desc="fp32")
    base_acc = run.accuracy(baseline, data.test)
    models = {k: train_horq(run, initial, k) for k in orders}
    acc = {k: run.accuracy(m, data.test) for k, m in models.items()}

    two = models[2]
    encoded = encode(two)
    deployed = deployed_forward(two, encoded, data.test.x)
    deployed_acc = 100.0 * float((deployed.argmax(1) == data.test.y.cpu()).float().mean())
    errors = residual_errors(two, data.test.x[:1000].to(run.device), orders)
    parts = storage(two)
    bits = measure.storage_bits(parts)
    n_binary = sum(q.shape[0] * q.shape[1] for q in encoded.values())
    binary_bits = sum(p.bits for p in parts if p.what.startswith("1-bit"))
    speed = conv_speedups(orders, cfg.get("speed_channels", 256), cfg.get("speed_size", 14), seed=run.seed)

    arch = "-".join(f"{c}C3" for c in conv) + ("-" if conv else "") + "-".join(str(h) for h in hidden)
    train = cfg["train"]
    kind = "conv net" if conv else "MLP"
    differs = (f"{kind} {arch} + BN, first and last layers real-valued (XNOR-Net's harness; the paper's MNIST and "
               f"CIFAR-10 networks not read); {train['steps']} Adam steps of batch {train['batch_size']}, cosine from "
               f"{train['lr']}; fp32 and every order from the same initial weights for the same steps")
    model = f"{kind} {arch} + BN, HORQ inputs (orders {', '.join(map(str, orders))}), XNOR-Net binary weights"
    metrics = {
        **measure.accuracy_change(base_acc, acc[2]),
        **{f"order{k}_accuracy": a for k, a in acc.items()},
        **{f"order{k}_gain_pp": a - acc[1] for k, a in acc.items() if k > 1},
        **{f"residual_error_order{k}": e for k, e in errors.items()},
        "residual_error_ratio": errors[2] / errors[1],
        "deployed_accuracy": deployed_acc,
        "deployed_change_pp": deployed_acc - acc[2],
        "params": measure.count_params(two),
        "storage_bits": float(bits),
        "storage_compression": measure.dense_bits(baseline) / bits,
        "weight_storage_compression": 32 * n_binary / binary_bits,
        **{f"speedup_order{k}": s for k, s in speed.items()},
    }
    run.record("approximation-error", model=model, differs=differs, metrics={
        k: metrics[k] for k in metrics if k.startswith("residual_error")})
    run.record("accuracy-over-order-one", model=model, differs=differs, metrics=metrics, curves=[
        controls.Series("HORQ (x: input bits = order)", controls.BITS, controls.ACCURACY,
                        {float(k): a for k, a in acc.items()}),
        controls.quantization_curve(run, baseline, [8, 4, 2, 1], None),
    ], notes=("speedup_order*: one 3x3 convolution (256 channels, 14x14, batch 1) through the packed HORQ path "
              "(numpy XOR + popcount, one product per order) against fp32 F.conv2d, same run, one CPU thread"))
