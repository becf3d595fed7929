"""Fine-Pruning: Joint Fine-Tuning and Compression of a Convolutional Network with Bayesian Optimization
(Tung, Muralidharan & Mori, BMVC 2017; arXiv:1707.09102).

Method (abstract of arXiv:1707.09102v1 and the BMVC text's abstract; the method section could not be
read here): a pre-trained network is fine-tuned to a new domain and compressed *jointly*, instead of
pruning once as a post-processing step after fine-tuning. Pruning is magnitude pruning with one
pruning parameter per layer (Han et al., NIPS 2015: a weight of layer ``l`` is removed when its
magnitude falls below a threshold set by the layer's parameter); because such parameters are many
and interact, they are not set by hand once for all but chosen by Bayesian optimization, again at
each step of the fine-tuning, so they "adapt over time". Implemented here:

* A pruning configuration ``θ = (θ_1, ..., θ_L)`` sets each layer's threshold relative to the spread of
  its weights; at a fine-pruning step with target sparsity ``s_t`` the weights with the smallest
  scores ``|w| / (θ_l σ_l)`` (``σ_l`` the std of layer ``l``'s weights) are removed until the fraction
  ``s_t`` of all prunable weights is gone (one global scale ``α``: ``|w| < α θ_l σ_l``); weights pruned
  at an earlier step stay pruned.
* Bayesian optimization chooses ``θ`` (in log space, ``log θ_l in [-b, b]``) to maximise the objective
  ``f(θ)``, the accuracy of the pruned network on ``m`` training images (before fine-tuning): a
  Gaussian process (scikit-learn's ``GaussianProcessRegressor``, Matérn 5/2 kernel with a noise term,
  normalised targets) is fit to the configurations evaluated so far, and the next one maximises the
  expected improvement ``EI(θ) = (μ - f* - ξ) Φ(z) + σ φ(z)``, ``z = (μ - f* - ξ) / σ``, over random
  candidates; ``n_init`` random configurations start each search, ``n_iter`` EI steps follow (the
  profile's ``search.steps``; ``search.batch_size`` is ``m``).
* The best configuration's masks are applied and the surviving weights fine-tuned (Han et al.'s
  masked retraining); ``rounds`` such steps raise the sparsity to its target (``s_t = 1 - keep^(t/T)``).

Claims: the abstract (arXiv:1707.09102v1): "applying network pruning as a post-processing step to
reduce the memory requirements has drawbacks: fine-tuning and pruning are performed independently;
pruning parameters are set once and cannot adapt over time; and the highly parameterized nature of
state-of-the-art pruning methods make it prohibitive to manually search the pruning parameter space
for deep networks, leading to coarse approximations. We propose a principled method for jointly
fine-tuning and compressing a pre-trained convolutional network that overcomes these limitations.
Experiments on two specialized image domains (remote sensing images and describable textures)
demonstrate the validity of the proposed approach." Claim ``joint-fine-pruning``: the abstract gives
no number, so it is read here as compression without a loss of accuracy: the fine-pruned network at
most 1 pp less accurate than the same pre-trained network fine-tuned for the same steps without
pruning (``accuracy_change_pp``). The paper's tables (AlexNet and VGG-16 on remote sensing and
texture data) were not read; no number of them is used.

Measured (claim ``joint-fine-pruning``): from one pre-trained network, fine-pruning to the fraction
``keep`` of the prunable weights in ``rounds`` steps, each a Bayesian optimization and ``finetune``
steps of masked fine-tuning. Recorded: ``accuracy`` (fine-pruned), ``baseline_accuracy`` (the
pre-trained network fine-tuned for the same total steps without pruning), ``accuracy_change_pp``,
``dense_accuracy`` (the pre-trained network), ``fixed_accuracy`` and ``gain_over_fixed_pp`` (the same
schedule and fine-tuning with every ``θ_l = 1``: one pruning parameter for all layers, set once, no
optimization), ``prune_once_accuracy`` and ``gain_over_prune_once_pp`` (the control's point at the
claim's ratio: global magnitude pruning once, then the same steps of masked fine-tuning),
``bo_gain_pp`` (the objective of the configuration Bayesian optimization chose minus that of ``θ = 1``
on the first step, on the objective's training images), ``kept_pct_<layer>`` (the percentage of each
layer kept), ``param_compression``, ``flop_reduction`` and ``storage_bits`` / ``storage_compression``
(han2015's CSR encoding of the pruned weights). Curve: fine-pruning at each ``curve_keep`` (a full
run each) against the compression ratio, beside global magnitude pruning of the same pre-trained
network fine-tuned for the same total steps.

Imports: :mod:`reproductions.han2015` (Han et al., NIPS 2015): magnitude pruning with per-layer
thresholds, the masks and the masked retraining, and the CSR storage measurement.

Harness differs: LeNet-300-100 on Fashion-MNIST instead of AlexNet / VGG-16 pre-trained on ImageNet
and fine-tuned to remote sensing and texture images: the pre-trained network is the harness's dense
network and its "fine-tuning" is continued training on the same data set (the harness's controls and
baselines train on the profile's data set). The paper's objective (not read) may also reward
compression; here each step's sparsity is fixed by the schedule and the optimization maximises
accuracy at it, so that every seed reaches the same compression (the curve needs the same levels) and
the optimization decides how the pruning is spread over the layers. The parameterisation of ``θ``,
its range, the objective's images, ``n_init``, ``n_iter`` and the schedule are chosen here.

Quick verdict: not reproduced (a development run, 3 seeds, one thread on a machine loaded ~8x, 61 s of
CPU); see ``DIAGNOSIS``. Fine-pruned to 10% of the weights in three steps of 120 fine-tuning steps,
LeNet-300-100 lost 1.9-2.0 pp against the same network fine-tuned for 360 steps (95% interval -2.06 to
-1.88). The Bayesian optimization did its part: its configurations beat one pruning parameter for
every layer by 0.8-1.1 pp after the same fine-tuning (``gain_over_fixed_pp``), and found the allocation
Han et al. report for this network (fc1 7-8%, fc2 25-28%, fc3 36-81% kept; ``bo_gain_pp`` +1.5 to +2.2
on the objective), but global magnitude pruning once with the same 360 steps was 0.25-0.38 pp better.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from atlas_reproductions.han2015 import Masks, apply_masks, csr_parts, kept_percent, retrain_with_masks
from pydantic import Field, PositiveFloat, PositiveInt
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction


class Search(Section):
    n_init: PositiveInt  # random configurations that start each Bayesian optimization
    steps: PositiveInt  # n_iter: expected-improvement steps after them
    candidates: PositiveInt  # random candidates the expected improvement is maximised over
    log_range: PositiveFloat  # b: log θ_l in [-b, b]
    xi: float = Field(ge=0)  # the expected improvement's margin ξ (in objective units, accuracy %)
    batch_size: PositiveInt  # m: training images the objective (accuracy of the pruned network) is computed on


class Config(Profile):
    model: str  # the harness model
    dense: TrainConfig  # the pre-trained network
    finetune: TrainConfig  # masked fine-tuning after each fine-pruning step
    rounds: PositiveInt  # fine-pruning steps (T)
    keep: float = Field(gt=0, lt=1)  # fraction of the prunable weights kept at the end (the claim's level)
    curve_keep: list[float] = Field(min_length=3)  # the curve's levels; holds ``keep``
    search: Search


def _sgd(steps: int, lr: float, batch_size: int, schedule: str = "cosine") -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": schedule}


def _search(n_init: int, n_iter: int, images: int) -> dict:
    return {"n_init": n_init, "steps": n_iter, "candidates": 512, "log_range": 1.5, "xi": 0.01, "batch_size": images}


PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "model": "lenet-300-100", "dense": _sgd(90, 0.05, 64),
        "finetune": _sgd(20, 0.01, 64), "rounds": 2, "keep": 0.1, "curve_keep": [0.2, 0.1, 0.05],
        "search": _search(3, 3, 256),
    },
    "quick": {
        # one pre-trained network (3,000 Adam steps, as the harness's reference schedule but shorter: 1,500
        # SGD steps left it 1.3 pp below the reference) for the three seeds; per seed three fine-prunings
        # (3 steps of 120 fine-tuning steps each), the fixed-θ run, the continued baseline and the
        # control at three ratios: 8 x 360 steps of LeNet-300-100, and 4 x 3 searches of 4 + 8 evaluations.
        # (4 steps of 150 took 86 s of CPU for the three seeds, over the quick budget.)
        "dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100",
        "dense": {"steps": 3000, "lr": 1e-3, "batch_size": 128, "optimizer": "adam", "schedule": "cosine"},
        "finetune": _sgd(120, 0.01, 128), "rounds": 3, "keep": 0.1, "curve_keep": [0.2, 0.1, 0.05],
        "search": _search(4, 8, 2048),
    },
    "paper": {
        # the paper fine-tunes ImageNet networks on specialised data sets; here CIFAR-10 with the harness's
        # small VGG network, 10 fine-pruning steps of 2 epochs each, 10 + 30 evaluations per search.
        "dataset": "cifar10", "seeds": 3, "model": "vgg-small", "dense": _sgd(40000, 0.05, 128),
        "finetune": _sgd(780, 0.005, 128), "rounds": 10, "keep": 0.1, "curve_keep": [0.2, 0.1, 0.05],
        "search": _search(10, 30, 4096),
    },
}

CLAIM = "joint-fine-pruning"

DIAGNOSIS = (
    "The abstract states no number; the claim is read as compression to 10% of the weights at most 1 pp "
    "below the same network fine-tuned without pruning. Only the abstract could be read (no released code was "
    "found), so the objective (accuracy at a fixed sparsity, where the paper's may also reward compression), "
    "the parameterisation and the schedule are ours. Measured: the baseline converged (88.7% "
    "against the 89.6% reference); the optimization works as intended (its per-layer configurations beat a "
    "single pruning parameter by 0.8 to 1.1 pp after the same fine-tuning and recover Han et al.'s layer "
    "allocation), and the shared control, global magnitude pruning once with the same 360 steps, lands 1.6 pp "
    "below the baseline too: the loss at 10x is that of magnitude pruning with this short fine-tuning, not of "
    "the joint schedule. On seeds 10 and 11 with 400 fine-tuning steps per step (1,200 in all, as the baseline) "
    "the gap shrank to 1.22 and 1.17 pp (baselines 89.0% and 89.1%), fine-pruning still beat the single pruning "
    "parameter (by 0.53 and 0.74 pp) and stayed within 0.11 pp of the control (-0.11 and +0.09 pp): the gap "
    "closes with the fine-tuning budget and is the quick budget's, and the claim's "
    "comparison with post-processing pruning is a tie on this harness."
)


# -------------------------------------------------------------------------------- pruning by θ
def prunable(model: nn.Module) -> list[str]:
    """The weights of every convolution and fully-connected layer, in model order."""
    return controls.weight_names(model)


def masks_for(model: nn.Module, theta: np.ndarray, sparsity: float, previous: Masks | None = None) -> Masks:
    """The masks removing the fraction ``sparsity`` of all prunable weights with the smallest
    ``|w| / (θ_l σ_l)`` (i.e. ``|w| < α θ_l σ_l`` for one global ``α``); weights ``previous`` removed stay
    removed (they count towards the sparsity)."""
    params = dict(model.named_parameters())
    names = prunable(model)
    if len(theta) != len(names):
        raise ValueError(f"{len(theta)} pruning parameters for {len(names)} layers")
    scores = []
    for name, t in zip(names, theta, strict=True):
        w = params[name].detach()
        s = w.abs().flatten() / (float(t) * float(w.std()) + 1e-12)
        if previous is not None:
            s = torch.where(previous[name].flatten(), s, torch.zeros_like(s))
        scores.append(s)
    flat = torch.cat(scores)
    n_remove = min(flat.numel() - 1, int(round(sparsity * flat.numel())))
    keep = torch.ones_like(flat, dtype=torch.bool)
    if n_remove > 0:
        keep[torch.topk(flat, n_remove, largest=False, sorted=False).indices] = False
    if previous is not None:  # a previously removed weight with score 0 may sit above the cut on ties
        keep &= torch.cat([previous[n].flatten() for n in names])
    out, start = {}, 0
    for name in names:
        size = params[name].numel()
        out[name] = keep[start : start + size].view_as(params[name])
        start += size
    return out


@torch.no_grad()
def objective(model: nn.Module, masks: Masks, x: torch.Tensor, y: torch.Tensor) -> float:
    """``f(θ)``: accuracy (%) on ``x`` of ``model`` with ``masks`` applied (the model is left unchanged)."""
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in masks}
    was_training = model.training
    model.eval()
    try:
        apply_masks(model, masks)
        return 100.0 * float((model(x).argmax(1) == y).float().mean())
    finally:
        for n, w in saved.items():
            params[n].copy_(w)
        model.train(was_training)


# ------------------------------------------------------------------------ Bayesian optimization
def expected_improvement(mu: np.ndarray, sigma: np.ndarray, best: float, xi: float) -> np.ndarray:
    """``EI = (μ - f* - ξ) Φ(z) + σ φ(z)``, ``z = (μ - f* - ξ) / σ`` (maximisation); 0 where ``σ = 0``."""
    imp = mu - best - xi
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma > 0, imp / sigma, 0.0)
    return np.where(sigma > 0, imp * norm.cdf(z) + sigma * norm.pdf(z), np.maximum(imp, 0.0))


def bayesian_optimization(f: Callable[[np.ndarray], float], dim: int, search: Search, rng: np.random.Generator
                          ) -> tuple[np.ndarray, float, list[tuple[np.ndarray, float]]]:
    """Maximise ``f`` over ``[-b, b]^dim`` (log θ): ``n_init`` random points, then ``n_iter`` points each
    maximising the expected improvement under a Gaussian process fit to the points so far. Returns the
    best point, its value and every evaluation."""
    b = search.log_range
    xs = [rng.uniform(-b, b, dim) for _ in range(search.n_init)]
    ys = [f(x) for x in xs]
    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(length_scale=np.ones(dim), length_scale_bounds=(1e-2, 1e2),
                                                       nu=2.5) + WhiteKernel(1e-2, (1e-6, 1e1))
    for _ in range(search.steps):
        gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=0,
                                      random_state=int(rng.integers(2**31)))
        with warnings.catch_warnings():  # hyperparameters at their bounds (a flat objective) are expected
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(np.array(xs), np.array(ys))
        cand = rng.uniform(-b, b, (search.candidates, dim))
        mu, sd = gp.predict(cand, return_std=True)
        x = cand[int(np.argmax(expected_improvement(mu, sd, max(ys), search.xi)))]
        xs.append(x)
        ys.append(f(x))
    i = int(np.argmax(ys))
    return xs[i], float(ys[i]), list(zip(xs, ys, strict=True))


# ------------------------------------------------------------------------------------- the method
def sparsity_schedule(keep: float, rounds: int) -> list[float]:
    """``s_t = 1 - keep^(t/T)``: the sparsity after each fine-pruning step (the last is ``1 - keep``)."""
    return [1.0 - keep ** (t / rounds) for t in range(1, rounds + 1)]


def objective_images(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``m`` training images the objective is computed on, drawn once per seed (never the test set)."""
    train = run.dataset().train
    m = min(Search.model_validate(run.config["search"]).batch_size, len(train))
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(run.seed))[:m]
    return train.x[idx], train.y[idx]


