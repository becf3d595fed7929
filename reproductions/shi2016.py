"""Functional Hashing for Compressing Neural Networks (Shi, Feng & Zhu, arXiv:1605.06560, 2016): FunHashNN.

Method (the abstract, arXiv:1605.06560v1; the body could not be read where this file was written, so the
reconstruction network's form and size below are this file's reading). FunHashNN generalises HashedNets
(:mod:`reproductions.chen2015`; "FunHashNN includes the recently proposed HashedNets as a degenerated
case"): "for each entry in a deep net, FunHashNN uses multiple low-cost hash functions to fetch values in
the compression space, and then employs a small reconstruction network to recover that entry. The
reconstruction network is plugged into the whole network and trained jointly." Every virtual weight
``V^l_ij`` of layer ``l`` (bias as the last input column, as in HashedNets) fetches ``U`` signed values
from the layer's ``K^l`` real weights with ``U`` pairs of hashes ``(h_u, xi_u)``,

    z_u(i, j) = xi_u(i, j) w_{h_u(i, j)},        u = 1..U,

and a small network ``g`` shared by the whole layer maps them to the weight,

    V_ij = g(z_1(i, j), ..., z_U(i, j)) = b_2 + sum_m a_m tanh(b_{1m} + sum_u c_{mu} z_u(i, j)).

With ``U = 1`` and ``g(z) = z`` it is HashedNets. "Benefits from larger value capacity" (a weight is a
function of ``U`` of the ``K`` values, so ``V`` can take up to ``K^U`` values instead of ``K``) "and less
reconstruction loss". Everything is trained jointly by back-propagation (autograd through ``g`` and the
gathers: a real weight's gradient sums, over the entries and hash functions that fetch it, ``xi_u`` times
``dL/dz_u``). The stored model is each layer's real weights and its ``g`` (``1 + M(U + 2)`` numbers for
``M`` hidden units), all fp32; the hashes are recomputed (:func:`reproductions.chen2015.hash32`, a tag per
hash function). To compare at equal storage, a layer's ``K^l`` is the HashedNet's ``round((n^l + 1)
n^{l+1} / ratio)`` minus the size of its ``g``.

Claims (arXiv:1605.06560v1, Abstract): "FunHashNN includes the recently proposed HashedNets as a
degenerated case, and benefits from larger value capacity and less reconstruction loss ... On several
benchmark datasets, FunHashNN demonstrates high compression ratios with little loss on prediction
accuracy" (``abstract-vs-hashednets``). Read as: at the same number of stored numbers, FunHashNN's test
accuracy is at least HashedNets' (``gain_over_hashednets_pp`` at 8x and ``gain_over_hashednets_64x_pp``,
HashedNets' two factors; paired per seed). The abstract gives no number and the tables were not read.

Measured here, per seed: the uncompressed MLP (``baseline_accuracy``); HashedNets (chen2015's layer and
training) at each of ``hashed_ratios`` (8x, 64x); FunHashNN at each of ``ratios`` (8x, 16x, 64x); all
trained from scratch with the same schedule and data order; and the pruning control,
:func:`atlas.harness.controls.pruning_curve` (global magnitude pruning of the uncompressed network,
fine-tuned ``control_finetune`` steps).

- ``abstract-vs-hashednets``: ``gain_over_hashednets_pp`` (8x, checked), ``gain_over_hashednets_64x_pp``
  (checked); ``accuracy`` / ``accuracy_change_pp`` of the 8x FunHashNN against the uncompressed network
  (unchecked: the abstract's "little loss" has no number), ``accuracy_16x`` / ``accuracy_64x``,
  ``hashednets_accuracy_8x`` / ``hashednets_accuracy_64x``; the 8x FunHashNN's ``params`` (real weights
  and reconstruction networks), ``param_compression``, ``storage_bits`` / ``storage_compression`` (fp32,
  the hashes recomputed), ``virtual_params``. Curves: FunHashNN and HashedNets against the ratio, and the
  pruning control.

Harness differs: a 784-128-10 MLP (HashedNets' 3-layer network at the quick profile's width, as in
chen2015) on the first 8,000 Fashion-MNIST training images (the size the harness's reference for this
network is calibrated on, so that the short schedule converges), 1,000 Adam steps per network; ``U = 4``
hash functions and ``M = 4`` tanh units in ``g`` are this file's choice (the paper's were not read).
``flop_reduction`` is far below 1 (0.05): the flop counter counts ``g`` run on every virtual weight at
every forward pass (a deployed network would rebuild its weights once).

Quick verdict (3 seeds, 82 s of CPU time on a heavily shared machine; the lead re-times):
``abstract-vs-hashednets`` inconclusive. At 64x FunHashNN is ahead of HashedNets on every seed, by 0.62
pp (95% interval 0.15 to 1.09: pass; 80.8 against 80.2%); at 8x the two are level, 0.08 pp (-0.18 to
0.35: straddles 0; 83.5 against 83.5%). The uncompressed network (84.6%) is within 1 pp of its reference;
the 8x FunHashNN is 1.05 pp below it. The pruning control (100 fine-tuning steps) is 0.2 pp ahead at 8x,
0.7 pp behind at 16x and 15.5 pp behind at 64x.
"""

