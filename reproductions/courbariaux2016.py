"""Binarized Neural Networks: Training Deep Neural Networks with Weights and Activations Constrained to +1
or -1 (Courbariaux, Hubara, Soudry, El-Yaniv & Bengio, arXiv:1602.02830, 2016; BinaryNet).

Method (Sec. 1, Algorithm 1): BinaryConnect (:mod:`atlas_reproductions.courbariaux2015`, imported here)
with the *activations* binarised as well. Every hidden unit outputs the sign of its batch-normalised
pre-activation, and every weight propagates as the sign of its real-valued latent value:

- ``x_b = sign(x) = +1 if x >= 0 else -1`` (Eq. 1, deterministic; the released code's
  ``binary_tanh_unit`` is ``2 * round(hard_sigmoid(x)) - 1``, the same function);
- the straight-through estimator of the sign (Sec. 1.3): the forward pass uses ``q = sign(r)``, the
  backward pass ``g_r = g_q * 1_{|r| <= 1}``, the gradient of ``Htanh(r) = clip(r, -1, 1)``: the
  gradient is cancelled where the input is too large. Here it is BinaryConnect's
  :func:`~atlas_reproductions.courbariaux2015.straight_through` with ``Htanh(r)`` as the latent value
  (forward ``sign(r)`` exactly, backward the derivative of ``clip``, 1 on ``[-1, 1]``);
- the weights: BinaryConnect's deterministic sign and straight-through gradient, the latent weights
  clipped to ``[-1, 1]`` after every update (Algorithm 1), Adam with the latent weights' learning rate
  scaled by Glorot's factor (the released code's ``W_LR_scale = "Glorot"``), the squared hinge loss
  (L2-SVM output) and batch normalisation after every layer, the output layer's included;
- the first layer's input (the image) is not binarised (Sec. 1.6); its weights are.

At run time (Sec. 4) a layer whose input and weights are both ±1 computes its dot products as
``K - 2 * popcount(a XOR b)``: 32 signs packed in a word, one XNOR (here its complement, XOR) and one
popcount per word
(``atlas_kernels.binary_matmul``, algorithm ``xnor``). The first layer, whose input is real, runs a
float product with its ±1 weights, as in the released run-time code ("Input layer is not binary ->
use baseline kernel in first hidden layer").

The paper's shift-based batch normalisation and shift-based AdaMax (Sec. 1.4-1.5) are power-of-two
approximations of BN and Adam proposed for hardware efficiency; the released Theano code trains with
standard BN and Adam, and so does this reproduction.

Claims (arXiv:1602.02830v3: the abstract read; Table 1 as quoted identically by several independent
texts, its Theano numbers confirmed by the official BinaryNet Train-time README; Sec. 3-4 as summarised
by a third-party text):

- ``mnist-mlp``: permutation-invariant MNIST, MLP of 3 x 4096 binary units (Theano; 3 x 2048 in
  Torch7), L2-SVM output, BN, dropout: 0.96 % test error (Torch7: 1.40 %); the paper has no fp32 MLP of
  the same architecture; its Table 1's best fp32 result is Maxout networks' 0.94 % (-0.02 pp); the
  atlas reads "nearly state-of-the-art" as at most 1 pp of accuracy lost against the same harness's
  fp32 MLP. 1-bit weights: 32x less weight memory than fp32 (Sec. 3).
- ``mnist-xnor-kernel`` (Abstract, Sec. 4): with the XNOR GPU kernel the MNIST BNN runs 7 times faster
  than with an unoptimised GPU kernel, "without suffering any loss in classification accuracy".
- ``cifar-10-convnet``, ``svhn-convnet``: 11.40 % / 2.80 % (Theano), 10.15 % / 2.53 % (Torch7); not run
  here.

What is measured: ``mnist-mlp``: ``baseline_accuracy`` (the fp32 MLP), ``accuracy`` (the BNN, run by
PyTorch with its ±1 weights and activations), ``accuracy_change_pp``, ``storage_bits`` /
``storage_compression`` (the deployed BNN's actual encoding against the fp32 MLP's 32 bits per
parameter: each hidden-to-hidden and output layer's signs packed 32 per int32 word in
``atlas_kernels.binarize_weight``'s format without a scale (what ``binary_matmul`` runs), the first
layer's in ``atlas_kernels.encode_binary``'s 1-bit codes (with its two fp32 decode constants), BN's
scale and shift in fp32), ``weight_storage_compression`` (the weight matrices alone: 32 bits per fp32
weight against the bits of their encodings, padding included: the paper's 32x; on the paper's 3 x
4096 MLP these encodings give 31.94x, the 784 input pixels padded to 800 bits a row).
``mnist-xnor-kernel``: ``xnor_test_accuracy`` (the deployed network: the binary layers through
``atlas_kernels.binary_matmul`` on packed signs, the first layer a float product with its decoded ±1
weights, BN in between) and ``xnor_accuracy_change_pp`` (that minus the PyTorch BNN's accuracy: 0 when
the bitwise inference loses nothing); where the binary layers run on the Triton XNOR kernel (CUDA
tensors) also ``dense_latency_us`` / ``encoded_latency_us`` / ``speedup``: the whole network's forward
pass over the whole test set in one batch (as the released run-time code times MNIST), once with
every binary layer through ``binary_matmul`` and once with the same ±1 values through ``F.linear`` in
fp32 (cuBLAS), everything else identical, timed in the same run. On a CPU ``binary_matmul`` is a
PyTorch reference that unpacks the bits into a dense product, not an XNOR inference path, so no
speed-up is recorded there. The paper's 7x is against its own unoptimised GPU kernel, which the
harness does not have; an fp32 cuBLAS product is a far stronger baseline, so the speed-up is recorded
for the reader and not checked.

The curve (``mnist-mlp``): the BNN's accuracy at 1 bit beside the fp32 MLP's weights uniformly
quantized after training to 8, 4, 2 and 1 bits (:func:`atlas.harness.controls.quantization_curve`,
post-training: the BNN trains for the same steps as the fp32 MLP, no more). The control quantizes the
weights only; the BNN's activations are 1-bit as well.

Harness differs: the quick profile runs on Fashion-MNIST (MNIST cannot be downloaded here) with
BinaryConnect's quick MLP (3 x 256, :func:`~atlas_reproductions.courbariaux2015.bc_mlp`: no biases, BN
with eps 1e-4 and moving-average factor 0.15 (the released BNN code: 0.1) after every layer, Glorot
initialisation) and BinaryConnect's quick training, unchanged: 750 Adam steps of batch 200 with a
cosine schedule from 0.01 (the released code: 0.003 decayed exponentially over 1000 epochs of batch
100), no dropout (the released MNIST code: 0.2 on the input, 0.5 on the hidden units; the paper
profile keeps them). The fp32 baseline is the same MLP with ReLU hidden units and real weights, the
same initial weights, loss, dropout and step budget. Test accuracy is the final model's (the released
code reports the test error at the best validation epoch).

Quick verdict: ``mnist-mlp`` partly reproduced: the 32x weight storage holds (31.6x, the first layer's 784
inputs padded to 800 bits), the accuracy does not: the BNN loses about 2 pp against the fp32 MLP (the
atlas allows 1); see :data:`DIAGNOSIS`. ``mnist-xnor-kernel``: the bitwise inference loses nothing
(exact integer products); its speed-up is measured only where the Triton kernel runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from functools import partial

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from atlas_reproductions.courbariaux2015 import (
    BinaryConv2d,
    BinaryLinear,
    QuantizedWeight,
    bc_mlp,
    binarize_deterministic,
    clip_latent,
    glorot_lr_groups,
    hinge,
    quantize_layers,
    straight_through,
)
from pydantic import Field, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction


class Config(Profile):
    hidden: list[PositiveInt]  # widths of the hidden layers (the paper's Theano MLP: 3 x 4096)
    dropout_input: float = Field(0.0, ge=0, lt=1)  # on the image (released mnist.py: 0.2)
    dropout_hidden: float = Field(0.0, ge=0, lt=1)  # after every hidden activation (released mnist.py: 0.5)
    train: TrainConfig  # each model's training: the fp32 MLP and the BNN, the same budget


PROFILES = {
    # BinaryConnect's smoke and quick MLPs and training (the values of courbariaux2015's profiles,
    # stated here so that a change there does not change this paper's budget: smoke 3 passes over
    # digits at batch 64 on a 64-64 MLP; quick 750 Adam steps of batch 200 from 0.01, 2.5 passes over
    # Fashion-MNIST, on a 256-256-256 MLP, lr 10x the released code's so that the latent weights reach
    # the clipping range in this short run): the same budget, with 2 models a seed
    "smoke": {"dataset": "digits", "seeds": 2, "hidden": [64, 64],
              "train": {"steps": 67, "batch_size": 64, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "hidden": [256, 256, 256],
              "train": {"steps": 750, "batch_size": 200, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    "paper": {
        # released Train-time/mnist.py: 3 x 4096, dropout 0.2 / 0.5, Adam from 0.003 (decayed to 3e-7),
        # batch 100, 1000 epochs of its 50000 training examples = 500000 steps; here cosine
        "dataset": "mnist", "seeds": 3, "hidden": [4096, 4096, 4096], "dropout_input": 0.2, "dropout_hidden": 0.5,
        "train": {"steps": 500000, "batch_size": 100, "optimizer": "adam", "lr": 0.003, "schedule": "cosine"},
    },
}


# ------------------------------------------------------------------------------ binary activations
def binary_tanh(x: torch.Tensor) -> torch.Tensor:
    """``sign(x)`` (``x >= 0`` -> +1, Eq. 1) in the forward pass; in the backward pass the gradient of
    ``Htanh(x) = clip(x, -1, 1)``: ``g * 1_{|x| <= 1}`` (Sec. 1.3), cancelled where ``|x| > 1``."""
    with torch.no_grad():
        q = binarize_deterministic(x)
    return straight_through(x.clamp(-1.0, 1.0), q)


class SignActivation(nn.Module):
    """A BNN hidden unit's activation: :func:`binary_tanh`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return binary_tanh(x)


def mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int], *, dropout_input: float = 0.0,
        dropout_hidden: float = 0.0) -> nn.Sequential:
    """The fp32 MLP: BinaryConnect's (:func:`~atlas_reproductions.courbariaux2015.bc_mlp`: Linear without
    bias, BN, ReLU; the output's BN last) with the released BNN code's dropout on the input and after
    every hidden activation."""
    layers: list[nn.Module] = []
    for m in bc_mlp(input_shape, num_classes, hidden):
        layers.append(m)
        if isinstance(m, nn.Flatten) and dropout_input:
            layers.append(nn.Dropout(dropout_input))
        if isinstance(m, nn.ReLU) and dropout_hidden:
            layers.append(nn.Dropout(dropout_hidden))
    return nn.Sequential(*layers)


def binarize_network(model: nn.Sequential) -> nn.Sequential:
    """The BNN of an fp32 MLP: a copy with every hidden ReLU replaced by :class:`SignActivation` and every
    linear layer propagating with BinaryConnect's deterministic binary weights (same latent weights)."""
    layers = [SignActivation() if isinstance(m, nn.ReLU) else m for m in copy.deepcopy(model)]
    return quantize_layers(nn.Sequential(*layers), BinaryLinear, BinaryConv2d)


def train_bnn(run: Run, initial: nn.Sequential) -> nn.Sequential:
    """Algorithm 1: binarise the initial fp32 MLP's weights and activations, train with them in both
    propagations (squared hinge loss, Adam with Glorot-scaled rates for the latent weights) and clip the
    latent weights to [-1, 1] after every update."""
    model = binarize_network(initial)
    cfg = run.train_config("train")
    return run.train(model, run.dataset().train, cfg, desc="bnn", loss_fn=hinge, after_step=clip_latent,
                     params=glorot_lr_groups(model, cfg.lr))


