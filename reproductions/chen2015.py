"""Compressing Neural Networks with the Hashing Trick (Chen, Wilson, Tyree, Weinberger & Chen, ICML 2015;
arXiv:1504.04788).

Method (Sec. 4, *HashedNets*; read here in the authors' released Torch code, ``HashLinear.lua`` and
the MNIST script, and in a reading note of Sec. 4): every layer ``l`` of a fully-connected network
keeps a *virtual* weight matrix ``V^l`` of the usual size, ``(n^l + 1) x n^{l+1}`` with the bias as
the last input column, but stores only a vector of ``K^l`` *real* weights ``w^l``, ``K^l << (n^l + 1)
n^{l+1}``. A hash function ``h^l(i, j) in {1..K^l}`` assigns every connection to a bucket, and a second
hash ``xi^l(i, j) in {-1, +1}`` gives it a sign (the sign hash of feature hashing, which makes the
collisions' errors unbiased):

    V^l_ij = xi^l(i, j) w^l_{h^l(i, j)},        z^{l+1}_i = sum_j V^l_ij a^l_j.

Every connection hashed to bucket ``k`` shares the real weight ``w_k`` (random weight sharing). The
network is trained end to end with back-propagation; the gradient of a real weight is the sum over the
virtual weights that share it,

    dL/dw^l_k = sum_{(i, j): h^l(i, j) = k} xi^l(i, j) dL/dV^l_ij,

which autograd computes here from ``V = w[h] * xi`` (``index_select``'s backward accumulates into the
buckets; the released code's default does not rescale it by the bucket's occupancy either). The hashes
are recomputed from ``(seed, layer, i, j)`` whenever they are needed, so the stored model is the ``K =
sum_l K^l`` fp32 real weights and nothing else; the compression factor is ``1 / ratio`` with ``K^l =
round((n^l + 1) n^{l+1} / ratio)`` in every layer. The released code hashes with xxHash (``xxh32`` of a
string key made of ``i``, ``j`` and a tag, seed 1691) and initialises the buckets uniformly in
``±1/sqrt(n^l)``; here the hash is an xxHash32-style integer mixing of ``(layer, i, j, tag)`` on int64
tensors (:func:`hash32`, seed 1691), deterministic across machines, and the initialisation is the same.

Claims (arXiv:1504.04788v1). Abstract: "HashedNets shrink the storage requirements of neural networks
substantially while mostly preserving generalization performance" (``abstract-storage``, read as at
most 1 pp of test accuracy lost at 8x fewer stored parameters, the smaller factor of Tables 1-2).
Tables 1-2 compare HashedNets at compression factors 1/8 and 1/64 (3-layer and 5-layer MLPs on MNIST,
its variants, RECT and CONVEX) with networks of the same stored size: an equivalent-size network ("NN":
"for a network with a single hidden layer of 1000 units and a storage compression factor of 1/10, we
adopt a size-equivalent baseline with a single hidden layer of 100 units"), random edge removal,
low-rank decomposition, dropout and dark knowledge (``mnist-and-variants-rect-convex-3-layer-a``). The
tables' cells could not be read where this file was written (only the abstract and, at second hand, the
sentence on the equivalent-size network), so that claim is ``unconfirmed`` and unchecked; its
quantities are recorded for the reader.

Measured here: the uncompressed network (``baseline_accuracy``), the HashedNet at each ratio of
``ratios`` (8x, 16x and 64x), each trained from scratch with the uncompressed network's schedule and
data order, and the equivalent-size network at 8x and 64x (the same architecture with every hidden
width scaled by one factor, the widths whose parameter count is closest to the HashedNet's number of
real weights; same schedule).

- ``abstract-storage``: ``accuracy_change_pp`` (HashedNet at 8x minus the uncompressed network, paired
  per seed) with ``param_compression`` (virtual over real parameters), ``virtual_params``,
  ``storage_bits`` / ``storage_compression`` (32 bits per real weight, nothing else stored),
  ``flop_reduction`` (1: the virtual matrices are multiplied in full), and ``accuracy_16x`` /
  ``accuracy_64x`` / ``accuracy_change_pp_16x`` / ``accuracy_change_pp_64x``. Its curves: the
  HashedNet's test accuracy at each ratio, and the pruning control,
  :func:`atlas.harness.controls.pruning_curve`: global magnitude pruning of the uncompressed network to
  the same ratios, then masked fine-tuning for ``control_finetune`` steps, so the page shows weight
  sharing against removing weights at the same number of stored weights. The control's ratio counts
  weights only (its biases stay dense: 138 more stored numbers for the quick profile's 784-128-10), the
  HashedNet's counts weights and biases.
- ``mnist-and-variants-rect-convex-3-layer-a`` (unchecked): ``nn_accuracy_8x`` / ``nn_accuracy_64x``
  (the equivalent-size networks), ``gain_over_nn_pp_8x`` / ``gain_over_nn_pp_64x`` (HashedNet minus
  the equivalent-size network at the same ratio, paired per seed), ``nn_hidden_8x`` /
  ``nn_hidden_64x`` (the first hidden width), ``nn_params_*`` and ``hashed_params_*``.

Harness differs: the quick profile trains the paper's 3-layer network scaled down from 1000 hidden units
to 128 (784-128-10; the quick time budget: every HashedNet multiplies its full virtual matrices) on
Fashion-MNIST, not the paper's 784-1000-10 and 784-1000-1000-1000-10 nets on MNIST, with 2,000 Adam
steps (lr 0.001, cosine) for every network, not the released script's SGD (lr 0.1, momentum 0.9, batch
50) for up to 1,000 epochs with dropout 0.25 on the input and hidden units and the epoch with the best
validation error kept. At 1/64 the scaled-down network's equivalent-size network has 2 hidden units
(the 1000-unit network's: 16). The paper profile runs the paper's 784-1000-10 on MNIST with the
released script's SGD and dropout 0.25 on the hidden units (the harness's MLP has no input dropout).
The released code hashes the biases into a separate table (``hash_bias``); here the bias is the virtual
matrix's last column as in the paper's ``(n^l + 1) x n^{l+1}`` count, so it shares the layer's buckets.
The pruning control fine-tunes after the uncompressed network's own training, so it has more training
in total than the HashedNet, which is trained once from scratch.

Quick verdict (3 seeds, ~66 s of one core): ``abstract-storage`` inconclusive, on the threshold: the
8x HashedNet loses 1.37 pp against the uncompressed 784-128-10 (95% interval -1.75 to -0.98; baseline
87.4%), 2.0 pp at 16x and 4.6 pp at 64x. Beside it the method's advantage at the same number of stored
weights is clear: it beats the equivalent-size network by 1.6 pp at 8x (16 hidden units) and 29.7 pp at
64x (2 units), and global magnitude pruning by 9 pp at 64x (82.8 against 73.7%; at 8x pruning, with
more training, is 0.4 pp ahead, at 16x 0.5 pp behind). Why the 1 pp is not met here is in
:data:`DIAGNOSIS` (the network's width and the short budget, both the quick profile's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction

HASH_SEED = 1691  # the released code's default ``hashSeed``
_MASK32 = 0xFFFFFFFF
# xxHash32's primes PRIME32_2..5
_P2, _P3, _P4, _P5 = 2246822519, 3266489917, 668265263, 374761393
BUCKET, SIGN = 0, 1  # the tags that make h and xi two different hash functions


class Config(Profile):
    hidden: list[PositiveInt]  # hidden widths of the MLP (the paper's 3-layer net: [1000]; quick: [128])
    dropout: float = Field(0.0, ge=0, lt=1)  # on the hidden units of every network (the released script: 0.25)
    train: TrainConfig  # every network: uncompressed, HashedNets, equivalent-size networks
    ratios: list[float] = Field(min_length=3)  # virtual / real parameters; the claims use 8 and 64 (Tables 1-2)
    control_finetune: TrainConfig  # the pruning control's masked fine-tuning after the uncompressed training
    hash_seed: NonNegativeInt = HASH_SEED

    @model_validator(mode="after")
    def _claim_ratios(self) -> Config:
        if not {8.0, 64.0} <= set(self.ratios) or min(self.ratios) < 1:
            raise ValueError("ratios must include the claims' 8 and 64 (and none below 1)")
        return self


_ADAM = {"optimizer": "adam", "lr": 1e-3, "schedule": "cosine"}
PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "hidden": [64],
        "train": {"steps": 150, "batch_size": 64, **_ADAM},
        "ratios": [8, 16, 64], "control_finetune": {"steps": 40, "batch_size": 64, **_ADAM},
    },
    "quick": {
        # The paper's 3-layer net (784-1000-10) scaled down to 128 hidden units; 2,000 steps of 128 (4.3
        # passes) for each of the six networks of a seed (uncompressed, three HashedNets, two
        # equivalent-size), 250 fine-tuning steps per point of the pruning control: about 21 s of one
        # core per seed (1.6 ms a step uncompressed, 2.2 ms hashed, 0.8-0.9 ms for the small networks).
        "dataset": "fashion-mnist", "seeds": 3, "hidden": [128],
        "train": {"steps": 2000, "batch_size": 128, **_ADAM},
        "ratios": [8, 16, 64], "control_finetune": {"steps": 250, "batch_size": 128, **_ADAM},
    },
    "paper": {
        # Tables 1-2's 3-layer net (one hidden layer of 1000 units) on MNIST; the released script:
        # SGD, lr 5 / batch 50 = 0.1, momentum 0.9, dropout 0.25; 100 epochs of 60000 at batch 50 =
        # 120,000 steps (the script runs up to 1,000 epochs and keeps the best validation epoch).
        "dataset": "mnist", "seeds": 3, "hidden": [1000], "dropout": 0.25,
        "train": {"steps": 120000, "batch_size": 50, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                  "schedule": "cosine"},
        "ratios": [2, 4, 8, 16, 32, 64],
        "control_finetune": {"steps": 30000, "batch_size": 50, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
                             "schedule": "cosine"},
    },
}


# ----------------------------------------------------------------------------------------- hashing
def _rotl32(x: torch.Tensor, r: int) -> torch.Tensor:
    return ((x << r) | (x >> (32 - r))) & _MASK32


def hash32(seed: int, *keys: int | torch.Tensor) -> torch.Tensor:
    """An xxHash32-style hash of the integers ``keys`` (broadcast tensors), in ``[0, 2^32)`` as int64.

    Each key is folded in with xxHash32's round (``acc = rotl(acc + key * P3, 17) * P4``) and the result
    goes through its avalanche; arithmetic is modulo 2^32 on int64 tensors (the products of two 32-bit
    numbers wrap in int64 but keep their low 32 bits), so it is the same on every machine."""
    acc = torch.tensor((seed + _P5) & _MASK32, dtype=torch.int64)
    for key in keys:
        k = torch.as_tensor(key, dtype=torch.int64) & _MASK32
        acc = (acc + k * _P3) & _MASK32
        acc = (_rotl32(acc, 17) * _P4) & _MASK32
    acc = acc ^ (acc >> 15)
    acc = (acc * _P2) & _MASK32
    acc = acc ^ (acc >> 13)
    acc = (acc * _P3) & _MASK32
    return acc ^ (acc >> 16)


def bucket_hash(seed: int, layer: int, n_out: int, n_in: int, buckets: int) -> torch.Tensor:
    """``h(i, j)``: the bucket (0-based) of every virtual weight of layer ``layer``, (n_out, n_in)."""
    i = torch.arange(n_out, dtype=torch.int64)[:, None]
    j = torch.arange(n_in, dtype=torch.int64)[None, :]
    return hash32(seed, layer, i, j, BUCKET) % buckets


def sign_hash(seed: int, layer: int, n_out: int, n_in: int) -> torch.Tensor:
    """``xi(i, j)``: the sign (+1 / -1, float32) of every virtual weight of layer ``layer``, (n_out, n_in)."""
    i = torch.arange(n_out, dtype=torch.int64)[:, None]
    j = torch.arange(n_in, dtype=torch.int64)[None, :]
    return 1.0 - 2.0 * (hash32(seed, layer, i, j, SIGN) & 1).to(torch.float32)


def buckets_for(n_virtual: int, ratio: float) -> int:
    """``K^l = round(n_virtual / ratio)`` real weights (at least one)."""
    return max(1, round(n_virtual / ratio))


class HashedLinear(nn.Module):
    """A fully-connected layer whose virtual ``(out, in + 1)`` matrix (bias last) is
    ``V_ij = xi(i, j) w_{h(i, j)}``: ``weight`` holds the ``K`` real weights, the only parameter. The
    hashes are buffers recomputed from ``(seed, layer, shape)`` and left out of the state dict."""

    def __init__(self, in_features: int, out_features: int, ratio: float, *, layer: int,
                 seed: int = HASH_SEED) -> None:
        super().__init__()
        self.in_features, self.out_features, self.layer, self.seed = in_features, out_features, layer, seed
        self.ratio = float(ratio)
        n_virtual = (in_features + 1) * out_features
        self.buckets = buckets_for(n_virtual, ratio)
        # h and xi of every virtual weight, stored input-major ((in + 1) x out, V transposed) so that the
        # forward pass is one addmm on contiguous rows; buffers, recomputed, not in the state dict
        index = bucket_hash(seed, layer, out_features, in_features + 1, self.buckets)
        sign = sign_hash(seed, layer, out_features, in_features + 1)
        self.register_buffer("index", index.T.contiguous().flatten(), persistent=False)
        self.register_buffer("sign", sign.T.contiguous().flatten(), persistent=False)
        # HashLinear.lua's hashReset: uniform(-1/sqrt(n_in), 1/sqrt(n_in)), as nn.Linear's default
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(self.buckets).uniform_(-bound, bound))

    def _virtual_t(self) -> torch.Tensor:
        """``V`` transposed, (in + 1, out): ``xi * w[h]`` gathered from the buckets."""
        return (self.weight.index_select(0, self.index) * self.sign).view(self.in_features + 1, self.out_features)

    def virtual(self) -> torch.Tensor:
        """The virtual matrix ``V`` (out, in + 1), bias in the last column; differentiable in ``weight``."""
        return self._virtual_t().T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vt = self._virtual_t()
        return torch.addmm(vt[-1], x, vt[:-1]) if x.dim() == 2 else x @ vt[:-1] + vt[-1]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, ratio={self.ratio:g}, "
                f"buckets={self.buckets}, layer={self.layer}")


def hash_layers(model: nn.Module, ratio: float, seed: int = HASH_SEED) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place, in module order, layer index 0, 1, ...) by a
    freshly initialised :class:`HashedLinear` with the same shape and compression ``ratio``; returns it."""
    layer = 0

    def swap(parent: nn.Module) -> None:
        nonlocal layer
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                new = HashedLinear(child.in_features, child.out_features, ratio, layer=layer, seed=seed)
                setattr(parent, name, new.to(child.weight.device))
                layer += 1
            else:
                swap(child)

    swap(model)
    return model


