"""Weight Uncertainty in Neural Networks (Blundell, Cornebise, Kavukcuoglu & Wierstra, ICML 2015;
arXiv:1505.05424).

Method (Sec. 3, "Bayes by Backprop"): instead of one value per weight, learn a distribution over the
weights. The posterior is approximated by a diagonal Gaussian ``q(w | θ)``, ``θ = (μ, ρ)``, the
standard deviation kept positive by ``σ = log(1 + exp ρ)``. A weight is drawn by reparameterisation,

.. math:: w = μ + σ ∘ ε, \\qquad ε \\sim N(0, I),

so that an unbiased gradient of an expectation over ``q`` is the ordinary backpropagated gradient at
the sample (Prop. 1). The objective is the variational free energy (the negative ELBO),

.. math:: F(D, θ) = \\mathrm{KL}[q(w|θ) \\,\\|\\, P(w)] - E_{q(w|θ)}[\\log P(D|w)]
          \\approx \\log q(w|θ) - \\log P(w) - \\log P(D|w), \\quad w \\sim q(w|θ),

estimated with one sample per minibatch (Eq. 2): the complexity cost is the Monte Carlo difference of
log densities at the sample, not a closed form, since the prior is a **scale mixture** of two
zero-mean Gaussians (Eq. 7),

.. math:: P(w) = \\prod_j π N(w_j | 0, σ_1^2) + (1 - π) N(w_j | 0, σ_2^2), \\quad σ_1 > σ_2, σ_2 \\ll 1,

a heavy-tailed, spike-like prior (``-log σ_1 ∈ {0, 1, 2}``, ``-log σ_2 ∈ {6, 7, 8}``, ``π ∈ {1/4, 1/2,
3/4}`` searched in Sec. 5). **Minibatches** (Sec. 3.4): an epoch of ``M`` minibatches ``D_i`` minimises
``F_i = π_i KL[q || P] - E_q[log P(D_i | w)]`` with ``Σ_i π_i = 1``: uniformly ``π_i = 1/M`` (Eq. 8), or,
as the paper found to work well, ``π_i = 2^{M-i} / (2^M - 1)`` (Eq. 9): the first minibatches of an
epoch are shaped by the prior, the later ones by the data (``kl_weighting: graded``, the default;
``uniform`` the other). Every weight and bias of the network is Bayesian.

**Pruning by signal-to-noise ratio** (Sec. 5.1, the survey lists the paper under pruning for it):
after training, each weight's signal-to-noise ratio ``|μ_i| / σ_i`` is computed and the weights of the
lowest ratio are removed (set to zero), one threshold over the whole network, without retraining;
the network is then run with its mean weights ``μ``. The paper reports (Table 2, 1200 units per layer,
2.4M weights) that most of the weights can be removed this way with the test error nearly unchanged;
its removed fractions are 50%, 75%, 95% and 98%.

Claims: ``mnist-vs-dropout`` (Abstract): Bayes by Backprop's regularisation "yields comparable
performance to dropout on MNIST classification", measured as ``gain_over_dropout_pp`` (BBB's accuracy
minus that of the same network trained with dropout 0.5 for the same steps, per seed).
``mnist-snr-pruning`` (Table 2): the test error after removing the weights of lowest SNR, against the
same unpruned BBB network. The table's error values could not be read here (only the abstract was
reachable; the removed fractions 50/75/95/98% were confirmed in a public re-implementation's pruning
script, not in the paper's text), so the claim is unconfirmed and unchecked: the record carries its
quantities (``accuracy_change_pp`` at 95% removed, the curve) for when the table is read.

Measured: ``baseline_accuracy`` (the unpruned BBB network, mean weights: the declared baseline of the
pruning claim), ``accuracy`` / ``accuracy_change_pp`` (SNR pruning at ``claim_removed``),
``param_compression`` (biases counted), ``weight_ratio`` (weights over kept weights), ``flop_reduction``,
``magnitude_accuracy`` / ``gain_over_magnitude_pp`` (the same network's means pruned by ``|μ|`` alone, the
same number of weights), ``removed_pct_within_1pp`` (the largest curve fraction within 1 pp), ``sigma_median``;
for ``mnist-vs-dropout``: ``bbb_accuracy``, ``dropout_accuracy``, ``gain_over_dropout_pp``.
Curve: SNR pruning at the paper's four fractions (ratios 2x, 4x, 20x, 50x), no retraining, beside the
shared control, global magnitude pruning of the same network's mean weights, also without
retraining (:func:`atlas.harness.controls.pruning_curve` with ``finetune=None``): neither gets any step
after Bayes by Backprop's training, so the curves differ by the ranking alone (``|μ|/σ`` against ``|μ|``).

Harness differs: Fashion-MNIST (quick) and the 8x8 digits (smoke) instead of MNIST; the quick network
has two hidden layers of 400 ReLU units (the paper's smallest width; Table 2 uses 1200, the paper
profile's); inputs are the harness's normalised pixels, not pixels divided by 126; Adam with a cosine
schedule for a step budget (the paper uses SGD and trains far longer); the prior is one point of the
paper's grid (``π = 1/2``, ``σ_1 = e^0``, ``σ_2 = e^-6``), not searched; ``ρ`` starts at ``-5`` (``σ ≈ 0.007``;
the paper does not say) and ``μ`` at the harness's initialisation. The test accuracy uses the posterior
mean weights (one deterministic pass), not an average over samples. Eq. 9's ``M`` is the number of
minibatches in a pass over the training set, so the weighting (like the ELBO's KL term itself) depends
on the training-set size; the budget is still in steps.

Quick (Fashion-MNIST, 3 seeds, 500 steps, uniform weighting): Bayes by Backprop's mean network
reaches 84.3%, the dropout network 84.4% (``gain_over_dropout_pp`` -0.14, 95% interval [-0.60, 0.33]:
comparable). Pruning by SNR without retraining keeps the accuracy within 1 pp up to 75% of the
weights removed (4x) but loses 15-26 pp at 95% (20x) and ~45 pp at 98%, where magnitude pruning of
the same means loses 4-6 pp more (SNR beats the control at 20x and 50x, ties it at 2x and 4x). In 500
Adam steps ``σ`` moves little from its initial 0.0067 (median 0.006), so ``|μ|/σ`` is mostly ``|μ|``:
the paper's nearly unchanged error at 95% removed comes after training to convergence, where the
posterior's variances are learnt; the quick budget cannot test that, and the claim is unchecked.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn
from torch.nn import functional as F

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction


class Prior(Section):
    """The scale-mixture prior (Eq. 7): ``π N(0, σ_1²) + (1 - π) N(0, σ_2²)``."""

    pi: float = Field(gt=0, le=1)  # mixture weight of the wide component (grid 1/4, 1/2, 3/4)
    neg_log_sigma1: float  # -log σ_1 (grid 0, 1, 2)
    neg_log_sigma2: float  # -log σ_2 (grid 6, 7, 8)


class Config(Profile):
    hidden: list[PositiveInt]  # the two hidden layers' widths (Sec. 5.1: 400, 800 or 1200 ReLU units)
    bbb: TrainConfig  # Bayes by Backprop's training (the steps every model here gets)
    prior: Prior
    rho_init: float = -5.0  # initial ρ of every weight (σ = softplus(ρ)); not stated in the paper
    kl_weighting: Literal["graded", "uniform"] = "graded"  # Eq. 9 (graded) or Eq. 8 (uniform)
    dropout: float = Field(default=0.5, ge=0, lt=1)  # the dropout network of the abstract's comparison
    removed: list[float]  # fractions of the weights removed by SNR (Table 2: 0.5, 0.75, 0.95, 0.98)
    claim_removed: float = Field(gt=0, lt=1)  # the claim's point among them (0.95)


# The prior: one point of the paper's grid (Sec. 5), not searched here.
PRIOR = {"pi": 0.5, "neg_log_sigma1": 0.0, "neg_log_sigma2": 6.0}
# Table 2's removed fractions.
REMOVED = [0.5, 0.75, 0.95, 0.98]


def _adam(steps: int, lr: float, batch_size: int) -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "adam", "schedule": "cosine"}


PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "hidden": [64, 64], "bbb": _adam(150, 3e-3, 64),
              "prior": PRIOR, "removed": REMOVED, "claim_removed": 0.95},
    # Eq. 8's uniform weighting: in quick's 1.1 passes Eq. 9 would put the complexity cost on about
    # ten minibatches (π_i = 2^-i), and σ stayed at its initial value (a probe, seed 0, 600 steps:
    # median σ 0.0068 graded, SNR pruning = magnitude pruning); uniform lets the prior act every step.
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "hidden": [400, 400], "bbb": _adam(500, 1e-3, 128),
              "prior": PRIOR, "removed": REMOVED, "claim_removed": 0.95, "kl_weighting": "uniform"},
    # Sec. 5.1 / Table 2: MNIST, two hidden layers of 1200 ReLU units (2.4M weights). The paper's
    # number of epochs was not read; 100 passes of 60,000 at batch 128.
    "paper": {"dataset": "mnist", "seeds": 3, "hidden": [1200, 1200], "bbb": _adam(46_875, 1e-3, 128),
              "prior": PRIOR, "removed": REMOVED, "claim_removed": 0.95},
}


# ----------------------------------------------------------------------------- the variational layer
class ScaleMixturePrior:
    """``log P(w)`` of the scale-mixture prior (Eq. 7), summed over the elements of ``w``."""

    def __init__(self, pi: float, sigma1: float, sigma2: float) -> None:
        self.pi, self.sigma1, self.sigma2 = pi, sigma1, sigma2

    @classmethod
    def of(cls, prior: Prior | dict) -> ScaleMixturePrior:
        p = Prior.model_validate(prior)
        return cls(p.pi, math.exp(-p.neg_log_sigma1), math.exp(-p.neg_log_sigma2))

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        """``Σ_j log(π N(w_j|0,σ_1²) + (1-π) N(w_j|0,σ_2²))``, the two log terms combined by
        ``logaddexp`` (stable where one component underflows)."""
        sq = w.square()

        def log_component(weight: float, sigma: float) -> torch.Tensor:
            return (math.log(weight) - 0.5 * math.log(2 * math.pi) - math.log(sigma)) - sq * (0.5 / sigma**2)

        if self.pi >= 1.0:
            return log_component(1.0, self.sigma1).sum()
        return torch.logaddexp(log_component(self.pi, self.sigma1), log_component(1.0 - self.pi, self.sigma2)).sum()


def gaussian_log_prob(eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``log q(w | μ, σ)`` summed, at ``w = μ + σ ε``: ``Σ -½ log 2π - log σ - ½ ε²``. Written in ``ε`` it
    has the estimator's total derivative (Eq. 3-4: through ``w`` and through ``θ`` the ``μ`` terms cancel,
    leaving ``-∂ log σ``) with one full-size pass fewer than ``(w - μ) / σ``."""
    return -0.5 * math.log(2 * math.pi) * eps.numel() - sigma.log().sum() - 0.5 * eps.square().sum()


