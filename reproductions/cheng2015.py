"""Training Binary Multilayer Neural Networks for Image Classification using Expectation Backpropagation
(Cheng, Soudry, Mao & Lan, arXiv:1503.03562, 2015).

Method: Expectation BackPropagation (EBP; Soudry, Hubara & Meir, NIPS 2014), applied to multiclass
image classification. Every binary weight ``W_ij`` in ``{-1, +1}`` has a factorised (mean-field)
posterior with mean ``m_ij = tanh(h_ij)``; the network's neurons are signs. EBP propagates the means and
variances of the pre-activations through the network (the central limit theorem over a layer's
``K`` inputs), with the bias ``b`` as one more input of variance 1:

- ``mu_k = (sum_j m_kj v_j + b_k) / sqrt(K + 1)``; first layer (real, deterministic input ``x``):
  ``sigma_k^2 = (sum_j (1 - m_kj^2) x_j^2 + 1) / (K + 1)``; later layers (inputs ``v`` of mean
  ``vbar`` and variance ``s = 1 - vbar^2``): ``sigma_k^2 = (sum_j s_j + sum_j (1 - m_kj^2)(1 - s_j) + 1)
  / (K + 1)``, the variance of ``sum_j W_kj v_j`` under the factorised posterior;
- a sign neuron's output mean ``vbar_k = 2 Phi(mu_k / sigma_k) - 1``;
- the output layer's likelihood of the targets ``y`` in ``{-1, +1}^N`` (one +1 per example: the class):
  ``prod_k Phi(y_k mu_k / sigma_k)``.

The update is the derivative of that log-likelihood with respect to the means, the variances held
fixed, propagated back through the means (the released code's ``Binary_EBP_minibatch.m``):
``delta_L = y Phi'/(sigma Phi)``, ``delta_(l-1) = m^T (delta_l 2 phi(mu/sigma)/sigma) / sqrt(K + 1)``, and
``h <- h + eta (delta G) vbar^T`` summed over the mini-batch, ``b`` likewise, ``eta = 1``. Here this is
autograd of ``-sum log Phi(y mu / sigma)`` through the mean-field forward pass with the variances
detached and the gradient with respect to ``m = tanh(h)`` applied to ``h`` (a straight-through
``tanh``: EBP updates the natural parameter ``h`` by the gradient in the mean), by SGD with learning
rate ``eta = 1``, no momentum, a constant schedule and the loss summed over the batch: the same
update, unit-tested against the code's formulas.

At test time EBP-D, the deterministic binary network (the released code's ``r_out``): weights
``sign(h)``, real biases, ``sign`` hidden units, the class the largest output; EBP-P (``r_out_cont``)
is the mean-field network's output means. The binary weights are stored as packed signs
(``atlas_kernels.binarize_weight(scale=False)`` for the layers whose input is ±1, ``encode_binary`` for
the first, whose input is the real image), the biases in fp32.

Claims (arXiv:1503.03562v3: the abstract was read; its tables and the architectures behind each number
were not):

- ``mnist-binary-ebp`` (Abstract): "EBP can obtain 2.12% test error with binary weights and 1.66% test
  error with real weights, which is comparable to the results of standard BackPropagation algorithm on
  fully connected MNNs". Checked: the binary-weight network trained by EBP against a standard
  backpropagation MLP of the same architecture and step budget on the same harness (the atlas reads
  "comparable" as at most 1 pp below the binary-versus-real gap the abstract reports, -0.46 pp), and
  32x less weight storage than fp32 (1-bit weights).

What is measured (``mnist-binary-ebp``): ``baseline_accuracy`` (the backpropagation MLP: the same
widths, ``tanh`` hidden units, softmax cross-entropy, Adam), ``accuracy`` (EBP-D), ``accuracy_change_pp``,
``ebp_p_accuracy`` (the mean-field output, EBP-P), ``storage_bits`` / ``storage_compression`` (EBP-D's
packed signs and fp32 biases against the backpropagation MLP's fp32 parameters),
``weight_storage_compression`` (the weight matrices alone, padding included). The curve: EBP-D at 1 bit
beside the backpropagation MLP's weights uniformly quantized after training to 8, 4, 2 and 1 bits
(:func:`atlas.harness.controls.quantization_curve`, post-training: EBP trains for the same steps as the
MLP, no more).

Quick verdict: partly reproduced. The 32x weight storage holds (31.5x, padding included); the accuracy
does not: EBP-D loses about 23 pp against the backpropagation MLP (EBP-P about 6 pp). An audit against
EBP's Algorithm 1 and the released code found no implementation error (see :data:`DIAGNOSIS`); what
is left is the distance between the mode ``sign(h)`` of a still broad posterior and the network EBP
trains. ``sample_accuracy`` records one binary network drawn from the posteriors
(``P(W = +1) = (1 + m) / 2``, sign units): another deployable binary network, not the paper's.

Harness differs: Fashion-MNIST (MNIST cannot be downloaded here) in the quick profile, standardised
images; an MLP 784-256-256-10 (the paper's widths and depths were not read; the released code's example
has one hidden layer of 120); the released code's batch of 10 (its loop takes 11) is 100 here with the
update summed over it as there (over a pass the weights move as far; on one seed the code's batch gives
EBP-D about 7 points more, at ten times the steps), one pass over the training set
(600 steps; the released code trains one pass per block); initial ``h`` uniform with variance ``1/K`` and zero biases as in the code. The
released code computes the next batch's ``tanh(h)`` from the ``h`` before the update (a one-step lag);
here it is the updated ``h``. The paper's spatial filters and dropout variants are not reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import atlas_kernels as ak
import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction


class Config(Profile):
    hidden: list[PositiveInt]  # hidden widths (the released code's example: [120])
    ebp: TrainConfig  # EBP: SGD, lr = eta = 1 (released code), momentum 0, constant, loss summed over the batch
    backprop: TrainConfig  # the standard backpropagation MLP: same steps and batch


PROFILES = {
    # smoke: digits, seconds. quick: Fashion-MNIST, 784-256-256-10, one pass at batch 100 (600 steps) for
    # both networks; EBP's step is the released code's (eta = 1, summed over the batch: over a pass the
    # weights move as far as with the code's batch of 10)
    "smoke": {"dataset": "digits", "seeds": 2, "hidden": [64, 64],
              "ebp": {"steps": 150, "batch_size": 20, "optimizer": "sgd", "lr": 1.0, "momentum": 0.0,
                      "schedule": "constant"},
              "backprop": {"steps": 150, "batch_size": 20, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"}},
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "hidden": [256, 256],
              "ebp": {"steps": 600, "batch_size": 100, "optimizer": "sgd", "lr": 1.0, "momentum": 0.0,
                      "schedule": "constant"},
              "backprop": {"steps": 600, "batch_size": 100, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"}},
    "paper": {
        # MNIST; architecture and number of passes not read: 3 x 500 hidden units, 20 passes at batch 10
        "dataset": "mnist", "seeds": 3, "hidden": [500, 500, 500],
        "ebp": {"steps": 120000, "batch_size": 10, "optimizer": "sgd", "lr": 1.0, "momentum": 0.0,
                "schedule": "constant"},
        "backprop": {"steps": 120000, "batch_size": 10, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
    },
}


# ------------------------------------------------------------------------------ EBP
class _MeanGradient(torch.autograd.Function):
    """``tanh(h)`` forward; the gradient with respect to the mean passed to ``h`` unchanged (EBP updates
    the natural parameter by the gradient in the mean)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.tanh(h)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return g