def hashed_layers(model: nn.Module) -> list[HashedLinear]:
    return [m for m in model.modules() if isinstance(m, HashedLinear)]


def virtual_params(model: nn.Module) -> int:
    """The virtual weights and biases of a HashedNet (the uncompressed network's parameter count)."""
    return sum((m.in_features + 1) * m.out_features for m in hashed_layers(model))


def storage_parts(model: nn.Module) -> list[measure.Encoded]:
    """What a HashedNet stores: each layer's ``K^l`` real weights in fp32 (the hashes are recomputed),
    and any parameter that is not in a hashed layer in fp32."""
    hashed = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, HashedLinear)}
    parts = [measure.Encoded(n, measure.FP32_BITS * p.numel(), "fp32 hash buckets")
             for n, p in model.named_parameters() if n in hashed]
    return parts + measure.fp32_parts(model, skip=sorted(hashed))


# ------------------------------------------------------------------------ the equivalent-size network
def mlp_params(n_in: int, hidden: Sequence[int], n_out: int) -> int:
    widths = [n_in, *hidden, n_out]
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=True))


def equivalent_hidden(n_in: int, hidden: Sequence[int], n_out: int, budget: int) -> list[int]:
    """The paper's equivalent-size network ("NN"): every hidden width scaled by one factor (1000 units at
    1/10 -> 100 units), the widths whose parameter count is closest to ``budget`` (at least 1 unit each;
    the smaller network on a tie)."""
    best: list[int] = []
    for first in range(1, hidden[0] + 1):
        widths = [first] + [max(1, round(h * first / hidden[0])) for h in hidden[1:]]
        gap = abs(mlp_params(n_in, widths, n_out) - budget)
        if not best or gap < abs(mlp_params(n_in, best, n_out) - budget):
            best = widths
    return best


