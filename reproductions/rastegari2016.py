"""XNOR-Net: ImageNet Classification Using Binary Convolutional Neural Networks (Rastegari, Ordonez,
Redmon & Farhadi, ECCV 2016, arXiv:1603.05279).

Method (Sec. 3): two binary approximations of a network's convolutions (and fully-connected layers),
each layer's product ``I * W`` replaced by

- **Binary-Weight-Networks** (BWN, Sec. 3.1): ``W ~ alpha B`` with ``B = sign(W)`` and one scale per
  output filter, the least-squares optimum ``alpha* = ||W||_l1 / n = mean|W|`` (Eq. 2-4), so that
  ``I * W ~ (I (+) B) alpha`` needs additions and subtractions only. Training (Algorithm 1) keeps the
  real-valued weights, propagates with ``alpha B`` and updates the real weights with the gradient of the
  scaled sign, ``dC/dW_i = dC/dW~_i (1/n + alpha dsign/dW_i)`` (Sec. 3.1), ``dsign/dW = 1_{|W| <= 1}``
  (BNN's straight-through estimator, :mod:`atlas_reproductions.courbariaux2016`);
- **XNOR-Networks** (Sec. 3.2): the input binarised as well, ``X ~ beta H`` with ``H = sign(X)`` and
  ``beta = mean|X|`` over each sub-tensor the filter sees, so ``I * W ~ (sign(I) (*) sign(W)) (.) K alpha``
  (Eq. 11) where ``(*)`` is a convolution of signs, computed with XNOR and bit-counting, and ``K = A * k``
  holds the scale of every input patch: ``A = sum_c |I_c| / c`` convolved with the box filter ``k``
  (``k_ij = 1 / (w h)``). The block is reordered as BN -> BinActiv -> BinConv -> Pool (Sec. 3.2, Fig. 3):
  the input is normalised before it is binarised, pooling follows the binary convolution. The sign
  activation's gradient is BNN's ``g 1_{|r| <= 1}``; ``K`` is treated as a constant of the input (its
  gradient is not propagated). The first and the last layer stay real-valued (as in the released code).

At run time an XNOR layer is an integer product: the input's signs are packed 32 to a word
(``atlas_kernels.pack_signs``), and every dot product of ``n`` signs is ``n - 2 popcount(a XOR b)``
(:func:`xnor_popcount`: ``atlas_kernels.binary_matmul``, whose CPU path runs numpy's ``bitwise_xor``
and hardware ``bitwise_count`` over the packed words read as 64-bit), then scaled by ``alpha`` and
``K`` (``beta`` of the unfolded patch). The
weights are stored as ``atlas_kernels.binarize_weight`` (32 signs per int32 word and one fp32 ``alpha``
per filter).

Claims (arXiv:1603.05279v4 abstract; Table 1 values as quoted identically by secondary texts; the
CACM 2020 version of the text read in its abstract):

- ``imagenet-alexnet`` (Table 1): AlexNet top-1 / top-5 56.6 / 80.2 % in full precision, BWN 56.8 / 79.4
  (+0.2 pp top-1), XNOR-Net 44.2 / 69.2 (-12.4 pp); binary weights: 32x less memory (Abstract). The
  v4 abstract says the BWN is "only 2.9% less" than full precision, which does not match Table 1; the
  CACM text says "the same as the full-precision AlexNet"; the checks take Table 1.
- ``xnor-speedup`` (Abstract): "58x faster convolutional operations"; the CACM text adds "in terms of
  number of the high precision operations": an operation count, 64 binary operations counted per clock
  against one multiply-add.
- ``imagenet-resnet-18`` (Table 2), ``cifar-10-binaryconnect-style-cifar-10-ne`` (Sec. 4 text): not run.

What is measured: ``imagenet-alexnet``: ``baseline_accuracy`` (the fp32 network), ``accuracy`` /
``accuracy_change_pp`` (the BWN), ``xnor_accuracy`` / ``xnor_accuracy_change_pp`` (the XNOR network, run by
PyTorch), ``xnor_deployed_accuracy`` and ``xnor_deployed_change_pp`` (the XNOR network through the packed
XNOR-popcount path, against the PyTorch XNOR network: 0 when the bitwise inference loses nothing),
``storage_bits`` / ``storage_compression`` (the deployed model: each binary layer's
``atlas_kernels.binarize_weight`` encoding, signs and fp32 ``alpha``; the real first and last layers and
BN in fp32, against 32 bits a parameter of the fp32 network), ``weight_storage_compression`` (the
binarised layers alone: 32 bits a weight against their encoding, ``alpha`` included: ``32n / (n + 32)``
for filters of ``n`` weights, the paper's 32x when ``alpha`` is not counted). The same encoding holds BWN
and XNOR weights. ``xnor-speedup``: ``speedup`` (``dense_latency_us`` / ``encoded_latency_us``): one 3x3
convolution of 256 input and 256 output channels on a 14x14 map at batch 1 (the size of a middle layer
of AlexNet or ResNet-18), fp32 ``F.conv2d`` against the same layer as an XNOR layer (the input's
signs, ``K``, the unfolded patches packed, XNOR + popcount, scaled), timed one after the other in the
same run on one CPU thread (``measure.kernel_latency``); ``op_count_speedup`` the paper's operation-count
ratio for that layer, ``64 c N_W / (c N_W + 64)`` (``c N_W`` multiply-adds a output value against
``c N_W / 64`` binary operations and one scaling); ``network_speedup`` the harness network's forward
pass over 1000 test images, fp32 network against the deployed XNOR network.

The curve (``imagenet-alexnet``): the BWN's and the XNOR network's accuracy at 1 bit beside the fp32
network's weights uniformly quantized after training to 8, 4, 2 and 1 bits
(:func:`atlas.harness.controls.quantization_curve`, post-training: BWN and XNOR train for the same steps
as the fp32 network, no more). The control quantizes the weights only, of every layer.

Harness differs: no ImageNet or AlexNet here. The quick profile trains BinaryConnect's quick MLP
(:func:`~atlas_reproductions.courbariaux2015.bc_mlp`'s 3 x 256, BN after every hidden layer) on
Fashion-MNIST, with softmax cross-entropy and a biased output layer, for 600 Adam steps of batch 200,
cosine from 0.01 (BNN's quick optimizer; 750 steps there, for 2 networks a seed, here 3), fp32, BWN and XNOR from the same initial weights for the same
steps; the hidden-to-hidden layers are binarised (the first and the output layer stay real, as in the
released code), so 39 % of the weights are binary (AlexNet binarised: conv2 to fc7, most of them). The
paper profile runs BinaryConnect's CIFAR-10 network (2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC) on
CIFAR-10, the paper's CIFAR-10 experiment (Sec. 4 text); its schedule is not the paper's (not read). The
latent weights are clipped to [-1, 1] after every update (the released code clamps them). The speed-up
is wall time of numpy's vectorised XOR and popcount against oneDNN/MKL's fp32 convolution on a shared
CPU, not an operation count: see :data:`DIAGNOSIS`.

Quick verdict (3 seeds, 52 s of one CPU thread, 189 s wall on the shared 2-core machine): ``imagenet-alexnet``
reproduced: the BWN's accuracy change +0.10 pp [-0.46, 0.66], the XNOR network's -1.48 pp [-1.74, -1.23]
(far less than AlexNet's -12.4 on this small task), the binarised layers' weights 28.4x smaller (the
whole model 1.6x: the real first layer holds most of the MLP's weights); the deployed XNOR-popcount path
gives the PyTorch XNOR network's predictions exactly (0.00 pp). ``xnor-speedup`` not reproduced: the
XNOR convolution runs 0.55x [0.37, 0.73] as fast as fp32 (the network 0.4x), against the paper's 58x
(an operation count, 62.3x for that layer): see :data:`DIAGNOSIS`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from atlas_reproductions.courbariaux2015 import (
    QuantizedConv2d,
    QuantizedLinear,
    QuantizedWeight,
    clip_latent,
)
from atlas_reproductions.courbariaux2016 import binary_tanh
from pydantic import PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction


class Config(Profile):
    conv: list[PositiveInt] = []  # 3x3 conv layers' channels (paper profile: BinaryConnect's CIFAR-10 net)
    pool_every: PositiveInt = 2  # a 2x2 max pool after every this many conv layers (BinaryConnect: 2)
    hidden: list[PositiveInt]  # fully-connected hidden layers (quick: BinaryConnect's quick MLP 3 x 256)
    train: TrainConfig  # each network's training: fp32, BWN and XNOR, the same budget
    speed_channels: PositiveInt = 256  # the timed convolution: channels in and out
    speed_size: PositiveInt = 14  # its square input map
    network_batch: PositiveInt = 1000  # test images of the whole-network timing


PROFILES = {
    # BNN's (courbariaux2016) smoke and quick MLPs and optimizer, stated here: smoke 67 Adam steps of
    # batch 64 on a 64-64 MLP (3 passes over digits); quick 256-256-256, cosine from 0.01, with 600
    # steps of batch 200 (2 passes over Fashion-MNIST; BNN: 750) as 3 networks train a seed
    "smoke": {"dataset": "digits", "seeds": 2, "hidden": [64, 64], "network_batch": 200,
              "train": {"steps": 67, "batch_size": 64, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "hidden": [256, 256, 256],
              "train": {"steps": 600, "batch_size": 200, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    "paper": {
        # the paper's CIFAR-10 network (BinaryConnect's); schedule not read in the paper: BinaryConnect's
        # batch 50 for 200 epochs of 50000 images (200000 steps), Adam, cosine here
        "dataset": "cifar10", "seeds": 3, "conv": [128, 128, 256, 256, 512, 512], "pool_every": 2,
        "hidden": [1024, 1024],
        "train": {"steps": 200000, "batch_size": 50, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
    },
}


# ------------------------------------------------------------------------------ the fp32 network
def network(input_shape: Sequence[int], num_classes: int, conv: Sequence[int], hidden: Sequence[int],
            pool_every: int = 2) -> nn.Sequential:
    """The fp32 network, flat: every 3x3 conv (no bias) [-> 2x2 max pool after every ``pool_every``] ->
    BN -> ReLU; then flatten; every hidden linear (no bias) -> BN -> ReLU; the output linear (with bias).
    Glorot-initialised weights. ``conv=[]``: BinaryConnect's MLP with a softmax output."""
    layers: list[nn.Module] = []
    chans, size = int(input_shape[0]), tuple(input_shape[1:])
    for i, c in enumerate(conv):
        layers.append(nn.Conv2d(chans, c, 3, padding=1, bias=False))
        if (i + 1) % pool_every == 0:
            layers.append(nn.MaxPool2d(2))
            size = tuple(s // 2 for s in size)
        layers += [nn.BatchNorm2d(c, eps=1e-4), nn.ReLU()]
        chans = c
    layers.append(nn.Flatten())
    width = chans * math.prod(size) if conv else math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h, eps=1e-4), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    for m in layers:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------ Binary-Weight-Networks