def posterior_mean(h: torch.Tensor) -> torch.Tensor:
    return _MeanGradient.apply(h)


def sign(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x >= 0``, ``-1`` elsewhere."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class EBPLinear(nn.Module):
    """A layer of binary weights with posterior means ``tanh(h)`` [out, in] and a real bias."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        # the released code: uniform, variance sigma_w / K with sigma_w = 1; zero biases
        self.h = nn.Parameter((torch.rand(out_features, in_features) - 0.5) * math.sqrt(12.0 / in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def mean_field(self, mean_v: torch.Tensor, var_v: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The pre-activations' mean and (detached) variance; ``var_v=None``: a deterministic input."""
        k1 = self.in_features + 1
        m = posterior_mean(self.h)
        mean_u = (mean_v @ m.T + self.bias) / math.sqrt(k1)
        with torch.no_grad():
            m2 = m.detach().square()
            if var_v is None:
                var_u = (mean_v.square() @ (1 - m2).T + 1) / k1
            else:
                var_u = (var_v.sum(1, keepdim=True) + (1 - var_v) @ (1 - m2).T + 1) / k1
        return mean_u, var_u

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """EBP-D: ``sign(h)`` weights, the real bias."""
        return F.linear(v, sign(self.h), self.bias)


class EBPNetwork(nn.Module):
    """Sign neurons between :class:`EBPLinear` layers; ``forward`` is EBP-D (the deterministic binary
    network's output pre-activations), :meth:`mean_field` the mean-field pass EBP trains."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int]) -> None:
        super().__init__()
        widths = [math.prod(input_shape), *hidden, num_classes]
        self.layers = nn.ModuleList(EBPLinear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))

    def mean_field(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The output layer's pre-activation means and variances."""
        mean_v, var_v = x.flatten(1), None
        for i, layer in enumerate(self.layers):
            mean_u, var_u = layer.mean_field(mean_v, var_v)
            if i + 1 == len(self.layers):
                return mean_u, var_u
            p = torch.special.ndtr(mean_u / var_u.sqrt())
            mean_v = 2 * p - 1
            var_v = (1 - mean_v.square()).detach()
        raise AssertionError("unreachable")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)
        for i, layer in enumerate(self.layers):
            v = layer(v)
            if i + 1 < len(self.layers):
                v = sign(v)
        return v