# ------------------------------------------------------------------------------ the deployed BNN
BinaryEncoding = ak.BinaryWeight | ak.LowBitWeight


def encode_bnn(model: nn.Sequential) -> dict[str, BinaryEncoding]:
    """The deployed BNN's weights as stored and run, keyed by weight parameter name: a layer whose input
    is binary (it follows a :class:`SignActivation`) as ``atlas_kernels.binarize_weight(signs,
    scale=False)`` (32 signs per int32 word, no scale: ``binary_matmul``'s operand); the first layer,
    whose input is the real image, as ``atlas_kernels.encode_binary`` 1-bit codes."""
    out: dict[str, BinaryEncoding] = {}
    binary_input = False
    for name, m in model.named_children():
        if isinstance(m, SignActivation):
            binary_input = True
        elif isinstance(m, QuantizedWeight):
            w = m.weight.detach()
            signs = binarize_deterministic(w).reshape(w.shape[0], -1)
            out[f"{name}.weight"] = ak.binarize_weight(signs, scale=False) if binary_input else ak.encode_binary(signs)
            binary_input = False
    return out


def bnn_storage(model: nn.Sequential) -> list[measure.Encoded]:
    """The deployed BNN: the bytes of each layer's sign encoding; BN's scale and shift in fp32."""
    encoded = encode_bnn(model)
    parts = [measure.encoded(name, q, "1-bit signs") for name, q in encoded.items()]
    return parts + measure.fp32_parts(model, skip=sorted(encoded))


