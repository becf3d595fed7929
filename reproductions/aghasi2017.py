"""Net-Trim: Convex Pruning of Deep Neural Networks with Performance Guarantee (Aghasi, Abdi, Nguyen &
Romberg, NIPS 2017; arXiv:1611.05162).

Method: a trained ReLU network is pruned layer by layer, without retraining, by a convex program that
keeps each layer's response on the training samples while making its weights sparse. For layer
``l`` with inputs ``X`` (``N x P``: ``P`` samples, a row of ones appended so that the bias is a row of
the weights) and the trained network's outputs ``Y = relu(W^T X)`` (``M x P``), with
``Omega = supp(Y)`` the entries where a unit is active,

    W_hat = argmin_U ||U||_1   s.t.   ||(U^T X - Y)_Omega||_F <= eps,   (U^T X)_{Omega^c} <= 0.

The first constraint keeps the active responses within ``eps``; the second keeps the inactive units
inactive, so that ``relu(W_hat^T X)`` differs from ``Y`` by at most ``eps`` in Frobenius norm (on
``Omega`` the ReLU is 1-Lipschitz, on ``Omega^c`` both are zero). The last (linear) layer solves the
same program without the ReLU: ``||U^T X - Y||_F <= eps``. The original ``W`` is feasible, so the
program always has a solution and ``||W_hat||_1 <= ||W||_1``. In the *parallel* scheme every layer's
program is written with the trained network's own inputs and outputs, so the layers can be pruned
independently; the *cascade* scheme (feeding each program the pruned network's inputs) is not run
here. ``eps`` is a fraction ``g`` of the layer's response, ``eps_l = g ||Y_l||_F``, as in the authors'
released code (``epsilon = epsilon_gain * norm(Y)``).

The guarantee (the paper's consistency analysis for the parallel scheme): the pruned network's output
stays within the sum of the layers' ``eps``, propagated through the later layers,

    ||Y_hat^(L) - Y^(L)||_F <= sum_l eps_l prod_{j > l} ||W_hat_j||,

because ``||relu(A^T u) - relu(A^T v)|| <= ||A|| ||u - v||`` for the layer's weights ``A`` (its bias
row cancels). The paper states it for networks scaled so that ``||W_l||_1 = 1`` (the entrywise l1
norm, which bounds the spectral norm), where it reads ``sum_l eps_l``; that form is
``guarantee_ratio_l1`` below (with the trained weights' l1 norms, which bound the pruned ones since
the trained weights are feasible), the tighter spectral form is the checked ``guarantee_ratio``. Its
hypotheses are the programs' constraints, so what the check tests is that the solver really returns
feasible points and that the propagation holds on the pruned network.

The solver: the program split as in the authors' released ADMM (github.com/DNNToolBox/Net-Trim,
``NetTrimSolver_np.py``): variables ``Z = U^T X`` (projected onto the constraint set: the Frobenius
ball around ``Y`` on ``Omega``, the non-positive orthant off it), ``W2 = U`` (soft-thresholded at
``1/rho``) and ``U`` (a least-squares step with ``(X X^T + I)``, factored once), the inputs scaled by
``0.3 sqrt(max X X^T)`` and ``rho = 100`` as there; the sparse ``W2`` is returned.

Claims (abstract of arXiv:1611.05162; the sections, theorem statements and figures could not be read
where this file was written, so no table number is taken from them): (1) ``consistency``: "we also
provide a mathematical analysis of the consistency between the initial network and the retrained
model" (checked: ``guarantee_ratio``, the pruned network's output discrepancy on the program's samples
over the bound above, at most 1); (2) ``mnist-fc``: "Net-Trim significantly reduces the number of
connections in the network, while also providing enough regularization to slightly reduce the
generalization error" (checked: ``accuracy_change_pp`` of the pruned network, without retraining,
against the same trained network, at least -1 pp, at the profile's ``claim_ratio``: 4x in the quick
profile, "significantly reduces the number of connections" read as three quarters of them removed).

Measured: a LeNet-300-100 trained with Adam, pruned by parallel Net-Trim with one gain ``g`` for every
layer. ``g`` is searched (secant steps on log g against log ratio, each program warm-started from the
last) until the network's weight compression is within ``tolerance`` of each target of ``ratios``:
the curve's levels, the same on every seed; the ratio reached is recorded (``reached_ratio_<r>``).
Recorded at ``claim_ratio``: ``accuracy`` / ``baseline_accuracy`` (the trained network) /
``accuracy_change_pp``, ``compression_metrics`` (``param_compression``, ``flop_reduction`` from the
zero weights), ``weight_compression`` (weights only, the curve's axis), ``gain`` (the ``g`` found),
``kept_pct_fc<k>`` per layer, ``discrepancy_pct`` (``||Y_hat^(L) - Y^(L)||_F / ||Y^(L)||_F`` on the
program's samples, percent) and ``test_discrepancy_pct`` (the same on the test set: the guarantee
does not cover it), ``guarantee_ratio`` and ``guarantee_ratio_l1``, ``layer_excess`` (the largest
``||relu(W_hat^T X) - Y||_F / eps`` over the layers: at most 1 when every program's solution is
feasible), and the authors' own comparison (their ``naive_pruning``): each layer pruned by magnitude
to Net-Trim's per-layer count, without retraining (``magnitude_accuracy``, ``gain_over_magnitude_pp``).
The curve: Net-Trim at ``ratios`` beside global magnitude pruning of the same trained network at the
same ratios, without retraining (:func:`atlas.harness.controls.pruning_curve` with no fine-tuning:
Net-Trim retrains nothing).

Quick verdict (a development run, one thread on a machine loaded 13 deep, 184 s wall, 50 s of CPU):
partly. ``consistency`` reproduced (``guarantee_ratio`` 0.21 [0.21, 0.21]: the bound holds with a
factor of 5 to spare); ``mnist-fc`` not reproduced: at 4.0x fewer weights the pruned network is 2.0 pp
below the trained one (interval -2.4 to -1.7), though 3.9 pp above global magnitude pruning without
retraining and 4.6 pp above the authors' per-layer magnitude comparison; see ``DIAGNOSIS``.

Harness differs: Fashion-MNIST instead of MNIST; the harness's LeNet-300-100 (the paper's MNIST
network's sizes were not read), trained for a few thousand Adam steps; the programs written on
``samples`` training examples (1,000 in the quick profile; the released code uses all 55,000) and
solved for a fixed number of ADMM iterations (``admm.steps`` from zero, a fraction of them for each
warm-started search step) instead of to the code's tolerance; ``g`` searched to reach fixed
compression ratios (the paper sweeps ``eps`` and reports the sparsity it gives).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction


class Admm(Section):
    """The ADMM solver of one layer's program (the authors' released ``net_trim_solver``)."""

    steps: PositiveInt  # iterations of a program solved from zero (the released MNIST script: 10 x 200)
    warm_fraction: float = Field(gt=0, le=1)  # a warm-started search step runs this fraction of ``steps``
    # the ADMM penalty: the released code's 100 at its 55,000 MNIST samples. Its inputs are scaled by
    # c0 = 0.3 sqrt(max X X^T), which grows as sqrt(P), so the same balance on P samples is
    # rho sqrt(P / 55,000) (10 at 600 samples; 100 converged 10x slower there)
    rho: PositiveFloat = 100.0
    rho_samples: PositiveInt = 55000


class Search(Section):
    """The search of the gain ``g`` (``eps_l = g ||Y_l||_F``) that reaches each target compression."""

    first_gain: PositiveFloat  # the first ``g`` tried for the first target (released code sweeps 0.01-0.7)
    max_steps: PositiveInt  # secant steps at most per target
    tolerance: float = Field(gt=0, lt=0.5)  # relative distance to the target ratio accepted


class Config(Profile):
    model: str = "lenet-300-100"  # the harness network pruned
    dense: TrainConfig  # the trained network
    dense_per_seed: bool = True  # False: one trained network (from seed 0) for every seed
    samples: PositiveInt  # P, the training examples every layer's program is written on
    admm: Admm
    search: Search
    ratios: list[PositiveFloat] = Field(min_length=3)  # the curve's weight compressions (targets)
    claim_ratio: PositiveFloat  # the level the claims are measured at (one of ``ratios``)

    @model_validator(mode="after")
    def _claim_level_on_curve(self) -> Config:
        if self.claim_ratio not in self.ratios or sorted(self.ratios) != self.ratios:
            raise ValueError("ratios must be increasing and hold claim_ratio")
        return self


def _adam(steps: int, lr: float, batch_size: int) -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "adam", "schedule": "cosine"}


PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "dense": _adam(300, 3e-3, 64), "samples": 200,
        "admm": {"steps": 60, "warm_fraction": 0.34}, "search": {"first_gain": 0.1, "max_steps": 4, "tolerance": 0.05},
        "ratios": [2.0, 4.0, 8.0], "claim_ratio": 4.0,
    },
    "quick": {
        # One trained network for the 3 seeds: 4,000 Adam steps of batch 128 (8.5 passes over
        # Fashion-MNIST; 2,000 left it 1.3 pp below its reference); per seed the programs on 600 other
        # training images, 75 ADMM iterations from zero and 25 for each warm-started search step. The
        # claims at 4x ("significantly fewer connections" read as three quarters of them removed; the
        # first run measured them at 8x, where global magnitude pruning loses 9 pp as well).
        "dataset": "fashion-mnist", "seeds": 3, "dense": _adam(4000, 1e-3, 128), "dense_per_seed": False,
        "samples": 600,
        "admm": {"steps": 75, "warm_fraction": 0.34}, "search": {"first_gain": 0.1, "max_steps": 4, "tolerance": 0.05},
        "ratios": [4.0, 8.0, 16.0], "claim_ratio": 4.0,
    },
    "paper": {
        # MNIST; the released MNIST script trains 8,000 Adam steps of batch 100 and writes the programs
        # on all training images; its ADMM runs 10 x 200 iterations at rho = 100.
        "dataset": "mnist", "seeds": 3, "dense": _adam(8000, 1e-3, 100), "samples": 55000,
        "admm": {"steps": 2000, "warm_fraction": 0.25}, "search": {"first_gain": 0.1, "max_steps": 6, "tolerance": 0.02},
        "ratios": [5.0, 10.0, 20.0, 40.0], "claim_ratio": 10.0,
    },
}

CONSISTENCY = "consistency"
PRUNING = "mnist-fc"


# -------------------------------------------------------------------------------- the program
class LayerProgram:
    """One layer's Net-Trim program ``min ||U||_1`` s.t. ``||(U^T X - Y)_Omega||_F <= eps`` and
    ``(U^T X)_{Omega^c} <= 0`` (``relu=False``: ``||U^T X - Y||_F <= eps``), solved by the released
    code's ADMM; the state is kept so that a later ``eps`` starts from the last solution."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, relu: bool, rho: float = 100.0) -> None:
        x, y = x.float(), y.float()
        c = x @ x.T
        self.c0 = 0.3 * float(c.max().sqrt())
        self.x = x / self.c0
        self.y = y / self.c0
        self.relu = relu
        self.rho = rho
        self.active = (y > 1e-6) if relu else torch.ones_like(y, dtype=torch.bool)
        chol = torch.linalg.cholesky(c / self.c0 ** 2 + torch.eye(len(c), dtype=c.dtype))
        self.inverse = torch.cholesky_inverse(chol)  # (X X^T + I)^-1, X scaled: the U-step's system
        self.inverse_x = self.inverse @ self.x
        n, m = x.shape[0], y.shape[0]
        self.w3 = torch.zeros(n, m, dtype=torch.float32)
        self.w2 = torch.zeros_like(self.w3)
        self.u1 = torch.zeros_like(self.y)
        self.u2 = torch.zeros_like(self.w3)

    def solve(self, eps: float, steps: int) -> torch.Tensor:
        """``steps`` ADMM iterations at ``eps`` (in the layer's own units) from the current state; the
        sparse iterate (``W2``, exact zeros) as an ``N x M`` float32 matrix."""
        eps = eps / self.c0
        for _ in range(steps):
            z = self.w3.T @ self.x - self.u1
            diff = torch.where(self.active, z - self.y, 0.0)
            scale = eps / max(float(diff.norm()), eps)
            w1 = torch.where(self.active, self.y + scale * diff, z.clamp(max=0.0))
            d = self.w3 - self.u2
            self.w2 = d.sign() * (d.abs() - 1.0 / self.rho).clamp_min(0.0)
            self.w3 = self.inverse_x @ (w1 + self.u1).T + self.inverse @ (self.w2 + self.u2)
            self.u1 = self.u1 + w1 - self.w3.T @ self.x
            self.u2 = self.u2 + self.w2 - self.w3
        return self.w2.float()