# ----------------------------------------------------------------------------------- the networks
def build_mlp(run: Run, hidden: Sequence[int]) -> nn.Module:
    return run.model("mlp", hidden=list(hidden), dropout=float(run.config["dropout"]))


def train_network(run: Run, model: nn.Module, stage: str) -> nn.Module:
    """Train ``model`` with the profile's schedule, the data order the same for every network of a seed."""
    run.reseed("chen2015 data")
    return run.train(model, run.dataset().train, run.train_config("train"), desc=stage)


def train_hashed(run: Run, ratio: float) -> nn.Module:
    """A HashedNet of the profile's architecture at ``ratio``, trained from scratch."""
    run.reseed(f"chen2015 init hashed {ratio:g}")
    model = hash_layers(build_mlp(run, run.config["hidden"]), ratio, seed=run.config["hash_seed"])
    return train_network(run, model, f"HashedNet {ratio:g}x")


#: Why the quick profile does not show the abstract's claim at 8x; shown beside its verdict.
DIAGNOSIS = """
The method was re-read against the authors' released Torch code (xxh32 bucket and sign hashes, buckets
initialised uniformly in +-1/sqrt(n_in), the bucket gradient the plain signed sum, as here); the 8x
HashedNet is trained from scratch with the uncompressed network's schedule, data order and loss. On
seeds 100 and 101 (not the published ones), after 2,000 Adam steps the 8x loss shrinks with the width
of the virtual network: -1.62 and -1.63 pp with 128 hidden units, -1.47 with 256 and -1.33 with
LeNet-300-100 (seed 100), -0.70 and -0.65 with the paper's 1000 units (within the 1 pp read into 'mostly
preserving'). With 128 units it also shrinks with training: -1.13 pp after 6,000 steps (seed 100), when
the uncompressed network reaches 88.8% against 87.6% after 2,000. The released script's SGD (lr 0.1,
momentum 0.9) gave -1.39 pp at 8x and became unstable at 64x (65%) on the 128-unit network. The atlas
takes the gap as the quick profile's limit, not the method's: 8x fewer real weights than a 128-unit
layer is a network too small for Fashion-MNIST, where the paper's 1000-unit layers are redundant
enough to share; the paper profile measures the paper's 784-1000-10 on MNIST.
"""


