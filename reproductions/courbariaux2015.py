"""BinaryConnect: Training Deep Neural Networks with binary weights during propagations
(Courbariaux, Bengio & David, NIPS 2015; arXiv:1511.00363).

Method (Sec. 2, Algorithm 1): every weight keeps a real-valued *latent* value ``w`` that accumulates
the gradient updates, but the forward and the backward propagation use a binarised copy ``w_b``:

- deterministic (Eq. 1): ``w_b = +1 if w >= 0 else -1``;
- stochastic (Eq. 2-3): ``w_b = +1`` with probability ``p = hard_sigmoid(w) = clip((w + 1) / 2, 0, 1)``,
  ``-1`` otherwise.

The gradient of the cost with respect to ``w_b`` is applied to ``w`` unchanged (the straight-through
estimator), and after every update the latent weights are clipped to ``[-1, 1]`` (Sec. 2.4), since a
latent weight beyond the binary values has no effect on ``w_b`` but would keep growing. Batch
normalisation follows every layer and makes the scale of the binary weights irrelevant (Sec. 2.5).
Only the weights are binarised; BN parameters (and any bias) stay real-valued.

Test-time inference (Sec. 2.6): the deterministic variant uses the binary weights; the stochastic
variant uses the *real-valued* weights, "following the practice of Dropout", i.e. the binarisation
acts as a training-time regulariser (the official code does the same: ``binarization()`` returns
``W`` when ``deterministic and stochastic``). The stochastic model as evaluated is therefore an fp32
model; this reproduction also evaluates it with deterministic binary weights (the paper's first
alternative) and records that separately.

Claims (Table 2, permutation-invariant MNIST, MLP of 3 x 1024 ReLU units with BN and an L2-SVM
output, trained without dropout): test error 1.30 % without regulariser, 1.29 % with deterministic
and 1.18 % with stochastic BinaryConnect (+0.01 and +0.12 pp of accuracy). The deterministic model
stores 1 bit per weight (32x less than fp32 weights).

Harness differs: the quick profile runs on Fashion-MNIST (MNIST cannot be downloaded here) with a
narrower MLP (3 x 256) for 750 optimizer steps of batch 200 per model (2.5 passes over the 60000
training examples; the paper: 250 epochs), with a cosine learning-rate schedule starting at 10x the
official code's Adam rate (0.01, so that the latent weights reach the clipping range within the short
run, as they do over the paper's hundreds of epochs; the official code also scales the latent
weights' rate by Glorot's factor, as here) instead of an exponentially decaying one; the fp32
baseline is this file's own MLP of the same architecture, loss, initial weights and step budget.
Storage is counted from the actual encoding: the bytes of each layer's signs as 1-bit codes packed in
int32 words, one row of words per output unit (``atlas_kernels.encode_binary``, the format its
``lowbit_matmul`` runs; a row's last word is zero-padded, and the encoding keeps two fp32 decode
constants per layer), plus 32 bits for every BN scale and shift (the running statistics folded into
them at inference, which keeps two numbers per unit). The linear layers have no bias (BN's shift
replaces it). On the narrow quick MLP the BN storage weighs more than on the
paper's 3 x 1024 MLP, so ``storage_compression`` is below 32x; ``weight_storage_compression`` (binary
weights against fp32 weights alone) and ``storage_compression_3x1024`` (the same count for the paper's
architecture, no training needed) are recorded alongside.

The curve (deterministic claim): the binary network's accuracy at 1 bit beside the fp32 baseline's
weights uniformly quantized after training to 8, 4, 2 and 1 bits (:mod:`atlas.harness.controls`,
post-training: the same training steps as BinaryConnect, no more), so the gain of training through the
binarisation over quantizing afterwards is read at 1 bit.

Storage metrics: ``storage_compression`` (every parameter: fp32 baseline against the deployed model,
BN parameters included) and ``weight_storage_compression`` (the binarised weight matrices alone: 32
bits against 1 per weight, the paper's 32x); the stochastic variant, tested with its real-valued
weights, has 1.0 for both. Extra metrics: ``storage_compression_3x1024``; for the stochastic variant
``binary_test_accuracy`` / ``binary_test_accuracy_change_pp`` / ``binary_storage_compression`` /
``binary_weight_storage_compression`` (its latent weights binarised deterministically at test time).
Latency (deterministic variant; the paper states no speed-up): ``dense_latency_us`` /
``encoded_latency_us`` / ``speedup``, the binary fully-connected layers at batch 1 run through
``atlas_kernels.lowbit_matmul`` (PyTorch CPU fallback here, which unpacks the codes at every call;
Triton on CUDA) against the same weights dense in fp32, timed in the same run.

Shared with later papers (BNN, XNOR-Net, TWN): :func:`hard_sigmoid`, :func:`binarize`,
:func:`straight_through`, :class:`QuantizedLinear` / :class:`QuantizedConv2d` (layers whose
propagations use ``quantize(latent weight)``), :class:`BinaryLinear` / :class:`BinaryConv2d`,
:func:`quantize_layers`, :func:`quantized_layers`, :func:`clip_latent`, :func:`glorot_lr_groups` and
:func:`square_hinge_loss`. Bit packing is ``atlas_kernels``'s (one implementation for every paper).

Verdict history: The first published record (commit 4bf7cd9, 2026-11-25) said "not reproduced": its 32x
storage check failed at 28x because the fp32 batch-norm and bias parameters were counted, while the
paper's 32x counts the weights; the check now reads ``weight_storage_compression`` (both are recorded).
The accuracy checks are decided on 5-seed intervals; the quick budget is 750 steps of batch 200 (the
same 2.5 passes over the data).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction


class Config(Profile):
    hidden: list[PositiveInt]  # widths of the hidden layers (the paper: 3 x 1024)
    train: TrainConfig  # each model's training: the fp32 baseline and both BinaryConnect variants


PROFILES = {
    "smoke": {
        # 3 passes over digits' 1437 examples at batch 64
        "dataset": "digits", "seeds": 1, "hidden": [64, 64],
        "train": {"steps": 67, "batch_size": 64, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"},
    },
    "quick": {
        # 750 steps of batch 200 (2.5 passes over Fashion-MNIST) per model, 3 models per seed, 5 seeds:
        # about 70 s on 2 cores (1,500 steps of 100 took 303 s on a loaded machine; a step's cost is
        # dominated by the binarisation, not the batch). lr 10x the paper's so that
        # in this short run the latent weights reach the clipping range, as they do over the paper's
        # hundreds of epochs (the stochastic variant is tested with them).
        "dataset": "fashion-mnist", "seeds": 5, "hidden": [256, 256, 256],
        "train": {"steps": 750, "batch_size": 200, "optimizer": "adam", "lr": 0.01, "schedule": "cosine"},
    },
    "paper": {
        # Table 2: PI MNIST, 3 x 1024 + BN, L2-SVM output, Adam, batch 100 (official mnist.py: LR 1e-3
        # decayed exponentially to 3e-6 over 250 epochs = 150000 steps of 100 on 60000 examples;
        # here cosine).
        "dataset": "mnist", "seeds": 3, "hidden": [1024, 1024, 1024],
        "train": {"steps": 150000, "batch_size": 100, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
    },
}


# --------------------------------------------------------------------------------- binarisation
def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``clip((x + 1) / 2, 0, 1)`` (Eq. 3)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def binarize_deterministic(w: torch.Tensor) -> torch.Tensor:
    """Eq. 1: ``+1`` where ``w >= 0`` (zero included), ``-1`` elsewhere."""
    return torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))


def binarize_stochastic(w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 2: ``+1`` with probability ``hard_sigmoid(w)``, ``-1`` otherwise."""
    u = torch.rand(w.shape, generator=generator, device=w.device, dtype=w.dtype)
    return torch.where(u < hard_sigmoid(w), torch.ones_like(w), -torch.ones_like(w))