class BayesLinear(nn.Module):
    """A fully-connected layer whose weights and biases are independent Gaussians ``N(μ, σ²)``,
    ``σ = softplus(ρ)``. In training mode every forward pass draws ``w = μ + σ ε`` (one sample per
    minibatch) and keeps ``log q(w)`` and ``log P(w)`` of that sample in ``log_q`` / ``log_prior``; in
    evaluation mode it uses the means."""

    def __init__(self, linear: nn.Linear, prior: ScaleMixturePrior, rho_init: float) -> None:
        super().__init__()
        self.prior = prior
        self.weight_mu = nn.Parameter(linear.weight.detach().clone())
        self.weight_rho = nn.Parameter(torch.full_like(linear.weight, rho_init))
        self.bias_mu = nn.Parameter(linear.bias.detach().clone())
        self.bias_rho = nn.Parameter(torch.full_like(linear.bias, rho_init))
        self.log_q = torch.zeros(())
        self.log_prior = torch.zeros(())

    @property
    def weight_sigma(self) -> torch.Tensor:
        return F.softplus(self.weight_rho)

    @property
    def bias_sigma(self) -> torch.Tensor:
        return F.softplus(self.bias_rho)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.weight_mu, self.bias_mu)
        w_sigma, b_sigma = self.weight_sigma, self.bias_sigma
        eps_w, eps_b = torch.randn_like(w_sigma), torch.randn_like(b_sigma)
        w = self.weight_mu + w_sigma * eps_w
        b = self.bias_mu + b_sigma * eps_b
        self.log_q = gaussian_log_prob(eps_w, w_sigma) + gaussian_log_prob(eps_b, b_sigma)
        self.log_prior = self.prior.log_prob(w) + self.prior.log_prob(b)
        return F.linear(x, w, b)


