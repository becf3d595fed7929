"""Scalable and Sustainable Deep Learning via Randomized Hashing (Spring & Shrivastava, KDD 2017;
arXiv:1602.08194).

Method (the abstract, arXiv:1602.08194v2, and the authors' released Java code, rdspring1/LSH_DeepLearning:
``HashBuckets``, ``Histogram``, ``Pooling``, ``HiddenLayer``, ``NN_parameters`` and the experiment script
``LSH_DL_Experiments.groovy``; the paper's body was not read). "Our approach combines recent ideas from
adaptive dropouts and randomized hashing for maximum inner product search to select the nodes with the
highest activation efficiently": every hidden layer keeps ``L`` hash tables of its neurons' weight
vectors, each keyed by a ``K``-bit signed random projection (SimHash, the code's ``CosineDistance``) of
the weight vector average-pooled to a few coordinates (``Pooling.compress``: blocks of consecutive inputs
averaged; the script pools MNIST's 784 inputs to 8 coordinates and a hidden layer's 1,000 to 10),

    code_l(w_i) = sum_k 2^k [r_{lk} . pool(w_i) >= 0],        l = 1..L.

An input ``a`` to the layer is pooled and hashed with the same projections; a neuron's score is the number
of tables in which its code equals the input's, and the *active set* is the ``s n`` neurons with the highest
scores (``Histogram.thresholdSet``; neurons that collide nowhere are never active; ``s`` is the script's
``size_limit``, 5% to 100%). Only the active neurons are computed, forward and backward, at training and at
test time; the rest output zero, so each example's gradient touches only the active neurons' weights. The
tables are rebuilt from the updated weights as training goes (``rebuildTables``). The script's setting:
one hidden layer of 1,000 ReLU units, ``K = 6`` bits, ``L = 100`` tables, 25 epochs.

Claim (arXiv:1602.08194v2, Abstract): "our algorithm uses only 5% of the total multiplications, while
keeping on average within 1% of the accuracy of the original model" (``abstract-5pct``). The 5% is the
script's smallest ``size_limit`` (5% of the hidden neurons active, whose inner products are the hidden
layer's multiplications: ``HiddenLayer`` counts ``|AS| n_in``). Read as: with 5% of the hidden neurons
active, test accuracy within 1 pp of the same network trained densely with the same schedule
(``accuracy_change_pp``, paired per seed).

Measured here, per seed: the dense network (``baseline_accuracy``); the hashed network at each active
fraction of ``fractions`` (5%, 10%, 25%), trained and tested with its active sets; and the control, the
same network with ``s n`` active neurons drawn uniformly at random for every example, in training and test
(the dropout-style selection the paper sets its hashing against), at the claim's 5%.

- ``abstract-5pct``: ``accuracy_change_pp`` (checked), ``accuracy``, ``baseline_accuracy``,
  ``random_accuracy`` and ``gain_over_random_pp`` (hashed minus random active sets at 5%),
  ``accuracy_10pct`` / ``accuracy_25pct``, ``multiplication_fraction_pct`` (the forward pass's
  multiplications over the dense network's: the active neurons' inner products and the full output layer,
  measured on the test set) and ``multiplication_fraction_with_hashing_pct`` (plus the ``K L`` projections
  of each pooled input). Curves: test accuracy against the active fraction, hashed and random.

Harness differs: Fashion-MNIST, one hidden layer of 1,000 units as the script (784-1000-10), 400 Adam
steps of 64 examples per network and 25 tables, not the script's 100 (the quick time budget) (the script: 25 epochs of single-example Adagrad with momentum 0.5,
lr 0.01, L2 0.003, asynchronous threads; Adam's moments keep moving the rows of neurons active earlier, so
the updates are not strictly sparse as the code's); the tables are rebuilt every ``rehash_every`` steps;
ties between equal scores are broken at random (the code: a hash map's order); the active sets are applied
as masks on the dense product (the same outputs and gradients as computing the active neurons alone), so
the multiplications are counted, not timed.

Quick verdict (3 seeds, 85 s of CPU time on a heavily shared machine; the lead re-times): ``abstract-5pct``
not reproduced. With 5% of the hidden neurons active the network reaches 77.8% against the dense network's
84.9% (-7.1 pp, 95% interval -7.9 to -6.3); 10% active: 80.2%, 25%: 82.7%. The hashing does select useful
neurons: random active sets of the same size reach 67.0% (the hashed sets are 10.8 pp ahead on every seed).
The forward pass at 5% needs 6.2% of the dense multiplications (the output layer stays dense), 6.35% with
the hashing. Why the atlas takes the gap as mostly the quick budget's is in :data:`DIAGNOSIS`.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, measure, reproduction
from atlas.harness.controls import ACCURACY, Series

X_AXIS = "active hidden neurons (%)"


class Config(Profile):
    hidden: list[PositiveInt]  # hidden widths (the script: one layer of 1,000)
    train: TrainConfig  # every network: dense, hashed, random active sets
    tables: PositiveInt = 100  # L hash tables per hidden layer (the script: 100)
    bits: PositiveInt = 6  # K bits per table (the script: 6)
    input_dims: PositiveInt = 8  # pooled coordinates of the network's input (the script: 784 / 98 = 8)
    hidden_dims: PositiveInt = 10  # pooled coordinates of a hidden layer's input (the script: 1000 / 100 = 10)
    fractions: list[float] = Field(min_length=3)  # active fractions s (the script: 0.05 ... 1.0), one network each
    rehash_every: PositiveInt = 50  # steps between rebuilding the tables from the updated weights

    @model_validator(mode="after")
    def _claim_fraction(self) -> Config:
        if 0.05 not in self.fractions or not all(0 < f <= 1 for f in self.fractions):
            raise ValueError("fractions must lie in (0, 1] and include the claim's 0.05")
        return self


_ADAM = {"optimizer": "adam", "lr": 1e-3, "schedule": "cosine"}
PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "hidden": [100], "train": {"steps": 120, "batch_size": 32, **_ADAM},
        "tables": 20, "bits": 4, "fractions": [0.05, 0.1, 0.25], "rehash_every": 20,
    },
    "quick": {
        # per seed five networks (dense; hashed with 5%, 10%, 25% active; random 5%) of 400 Adam steps of 64
        # (0.43 passes over Fashion-MNIST) with 25 tables, not the script's 100: the quick time budget (600
        # steps with 100 tables took over 80 s of CPU time for the first seed alone)
        "dataset": "fashion-mnist", "seeds": 3, "hidden": [1000], "tables": 25,
        "train": {"steps": 400, "batch_size": 64, **_ADAM}, "fractions": [0.05, 0.1, 0.25],
    },
    "paper": {
        # the script's MNIST experiment: 784-1000-10, K = 6, L = 100, 25 epochs (here of batch 64, Adam)
        "dataset": "mnist", "seeds": 3, "hidden": [1000],
        "train": {"steps": 23450, "batch_size": 64, **_ADAM},
        "fractions": [0.05, 0.1, 0.25, 0.5, 0.75], "rehash_every": 100,
    },
}


# ------------------------------------------------------------------------------------ the hashing
def pool(x: torch.Tensor, dims: int) -> torch.Tensor:
    """``Pooling.compress``: the rows of ``x`` averaged over ``dims`` blocks of ``n // dims`` consecutive
    coordinates (a remainder at the end is dropped, as in the code)."""
    size = x.shape[1] // dims
    return x[:, : size * dims].reshape(x.shape[0], dims, size).mean(-1)


def simhash(x: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
    """``K``-bit signed-random-projection codes of the rows of ``x`` for each table: ``planes`` is
    ``(L, K, dim)``; returns ``(rows, L)`` integers, bit ``k`` set when ``planes[l, k] . x >= 0``."""
    bits = (torch.einsum("lkd,nd->nlk", planes, x) >= 0).to(torch.int64)
    weights = 2 ** torch.arange(planes.shape[1], dtype=torch.int64, device=x.device)
    return (bits * weights).sum(-1)


def collision_counts(neuron_codes: torch.Tensor, query_codes: torch.Tensor) -> torch.Tensor:
    """``(batch, neurons)``: in how many of the ``L`` tables each neuron's code equals the input's."""
    return (query_codes[:, :, None] == neuron_codes.T[None, :, :]).sum(1)


def top_active(counts: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``Histogram.thresholdSet``: the ``k`` neurons with the most collisions for each example (ties at
    random), never one with none; a boolean ``(batch, neurons)`` mask."""
    noise = torch.rand(counts.shape, generator=generator, device=counts.device) * 0.5
    chosen = torch.topk(counts.float() + noise, min(k, counts.shape[1]), dim=1).indices
    mask = torch.zeros_like(counts, dtype=torch.bool).scatter_(1, chosen, True)
    return mask & (counts > 0)