def bipolar_targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``+1`` for the class, ``-1`` for every other output."""
    return 2 * F.one_hot(y, num_classes).to(torch.float32) - 1


def ebp_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``-sum log Phi(y mu / sigma)`` over the batch and the outputs (summed: EBP's update is a sum)."""
    assert isinstance(model, EBPNetwork)
    mean_u, var_u = model.mean_field(x)
    t = bipolar_targets(y, mean_u.shape[1])
    return -torch.special.log_ndtr(t * mean_u / var_u.sqrt()).sum()


@torch.no_grad()
def ebp_p_logits(model: EBPNetwork, x: torch.Tensor) -> torch.Tensor:
    """EBP-P: the mean-field network's output means ``2 Phi(mu / sigma) - 1``."""
    mean_u, var_u = model.mean_field(x)
    return 2 * torch.special.ndtr(mean_u / var_u.sqrt()) - 1


@torch.no_grad()
def posterior_sample(model: EBPNetwork, generator: torch.Generator) -> list[torch.Tensor]:
    """One binary network drawn from the factorised posteriors: ``W = +1`` with probability ``(1 + m) / 2``."""
    out = []
    for layer in model.layers:
        m = torch.tanh(layer.h.detach()).cpu()
        out.append(torch.where(torch.rand(m.shape, generator=generator) < (1 + m) / 2, 1.0, -1.0))
    return out