def bayesian(model: nn.Module, prior: ScaleMixturePrior, rho_init: float) -> nn.Module:
    """``model`` (in place) with every ``nn.Linear`` replaced by a :class:`BayesLinear` whose means
    start at the layer's weights."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, BayesLinear(module, prior, rho_init))
    return model


def bayes_layers(model: nn.Module) -> list[tuple[str, BayesLinear]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BayesLinear)]


def complexity_cost(model: nn.Module) -> torch.Tensor:
    """``log q(w|θ) - log P(w)`` at the weights drawn by the last forward pass: the one-sample
    estimate of ``KL[q(w|θ) || P(w)]``."""
    return sum((m.log_q - m.log_prior for _, m in bayes_layers(model)), torch.zeros(()))


def kl_weight(i: int, m: int, weighting: str) -> float:
    """``π_i`` of minibatch ``i`` (1-based) of an epoch of ``m``: Eq. 9, ``2^{M-i} / (2^M - 1)``
    (computed as ``2^{-i} / (1 - 2^{-M})``), or Eq. 8's uniform ``1/M``."""
    if not 1 <= i <= m:
        raise ValueError(f"minibatch {i} is not in 1..{m}")
    if weighting == "uniform":
        return 1.0 / m
    if weighting == "graded":
        return 2.0 ** (-i) / -math.expm1(-m * math.log(2.0))
    raise ValueError(f"unknown KL weighting '{weighting}'")