Product = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def deployed_forward(model: nn.Sequential, products: dict[str, Product], x: torch.Tensor) -> torch.Tensor:
    """The trained BNN's inference with each linear layer's product given by ``products`` (keyed by
    weight name); every other module (flatten, BN with its running statistics, sign) as in ``model``."""
    model.eval()
    for name, m in model.named_children():
        if isinstance(m, QuantizedWeight):
            x = products[f"{name}.weight"](x)
        elif not isinstance(m, nn.Dropout):
            x = m(x)
    return x


def xnor_products(encoded: dict[str, BinaryEncoding], device: torch.device) -> dict[str, Product]:
    """Each binary-input layer through ``atlas_kernels.binary_matmul`` (XNOR + popcount on the packed
    signs; its input's signs packed on the fly); the real-input first layer a float product with its
    decoded ±1 weights (the released run-time code's first layer)."""
    return {name: partial(ak.binary_matmul, w=q.to(device), algorithm="xnor") if isinstance(q, ak.BinaryWeight)
            else partial(F.linear, weight=q.dequantize().to(device)) for name, q in encoded.items()}


def dense_products(encoded: dict[str, BinaryEncoding], device: torch.device) -> dict[str, Product]:
    """Every layer a float product (``F.linear``, fp32) with its decoded ±1 weights."""
    return {name: partial(F.linear, weight=q.dequantize().to(device)) for name, q in encoded.items()}


def xnor_on_triton(encoded: dict[str, BinaryEncoding], device: torch.device) -> bool:
    """Whether ``binary_matmul`` runs the Triton XNOR kernel here (CUDA tensors, Triton importable)."""
    return any(isinstance(q, ak.BinaryWeight) and ak.resolve_backend("auto", q.bits.to(device)) == "triton"
               for q in encoded.values())


def xnor_latency(model: nn.Sequential, encoded: dict[str, BinaryEncoding], x: torch.Tensor) -> dict[str, float]:
    """The network's forward pass over ``x`` with its binary layers through ``binary_matmul`` against the
    same ±1 values through ``F.linear`` (everything else identical): ``measure.kernel_latency``."""
    xnor, dense = xnor_products(encoded, x.device), dense_products(encoded, x.device)
    return measure.kernel_latency(lambda: deployed_forward(model, dense, x),
                                  lambda: deployed_forward(model, xnor, x))


def accuracy_of_logits(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(1).cpu() == labels.cpu()).float().mean())


#: Why the accuracy check of ``mnist-mlp`` fails on the quick profile; shown beside the verdict.
DIAGNOSIS = """
The method was re-read against the paper and the released Train-time code (binary_net.py): sign
activations with the Htanh straight-through gradient (cancelled for |x| > 1, unit-tested), deterministic
binary weights with the straight-through gradient, latent weights clipped to [-1, 1], Glorot-scaled
learning rates, squared hinge loss, BN after every layer, first layer's input real; the deployed network
through the XNOR kernel gives the same predictions. On seeds 100 and 101 (not the published ones) the
quick profile gives -1.73 and -1.69 pp; with the released code's learning rate (0.003 instead of 0.01)
-2.09 pp (seed 100); with 4x the steps the fp32 MLP gains 2.2 pp and the BNN 1.7 pp (-2.27 pp); with
3 x 1024 hidden units instead of 256, -1.66 pp. Neither budget, learning rate nor width closes the gap
within these runs. The paper's 0.96 % is a 3 x 4096 BNN with dropout trained for 1000 epochs on MNIST,
compared with another fp32 network (Maxout, 0.94 %) in a regime where MNIST is nearly saturated; it has
no fp32 MLP of its own architecture. The atlas takes the ~2 pp as the cost of 1-bit activations on
Fashion-MNIST at these budgets and widths, not as a refutation of the paper's MNIST regime, which the
paper profile measures.
"""