class LSHLayer(nn.Module):
    """A hidden ReLU layer computed only on its active set. ``mode="lsh"``: the ``round(fraction * n)``
    neurons with the most hash collisions; ``mode="random"``: as many drawn uniformly (the control)."""

    def __init__(self, linear: nn.Linear, *, tables: int, bits: int, dims: int, fraction: float,
                 generator: torch.Generator, mode: str = "lsh") -> None:
        super().__init__()
        if mode not in ("lsh", "random"):
            raise ValueError(f"mode must be 'lsh' or 'random', not {mode!r}")
        self.linear, self.mode, self.dims, self.fraction = linear, mode, dims, fraction
        self.register_buffer("planes", torch.randn(tables, bits, dims, generator=generator))
        self.register_buffer("codes", torch.zeros(linear.out_features, tables, dtype=torch.int64))
        self.last_active = 0.0  # mean active neurons per example in the last forward pass
        self.last_mask: torch.Tensor | None = None  # the last forward pass's active sets
        self.rehash()

    @property
    def k(self) -> int:
        return max(1, round(self.fraction * self.linear.out_features))

    @torch.no_grad()
    def rehash(self) -> None:
        """``rebuildTables``: every neuron's codes from its current (pooled) weights."""
        self.codes = simhash(pool(self.linear.weight, self.dims), self.planes)

    @torch.no_grad()
    def mask(self, a: torch.Tensor) -> torch.Tensor:
        if self.mode == "lsh":
            return top_active(collision_counts(self.codes, simhash(pool(a, self.dims), self.planes)), self.k)
        chosen = torch.rand(a.shape[0], self.linear.out_features, device=a.device).argsort(1)[:, : self.k]
        return torch.zeros(a.shape[0], self.linear.out_features, dtype=torch.bool, device=a.device).scatter_(
            1, chosen, True)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        m = self.mask(a)
        self.last_mask = m
        self.last_active = float(m.sum(1).float().mean())
        return torch.relu(self.linear(a)) * m


