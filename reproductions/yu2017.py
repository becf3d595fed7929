"""On Compressing Deep Models by Low Rank and Sparse Decomposition (Yu, Liu, Wang & Tao, CVPR 2017,
pp. 7370-7379; no arXiv version).

Method: each weight matrix ``W`` (``m`` outputs, ``n`` inputs) is replaced by the sum of a low-rank and
a sparse matrix, ``W ~ L + S`` with ``rank(L) <= r`` and ``card(S) <= c``, chosen not to approximate
the weights but to reconstruct the layer's feature maps on a small sample of inputs ``X`` (the layer's
outputs ``Y = W X`` of the trained network):

    min_{L, S}  ||Y - (L + S) X||_F^2    s.t.  rank(L) <= r,  card(S) <= c .

``r = 0`` is pruning connections with feature-map reconstruction (the abstract: "our model includes
methods like pruning connections as special cases"), ``c = 0`` a data-driven low-rank approximation.
The decomposition is a "warm start" for retraining: the compressed network (``L`` stored as two
factors ``U V``, ``S`` as its non-zeros) is fine-tuned with the sparse pattern fixed. A layer then
stores ``r (m + n) + c`` numbers instead of ``m n``.

Solved here by alternating minimisation: ``L`` given ``S`` is a reduced-rank regression (the least
squares fit ``B`` of ``Y - S X`` on ``X``, projected on the top ``r`` left singular vectors of its fitted
values ``B X``); ``S`` given ``L`` by iterative hard thresholding (a gradient step on the reconstruction
error with step ``1 / ||X X^T||_2``, then the ``c`` entries of largest magnitude kept). The paper's
solver is "a fast SVD-free algorithm"; the matrices of LeNet-300-100 are small enough for an exact
SVD, which is used instead (the minimiser is the same problem's).

The paper's text could not be read where this file was written: the formulation above is the one its
abstract describes ("a unified framework integrating the low-rank and sparse decomposition of weight
matrices with the feature map reconstructions", "with a small sample", "warm start to retrain"); its
per-layer ranks, cardinalities and solver details were not read.

Claims (Abstract, CVF open access): ``vgg16`` -- "our model reduces the size of VGG-16 by 15x, better
than other recent compression methods that use a single strategy" (ImageNet: not measured, no
check); ``little-loss`` -- the warm start gives "(a) higher compression rates, (b) little loss of
accuracy", read here as: LeNet-300-100 compressed to the paper's 15x (every layer at 15x), decomposed
and retrained, loses at most 0.5 pp of test accuracy against the dense network it starts from
(``accuracy_change_pp``).

Measured: ``baseline_accuracy`` (the dense network: the declared baseline), ``warm_start_accuracy``
(decomposed, before retraining), ``accuracy`` and ``accuracy_change_pp`` (after retraining),
``param_compression`` (the layers' dense weights over ``r (m + n) + c``), ``lowrank_only_accuracy`` and
``sparse_only_accuracy`` (the two single strategies at the same compression, decomposed by the same
reconstruction and retrained for the same steps) and ``gain_over_lowrank_pp`` / ``gain_over_sparse_pp``,
``reconstruction_error_train`` / ``reconstruction_error_test`` (the relative feature-map
reconstruction error ``||Y - (L + S) X|| / ||Y||`` of the first layer on the sample and on test
images: the abstract's generalisation claim), and the curve: the method at three compression levels
(decomposed and retrained) beside the shared control, global magnitude pruning of the same dense
network retrained for the same steps (:func:`atlas.harness.controls.pruning_curve`).

Harness differs: Fashion-MNIST (quick) and the 8x8 digits (smoke) instead of ImageNet; the harness's
LeNet-300-100 instead of AlexNet, VGG-16 and GoogLeNet; every layer at the same compression, its
budget split evenly between ``L`` and ``S`` (``rank_share`` 0.5; the paper's per-layer choices were not
read); an exact SVD instead of the paper's SVD-free solver; each layer reconstructs the dense network's
own feature maps from the dense network's inputs; one dense network (3,000 steps) for every seed,
500 retraining steps per seed and level.

Quick verdict: not reproduced, and why (seeds 0-2; the dense network 88.78%, 0.86 pp below its
reference). At 15x the decomposition reconstructs the first layer's feature maps to a relative error
of 0.241 on its 1,000 training images and 0.245 on test images (the abstract's generalisation holds),
its warm start keeps 78.3-79.2% before retraining, and 500 retraining steps bring it to 86.5-86.7%:
2.21 pp below the dense network (95% interval -2.46 to -1.97 against the check's -0.5). The single
strategies at the same 15x and retraining: sparse alone (pruning connections with feature-map
reconstruction, the paper's special case) 86.8-87.1%, 0.14-0.58 pp better than low rank plus
sparse; low rank alone 59-61% (rank 14 of 300 in the first layer). The control, global magnitude
pruning retrained for the same steps, keeps 87.1-87.4% at 15x and lies above the method's curve at
5x, 15x and 30x. See ``DIAGNOSIS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction


class Config(Profile):
    model: Literal["lenet-300-100"]  # the harness model
    dense: TrainConfig  # the trained network that is decomposed (one for every seed)
    ratio: PositiveFloat  # every layer's compression, m n / (r (m + n) + c) (Abstract: VGG-16 15x)
    rank_share: float = Field(0.5, ge=0, le=1)  # the fraction of a layer's budget given to L
    samples: PositiveInt  # training images whose feature maps are reconstructed ("a small sample")
    iters: PositiveInt = 20  # alternations of the L and S steps
    sparse_steps: PositiveInt = 5  # hard-thresholding steps per alternation
    finetune: TrainConfig  # retraining from the warm start (every variant and the control alike)
    curve_ratios: list[PositiveFloat]  # the method's compression levels on the curve


def _sgd(steps: int, lr: float, batch: int = 64) -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch, "optimizer": "sgd", "schedule": "cosine"}


PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "model": "lenet-300-100", "dense": _sgd(300, 0.05),
              "ratio": 15.0, "samples": 300, "iters": 5, "finetune": _sgd(60, 0.01),
              "curve_ratios": [5.0, 15.0, 30.0]},
    "quick": {
        # one dense network of 3,000 steps; per seed 500 retraining steps for each of the curve's three
        # levels (15x among them), the two single strategies and the control's three levels
        "dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100", "dense": _sgd(3000, 0.05, 100),
        "ratio": 15.0, "samples": 1000, "iters": 10, "finetune": _sgd(500, 0.01),
        "curve_ratios": [5.0, 15.0, 30.0],
    },
    "paper": {
        # MNIST, 20 passes for the dense network and 5 of retraining; the paper's networks are ImageNet's
        "dataset": "mnist", "seeds": 3, "model": "lenet-300-100", "dense": _sgd(12000, 0.05, 100),
        "ratio": 15.0, "samples": 2000, "iters": 50, "finetune": _sgd(3000, 0.01, 100),
        "curve_ratios": [5.0, 15.0, 30.0],
    },
}


# ------------------------------------------------------------------------ the decomposition
def budget(m: int, n: int, ratio: float, rank_share: float) -> tuple[int, int]:
    """``(r, c)``: the rank and the non-zeros that store ``m n / ratio`` numbers, ``rank_share`` of them
    in the two factors of ``L`` (``r (m + n)``) and the rest in ``S`` (none with ``rank_share`` 1: low rank
    alone, at least rank 1 -- LeNet-300-100's 100 x 10 classifier at 15x stores 67 numbers, less than
    one rank, 110)."""
    total = m * n / ratio
    r = int(rank_share * total // (m + n))
    if rank_share == 1:  # low rank alone: at least rank 1 (a rank-0 layer outputs its bias alone)
        return max(1, r), 0
    return r, min(int(max(0, total - r * (m + n))), m * n)


def hard_threshold(a: torch.Tensor, c: int) -> torch.Tensor:
    """``a`` with all but its ``c`` entries of largest magnitude set to zero."""
    out = torch.zeros_like(a)
    if c > 0:
        idx = a.abs().flatten().topk(c).indices
        out.view(-1)[idx] = a.view(-1)[idx]
    return out


def reduced_rank_fit(target: torch.Tensor, x: torch.Tensor, r: int, ridge: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """``argmin_{rank(L) <= r} ||target - L x||_F`` as factors ``(U, V)``, ``L = U V``: the least-squares
    fit ``B`` projected on the top ``r`` left singular vectors of ``B x``."""
    m = target.shape[0]
    if r == 0:
        return target.new_zeros(m, 0), target.new_zeros(0, x.shape[0])
    gram = x @ x.T
    b = torch.linalg.solve(gram + ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype),
                           x @ target.T).T
    u = torch.linalg.svd(b @ x, full_matrices=False).U[:, :r]
    return u, u.T @ b


@dataclass
class Decomposition:
    u: torch.Tensor  # m x r
    v: torch.Tensor  # r x n
    s: torch.Tensor  # m x n, at most c non-zeros

    def weight(self) -> torch.Tensor:
        return self.u @ self.v + self.s


@torch.no_grad()
def decompose(w: torch.Tensor, x: torch.Tensor, r: int, c: int, iters: int = 20, sparse_steps: int = 5
              ) -> Decomposition:
    """``min ||Y - (L + S) X||`` with ``Y = W X``, ``rank(L) <= r``, ``card(S) <= c`` (``x``: n x N)."""
    y = w @ x
    u_full, sv, vh = torch.linalg.svd(w, full_matrices=False)
    u, v = u_full[:, :r] * sv[:r], vh[:r]  # start: the best rank-r approximation of W ...
    s = hard_threshold(w - u @ v, c)  # ... and the largest entries of what it leaves
    step = 1.0 / float(torch.linalg.matrix_norm(x @ x.T, ord=2))
    for _ in range(iters):
        u, v = reduced_rank_fit(y - s @ x, x, r)
        if c == 0:
            continue
        residual = y - u @ (v @ x)
        for _ in range(sparse_steps):
            s = hard_threshold(s + step * (residual - s @ x) @ x.T, c)
    return Decomposition(u, v, s)


def reconstruction_error(d: Decomposition, w: torch.Tensor, x: torch.Tensor) -> float:
    """``||W X - (L + S) X||_F / ||W X||_F``."""
    y = w @ x
    return float((y - d.weight() @ x).norm() / y.norm())


class LowRankSparseLinear(nn.Module):
    """``x -> x (U V + S)^T + b`` with ``S``'s zero pattern fixed (re-applied after every step)."""

    def __init__(self, d: Decomposition, bias: torch.Tensor) -> None:
        super().__init__()
        self.u = nn.Parameter(d.u.clone())
        self.v = nn.Parameter(d.v.clone())
        self.s = nn.Parameter(d.s.clone())
        self.register_buffer("mask", d.s != 0)
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.u @ self.v + self.s).T + self.bias

    def stored(self) -> int:
        """Numbers stored for the weights: ``r (m + n) + c``."""
        return self.u.numel() + self.v.numel() + int(self.mask.sum())

    @torch.no_grad()
    def apply_mask(self) -> None:
        self.s.mul_(self.mask)


def linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each fully-connected layer's input on ``x`` (as ``n x N`` matrices)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0].flatten(1).T))
             for name, m in linears(model)]
    model.eval()(x)
    for h in hooks:
        h.remove()
    return seen


def compress(dense: nn.Module, x: torch.Tensor, ratio: float, rank_share: float, iters: int,
             sparse_steps: int) -> tuple[nn.Module, dict[str, Decomposition]]:
    """A copy of ``dense`` with every fully-connected layer replaced by its decomposition."""
    model = controls.trainable_copy(dense)
    inputs = layer_inputs(dense, x)
    parts = {}
    for name, layer in linears(model):
        m, n = layer.weight.shape
        r, c = budget(m, n, ratio, rank_share)
        d = decompose(layer.weight.detach(), inputs[name], r, c, iters, sparse_steps)
        parts[name] = d
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, LowRankSparseLinear(d, layer.bias))
    return model, parts


def stored_compression(dense: nn.Module, model: nn.Module) -> float:
    dense_weights = sum(m.weight.numel() for _, m in linears(dense))
    return dense_weights / sum(m.stored() for m in model.modules() if isinstance(m, LowRankSparseLinear))


def retrain(run: Run, model: nn.Module, desc: str) -> nn.Module:
    def mask(m: nn.Module) -> None:
        for layer in m.modules():
            if isinstance(layer, LowRankSparseLinear):
                layer.apply_mask()

    run.reseed(f"yu2017 retrain {desc}")
    return run.train(model, run.dataset().train, run.train_config("finetune"), desc=desc, after_step=mask)