def binarize(w: torch.Tensor, stochastic: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """BinaryConnect's binarisation, deterministic (Eq. 1) or stochastic (Eq. 2)."""
    return binarize_stochastic(w, generator) if stochastic else binarize_deterministic(w)


def straight_through(latent: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """``quantized`` in the forward pass; in the backward pass the gradient with respect to it flows to
    ``latent`` unchanged (``dC/dw = dC/dw_b``, Algorithm 1)."""
    return latent + (quantized - latent).detach()


# ---------------------------------------------------------------------------- quantised layers
class QuantizedWeight:
    """Mixin for a layer whose propagations use ``quantize(weight)`` while ``weight`` stays the
    real-valued latent parameter the optimizer updates. Subclasses define :meth:`quantize`.

    ``quantize_at_test``: whether evaluation (``model.eval()``) also uses the quantised weights (True)
    or the real-valued ones (False; BinaryConnect's stochastic variant, Sec. 2.6)."""

    weight: nn.Parameter
    training: bool
    quantize_at_test: bool = True

    def quantize(self, w: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def propagation_weight(self) -> torch.Tensor:
        """The weight the forward (and hence backward) propagation uses."""
        if not self.training and not self.quantize_at_test:
            return self.weight
        with torch.no_grad():
            q = self.quantize(self.weight)
        return straight_through(self.weight, q)


class QuantizedLinear(QuantizedWeight, nn.Linear):
    """``nn.Linear`` propagating with quantised weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.propagation_weight(), self.bias)


class QuantizedConv2d(QuantizedWeight, nn.Conv2d):
    """``nn.Conv2d`` propagating with quantised weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.propagation_weight(), self.bias)


class _Binary:
    """BinaryConnect's quantiser: deterministic or stochastic signs during training; at test time the
    deterministic signs, or (stochastic variant, as in the paper) the real-valued weights."""

    stochastic: bool = False
    training: bool

    def configure(self, stochastic: bool = False, test_weights: str = "binary") -> None:
        if test_weights not in ("binary", "real"):
            raise ValueError(f"test_weights must be 'binary' or 'real', got {test_weights!r}")
        self.stochastic = stochastic
        self.quantize_at_test = test_weights == "binary"

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        return binarize(w, stochastic=self.stochastic and self.training)


class BinaryLinear(_Binary, QuantizedLinear):
    """A BinaryConnect fully-connected layer."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, stochastic: bool = False,
                 test_weights: str = "binary") -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.configure(stochastic, test_weights)


class BinaryConv2d(_Binary, QuantizedConv2d):
    """A BinaryConnect convolution (the paper's CIFAR-10 / SVHN networks)."""

    def __init__(self, *args, stochastic: bool = False, test_weights: str = "binary", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.configure(stochastic, test_weights)


def quantize_layers(model: nn.Module, linear_cls: type[QuantizedLinear], conv_cls: type[QuantizedConv2d],
                    **kwargs) -> nn.Module:
    """Replace every ``nn.Linear`` / ``nn.Conv2d`` of ``model`` (in place) by ``linear_cls`` /
    ``conv_cls`` with the same shape and the same current weights; returns ``model``."""
    for name, child in list(model.named_children()):
        if isinstance(child, QuantizedWeight):
            continue
        if isinstance(child, nn.Linear):
            new: nn.Module = linear_cls(child.in_features, child.out_features, bias=child.bias is not None, **kwargs)
        elif isinstance(child, nn.Conv2d):
            new = conv_cls(child.in_channels, child.out_channels, child.kernel_size, stride=child.stride,
                           padding=child.padding, dilation=child.dilation, groups=child.groups,
                           bias=child.bias is not None, padding_mode=child.padding_mode, **kwargs)
        else:
            quantize_layers(child, linear_cls, conv_cls, **kwargs)
            continue
        new.load_state_dict(child.state_dict())
        setattr(model, name, new.to(child.weight.device))
    return model


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every layer of ``model`` that propagates with quantised weights."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantizedWeight)]


@torch.no_grad()
def clip_latent(model: nn.Module, bound: float = 1.0) -> None:
    """Clip the latent weights of every quantised layer to ``[-bound, bound]`` (Algorithm 1, Sec. 2.4);
    used as the training loop's ``after_step`` hook."""
    for _, layer in quantized_layers(model):
        layer.weight.clamp_(-bound, bound)


def glorot_lr_groups(model: nn.Module, lr: float) -> list[dict]:
    """Optimizer parameter groups: the latent weights of each quantised layer get ``lr`` scaled by the
    inverse of Glorot's initialisation bound, ``1 / sqrt(1.5 / (fan_in + fan_out))`` (the official
    code's ``W_LR_scale = "Glorot"``), so that latent weights initialised at Glorot's small scale can
    reach the clipping range [-1, 1]; everything else gets ``lr``."""
    groups: list[dict] = []
    latent: set[int] = set()
    for _, layer in quantized_layers(model):
        w = layer.weight
        fan_out, fan_in = w.shape[0], w[0].numel()
        if w.dim() > 2:  # convolution: Glorot counts the receptive field in both fans
            fan_out *= w[0, 0].numel()
        groups.append({"params": [w], "lr": lr / math.sqrt(1.5 / (fan_in + fan_out))})
        latent.add(id(w))
    rest = [p for p in model.parameters() if id(p) not in latent]
    if rest:
        groups.append({"params": rest, "lr": lr})
    return groups


# ----------------------------------------------------------------------------- storage encoding
def encode_binary_layers(model: nn.Module) -> dict[str, ak.LowBitWeight]:
    """The deployed deterministic model's binary layers as stored and run: each layer's weight signs
    (Eq. 1) as 1-bit codes, one row of int32 words per output unit (``atlas_kernels.encode_binary``; a
    convolution as its out x (in * k * k) matrix). Keyed by weight parameter name."""
    out: dict[str, ak.LowBitWeight] = {}
    for name, layer in quantized_layers(model):
        w = layer.weight.detach()
        out[f"{name}.weight"] = ak.encode_binary(binarize_deterministic(w).reshape(w.shape[0], -1))
    return out


def binary_storage(model: nn.Module) -> list[measure.Encoded]:
    """The deployed deterministic model: the bytes of each binary layer's encoding (packed signs and
    the encoding's two fp32 decode constants), every other parameter (BN scale/shift, biases) in fp32."""
    encoded = encode_binary_layers(model)
    parts = [measure.encoded(name, q, "1-bit signs") for name, q in encoded.items()]
    return parts + measure.fp32_parts(model, skip=sorted(encoded))


def binary_latency(model: nn.Module) -> dict[str, float]:
    """The binary fully-connected layers at batch 1 through ``atlas_kernels.lowbit_matmul`` (1-bit codes
    unpacked on the fly; real-valued activations) against the same ±1 weights dense in fp32."""
    encoded = encode_binary_layers(model)
    params = dict(model.named_parameters())
    layers = [(q.dequantize().to(params[n].device), q.to(params[n].device)) for n, q in encoded.items()
              if params[n].dim() == 2]
    return measure.layers_latency(layers, ak.lowbit_matmul)


# ------------------------------------------------------------------------------- model and loss
def square_hinge_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The L2-SVM output's cost: ``mean(max(0, 1 - t * z)^2)`` with targets ``t`` in {-1, +1}
    (one-vs-rest), averaged over examples and classes as in the official code."""
    targets = 2.0 * F.one_hot(labels, logits.shape[1]).to(logits.dtype) - 1.0
    return F.relu(1.0 - targets * logits).pow(2).mean()


def hinge(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The training loop's ``loss_fn``."""
    return square_hinge_loss(model(x), y)


def bc_mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int]) -> nn.Sequential:
    """The paper's permutation-invariant MLP: ``hidden`` ReLU layers, each linear layer (the output
    included) followed by batch normalisation (eps 1e-4, moving-average factor 0.15 as in the official
    code); no biases (BN's shift plays their part). Plain fp32 layers: binarise with
    :func:`quantize_layers`."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = int(math.prod(input_shape))
    for i, h in enumerate((*hidden, num_classes)):
        layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h, eps=1e-4, momentum=0.15)]
        if i < len(hidden):  # no ReLU after the output's BN
            layers.append(nn.ReLU())
        width = h
    for m in layers:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)  # Glorot, as Lasagne's default
    return nn.Sequential(*layers)


def train_binaryconnect(run: Run, initial: nn.Module, *, stochastic: bool) -> nn.Module:
    """Algorithm 1: binarise the initial fp32 network's linear layers, train with the binary weights
    in both propagations (Adam, Glorot-scaled learning rates for the latent weights) and clip the
    latent weights to [-1, 1] after every update."""
    model = quantize_layers(copy.deepcopy(initial), BinaryLinear, BinaryConv2d, stochastic=stochastic,
                            test_weights="real" if stochastic else "binary")
    cfg = run.train_config("train")
    return run.train(model, run.dataset().train, cfg, desc=f"binaryconnect ({'stoch' if stochastic else 'det'})",
                     loss_fn=hinge, after_step=clip_latent, params=glorot_lr_groups(model, cfg.lr))


def deterministic_view(model: nn.Module) -> nn.Module:
    """A copy of a (stochastically) trained model that uses the deterministic signs at test time."""
    view = copy.deepcopy(model)
    for _, layer in quantized_layers(view):
        layer.configure(stochastic=False, test_weights="binary")
    return view.eval()


#: Why the atlas publishes "not reproduced" for stochastic BinaryConnect; shown beside the verdict.
STOCHASTIC_DIAGNOSIS = """
Stochastic binarisation (Eq. 2-3, hard sigmoid) and the test-time real-valued weights (Sec. 2.6, as
in the released code) were checked against the paper. The paper's +0.12 pp is a regulariser's gain:
a 3x1024 MLP trained for hundreds of epochs, where the fp32 net overfits MNIST. On seeds 100-102
(not the published seeds) the quick budget gives -1.32, -1.26 and -1.22 pp; with 4x the steps (seed
100) the fp32 baseline gains 1.9 pp and the stochastic model falls further behind (-1.98 pp;
deterministic -1.18 pp), so more budget does not close the gap on this 256-wide net, which does not
overfit Fashion-MNIST in these budgets. The atlas takes the gap as the method's in a regime without
overfitting, not as a refutation of the paper's regime, which the paper profile measures.
"""

@reproduction("courbariaux2015", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    hidden = list(run.config["hidden"])
    initial = bc_mlp(data.input_shape, data.num_classes, hidden).to(run.device)
    baseline = run.train(copy.deepcopy(initial), data.train, run.train_config("train"), desc="fp32 baseline",
                         loss_fn=hinge)
    base_acc = run.accuracy(baseline, data.test)
    base_bits = measure.dense_bits(baseline)
    n_weights = sum(m.weight.numel() for m in baseline.modules() if isinstance(m, nn.Linear))

    paper_mlp = quantize_layers(bc_mlp(data.input_shape, data.num_classes, [1024] * 3), BinaryLinear, BinaryConv2d)
    paper_ratio = measure.dense_bits(paper_mlp) / measure.storage_bits(binary_storage(paper_mlp))
    arch = "-".join(str(h) for h in hidden)
    limit = run.config.get("train_limit")
    train = run.config["train"]
    differs = (f"MLP {arch} (paper: 1024-1024-1024), {train['steps']} steps of batch "
               f"{train['batch_size']}, cosine LR (Adam, "
               f"lr {train['lr']}), " + (f"first {limit} training examples; " if limit else "") +
               "fp32 baseline of the same MLP, loss, initial weights and schedule")

    for claim, stochastic in (("mnist-deterministic", False), ("mnist-stochastic", True)):
        model = train_binaryconnect(run, initial, stochastic=stochastic)
        acc = run.accuracy(model, data.test)
        binary = deterministic_view(model)
        parts = binary_storage(binary)
        binary_ratio = base_bits / measure.storage_bits(parts)
        weight_bits = sum(p.bits for p in parts if p.what == "1-bit signs")
        metrics = {
            **measure.accuracy_change(base_acc, acc),
            "params": measure.count_params(model),
            "storage_compression_3x1024": paper_ratio,
        }
        weight_ratio = 32 * n_weights / weight_bits  # the binarised weight matrices alone (the paper's 32x)
        if stochastic:  # tested with the real-valued weights (Sec. 2.6): an fp32 model
            binary_acc = run.accuracy(binary, data.test)
            metrics |= {
                "storage_bits": float(base_bits), "storage_compression": 1.0, "weight_storage_compression": 1.0,
                "binary_test_accuracy": binary_acc, "binary_test_accuracy_change_pp": binary_acc - base_acc,
                "binary_storage_compression": binary_ratio, "binary_weight_storage_compression": weight_ratio,
            }
        else:
            metrics |= {"storage_bits": float(measure.storage_bits(parts)), "storage_compression": binary_ratio,
                        "weight_storage_compression": weight_ratio, **binary_latency(binary)}
        notes = "" if stochastic else measure.latency_note("atlas_kernels.lowbit_matmul on 1-bit codes",
                                                           binary[1].weight)
        # the deterministic binary network (1 bit) beside the fp32 baseline uniformly quantized after
        # the same training steps (the control, post-training: the same budget)
        curves = [] if stochastic else [
            controls.Series("BinaryConnect (deterministic)", controls.BITS, controls.ACCURACY, {1.0: acc}),
            controls.quantization_curve(run, baseline, [8, 4, 2, 1], None)]
        run.record(claim, model=f"MLP {arch} + BN, L2-SVM output, {'stochastic' if stochastic else 'deterministic'} "
                   "BinaryConnect", metrics=metrics, notes=notes, curves=curves,
                   differs=differs + ("; tested with real-valued weights as in Sec. 2.6" if stochastic else ""),
                   diagnosis=STOCHASTIC_DIAGNOSIS if stochastic else "")