class LSHNetwork(nn.Module):
    """The harness MLP with every hidden layer an :class:`LSHLayer` (the first hashes its input pooled to
    ``input_dims`` coordinates, the others to ``hidden_dims``); the output layer dense."""

    def __init__(self, mlp: nn.Sequential, *, tables: int, bits: int, input_dims: int, hidden_dims: int,
                 fraction: float, generator: torch.Generator, mode: str = "lsh") -> None:
        super().__init__()
        linears = [m for m in mlp if isinstance(m, nn.Linear)]
        self.flatten = nn.Flatten()
        self.hidden = nn.ModuleList(
            LSHLayer(lin, tables=tables, bits=bits, dims=input_dims if i == 0 else hidden_dims, fraction=fraction,
                     generator=generator, mode=mode)
            for i, lin in enumerate(linears[:-1]))
        self.out = linears[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.flatten(x)
        for layer in self.hidden:
            a = layer(a)
        return self.out(a)

    def rehash(self) -> None:
        for layer in self.hidden:
            layer.rehash()


#: Why the quick profile does not show the abstract's 1% at 5% active neurons; shown beside its verdict.
DIAGNOSIS = """
The method was re-read in the authors' released Java code (LSH_DeepLearning): SimHash of the weight vectors
and inputs average-pooled to 8 (input) or 10 (hidden) coordinates, K = 6 bits, the active set the neurons
with the most collisions over the tables, capped at 5% of the layer, used in training and in test; this file
follows it (with 25 tables instead of 100 in the quick profile, for time). A first reading (union of the
buckets of simple-LSH codes, no pooling) lost about 45 pp; the code's ranking by collision count is what
makes the 5% sets useful (10.8 pp above random sets of the same size here). The gap shrinks with training:
on seed 100 (not a published seed), with the script's 100 tables and 2,400 Adam steps (2.6 passes instead
of the quick profile's 0.43), 5% active reached 84.5% against 88.2% dense, -3.7 pp instead of -7.1. The
script trains 25 epochs with single-example Adagrad and momentum, which the harness's budget cannot give;
the atlas takes the quick profile's gap as mostly the budget's and cannot say from here whether the paper's
schedule closes it to 1 pp on Fashion-MNIST (the paper's data sets, MNIST among them, are easier); the
paper profile runs MNIST for the script's 25 epochs.
"""


def dense_multiplications(widths: list[int]) -> int:
    """Multiplications of one dense forward pass (weights only): ``sum n_in n_out``."""
    return sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))


def multiplications(widths: list[int], active: list[float], tables: int, bits: int,
                    dims: list[int]) -> tuple[float, float]:
    """A forward pass computing only the active neurons of each hidden layer (``active[l]`` of them, each
    ``n_in`` multiplications, as ``HiddenLayer`` counts) and the output layer in full; second: plus the
    ``L K d_l`` projections that hash each hidden layer's pooled input."""
    hidden = sum(a * n_in for a, n_in in zip(active, widths[:-2], strict=True))
    out = widths[-2] * widths[-1]
    hashing = sum(tables * bits * d for d in dims)
    return hidden + out, hidden + out + hashing