def filter_scale(w: torch.Tensor) -> torch.Tensor:
    """``alpha = ||W||_l1 / n`` of every output filter (Eq. 4), shaped to broadcast over ``w``."""
    return w.abs().flatten(1).mean(1).view(-1, *([1] * (w.dim() - 1)))


def binary_weight(w: torch.Tensor) -> torch.Tensor:
    """``alpha B``: each filter's signs (``w >= 0`` -> +1) times its ``alpha`` (Eq. 2-4)."""
    alpha = filter_scale(w)
    return torch.where(w >= 0, alpha, -alpha)


class _ScaledSign(torch.autograd.Function):
    """Forward ``alpha sign(W)``; backward the paper's ``g (1/n + alpha 1_{|W| <= 1})`` (Sec. 3.1)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(w)
        return binary_weight(w)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (w,) = ctx.saved_tensors
        n = w[0].numel()
        return g * (1.0 / n + filter_scale(w) * (w.abs() <= 1).to(g.dtype))


def scaled_sign(w: torch.Tensor) -> torch.Tensor:
    return _ScaledSign.apply(w)


class _BinaryWeight(QuantizedWeight):
    """A layer propagating with ``alpha sign(W)`` and the gradient of Sec. 3.1 (train and test)."""

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        return binary_weight(w)

    def propagation_weight(self) -> torch.Tensor:
        return scaled_sign(self.weight)


class BWNLinear(_BinaryWeight, QuantizedLinear):
    """A Binary-Weight-Network fully-connected layer."""


class BWNConv2d(_BinaryWeight, QuantizedConv2d):
    """A Binary-Weight-Network convolution."""


# ------------------------------------------------------------------------------ XNOR-Networks
def input_scale(x: torch.Tensor) -> torch.Tensor:
    """``beta = mean|X|`` of every example's input vector (the fully-connected case of ``K``), [B, 1]."""
    return x.detach().abs().flatten(1).mean(1, keepdim=True)