def fine_prune(run: Run, dense: nn.Module, keep: float, optimize: bool = True,
               stage: str = "") -> tuple[nn.Module, Masks, float]:
    """Fine-pruning: ``rounds`` steps, each choosing the pruning parameters (by Bayesian optimization, or
    ``θ = 1`` for every layer) at the step's sparsity and fine-tuning the survivors. Returns the model,
    its masks and the first step's objective gain of the optimized ``θ`` over ``θ = 1``."""
    cfg = run.config
    search = Search.model_validate(cfg["search"])
    model = controls.trainable_copy(dense)
    x, y = (t.to(next(model.parameters()).device) for t in objective_images(run))
    rng = np.random.default_rng(run.seed)
    dim = len(prunable(model))
    masks: Masks | None = None
    gain = math.nan
    run.reseed("tung2017 finetune")  # every fine-pruning of a seed sees the same minibatches
    for t, s in enumerate(sparsity_schedule(keep, cfg["rounds"]), start=1):
        ones = np.ones(dim)
        if optimize:
            def f(log_theta: np.ndarray, s: float = s, prev: Masks | None = masks) -> float:
                return objective(model, masks_for(model, np.exp(log_theta), s, prev), x, y)

            best, value, _ = bayesian_optimization(f, dim, search, rng)
            theta = np.exp(best)
            if t == 1:
                gain = value - objective(model, masks_for(model, ones, s, masks), x, y)
        else:
            theta = ones
        masks = masks_for(model, theta, s, masks)
        retrain_with_masks(run, model, masks, run.train_config("finetune"), desc=f"{stage} step {t}")
    assert masks is not None
    return model.eval(), masks, gain