@torch.no_grad()
def measure_active(model: LSHNetwork, run: Run) -> list[float]:
    """Mean active neurons per example of each hidden layer over the test set."""
    data = run.dataset()
    totals = [0.0] * len(model.hidden)
    model.eval()
    for start in range(0, len(data.test), 1000):
        x = data.test.x[start:start + 1000]
        model(x)
        totals = [t + layer.last_active * len(x) for t, layer in zip(totals, model.hidden, strict=True)]
    return [t / len(data.test) for t in totals]


# ------------------------------------------------------------------------------------- the networks
def train_network(run: Run, model: nn.Module, stage: str) -> nn.Module:
    run.reseed("spring2017 data")
    every = int(run.config["rehash_every"])
    step = {"n": 0}

    def after(m: nn.Module) -> None:  # the tables rebuilt from the updated weights
        step["n"] += 1
        if isinstance(m, LSHNetwork) and step["n"] % every == 0:
            m.rehash()

    return run.train(model, run.dataset().train, run.train_config("train"), desc=stage, after_step=after)


def build(run: Run, fraction: float, mode: str) -> LSHNetwork:
    run.reseed(f"spring2017 init {mode} {fraction:g}")
    mlp = run.model("mlp", hidden=list(run.config["hidden"]))
    gen = torch.Generator().manual_seed(run.seed * 1000 + round(fraction * 100))
    c = run.config
    return LSHNetwork(mlp, tables=int(c["tables"]), bits=int(c["bits"]), input_dims=int(c["input_dims"]),
                      hidden_dims=int(c["hidden_dims"]), fraction=fraction, generator=gen, mode=mode)


def pct(fraction: float) -> str:
    return f"{round(fraction * 100)}pct"


@reproduction("spring2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    c = run.config
    hidden = list(c["hidden"])
    widths = [math.prod(data.input_shape), *hidden, data.num_classes]
    dims = [int(c["input_dims"])] + [int(c["hidden_dims"])] * (len(hidden) - 1)
    fractions = [float(f) for f in c["fractions"]]

    run.reseed("spring2017 init dense")
    dense = train_network(run, run.model("mlp", hidden=hidden), "dense")
    base_acc = run.accuracy(dense, data.test)

    acc: dict[float, float] = {}
    mults: dict[float, tuple[float, float]] = {}
    for f in fractions:
        net = train_network(run, build(run, f, "lsh"), f"LSH {f:.0%} active")
        acc[f] = run.accuracy(net, data.test)
        m, with_hashing = multiplications(widths, measure_active(net, run), int(c["tables"]), int(c["bits"]), dims)
        mults[f] = (100 * m / dense_multiplications(widths), 100 * with_hashing / dense_multiplications(widths))
    rand_acc = run.accuracy(train_network(run, build(run, 0.05, "random"), "random 5% active"), data.test)

    metrics = {
        **measure.accuracy_change(base_acc, acc[0.05]),
        "multiplication_fraction_pct": mults[0.05][0],
        "multiplication_fraction_with_hashing_pct": mults[0.05][1],
        "random_accuracy": rand_acc,
        "gain_over_random_pp": acc[0.05] - rand_acc,
        **{f"accuracy_{pct(f)}": acc[f] for f in fractions if f != 0.05},
        **{f"multiplication_fraction_pct_{pct(f)}": mults[f][0] for f in fractions if f != 0.05},
    }
    curves = [
        Series("LSH active sets", X_AXIS, ACCURACY, {100 * f: a for f, a in acc.items()}),
        Series("random active sets of the same size (control)", X_AXIS, ACCURACY, {5.0: rand_acc}, control=True),
    ]
    train = c["train"]
    arch = "-".join(str(w) for w in widths)
    run.record("abstract-5pct", model=f"MLP {arch}, 5% of the hidden neurons active by LSH (L={c['tables']}, K={c['bits']})",
               metrics=metrics, curves=curves, baseline=("mlp", "baseline_accuracy"), baseline_spec={"hidden": hidden},
               differs=(f"MLP {arch}; every network {train['steps']} {train['optimizer']} steps of batch "
                        f"{train['batch_size']} (lr {train['lr']}, {train['schedule']}; the code: single-example "
                        "Adagrad with momentum); SimHash of pooled weights and inputs as the released code, tables "
                        f"rebuilt every {c['rehash_every']} steps; active sets applied as masks, multiplications "
                        "counted, not timed"), diagnosis=DIAGNOSIS)