def label(ratio: float) -> str:
    return f"{ratio:g}x"


@reproduction("chen2015", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    hidden = list(run.config["hidden"])
    ratios = [float(r) for r in run.config["ratios"]]
    n_in, n_out = math.prod(data.input_shape), data.num_classes

    run.reseed("chen2015 init dense")
    dense = train_network(run, build_mlp(run, hidden), "uncompressed")
    base_acc = run.accuracy(dense, data.test)

    hashed = {r: train_hashed(run, r) for r in ratios}
    acc = {r: run.accuracy(m, data.test) for r, m in hashed.items()}

    nn_acc: dict[float, float] = {}
    nn_params: dict[float, int] = {}
    nn_width: dict[float, int] = {}
    for r in (8.0, 64.0):
        widths = equivalent_hidden(n_in, hidden, n_out, measure.count_params(hashed[r]))
        run.reseed(f"chen2015 init equivalent {r:g}")
        small = train_network(run, build_mlp(run, widths), f"equivalent-size NN {r:g}x ({widths})")
        nn_acc[r], nn_params[r], nn_width[r] = run.accuracy(small, data.test), measure.count_params(small), widths[0]

    h8 = hashed[8.0]
    metrics = {
        **measure.accuracy_change(base_acc, acc[8.0]),
        **measure.compression_metrics(dense, h8, data.input_shape, storage_parts(h8)),
        "virtual_params": float(virtual_params(h8)),
        **{f"accuracy_change_pp_{label(r)}": acc[r] - base_acc for r in ratios if r != 8.0},
        **{f"accuracy_{label(r)}": acc[r] for r in ratios if r != 8.0},
    }
    curves = [
        controls.Series("HashedNets", controls.RATIO, controls.ACCURACY, {r: acc[r] for r in ratios}),
        controls.pruning_curve(run, dense, ratios, run.train_config("control_finetune")),
    ]
    arch = "-".join(str(w) for w in [n_in, *hidden, n_out])
    baseline = ("lenet-300-100", {}) if hidden == [300, 100] and not run.config["dropout"] else \
        ("mlp", {"hidden": hidden, **({"dropout": run.config["dropout"]} if run.config["dropout"] else {})})
    train = run.config["train"]
    differs = (f"MLP {arch} (paper: 784-1000-10 and 784-1000-1000-1000-10), every network {train['steps']} "
               f"{train['optimizer']} steps of batch {train['batch_size']} (lr {train['lr']}, {train['schedule']}), "
               f"dropout {run.config['dropout']:g}; HashedNets trained from scratch; the bias is the virtual "
               "matrix's last column (the released code hashes it into a separate table)")
    run.record("abstract-storage", model=f"HashedNet {arch} at 8x", metrics=metrics, curves=curves,
               baseline=(baseline[0], "baseline_accuracy"), baseline_spec=baseline[1],
               differs=differs + f"; pruning control fine-tuned {run.config['control_finetune']['steps']} steps "
                                 "after the uncompressed network's training", diagnosis=DIAGNOSIS)

    versus = {
        "baseline_accuracy": base_acc,
        **{f"accuracy_{label(r)}": acc[r] for r in (8.0, 64.0)},
        **{f"nn_accuracy_{label(r)}": nn_acc[r] for r in (8.0, 64.0)},
        **{f"gain_over_nn_pp_{label(r)}": acc[r] - nn_acc[r] for r in (8.0, 64.0)},
        **{f"nn_params_{label(r)}": float(nn_params[r]) for r in (8.0, 64.0)},
        **{f"nn_hidden_{label(r)}": float(nn_width[r]) for r in (8.0, 64.0)},
        **{f"hashed_params_{label(r)}": float(measure.count_params(hashed[r])) for r in (8.0, 64.0)},
    }
    run.record("mnist-and-variants-rect-convex-3-layer-a", model=f"HashedNet {arch} vs equivalent-size MLP",
               metrics=versus, baseline=(baseline[0], "baseline_accuracy"), baseline_spec=baseline[1],
               differs=differs + "; equivalent-size network: every hidden width scaled by one factor to the "
                                 "HashedNet's number of real parameters (closest), same schedule")