def patch_scale(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``K = A * k`` (Sec. 3.2): ``A = sum_c |I_c| / c``, convolved with the ``w x h`` box filter at the
    convolution's stride and padding (zero padding counted): the mean ``|I|`` of every patch, [B, 1, H', W']."""
    a = x.detach().abs().mean(1, keepdim=True)
    return F.avg_pool2d(a, conv.kernel_size, conv.stride, conv.padding, count_include_pad=True)


class XnorLinear(BWNLinear):
    """An XNOR fully-connected layer: ``(sign(x) . sign(W)) beta alpha`` (+ bias)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(binary_tanh(x), self.propagation_weight()) * input_scale(x)
        return y if self.bias is None else y + self.bias


class XnorConv2d(BWNConv2d):
    """An XNOR convolution: ``(sign(I) (*) sign(W)) (.) K alpha`` (Eq. 11; + bias). The input is
    zero-padded before its sign is taken, so a padded position counts as +1 in the sign convolution (a
    ±1 encoding has no 0) and as 0 in ``K``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups != 1 or self.dilation != (1, 1):
            raise ValueError("XnorConv2d: groups and dilation other than 1 are not supported")
        # the sign of the zero-padded input (padding -> +1, as the packed run-time path sees it)
        ph, pw = self.padding if isinstance(self.padding, tuple) else (self.padding, self.padding)
        xp = F.pad(x, (pw, pw, ph, ph))
        y = F.conv2d(binary_tanh(xp), self.propagation_weight(), None, self.stride) * patch_scale(x, self)
        return y if self.bias is None else y + self.bias[None, :, None, None]


def binarized_indices(model: nn.Sequential) -> list[int]:
    """The layers binarised: every conv / linear layer but the first and the last."""
    weighted = [i for i, m in enumerate(model) if isinstance(m, (nn.Linear, nn.Conv2d))]
    return weighted[1:-1]


def replace_layers(model: nn.Sequential, linear_cls: Callable[..., nn.Module], conv_cls: Callable[..., nn.Module],
                   *, drop_relu: bool) -> nn.Sequential:
    """A copy of the fp32 network with its binarised layers (:func:`binarized_indices`) rebuilt by
    ``linear_cls`` / ``conv_cls`` with the same shapes and weights; with ``drop_relu`` the ReLU just before
    each of them removed (BN -> BinActiv -> BinConv: the layer binarises its own input)."""
    out = copy.deepcopy(model)
    for i in binarized_indices(out):
        old = out[i]
        if isinstance(old, nn.Linear):
            new: nn.Module = linear_cls(old.in_features, old.out_features, bias=old.bias is not None)
        else:
            new = conv_cls(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                           padding=old.padding, bias=old.bias is not None)
        new.load_state_dict(old.state_dict())
        out[i] = new.to(old.weight.device)
        j = i - 1
        while isinstance(out[j], nn.Flatten):
            j -= 1
        if drop_relu and isinstance(out[j], nn.ReLU):
            out[j] = nn.Identity()
    return out


def binarize(model: nn.Sequential, kind: str) -> nn.Sequential:
    """The BWN (``kind="bwn"``) or the XNOR network (``"xnor"``) of an fp32 network:
    :func:`replace_layers` with BWN layers, or with XNOR layers and the ReLUs before them removed."""
    if kind not in ("bwn", "xnor"):
        raise ValueError(f"kind must be 'bwn' or 'xnor', got {kind!r}")
    if kind == "bwn":
        return replace_layers(model, BWNLinear, BWNConv2d, drop_relu=False)
    return replace_layers(model, XnorLinear, XnorConv2d, drop_relu=True)


def train_binary(run: Run, initial: nn.Sequential, kind: str) -> nn.Sequential:
    """Algorithm 1: propagate with the binary weights (and inputs), update the real-valued weights,
    clip them to [-1, 1] after every step."""
    return run.train(binarize(initial, kind), run.dataset().train, run.train_config("train"), desc=kind,
                     after_step=clip_latent)


# ------------------------------------------------------------------------------ the deployed network
def encode(model: nn.Sequential) -> dict[str, ak.BinaryWeight]:
    """Each binarised layer's weight as stored: ``atlas_kernels.binarize_weight`` of its [N, C k k]
    matrix (signs packed 32 per int32 word, fp32 ``alpha = mean|W|`` per filter), keyed by parameter name."""
    return {f"{i}.weight": ak.binarize_weight(m.weight.detach().flatten(1), scale=True)
            for i, m in enumerate(model) if isinstance(m, _BinaryWeight)}


def storage(model: nn.Sequential) -> list[measure.Encoded]:
    """The deployed model: each binarised layer's encoding; every other parameter in fp32."""
    enc = encode(model)
    parts = [measure.encoded(name, q, "1-bit signs + fp32 alpha") for name, q in enc.items()]
    return parts + measure.fp32_parts(model, skip=sorted(enc))


def pack_rows(x: torch.Tensor) -> torch.Tensor:
    """The signs of each row of ``x`` [M, K] (``x >= 0`` -> +1) packed 32 to an int32 word
    (``atlas_kernels.pack_signs``)."""
    return ak.pack_signs(x.detach().cpu())


def xnor_popcount(a: torch.Tensor, beta: torch.Tensor | None, w: ak.BinaryWeight) -> torch.Tensor:
    """The product of packed input signs ``a`` [M, W] (scales ``beta`` [M]) with a stored binary weight
    by XNOR and popcount: ``(K - 2 popcount(a XOR b)) alpha beta`` (``atlas_kernels.binary_matmul``; on a
    CPU its XNOR-popcount over the packed words, on CUDA the Triton kernel)."""
    k = w.shape[1]
    scale = None if beta is None else beta.float().reshape(-1)
    return ak.binary_matmul(ak.BinaryActivation(a, scale, (a.shape[0], k)), w)


def xnor_linear(x: torch.Tensor, w: ak.BinaryWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """An XNOR fully-connected layer at run time: the input's signs packed and ``beta = mean|x|``, the
    product by :func:`xnor_popcount`."""
    x = x.flatten(1)
    y = xnor_popcount(pack_rows(x), input_scale(x), w)
    return y if bias is None else y + bias


def xnor_conv2d(x: torch.Tensor, w: ak.BinaryWeight, conv: nn.Conv2d) -> torch.Tensor:
    """An XNOR convolution at run time: the zero-padded input unfolded into its patches (rows of
    ``C k k`` values), each row's signs packed, ``K`` from :func:`patch_scale`, the product by
    :func:`xnor_popcount`, folded back to [B, N, H', W']."""
    b = x.shape[0]
    k_map = patch_scale(x, conv)  # [B, 1, H', W']
    ho, wo = k_map.shape[2:]
    cols = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)  # [B, C k k, L]
    rows = cols.transpose(1, 2).reshape(b * ho * wo, -1)
    y = xnor_popcount(pack_rows(rows), k_map.reshape(-1), w)
    y = y.view(b, ho * wo, -1).transpose(1, 2).reshape(b, -1, ho, wo)
    return y if conv.bias is None else y + conv.bias.detach()[None, :, None, None]


@torch.no_grad()
def deployed_forward(model: nn.Sequential, encoded: dict[str, ak.BinaryWeight], x: torch.Tensor) -> torch.Tensor:
    """The trained XNOR network at run time: its XNOR layers through :func:`xnor_linear` /
    :func:`xnor_conv2d` on the stored encodings; every other module as in ``model`` (eval mode)."""
    model.eval()
    x = x.cpu()
    for i, m in enumerate(model):
        if isinstance(m, XnorConv2d):
            x = xnor_conv2d(x, encoded[f"{i}.weight"], m)
        elif isinstance(m, XnorLinear):
            x = xnor_linear(x, encoded[f"{i}.weight"], None if m.bias is None else m.bias.detach())
        else:
            x = m.cpu()(x)
    return x


def op_count_speedup(c: int, n_w: int) -> float:
    """The paper's operation count: ``c N_W`` multiply-adds per output value against ``c N_W / 64``
    binary operations (64 a clock) and one scaling: ``64 c N_W / (c N_W + 64)``."""
    return 64 * c * n_w / (c * n_w + 64)


@torch.no_grad()
def conv_speedup(channels: int, size: int, seed: int = 0) -> dict[str, float]:
    """One 3x3 convolution (``channels`` in and out, ``size`` x ``size``, padding 1, batch 1): fp32
    ``F.conv2d`` against the XNOR layer (:func:`xnor_conv2d` with the input's binarisation, ``K`` and
    packing included), timed in the same run (``measure.kernel_latency``, one thread)."""
    gen = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
    x = torch.randn(1, channels, size, size, generator=gen)
    enc = ak.binarize_weight(conv.weight.flatten(1), scale=True)
    xnor = XnorConv2d(channels, channels, 3, padding=1, bias=False)
    xnor.weight.copy_(conv.weight)
    if not torch.allclose(xnor_conv2d(x, enc, conv), xnor(x), rtol=1e-4, atol=1e-4):
        raise RuntimeError("the packed XNOR convolution does not compute the XNOR layer")
    timed = measure.kernel_latency(lambda: F.conv2d(x, conv.weight, padding=1), lambda: xnor_conv2d(x, enc, conv))
    return timed | {"op_count_speedup": op_count_speedup(channels, 9)}


#: Why the speed-up check fails; shown beside the verdict.
DIAGNOSIS = """
The 58x is an operation count (the CACM text: 'in terms of number of the high precision operations'):
64 binary operations counted per clock against one multiply-add, memory access excluded; for the timed
layer (3x3, 256 channels) that count is 62.3x (op_count_speedup). Here the same layer is timed: the
XNOR layer (the input's signs and K, the patches unfolded and packed, atlas_kernels.binary_matmul's
CPU path: numpy's XOR and hardware popcount over 64-bit words, the scales) against oneDNN's fp32 convolution, one thread, in the same run. The
XNOR path computes the same values (checked in the run and in the tests), but numpy's popcount
streams a temporary the size of M x N x K/64 words through memory three times, while the fp32
convolution runs vectorised FMAs (8 to 16 multiply-adds a cycle) from cache: the measured ratio is
about 1x or below, and on the harness MLP's 256-wide layers (4 words a row) well below 1. Reaching the
paper's figure needs a blocked bit-GEMM kernel in compiled code (and the count excludes memory traffic);
the atlas takes the gap as the harness's limit (no such CPU kernel in atlas_kernels), not as a
refutation of the operation count, which op_count_speedup reproduces.
"""


@reproduction("rastegari2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    cfg = run.config
    conv, hidden = list(cfg.get("conv") or []), list(cfg["hidden"])
    initial = network(data.input_shape, data.num_classes, conv, hidden, cfg.get("pool_every", 2)).to(run.device)
    baseline = run.train(copy.deepcopy(initial), data.train, run.train_config("train"), desc="fp32")
    base_acc = run.accuracy(baseline, data.test)
    bwn = train_binary(run, initial, "bwn")
    bwn_acc = run.accuracy(bwn, data.test)
    xnor = train_binary(run, initial, "xnor")
    xnor_acc = run.accuracy(xnor, data.test)

    # the deployed XNOR network: its packed weights through XNOR + popcount
    encoded = encode(xnor)
    deployed = deployed_forward(xnor, encoded, data.test.x)
    deployed_acc = 100.0 * float((deployed.argmax(1) == data.test.y.cpu()).float().mean())
    parts = storage(xnor)
    bits = measure.storage_bits(parts)
    n_binary = sum(q.shape[0] * q.shape[1] for q in encoded.values())
    binary_bits = sum(p.bits for p in parts if p.what.startswith("1-bit"))

    arch = "-".join(f"{c}C3" for c in conv) + ("-" if conv else "") + "-".join(str(h) for h in hidden)
    train = cfg["train"]
    differs = (f"{'conv net' if conv else 'MLP'} {arch} + BN (paper: AlexNet on ImageNet), first and last layers "
               f"real-valued; {train['steps']} Adam steps of batch {train['batch_size']}, cosine from {train['lr']}; "
               "fp32, BWN and XNOR from the same initial weights for the same steps")
    model = f"{'conv net' if conv else 'MLP'} {arch} + BN, BWN and XNOR-Net (first and last layers real)"
    run.record("imagenet-alexnet", model=model, differs=differs, metrics={
        **measure.accuracy_change(base_acc, bwn_acc),
        "xnor_accuracy": xnor_acc,
        "xnor_accuracy_change_pp": xnor_acc - base_acc,
        "xnor_deployed_accuracy": deployed_acc,
        "xnor_deployed_change_pp": deployed_acc - xnor_acc,
        "params": measure.count_params(xnor),
        "storage_bits": float(bits),
        "storage_compression": measure.dense_bits(baseline) / bits,
        "weight_storage_compression": 32 * n_binary / binary_bits,
    }, curves=[
        controls.Series("Binary-Weight-Network", controls.BITS, controls.ACCURACY, {1.0: bwn_acc}),
        controls.Series("XNOR-Net (binary weights and inputs)", controls.BITS, controls.ACCURACY, {1.0: xnor_acc}),
        controls.quantization_curve(run, baseline, [8, 4, 2, 1], None),
    ])

    # the speed-up: one convolution of the paper's kind, and the harness network, fp32 against XNOR
    timed = conv_speedup(cfg.get("speed_channels", 256), cfg.get("speed_size", 14), seed=run.seed)
    x = data.test.x[: cfg.get("network_batch", 1000)].cpu()
    base_cpu = copy.deepcopy(baseline).cpu().eval()
    net = measure.kernel_latency(lambda: base_cpu(x), lambda: deployed_forward(xnor, encoded, x))
    c, s = cfg.get("speed_channels", 256), cfg.get("speed_size", 14)
    run.record("xnor-speedup", model=f"one 3x3 convolution, {c} channels in and out, {s}x{s} input, batch 1",
               differs="wall time of numpy XOR + popcount (input binarisation, K and packing included) against "
                       "fp32 F.conv2d (oneDNN) on one CPU thread; the paper's 58x counts operations",
               metrics=timed | {"network_speedup": net["speedup"]},
               notes=(f"speedup: the convolution through the XNOR path against F.conv2d in fp32, in the same run, "
                      f"torch.utils.benchmark blocked_autorange on one CPU thread; network_speedup: the fp32 "
                      f"network against the deployed XNOR network over {len(x)} test images"),
               diagnosis=DIAGNOSIS)