def free_energy_loss(n_train: int, batch_size: int, weighting: str):
    """The minibatch free energy ``F_i = π_i (log q(w|θ) - log P(w)) - log P(D_i | w)`` (one sample
    ``w`` per minibatch), divided by the minibatch's size; ``i`` counts the minibatches of the current
    pass over the training set, as the training loop draws them."""
    m = max(1, math.ceil(n_train / batch_size))
    seen = [0]

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        i = seen[0] % m + 1
        seen[0] += 1
        nll = F.cross_entropy(model(x), y, reduction="sum")
        return (kl_weight(i, m, weighting) * complexity_cost(model) + nll) / x.shape[0]

    return loss


# ------------------------------------------------------------------------------ the mean network
def mean_network(bayes: nn.Module, plain: nn.Module) -> nn.Module:
    """``plain`` (the same architecture with ``nn.Linear`` layers) with the posterior means as weights."""
    with torch.no_grad():
        for name, layer in bayes_layers(bayes):
            target = plain.get_submodule(name)
            target.weight.copy_(layer.weight_mu)
            target.bias.copy_(layer.bias_mu)
    return plain.eval()


def signal_to_noise(bayes: nn.Module) -> dict[str, torch.Tensor]:
    """``|μ| / σ`` of every weight (not biases), keyed by the mean network's weight name."""
    return {f"{name}.weight": (layer.weight_mu.detach().abs() / layer.weight_sigma.detach())
            for name, layer in bayes_layers(bayes)}


def snr_masks(snr: dict[str, torch.Tensor], removed: float) -> dict[str, torch.Tensor]:
    """Masks keeping the ``round(n (1 - removed))`` weights of highest signal-to-noise ratio over the
    whole network (one threshold), as the control keeps ``round(n / ratio)`` of largest ``|w|``."""
    flat = torch.cat([s.flatten() for s in snr.values()])
    k = max(1, min(flat.numel(), round(flat.numel() * (1.0 - removed))))
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat, k, sorted=False).indices] = True
    masks, start = {}, 0
    for name, s in snr.items():
        masks[name] = keep[start : start + s.numel()].view_as(s)
        start += s.numel()
    return masks


def prune_by_snr(bayes: nn.Module, mean: nn.Module, removed: float) -> nn.Module:
    """A copy of the mean network with the ``removed`` fraction of its weights of lowest SNR zeroed."""
    pruned = controls.trainable_copy(mean)
    params = dict(pruned.named_parameters())
    with torch.no_grad():
        for name, mask in snr_masks(signal_to_noise(bayes), removed).items():
            params[name].mul_(mask.to(params[name].dtype))
    return pruned.eval()


def removed_to_ratio(removed: float) -> float:
    """The compression ratio (weights over kept weights) of removing a fraction of them."""
    return round(1.0 / (1.0 - removed), 2)


# ----------------------------------------------------------------------------------- the models
def plain_network(run: Run, dropout: float = 0.0) -> nn.Module:
    kwargs = {"hidden": tuple(run.config["hidden"])} | ({"dropout": dropout} if dropout else {})
    return run.model("mlp", **kwargs)