def with_ones(x: torch.Tensor) -> torch.Tensor:
    """``[x; 1]``: a layer's input (features x samples) with the row that multiplies the bias."""
    return torch.cat([x, torch.ones(1, x.shape[1], dtype=x.dtype)])


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def layer_signals(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """``Y^(0) = X, Y^(1), ..., Y^(L)`` (features x samples) of an MLP of ReLU layers on ``x``: the
    hidden layers after their ReLU, the last layer's logits."""
    layers = linear_layers(model)
    out = [x.flatten(1).T.double()]
    for i, layer in enumerate(layers):
        y = layer.weight.double() @ out[-1] + layer.bias.double()[:, None]
        out.append(y.clamp_min(0.0) if i < len(layers) - 1 else y)
    return out


def to_augmented(layer: nn.Linear) -> torch.Tensor:
    """A layer's weights as the program's ``U`` (``(in + 1) x out``: the bias as the last row)."""
    return torch.cat([layer.weight.detach().T, layer.bias.detach()[None]]).double()


@torch.no_grad()
def set_augmented(layer: nn.Linear, u: torch.Tensor) -> None:
    layer.weight.copy_(u[:-1].T.to(layer.weight.dtype))
    layer.bias.copy_(u[-1].to(layer.bias.dtype))


class NetTrim:
    """Parallel Net-Trim of a trained MLP: one program per layer on the trained network's signals."""

    def __init__(self, dense: nn.Module, x: torch.Tensor, rho: float) -> None:
        self.dense = dense
        self.signals = layer_signals(dense, x)
        n = len(self.signals) - 1
        self.programs = [LayerProgram(with_ones(self.signals[i]), self.signals[i + 1], relu=i < n - 1, rho=rho)
                         for i in range(n)]
        self.norms = [float(s.norm()) for s in self.signals[1:]]

    def prune(self, gain: float, steps: int) -> nn.Module:
        """A copy of the trained network whose layer ``l`` solves its program at ``eps_l = gain ||Y_l||_F``."""
        model = controls.trainable_copy(self.dense)
        for layer, program, norm in zip(linear_layers(model), self.programs, self.norms, strict=True):
            set_augmented(layer, program.solve(gain * norm, steps))
        return model.eval()


def weight_ratio(model: nn.Module) -> float:
    return controls.compression_ratio(model)


def search_gain(trim: NetTrim, target: float, gain: float, admm: Admm, search: Search,
                cold: bool) -> tuple[nn.Module, float, float]:
    """The gain whose programs reach ``target`` weight compression (within ``search.tolerance``), by
    secant steps on ``log g`` against ``log ratio`` from ``gain``; each step continues the programs'
    ADMM from the last (the first, when ``cold``, runs ``admm.steps`` iterations, the others the warm
    fraction). Returns the model, its gain and its ratio (the closest reached if none is within)."""
    warm = max(1, round(admm.steps * admm.warm_fraction))
    points: list[tuple[float, float]] = []
    best: tuple[float, nn.Module, float, float] | None = None
    for step in range(search.max_steps):
        model = trim.prune(gain, admm.steps if cold and step == 0 else warm)
        ratio = weight_ratio(model)
        miss = abs(math.log(ratio / target))
        if best is None or miss < best[0]:
            best = (miss, model, gain, ratio)
        if miss <= math.log1p(search.tolerance):
            break
        points.append((math.log(gain), math.log(ratio)))
        slope = 1.0
        if len(points) >= 2 and abs(points[-1][0] - points[-2][0]) > 1e-9:
            slope = (points[-1][1] - points[-2][1]) / (points[-1][0] - points[-2][0])
            slope = min(max(slope, 0.2), 5.0)
        gain = math.exp(points[-1][0] + (math.log(target) - points[-1][1]) / slope)
    assert best is not None
    return best[1], best[2], best[3]


# --------------------------------------------------------------------------- the guarantee
@torch.no_grad()
def guarantee(trim: NetTrim, model: nn.Module, gain: float) -> dict[str, float]:
    """The output discrepancy on the programs' samples against the parallel scheme's bound
    ``sum_l eps_l prod_{j>l} ||W_hat_j||`` (spectral norm; with the trained ``||W_j||_1``: the paper's
    normalised form), and each layer's residual over its ``eps``."""
    pruned, dense = linear_layers(model), linear_layers(trim.dense)
    out = layer_signals(model, trim.signals[0].T.float())
    n = len(pruned)
    eps = [gain * norm for norm in trim.norms]
    spectral = [float(torch.linalg.matrix_norm(layer.weight.double(), ord=2)) for layer in pruned]
    l1 = [float(to_augmented(layer).abs().sum()) for layer in dense]
    bound = sum(eps[i] * math.prod(spectral[i + 1:]) for i in range(n))
    bound_l1 = sum(eps[i] * math.prod(l1[i + 1:]) for i in range(n))
    excess = []
    for i, layer in enumerate(pruned):
        y = to_augmented(layer).T @ with_ones(trim.signals[i])
        y = y.clamp_min(0.0) if i < n - 1 else y
        excess.append(float((y - trim.signals[i + 1]).norm()) / eps[i])
    gap = float((out[-1] - trim.signals[-1]).norm())
    return {"guarantee_ratio": gap / bound, "guarantee_ratio_l1": gap / bound_l1,
            "discrepancy_pct": 100.0 * gap / trim.norms[-1], "layer_excess": max(excess)}


@torch.no_grad()
def heldout_discrepancy_pct(dense: nn.Module, model: nn.Module, x: torch.Tensor) -> float:
    ref = layer_signals(dense, x)[-1]
    return 100.0 * float((layer_signals(model, x)[-1] - ref).norm() / ref.norm())


@torch.no_grad()
def magnitude_at_counts(dense: nn.Module, model: nn.Module) -> nn.Module:
    """The released code's ``naive_pruning`` (their HPTD comparison): each layer of the trained network
    keeps as many weights as Net-Trim's layer, those of largest magnitude; biases kept."""
    out = controls.trainable_copy(dense)
    for layer, trimmed in zip(linear_layers(out), linear_layers(model), strict=True):
        k = int(torch.count_nonzero(trimmed.weight))
        flat = layer.weight.abs().flatten()
        keep = torch.zeros_like(flat, dtype=torch.bool)
        if k:
            keep[torch.topk(flat, k).indices] = True
        layer.weight.mul_(keep.view_as(layer.weight))
    return out.eval()


def kept_percent(model: nn.Module) -> dict[str, float]:
    return {f"kept_pct_fc{i + 1}": 100.0 * float(torch.count_nonzero(m.weight)) / m.weight.numel()
            for i, m in enumerate(linear_layers(model))}


#: Shown beside a failed check: what was tried and why the gap is believed to be the method's or the harness's.
DIAGNOSIS = """
The programs and their solver were checked against the paper's formulation and the authors' released
ADMM (unit tests: a sparse layer is recovered from its samples, its response kept within eps with the
inactive units inactive, the l1 norm below the trained weights'); on the quick run every layer's
residual is at its eps or up to 10% over it (the search's few warm iterations), and the guarantee
holds on every seed. Without retraining, the pruned network loses 2.0 pp at 4x fewer weights (-1.88,
-2.07, -2.17 pp; the trained network 0.4 pp below its reference) and 11 pp at 8x. It does beat both
simple alternatives at 4x and 8x: global magnitude pruning without retraining reaches 83.5% and 71.1%
(Net-Trim 87.2% and 78.2%), and the authors' own comparison, each layer pruned by magnitude to
Net-Trim's count, is 4.6 pp worse at 4x; at 16x Net-Trim falls below the control. An earlier run (one
trained network per seed after 2,000 Adam steps) lost -1.95 pp at 4x; on seed 10, 2,000 samples and
150 ADMM iterations needed a larger eps for the same 8x and lost 15 pp, so more samples at this budget
did not help. What the harness cannot match: the released code writes the programs on all 55,000
training images (600 here: every ADMM iteration costs in proportion) and its MNIST script fine-tunes
the pruned network for 5,000 to 15,000 SGD steps before comparing accuracies; the abstract's "slightly
reduce the generalization error" may describe that regime, which the paper's sections (not read)
would say. So the gap measured is Net-Trim without retraining on 600 samples, not a failure of its
guarantee.
"""


# --------------------------------------------------------------------------------- the run
def train_dense(run: Run) -> nn.Module:
    cfg = run.config

    per_seed = cfg["dense_per_seed"]

    def fit(model: nn.Module) -> None:
        run.reseed("aghasi2017 dense", seed=None if per_seed else 0)
        run.train(model, run.dataset().train, run.train_config("dense"), desc=f"{cfg['model']} dense")

    return run.cached_model("aghasi2017-dense", {"model": cfg["model"], "dense": cfg["dense"], "per_seed": per_seed},
                            build=lambda: run.model(cfg["model"]), fit=fit, per_seed=per_seed)


@reproduction("aghasi2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = run.config
    data = run.dataset()
    admm, search = Admm.model_validate(cfg["admm"]), Search.model_validate(cfg["search"])
    dense = train_dense(run).eval()
    base = run.accuracy(dense, data.test)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(run.seed))
    x = data.train.x[order[: cfg["samples"]]]
    trim = NetTrim(dense, x, admm.rho * math.sqrt(len(x) / admm.rho_samples))

    curve: dict[float, float] = {}
    reached: dict[str, float] = {}
    gain = search.first_gain
    for i, target in enumerate(cfg["ratios"]):
        model, gain, ratio = search_gain(trim, target, gain, admm, search, cold=i == 0)
        curve[float(target)] = acc_level = run.accuracy(model, data.test)
        reached[f"reached_ratio_{target:g}"] = ratio
        if target == cfg["claim_ratio"]:
            claim_model, claim_gain, claim_ratio, acc = model, gain, ratio, acc_level
    magnitude = run.accuracy(magnitude_at_counts(dense, claim_model), data.test)
    checks = guarantee(trim, claim_model, claim_gain)
    differs = (f"{data.name} instead of MNIST; the harness's {cfg['model']} trained for {cfg['dense']['steps']} "
               f"Adam steps; parallel Net-Trim programs on {cfg['samples']} training examples, "
               f"{admm.steps} ADMM iterations from zero; the gain searched to fixed compression ratios")
    label = f"{cfg['model']}, parallel Net-Trim, weight compression {claim_ratio:.2f}x (target {cfg['claim_ratio']:g}x)"
    common = {"gain": claim_gain, "weight_compression": claim_ratio, **reached}
    run.record(
        CONSISTENCY, model=label,
        metrics={**checks, "test_discrepancy_pct": heldout_discrepancy_pct(dense, claim_model, data.test.x), **common},
        differs=differs,
    )
    run.record(
        PRUNING, model=label,
        metrics={
            **measure.accuracy_change(base, acc),
            **measure.compression_metrics(dense, claim_model, data.input_shape),
            **common,
            **kept_percent(claim_model),
            "magnitude_accuracy": magnitude,
            "gain_over_magnitude_pp": acc - magnitude,
        },
        baseline=(cfg["model"], "baseline_accuracy"),
        baseline_spec={},
        diagnosis=DIAGNOSIS,
        differs=differs + "; the baseline is the trained network itself (Net-Trim retrains nothing)",
        curves=[controls.Series("parallel Net-Trim (Aghasi et al.)", controls.RATIO, controls.ACCURACY, curve),
                controls.pruning_curve(run, dense, cfg["ratios"], None)],
    )