@reproduction("courbariaux2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    cfg = run.config
    hidden = list(cfg["hidden"])
    initial = mlp(data.input_shape, data.num_classes, hidden, dropout_input=cfg.get("dropout_input", 0.0),
                  dropout_hidden=cfg.get("dropout_hidden", 0.0)).to(run.device)
    baseline = run.train(copy.deepcopy(initial), data.train, run.train_config("train"), desc="fp32 MLP",
                         loss_fn=hinge)
    base_acc = run.accuracy(baseline, data.test)
    bnn = train_bnn(run, initial)
    acc = run.accuracy(bnn, data.test)

    parts = bnn_storage(bnn)
    bits = measure.storage_bits(parts)
    n_weights = sum(m.weight.numel() for m in bnn.modules() if isinstance(m, QuantizedWeight))
    sign_bits = sum(p.bits for p in parts if p.what == "1-bit signs")

    arch = "-".join(str(h) for h in hidden)
    train = cfg["train"]
    differs = (f"MLP {arch} (paper: 4096-4096-4096), {train['steps']} Adam steps of batch {train['batch_size']}, "
               f"cosine LR from {train['lr']}, dropout {cfg.get('dropout_input', 0.0):g}/"
               f"{cfg.get('dropout_hidden', 0.0):g} (paper code: 0.2/0.5); standard BN and Adam (paper: "
               "shift-based variants optional); fp32 baseline: the same MLP with ReLU units, initial weights, "
               "loss and steps")
    model = f"MLP {arch} + BN, L2-SVM output, binary weights and activations (first layer's input real)"
    run.record("mnist-mlp", model=model, differs=differs, metrics={
        **measure.accuracy_change(base_acc, acc),
        "params": measure.count_params(bnn),
        "storage_bits": float(bits),
        "storage_compression": measure.dense_bits(baseline) / bits,
        "weight_storage_compression": 32 * n_weights / sign_bits,
    }, curves=[
        controls.Series("BNN (binary weights and activations)", controls.BITS, controls.ACCURACY, {1.0: acc}),
        controls.quantization_curve(run, baseline, [8, 4, 2, 1], None),
    ], diagnosis=DIAGNOSIS)

    # the deployed network through the XNOR kernel: its accuracy, and (on the Triton kernel) its speed
    encoded = encode_bnn(bnn)
    x_test = data.test.x.to(run.device)
    xnor_acc = accuracy_of_logits(deployed_forward(bnn, xnor_products(encoded, run.device), x_test), data.test.y)
    metrics = {"xnor_test_accuracy": xnor_acc, "xnor_accuracy_change_pp": xnor_acc - acc}
    if xnor_on_triton(encoded, run.device):
        metrics |= xnor_latency(bnn, encoded, x_test)
        notes = (f"speed-up: the whole network's forward pass over the {len(data.test)} test examples in one "
                 "batch, its binary layers through atlas_kernels.binary_matmul (Triton XNOR + popcount kernel) "
                 "against the same ±1 values through F.linear in fp32 (cuBLAS), first layer F.linear in both, "
                 "in the same run; torch.utils.benchmark blocked_autorange")
    else:
        notes = ("no speed-up recorded: binary_matmul ran its PyTorch CPU reference (bits unpacked into a dense "
                 "product), not an XNOR inference path; the accuracy is that of the exact XNOR/popcount product")
    run.record("mnist-xnor-kernel", model=model + ", binary layers through atlas_kernels.binary_matmul",
               differs=differs + "; speed-up against fp32 F.linear (paper: its own unoptimised GPU kernel)",
               metrics=metrics, notes=notes)