from __future__ import annotations

import math

import torch
from atlas_reproductions.chen2015 import HASH_SEED, buckets_for, hash32, train_hashed
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction


class Reconstruction(Section):
    hashes: PositiveInt = 4  # U, hash functions per entry (this file's choice; the paper's not read)
    hidden: NonNegativeInt = 4  # M, tanh units of g (0: a linear g, sum_u a_u z_u)


class Config(Profile):
    hidden: list[PositiveInt]  # the MLP's hidden widths (HashedNets' 3-layer net: [1000]; quick: [128])
    dropout: float = Field(0.0, ge=0, lt=1)  # chen2015's key: dropout on the hidden units of every network
    train: TrainConfig  # every network: uncompressed, HashedNets, FunHashNN
    ratios: list[float] = Field(min_length=3)  # FunHashNN's curve: virtual / stored numbers
    hashed_ratios: list[float] = Field(min_length=2)  # the HashedNets trained (the claim's 8 and 64)
    control_finetune: TrainConfig  # the pruning control's masked fine-tuning
    reconstruction: Reconstruction = Reconstruction()
    hash_seed: NonNegativeInt = HASH_SEED

    @model_validator(mode="after")
    def _claim_ratios(self) -> Config:
        if not {8.0, 64.0} <= set(self.hashed_ratios) <= set(self.ratios) or min(self.ratios) < 1:
            raise ValueError("ratios must include hashed_ratios, which include the claim's 8 and 64 (none below 1)")
        return self


_ADAM = {"optimizer": "adam", "lr": 1e-3, "schedule": "cosine"}
PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "hidden": [64], "train": {"steps": 120, "batch_size": 64, **_ADAM},
        "ratios": [8, 16, 64], "hashed_ratios": [8, 64], "control_finetune": {"steps": 30, "batch_size": 64, **_ADAM},
    },
    "quick": {
        # per seed six networks (uncompressed, HashedNets at 8x and 64x, FunHashNN at 8x, 16x, 64x) of 700
        # Adam steps of 128 (11 passes over the first 8,000 images) and three control fine-tunings of 100; a
        # FunHashNN step costs about five HashedNets steps (g runs on every virtual weight)
        "dataset": "fashion-mnist", "seeds": 3, "train_limit": 8000, "hidden": [128],
        "train": {"steps": 700, "batch_size": 128, **_ADAM},
        "ratios": [8, 16, 64], "hashed_ratios": [8, 64], "control_finetune": {"steps": 100, "batch_size": 128, **_ADAM},
    },
    "paper": {
        # HashedNets' 3-layer network (784-1000-10) on MNIST with chen2015's paper schedule (the paper's own
        # schedule was not read)
        "dataset": "mnist", "seeds": 3, "hidden": [1000], "dropout": 0.25,
        "train": {"steps": 120000, "batch_size": 50, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                  "schedule": "cosine"},
        "ratios": [2, 4, 8, 16, 32, 64], "hashed_ratios": [2, 4, 8, 16, 32, 64],
        "control_finetune": {"steps": 30000, "batch_size": 50, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
                             "schedule": "cosine"},
    },
}

BUCKET, SIGN = 0, 1  # chen2015's tags; hash function u uses BUCKET + 2 u and SIGN + 2 u


def reconstruction_size(hashes: int, hidden: int) -> int:
    """Stored numbers of ``g``: ``U`` weights if linear, else ``M U + M`` (first layer) ``+ M + 1``."""
    return hashes if hidden == 0 else hidden * (hashes + 2) + 1