def dense_network(run: Run) -> nn.Module:
    cfg = run.config
    data = run.dataset()

    def fit(model: nn.Module) -> None:
        run.reseed("yu2017 dense", seed=0)
        run.train(model, data.train, run.train_config("dense"), desc="dense network")

    return run.cached_model(f"{cfg['model']}-dense", {"model": cfg["model"], "dense": cfg["dense"]},
                            lambda: run.model(cfg["model"]), fit, per_seed=False)


#: Why the atlas publishes "not reproduced"; shown beside the verdict.
DIAGNOSIS = """
Checked: the decomposition solves the stated problem (unit tests: a rank-3 plus 40-spike layer is
reconstructed to under 5% error where either part alone is five times worse; fitting the feature maps
beats the weights' truncated SVD on correlated inputs), the compressed layers store r (m + n) + c
numbers (15.0x), the sparse pattern stays fixed in retraining, and the control and the single
strategies get the same 500 retraining steps. The budget split between L and S is not the paper's
(its per-layer choices were not read), so it was varied on the validation split (seed 1000, the
training set's last 10,000 examples; dense 89.24%): at 15x, rank share 0, 0.25, 0.5 and 0.75 retrained
to 87.38%, 87.67%, 87.27% and 87.11%, all 1.6 to 2.1 pp below the dense network; no split gives the
little loss the check asks. On LeNet-300-100 the weights are not low rank enough for L to pay for its
r (m + n) numbers at 15x (low rank alone: 59-61%), so the best the method can do here is its sparse
special case, which global magnitude pruning with the same retraining matches or beats. We believe
the gap is the harness's network and budget, not an error in the paper: the paper's 15x is for VGG-16,
whose large fully-connected layers are far more redundant than LeNet-300-100's, and its retraining
(not read) is longer than 500 steps. The paper's tables could not be read.
"""