def train_dense(run: Run) -> nn.Module:
    """The pre-trained network, once for every seed (cached)."""
    cfg = run.train_config("dense")

    def fit(model: nn.Module) -> None:
        run.reseed("tung2017 dense data", seed=0)
        run.train(model, run.dataset().train, cfg, desc="pre-trained")

    return run.cached_model("tung2017-dense", {"model": run.config["model"], "train": cfg.model_dump()},
                            build=lambda: run.model(run.config["model"]), fit=fit, per_seed=False)


@reproduction("tung2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = run.config
    data = run.dataset()
    dense = train_dense(run)
    total = run.train_config("finetune", steps=cfg["rounds"] * cfg["finetune"]["steps"])

    base = controls.trainable_copy(dense)
    run.reseed("tung2017 finetune")
    run.train(base, data.train, total, desc="dense, fine-tuned")
    base_acc = run.accuracy(base.eval(), data.test)

    curve: dict[float, float] = {}
    claim: tuple[nn.Module, Masks, float, float] | None = None
    for keep in cfg["curve_keep"]:
        model, masks, gain = fine_prune(run, dense, keep, stage=f"fine-pruning keep {keep:g}")
        acc = run.accuracy(model, data.test)
        curve[round(controls.compression_ratio(model), 2)] = acc
        if keep == cfg["keep"]:
            claim = (model, masks, gain, acc)
    assert claim is not None, "curve_keep must hold keep"
    model, masks, gain, acc = claim
    fixed, _, _ = fine_prune(run, dense, cfg["keep"], optimize=False, stage="fixed θ")
    fixed_acc = run.accuracy(fixed, data.test)
    control = controls.pruning_curve(run, dense, sorted(curve), total)
    ratio = round(controls.compression_ratio(model), 2)
    metrics = {
        "dense_accuracy": run.accuracy(dense, data.test), "baseline_accuracy": base_acc, "accuracy": acc,
        "accuracy_change_pp": acc - base_acc,
        "fixed_accuracy": fixed_acc, "gain_over_fixed_pp": acc - fixed_acc,
        "prune_once_accuracy": control.points[ratio], "gain_over_prune_once_pp": acc - control.points[ratio],
        "bo_gain_pp": gain,
        **measure.compression_metrics(dense, model, data.input_shape, csr_parts(model, masks)),
        **kept_percent(model),
    }
    run.record(
        CLAIM, model=f"{cfg['model']}, fine-pruned", metrics=metrics, baseline=(cfg["model"], "baseline_accuracy"),
        baseline_spec={}, diagnosis=DIAGNOSIS,
        curves=[controls.Series("fine-pruning (Tung et al.)", controls.RATIO, controls.ACCURACY, curve), control],
        differs=f"{data.name}, {cfg['model']} pre-trained and fine-tuned on the same data set (not a new domain); "
                f"{cfg['rounds']} fine-pruning steps of {cfg['finetune']['steps']} fine-tuning steps to {cfg['keep']:g} "
                f"of the weights, the sparsity of each step fixed and the Bayesian optimization choosing the per-layer "
                f"pruning parameters at it; the baseline, the fixed-θ run and the control get the same {total.steps} steps",
        notes="fixed θ: every layer's pruning parameter 1 (one threshold in units of each layer's std), no optimization; "
              "prune once: the control's global magnitude pruning at the claim's ratio, then masked fine-tuning",
    )