def train_bbb(run: Run) -> nn.Module:
    """The Bayes by Backprop network, one per seed (cached)."""
    cfg = Config.model_validate(run.config)
    prior = ScaleMixturePrior.of(cfg.prior)
    data = run.dataset()

    def fit(model: nn.Module) -> None:
        loss = free_energy_loss(len(data.train), cfg.bbb.batch_size, cfg.kl_weighting)
        run.train(model, data.train, cfg.bbb, desc="bayes by backprop", loss_fn=loss)

    spec = {"hidden": cfg.hidden, "bbb": cfg.bbb.model_dump(), "prior": cfg.prior.model_dump(),
            "rho_init": cfg.rho_init, "kl_weighting": cfg.kl_weighting}
    return run.cached_model("blundell2015-bbb", spec, build=lambda: bayesian(plain_network(run), prior, cfg.rho_init),
                            fit=fit)


def train_dropout(run: Run) -> nn.Module:
    """The same network trained with dropout for the same steps (the abstract's comparison; cached)."""
    cfg = Config.model_validate(run.config)
    spec = {"hidden": cfg.hidden, "train": cfg.bbb.model_dump(), "dropout": cfg.dropout}
    return run.cached_model("blundell2015-dropout", spec, build=lambda: plain_network(run, cfg.dropout),
                            fit=lambda m: run.train(m, run.dataset().train, cfg.bbb, desc="dropout"))


@reproduction("blundell2015", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    data = run.dataset()
    bbb = train_bbb(run)
    mean = mean_network(bbb, plain_network(run))
    base = run.accuracy(mean, data.test)
    shape = data.input_shape
    widths = "-".join(str(h) for h in cfg.hidden)
    differs = (f"{data.name} instead of MNIST; {widths} ReLU MLP; {cfg.bbb.steps} Adam steps (cosine); prior "
               f"π={cfg.prior.pi:g}, -log σ1={cfg.prior.neg_log_sigma1:g}, -log σ2={cfg.prior.neg_log_sigma2:g} "
               f"(one point of the paper's grid, not searched); {cfg.kl_weighting} KL weighting; mean weights at test")

    dropout = train_dropout(run)
    acc_dropout = run.accuracy(dropout, data.test)
    run.record(
        "mnist-vs-dropout", model=f"mlp {widths}",
        metrics={"bbb_accuracy": base, "dropout_accuracy": acc_dropout, "gain_over_dropout_pp": base - acc_dropout},
        baseline=("mlp", "dropout_accuracy"), baseline_spec={"hidden": cfg.hidden, "dropout": cfg.dropout},
        differs=differs + f"; dropout {cfg.dropout:g} on the hidden layers, the same steps and optimizer",
    )

    method = {}
    for removed in cfg.removed:
        method[removed_to_ratio(removed)] = run.accuracy(prune_by_snr(bbb, mean, removed), data.test)
    pruned = prune_by_snr(bbb, mean, cfg.claim_removed)
    acc = run.accuracy(pruned, data.test)
    ratio = controls.compression_ratio(pruned)
    magnitude = controls.global_magnitude_prune(run, mean, ratio, None)
    acc_magnitude = run.accuracy(magnitude, data.test)
    within = max((r for r in cfg.removed if method[removed_to_ratio(r)] - base >= -1.0), default=0.0)
    sigmas = torch.cat([m.weight_sigma.detach().flatten() for _, m in bayes_layers(bbb)])
    size = measure.compression_metrics(mean, pruned, shape)
    run.record(
        "mnist-snr-pruning", model=f"mlp {widths}, {cfg.claim_removed:.0%} of the weights removed by |μ|/σ",
        metrics={
            "baseline_accuracy": base,
            **measure.accuracy_change(base, acc),
            "param_compression": size["param_compression"],
            "flop_reduction": size["flop_reduction"],
            "weight_ratio": ratio,
            "magnitude_accuracy": acc_magnitude,
            "gain_over_magnitude_pp": acc - acc_magnitude,
            "removed_pct_within_1pp": 100.0 * within,
            "sigma_median": float(sigmas.median()),
        },
        baseline=("mlp", "baseline_accuracy"), baseline_spec={"hidden": cfg.hidden},
        differs=differs + "; pruned without retraining, as the paper",
        curves=[controls.Series("signal-to-noise pruning (Bayes by Backprop)", controls.RATIO, controls.ACCURACY,
                                method),
                controls.pruning_curve(run, mean, sorted(method), None)],
    )