@reproduction("yu2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg, data = run.config, run.dataset()
    dense = dense_network(run)
    base = run.accuracy(dense, data.test)
    run.reseed("yu2017 sample")
    sample = data.train.x[torch.randperm(len(data.train))[: cfg["samples"]]]
    args = (cfg["rank_share"], cfg["iters"], cfg["sparse_steps"])

    curve, results = {}, {}
    for ratio in sorted(set(cfg["curve_ratios"]) | {cfg["ratio"]}):
        model, parts = compress(dense, sample, ratio, *args)
        warm = run.accuracy(model, data.test)
        model = retrain(run, model, f"low rank + sparse {ratio:g}x")
        results[ratio] = (model, parts, warm)
        if ratio in cfg["curve_ratios"]:
            curve[float(ratio)] = run.accuracy(model, data.test)
    model, parts, warm = results[cfg["ratio"]]
    acc = run.accuracy(model, data.test)
    single = {}
    for label, share in (("lowrank", 1.0), ("sparse", 0.0)):
        other, _ = compress(dense, sample, cfg["ratio"], share, cfg["iters"], cfg["sparse_steps"])
        single[label] = run.accuracy(retrain(run, other, f"{label} only {cfg['ratio']:g}x"), data.test)
    first_name, first = linears(dense)[0]
    test_x = layer_inputs(dense, data.test.x[: cfg["samples"]])[first_name]
    train_x = layer_inputs(dense, sample)[first_name]
    metrics = {
        **measure.accuracy_change(base, acc),
        "warm_start_accuracy": warm,
        "param_compression": stored_compression(dense, model),
        "lowrank_only_accuracy": single["lowrank"], "sparse_only_accuracy": single["sparse"],
        "gain_over_lowrank_pp": acc - single["lowrank"], "gain_over_sparse_pp": acc - single["sparse"],
        "reconstruction_error_train": reconstruction_error(parts[first_name], first.weight.detach(), train_x),
        "reconstruction_error_test": reconstruction_error(parts[first_name], first.weight.detach(), test_x),
    }
    finetune = cfg["finetune"]
    run.record(
        "little-loss",
        model=f"{cfg['model']}: every layer W ~ L + S at {cfg['ratio']:g}x (rank share {cfg['rank_share']:g}), "
              f"fitted to reconstruct the feature maps of {cfg['samples']} images, retrained",
        metrics=metrics, baseline=(cfg["model"], "baseline_accuracy"), diagnosis=DIAGNOSIS,
        differs=f"{data.name}; the harness's {cfg['model']} ({cfg['dense']['steps']} dense steps, one network for "
                f"every seed); {finetune['steps']} retraining steps per level; exact SVD instead of the paper's "
                "SVD-free solver; baseline = the dense network",
        curves=[controls.Series("low rank + sparse, feature-map reconstruction, retrained", controls.RATIO,
                                controls.ACCURACY, curve),
                controls.pruning_curve(run, dense, sorted(curve), run.train_config("finetune"))],
    )