@torch.no_grad()
def binary_forward(model: EBPNetwork, weights: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The sign network with the given ±1 weights and the model's real biases (EBP-D for ``sign(h)``)."""
    v = x.detach().cpu().flatten(1)
    for i, (layer, w) in enumerate(zip(model.layers, weights, strict=True)):
        v = F.linear(v, w, layer.bias.detach().cpu())
        if i + 1 < len(model.layers):
            v = sign(v)
    return v


def mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int]) -> nn.Sequential:
    """The standard backpropagation MLP of the same widths: Linear (with bias) and ``tanh`` units."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.Tanh()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------ the stored network
Encoding = ak.BinaryWeight | ak.LowBitWeight


def encode(model: EBPNetwork) -> dict[str, Encoding]:
    """EBP-D's weights as stored: ``sign(h)``; the first layer (real input) as ``encode_binary`` 1-bit codes,
    the later ones (±1 input) as ``binarize_weight(scale=False)`` packed signs."""
    return {f"layers.{i}.h": (ak.encode_binary(sign(m.h.detach())) if i == 0
                              else ak.binarize_weight(sign(m.h.detach()), scale=False))
            for i, m in enumerate(model.layers)}


def storage(model: EBPNetwork) -> list[measure.Encoded]:
    enc = encode(model)
    return [measure.encoded(n, q, "1-bit signs") for n, q in enc.items()] + measure.fp32_parts(model, skip=sorted(enc))


@torch.no_grad()
def deployed_forward(model: EBPNetwork, encoded: dict[str, Encoding], x: torch.Tensor) -> torch.Tensor:
    """EBP-D from its encodings: the first layer a float product with its decoded signs, every later layer
    ``atlas_kernels.binary_matmul`` (XNOR + popcount) on its ±1 input; the fp32 biases added."""
    v = x.detach().cpu().flatten(1)
    for i, m in enumerate(model.layers):
        q = encoded[f"layers.{i}.h"]
        y = (F.linear(v, q.dequantize()) if isinstance(q, ak.LowBitWeight)
             else ak.binary_matmul(v, q, algorithm="xnor")) + m.bias.detach().cpu()
        v = sign(y) if i + 1 < len(model.layers) else y
    return v


def accuracy_of_logits(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(1).cpu() == labels.cpu()).float().mean())


#: Why the accuracy check fails on the quick profile; shown beside the verdict.
DIAGNOSIS = """
Audit (second pass): the implementation follows EBP's Algorithm 1 (Soudry, Hubara and Meir 2014) and the
released Binary_EBP_minibatch.m. The forward pass propagates both moments, the variance of a binary weight
being 1 - m^2 with m = tanh(h), and the update of h is the gradient of log Phi(y mu / sigma) in the mean
with sigma held fixed, as in Algorithm 1 (a unit test writes out the code's backward pass and finds the same
change of every h and bias to 1e-9); initial h uniform with variance 1/K, zero biases, eta 1 and the readout
sign(h) are the code's. On the quick profile EBP-D reaches 60 to 67 percent on Fashion-MNIST, EBP-P 79 to
82, one binary network drawn from the posteriors (sample_accuracy) 71 to 76, the backpropagation MLP of the
same widths and steps 86. Variations tried on seed 100 (not a published seed), one pass unless stated: the
code's batch of 10 (6000 steps) gives EBP-D 73.3 and EBP-P 82.5 percent on Fashion-MNIST; batch 100 (the
quick profile's) gives 66.0 and 82.1, so the harness's batch costs EBP-D about 7 points; three passes at
batch 100 give EBP-D 66.0, 52.3, 66.4 after each pass while EBP-P rises 82.1, 84.4, 84.7; the gradient taken
through the variances as well (not Algorithm 1) gives 63.7 and 82.1; without biases training collapses (37).
The gap is in the readout, not the training: in the network trained one pass, binary weights drawn from the
posteriors give 75 to 78 percent (five draws) and their sign units with the mean weights 79.6, while the
most probable weights sign(h) give 66.0. Most posteriors are still broad after these budgets (median |h|
about 0.16 in the hidden layers, mean |m| 0.22 after one pass and 0.33 after three), and the mode of a broad
factorised posterior is not a network EBP's Gaussian approximation describes: every uncertain weight is set
to a full plus or minus 1. The backpropagation MLP (86 percent) is not reached by EBP-P either. The paper's
2.12 percent is on MNIST with architectures and numbers of passes that were not read (and may be the EBP-P
output); the atlas takes the remaining gap as the method's deterministic readout at a one-pass budget on
Fashion-MNIST, with the paper profile (MNIST, 20 passes) as the test of the paper's regime.
"""


@reproduction("cheng2015", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    hidden = list(run.config["hidden"])
    baseline = run.train(mlp(data.input_shape, data.num_classes, hidden).to(run.device), data.train,
                         run.train_config("backprop"), desc="backpropagation MLP")
    base_acc = run.accuracy(baseline, data.test)
    run.reseed("expectation backpropagation")
    ebp = run.train(EBPNetwork(data.input_shape, data.num_classes, hidden).to(run.device), data.train,
                    run.train_config("ebp"), desc="EBP", loss_fn=ebp_loss)
    acc = run.accuracy(ebp, data.test)
    p_acc = accuracy_of_logits(ebp_p_logits(ebp, data.test.x.to(run.device)), data.test.y)
    sample_acc = accuracy_of_logits(binary_forward(ebp, posterior_sample(ebp, run.generator), data.test.x),
                                    data.test.y)
    encoded = encode(ebp)
    deployed_acc = accuracy_of_logits(deployed_forward(ebp, encoded, data.test.x), data.test.y)

    parts = storage(ebp)
    bits = measure.storage_bits(parts)
    sign_bits = sum(p.bits for p in parts if p.what == "1-bit signs")
    n_weights = sum(m.h.numel() for m in ebp.layers)
    arch = "-".join(str(h) for h in hidden)
    cfg = run.config["ebp"]
    differs = (f"MLP {arch} (paper's architectures not read), {cfg['steps']} EBP steps of batch {cfg['batch_size']} "
               "(eta 1, summed over the batch as in the released code); baseline: a tanh MLP of the same widths "
               "trained by backpropagation (Adam, cross-entropy) for the same steps")
    run.record("mnist-binary-ebp", model=f"MLP {arch}, binary weights (EBP-D: sign(h)), sign units, real biases",
               differs=differs, metrics={
                   **measure.accuracy_change(base_acc, acc),
                   "ebp_p_accuracy": p_acc,
                   "sample_accuracy": sample_acc,
                   "deployed_accuracy": deployed_acc,
                   "params": measure.count_params(ebp),
                   "storage_bits": float(bits),
                   "storage_compression": measure.dense_bits(baseline) / bits,
                   "weight_storage_compression": 32 * n_weights / sign_bits,
               }, curves=[
                   controls.Series("EBP (binary weights, EBP-D)", controls.BITS, controls.ACCURACY, {1.0: acc}),
                   controls.quantization_curve(run, baseline, [8, 4, 2, 1], None),
               ], notes=("deployed_accuracy: EBP-D run from its packed encodings (binary_matmul on the ±1 layers); "
                      "sample_accuracy: one binary network drawn from the posteriors, not the paper's EBP-D"),
               diagnosis=DIAGNOSIS)