class FunHashedLinear(nn.Module):
    """A fully-connected layer whose virtual ``(out, in + 1)`` matrix (bias last) is
    ``V_ij = g(xi_1 w[h_1], ..., xi_U w[h_U])``: ``weight`` holds the ``K`` real weights, ``g`` is
    ``first`` (U -> M, tanh) and ``second`` (M -> 1), or ``mix`` (U weights) when linear."""

    def __init__(self, in_features: int, out_features: int, ratio: float, *, layer: int, hashes: int = 4,
                 hidden: int = 4, seed: int = HASH_SEED) -> None:
        super().__init__()
        self.in_features, self.out_features, self.layer, self.ratio = in_features, out_features, layer, float(ratio)
        self.hashes, self.hidden = hashes, hidden
        n_virtual = (in_features + 1) * out_features
        self.buckets = max(1, buckets_for(n_virtual, ratio) - reconstruction_size(hashes, hidden))
        # input-major (in + 1, out) order, as chen2015's HashedLinear: one addmm in the forward pass
        i = torch.arange(out_features, dtype=torch.int64)[None, :]
        j = torch.arange(in_features + 1, dtype=torch.int64)[:, None]
        index = torch.stack([hash32(seed, layer, i, j, BUCKET + 2 * u) % self.buckets for u in range(hashes)])
        sign = torch.stack([1.0 - 2.0 * (hash32(seed, layer, i, j, SIGN + 2 * u) & 1).float() for u in range(hashes)])
        # entry-major (rows of U), contiguous: the fetched values feed g without a copy
        self.register_buffer("index", index.reshape(hashes, -1).T.contiguous(), persistent=False)
        self.register_buffer("sign", sign.reshape(hashes, -1).T.contiguous(), persistent=False)
        bound = 1.0 / math.sqrt(in_features)  # HashedNets' initialisation of the buckets
        self.weight = nn.Parameter(torch.empty(self.buckets).uniform_(-bound, bound))
        if hidden == 0:
            # sum_u z_u / sqrt(U) has the variance of one bucket: the HashedNet's initial weights' scale
            self.mix = nn.Parameter(torch.full((hashes,), 1.0 / math.sqrt(hashes)))
        else:
            self.first = nn.Linear(hashes, hidden)
            self.second = nn.Linear(hidden, 1)
            with torch.no_grad():  # near zero, tanh is linear: g starts close to a random linear mix
                self.first.weight.uniform_(-1.0, 1.0).mul_(math.sqrt(3.0 / hashes))
                self.first.bias.zero_()
                self.second.weight.uniform_(-1.0, 1.0).mul_(math.sqrt(3.0 / hidden))
                self.second.bias.zero_()

    def fetched(self) -> torch.Tensor:
        """``z``: the ``U`` signed values every virtual weight fetches, ``(in + 1) * out`` rows of ``U``."""
        return self.weight.index_select(0, self.index.flatten()).view_as(self.sign) * self.sign

    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """``g`` applied to rows of ``U`` fetched values."""
        if self.hidden == 0:
            return z @ self.mix
        return self.second(torch.tanh(self.first(z))).squeeze(-1)

    def _virtual_t(self) -> torch.Tensor:
        return self.reconstruct(self.fetched()).view(self.in_features + 1, self.out_features)

    def virtual(self) -> torch.Tensor:
        """The virtual matrix ``V`` (out, in + 1), bias in the last column."""
        return self._virtual_t().T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vt = self._virtual_t()
        return torch.addmm(vt[-1], x, vt[:-1]) if x.dim() == 2 else x @ vt[:-1] + vt[-1]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, ratio={self.ratio:g}, "
                f"buckets={self.buckets}, hashes={self.hashes}, hidden={self.hidden}, layer={self.layer}")


def funhash_layers(model: nn.Module, ratio: float, *, hashes: int, hidden: int, seed: int = HASH_SEED) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place, in module order) by a fresh
    :class:`FunHashedLinear` at ``ratio``; returns it."""
    layer = 0

    def swap(parent: nn.Module) -> None:
        nonlocal layer
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, FunHashedLinear(child.in_features, child.out_features, ratio, layer=layer,
                                                      hashes=hashes, hidden=hidden, seed=seed))
                layer += 1
            else:
                swap(child)

    swap(model)
    return model


def funhash_virtual_params(model: nn.Module) -> int:
    return sum((m.in_features + 1) * m.out_features for m in model.modules() if isinstance(m, FunHashedLinear))


def storage_parts(model: nn.Module) -> list[measure.Encoded]:
    """Every stored number in fp32: the buckets and the reconstruction networks (the hashes recomputed)."""
    return [measure.Encoded(n, measure.FP32_BITS * p.numel(),
                            "fp32 hash buckets" if n.endswith(".weight") and p.dim() == 1 and "first" not in n
                            and "second" not in n else "fp32 reconstruction network")
            for n, p in model.named_parameters()]


# ----------------------------------------------------------------------------------- the networks
def build_mlp(run: Run) -> nn.Module:
    return run.model("mlp", hidden=list(run.config["hidden"]), dropout=float(run.config["dropout"]))


def train_network(run: Run, model: nn.Module, stage: str) -> nn.Module:
    """chen2015's schedule and data order (its ``train_network`` reseeds the data as ``chen2015 data``)."""
    run.reseed("chen2015 data")
    return run.train(model, run.dataset().train, run.train_config("train"), desc=stage)


def train_funhash(run: Run, ratio: float) -> nn.Module:
    run.reseed(f"shi2016 init funhash {ratio:g}")
    rec = run.config["reconstruction"]
    model = funhash_layers(build_mlp(run), ratio, hashes=rec["hashes"], hidden=rec["hidden"],
                           seed=run.config["hash_seed"])
    return train_network(run, model, f"FunHashNN {ratio:g}x")


def label(ratio: float) -> str:
    return f"{ratio:g}x"


@reproduction("shi2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    hidden = list(run.config["hidden"])
    ratios = [float(r) for r in run.config["ratios"]]
    hashed_ratios = [float(r) for r in run.config["hashed_ratios"]]
    n_in, n_out = math.prod(data.input_shape), data.num_classes

    run.reseed("shi2016 init dense")
    dense = train_network(run, build_mlp(run), "uncompressed")
    base_acc = run.accuracy(dense, data.test)
    hashed = {r: run.accuracy(train_hashed(run, r), data.test) for r in hashed_ratios}
    fun = {r: train_funhash(run, r) for r in ratios}
    acc = {r: run.accuracy(m, data.test) for r, m in fun.items()}

    f8 = fun[8.0]
    metrics = {
        **measure.accuracy_change(base_acc, acc[8.0]),
        **measure.compression_metrics(dense, f8, data.input_shape, storage_parts(f8)),
        "virtual_params": float(funhash_virtual_params(f8)),
        "gain_over_hashednets_pp": acc[8.0] - hashed[8.0],
        **{f"gain_over_hashednets_{label(r)}_pp": acc[r] - hashed[r] for r in hashed_ratios if r != 8.0},
        **{f"accuracy_{label(r)}": acc[r] for r in ratios if r != 8.0},
        **{f"hashednets_accuracy_{label(r)}": hashed[r] for r in hashed_ratios},
    }
    curves = [
        controls.Series("FunHashNN", controls.RATIO, controls.ACCURACY, acc),
        controls.Series("HashedNets", controls.RATIO, controls.ACCURACY, hashed),
        controls.pruning_curve(run, dense, ratios, run.train_config("control_finetune")),
    ]
    arch = "-".join(str(w) for w in [n_in, *hidden, n_out])
    rec = run.config["reconstruction"]
    train = run.config["train"]
    baseline = ("mlp", {"hidden": hidden, **({"dropout": run.config["dropout"]} if run.config["dropout"] else {})})
    differs = (f"MLP {arch}; every network {train['steps']} {train['optimizer']} steps of batch {train['batch_size']} "
               f"(lr {train['lr']}, {train['schedule']}) from scratch; U = {rec['hashes']} hash functions, g with "
               f"{rec['hidden']} tanh units (this harness's choice); FunHashNN's buckets are HashedNets' minus the "
               f"size of g (equal storage); pruning control fine-tuned {run.config['control_finetune']['steps']} "
               "steps after the uncompressed training")
    run.record("abstract-vs-hashednets", model=f"FunHashNN {arch} at 8x", metrics=metrics, curves=curves,
               baseline=(baseline[0], "baseline_accuracy"), baseline_spec=baseline[1], differs=differs)
