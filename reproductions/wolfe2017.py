"""The Incredible Shrinking Neural Network: New Perspectives on Learning Representations Through The Lens
of Pruning (Wolfe, Sharma, Drude & Raj, arXiv preprint 2017; arXiv:1701.04465).

Method (Sec. 2 of the authors' ICLR 2017 submission, whose LaTeX source is mirrored on GitHub,
aditya17a/ICLR2017): whole neurons of a trained network are removed, one at a time, without any
retraining. A neuron is turned off by setting its output ``O_k`` to 0, which removes its incoming and
outgoing weights. The change of the network's total squared error ``E`` on a validation set when
neuron ``k`` is turned off, ``Delta E_k``, ranks the neurons, by one of three criteria:

* *brute force* (the ground truth): ``Delta E_k`` measured, one forward pass with neuron ``k`` off;
* *first order* (Eq. 3 without its last term): ``Delta E^1_k = - sum_n O_kn dE/dO_kn``;
* *second order* (Eq. 3): ``Delta E^2_k = - sum_n O_kn dE/dO_kn + 1/2 sum_n O_kn^2 d^2E/dO_kn^2``,

the Taylor expansion of ``E`` around the neuron's output evaluated at ``O = 0``. With a gain ``a_k``
multiplying the neuron's output, these sums are ``-dE/da_k`` and ``d^2E/da_k^2`` at ``a = 1``, which is
how they are computed here (exactly, by forward-mode differentiation of the network in the gains,
batched over the neurons of a layer; the paper derives a second-order back-propagation in its
appendix). *Algorithm II (iterative
re-ranking)*: after each removal the remaining neurons are ranked again and the one of smallest
``Delta E_k`` is removed, until the stopping criterion (here a share of the neurons) is met. The
networks are fully-connected with logistic sigmoid units and 10 sigmoid outputs, trained on the squared
error.

Claims (Sec. 4 of the ICLR 2017 submission's ``results.tex``; arXiv:1701.04465's abstract: "there is a
straightforward way, however expensive, to serially prune 40-70% of the neurons in a trained network
with minimal effect on the learning representation and without any re-training"; arXiv version not
identified): on MNIST, with the brute-force criterion and iterative re-ranking, "almost 60% of the
neurons in the network can be pruned away without any major loss in performance" for one hidden layer
of 100 neurons (claim ``mnist-1-layer``), and "it is possible to remove up to 40% of the neurons with
no major loss in performance" for two hidden layers of 50 (claim ``mnist-2-layer``); and "the 2nd order
Taylor Series approximation of the error performs consistently better than its 1st order version"
(one hidden layer, iterative re-ranking; claim ``taylor-order``).

Measured here: for each network, the trained network's test accuracy (``baseline_accuracy``) and,
after the claim's share of its hidden neurons is removed by brute force with iterative re-ranking, the
smaller dense network's (``accuracy``, ``accuracy_change_pp``); ``neurons_removed``,
``param_compression`` / ``weight_compression``, ``flop_reduction`` (``torch.utils.flop_counter``), the
two dense models' CPU forward time ``dense_latency_ms`` / ``pruned_latency_ms`` / ``speedup`` (batch
64), the squared-error increase on the ranking set ``error_increase_pct``, and the same share removed
by the first- and second-order criteria (``first_order_accuracy``, ``second_order_accuracy``). Claim
``taylor-order``: ``second_over_first_order_pp`` (checked: at least 0) and
``brute_force_over_second_order_pp`` (recorded). The curve (claim ``mnist-1-layer``, whose neurons
all carry as many weights, so that a share of the neurons is the same compression on every seed):
brute force at three shares of the neurons, against the weight compression they reach, beside global magnitude pruning of the same
trained network at the same ratios without retraining (:func:`atlas.harness.controls.pruning_curve`
with no fine-tuning: the method retrains nothing either).

Harness differs: Fashion-MNIST (28x28) instead of a subset of MNIST (the paper's networks start at
99.8% and 100% "test accuracy"); the networks' training schedule (Adam, a few thousand steps) is
chosen, not read; the ranking set is the first ``rank_examples`` training images (the paper's
"validation set" is not described further); no mean or median thresholding of the second-order
estimates (Sec. 2.4 mentions it for steep parabolas); "without any major loss" is read as a test
accuracy change of at least -1 pp.

Quick verdict (a development run, one thread on a machine loaded about 19 deep, 43 s of user CPU):
inconclusive, close to the paper. Removing 60% of the one-layer network's neurons by brute force cost
1.1 pp (95% interval -1.8 to -0.4; the trained networks at 85.4%), 40% of the two-layer network's 1.1
pp (-1.9 to -0.3): the intervals straddle the -1 pp read as "no major loss". The second-order ranking
beat the first-order one on every seed, by 0.3 pp on average (interval -0.1 to +0.7), and came within
0.1 pp of brute force. Global magnitude pruning of as many weights, also without retraining, lost 0.9
pp at 2.5x. See ``DIAGNOSIS``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction

Criterion = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Network(Section):
    """One of the paper's networks and the share of its neurons its claim removes."""

    claim: str  # the claim id in papers.yaml
    hidden: list[PositiveInt] = Field(min_length=1)  # sigmoid units per hidden layer
    fraction: float = Field(gt=0, lt=1)  # the share of hidden neurons the claim removes
    curve: list[float] = Field(min_length=3)  # the shares of the curve (the claim's among them)

    @model_validator(mode="after")
    def _consistent(self) -> Network:
        if self.fraction not in self.curve or sorted(self.curve) != self.curve:
            raise ValueError("curve must increase and hold the claim's fraction")
        return self


class Config(Profile):
    networks: list[Network] = Field(min_length=1)
    train: TrainConfig  # each network's training on the squared error of its sigmoid outputs
    rank_examples: PositiveInt  # the images the errors and their derivatives are computed on
    order_claim: str = "taylor-order"  # the claim comparing the Taylor criteria (first network)


NETWORKS = [
    {"claim": "mnist-1-layer", "hidden": [100], "fraction": 0.6, "curve": [0.2, 0.4, 0.6]},
    {"claim": "mnist-2-layer", "hidden": [50, 50], "fraction": 0.4, "curve": [0.2, 0.3, 0.4]},
]
ADAM = {"optimizer": "adam", "lr": 0.003, "schedule": "cosine"}

PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "networks": NETWORKS,
              "train": {"steps": 150, "batch_size": 64, **ADAM}, "rank_examples": 200},
    # quick: 1,500 Adam steps of batch 100 for each network (2.5 passes over Fashion-MNIST), ranking on
    # 1,000 training images: 60 + 40 removals, each re-ranking all neurons left by three criteria.
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "networks": NETWORKS,
              "train": {"steps": 1500, "batch_size": 100, **ADAM}, "rank_examples": 1000},
    # MNIST, the paper's networks; 20 passes of batch 100 (the paper's schedule was not read) and
    # 10,000 ranking images.
    "paper": {"dataset": "mnist", "seeds": 3, "networks": NETWORKS,
              "train": {"steps": 12000, "batch_size": 100, **ADAM}, "rank_examples": 10000},
}


# ------------------------------------------------------------------------------------ the network
def sigmoid_mlp(inputs: int, hidden: list[int], outputs: int) -> nn.Sequential:
    """The paper's network: flatten, fully-connected layers with logistic sigmoid units, sigmoid outputs."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.Sigmoid()]
        width = h
    layers += [nn.Linear(width, outputs), nn.Sigmoid()]
    return nn.Sequential(*layers)


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def squared_error_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, _index: torch.Tensor) -> torch.Tensor:
    """The training loss: the squared error of the sigmoid outputs against one-hot targets (batch mean)."""
    out = model(x)
    return 0.5 * (out - F.one_hot(y, out.shape[1]).to(out.dtype)).pow(2).sum(1).mean()


@torch.no_grad()
def first_hidden(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The first hidden layer's outputs (they do not depend on any gain): computed once."""
    first = linears(model)[0]
    return torch.sigmoid(first(x.flatten(1)))


def gated_output(model: nn.Module, h1: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """The network's outputs with each hidden neuron's output multiplied by its gain (all hidden layers'
    gains concatenated in network order; a gain 0 turns the neuron off), from the first hidden layer's
    outputs ``h1``."""
    layers = linears(model)
    h, start = h1, 0
    for i, layer in enumerate(layers[1:]):
        width = layers[i].out_features
        h = h * gains[start:start + width]
        start += width
        h = torch.sigmoid(layer(h))
    return h


def total_error(model: nn.Module, h1: torch.Tensor, targets: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """``E``: the total squared error ``1/2 sum_n ||y_n - t_n||^2`` of the gated network."""
    return 0.5 * (gated_output(model, h1, gains) - targets).pow(2).sum()


# ----------------------------------------------------------------------------------- the criteria
def _layer_states(model: nn.Module, h1: torch.Tensor, gains: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per hidden layer, its (ungated) outputs ``h_l`` and its gains ``a_l``; and the output layer's
    outputs ``y`` last in the first list."""
    layers = linears(model)
    outs, gs, h, start = [], [], h1, 0
    for i, layer in enumerate(layers[1:]):
        width = layers[i].out_features
        a = gains[start:start + width]
        start += width
        outs.append(h)
        gs.append(a)
        h = torch.sigmoid(layer(h * a))
    outs.append(h)
    return outs, gs


def _propagate(model: nn.Module, outs: list[torch.Tensor], gs: list[torch.Tensor], first: int,
               dz: torch.Tensor, dz2: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Carry a change of the pre-activations of layer ``first + 1`` (shape ``K x N x width``, one slice
    per neuron) forward to the outputs. Without ``dz2``: the exact change (a finite perturbation, for
    brute force). With ``dz2``: first and second derivatives (forward-mode, ``s' = s(1-s) z'``,
    ``s'' = s(1-s)(1-2s) z'^2 + s(1-s) z''``)."""
    layers = linears(model)
    for m in range(first + 1, len(layers)):
        s = outs[m]  # the layer's outputs before the change
        if dz2 is None:
            z = torch.logit(s.clamp(1e-12, 1 - 1e-12))
            new = torch.sigmoid(z + dz)
            if m == len(layers) - 1:
                return new - s, None
            dz = ((new - s) * gs[m]) @ layers[m + 1].weight.T
        else:
            d1 = s * (1 - s)
            t1 = d1 * dz
            t2 = d1 * (1 - 2 * s) * dz.pow(2) + d1 * dz2
            if m == len(layers) - 1:
                return t1, t2
            dz, dz2 = (t1 * gs[m]) @ layers[m + 1].weight.T, (t2 * gs[m]) @ layers[m + 1].weight.T
    raise ValueError("the network has no output layer")


@torch.no_grad()
def brute_force(model: nn.Module, h1: torch.Tensor, targets: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """``Delta E_k`` measured: the error with neuron ``k`` also off minus the error now, for every neuron
    at once (one batched forward pass a hidden layer; inf for neurons already off)."""
    outs, gs = _layer_states(model, h1, gains)
    y, layers = outs[-1], linears(model)
    base = 0.5 * (y - targets).pow(2).sum()
    deltas = []
    for lay in range(len(gs)):
        g = outs[lay] * gs[lay]  # N x w: the gated outputs that turning a neuron off removes
        dz = -g.T[:, :, None] * layers[lay + 1].weight.T[:, None, :]  # K x N x w_next
        dy, _ = _propagate(model, outs, gs, lay, dz)
        deltas.append(0.5 * (y + dy - targets).pow(2).sum(dim=(1, 2)) - base)
    delta = torch.cat(deltas)
    return torch.where(gains > 0, delta, torch.full_like(delta, float("inf")))


@torch.no_grad()
def gain_derivatives(model: nn.Module, h1: torch.Tensor, targets: torch.Tensor,
                     gains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``dE/da_k`` and ``d^2E/da_k^2`` for every hidden neuron ``k``, exactly (forward-mode, one batched
    pass a hidden layer): ``sum (y - t) y'`` and ``sum (y'^2 + (y - t) y'')``."""
    outs, gs = _layer_states(model, h1, gains)
    y, layers = outs[-1], linears(model)
    first, second = [], []
    for lay in range(len(gs)):
        dz = outs[lay].T[:, :, None] * layers[lay + 1].weight.T[:, None, :]  # d z_next / d a_k
        d1, d2 = _propagate(model, outs, gs, lay, dz, torch.zeros_like(dz))
        first.append(((y - targets) * d1).sum(dim=(1, 2)))
        second.append((d1.pow(2) + (y - targets) * d2).sum(dim=(1, 2)))
    return torch.cat(first), torch.cat(second)


def taylor(order: int) -> Criterion:
    """``Delta E^1_k = -dE/da_k`` or ``Delta E^2_k = -dE/da_k + 1/2 d^2E/da_k^2`` at the current gains
    (a neuron still on has ``a_k = 1``, so these are Eq. 3's sums over the examples; inf for neurons
    already off)."""
    def criterion(model: nn.Module, h1: torch.Tensor, targets: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        d1, d2 = gain_derivatives(model, h1, targets, gains)
        delta = -d1 if order == 1 else -d1 + 0.5 * d2
        return torch.where(gains > 0, delta, torch.full_like(delta, float("inf")))
    return criterion


CRITERIA: dict[str, Criterion] = {"brute_force": brute_force, "first_order": taylor(1), "second_order": taylor(2)}


def iterative_rerank(model: nn.Module, h1: torch.Tensor, targets: torch.Tensor, criterion: Criterion,
                     n_remove: int) -> list[int]:
    """Algorithm II: ``n_remove`` times, rank the neurons still on by ``criterion`` and turn off the one
    of smallest ``Delta E``. Returns the neurons in the order they were removed."""
    gains = torch.ones(sum(layer.out_features for layer in linears(model)[:-1]), dtype=h1.dtype)
    order = []
    for _ in range(n_remove):
        k = int(torch.argmin(criterion(model, h1, targets, gains)))
        gains[k] = 0.0
        order.append(k)
    return order


@torch.no_grad()
def shrink(model: nn.Module, removed: list[int]) -> nn.Sequential:
    """The smaller dense network: the hidden neurons ``removed`` (indices over all hidden layers in
    network order) deleted with their incoming and outgoing weights."""
    layers = linears(model)
    drop = set(removed)
    keep, start = [], 0
    for layer in layers[:-1]:
        keep.append(torch.tensor([j for j in range(layer.out_features) if start + j not in drop], dtype=torch.long))
        start += layer.out_features
    small = sigmoid_mlp(layers[0].in_features, [len(k) for k in keep], layers[-1].out_features).to(layers[0].weight)
    inputs = torch.arange(layers[0].in_features)
    for old, new, rows in zip(layers, linears(small), [*keep, torch.arange(layers[-1].out_features)], strict=True):
        new.weight.copy_(old.weight[rows][:, inputs])
        new.bias.copy_(old.bias[rows])
        inputs = rows
    return small.eval()


#: Shown beside a failed check: what was tried and why the gap is believed to be the method's or the harness's.
DIAGNOSIS = """
The criteria follow Eq. 3 of the authors' ICLR 2017 submission (the second derivative computed
exactly by forward-mode differentiation instead of the appendix's second-order back-propagation, and
without the mean or median thresholding the paper mentions), and Algorithm II re-ranks after every
removal; the unit tests check the brute-force deltas against the measured error changes and the
smaller dense network, and the Taylor terms against automatic differentiation. In a development quick
run the brute-force removal of 60% (one layer) and 40% (two layers) of the neurons cost 1.1 pp on
average, with 95% intervals of -1.8 to -0.4 and -1.9 to -0.3 around the -1 pp threshold, and the
second-order ranking beat the first-order one on all three seeds by 0.1 to 0.4 pp (interval -0.1 to
+0.7). The paper's networks start at 99.8% and 100% accuracy on an MNIST subset, where more neurons
are redundant; on Fashion-MNIST the same networks reach about 85%, so a loss of about one point at the
paper's shares is a close match, not a gap the atlas attributes to the method.
"""


@reproduction("wolfe2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = run.config
    data = run.dataset()
    shape = data.input_shape
    inputs = int(torch.tensor(shape).prod())
    rank = data.train.subset(cfg["rank_examples"])
    differs = (f"{data.name} instead of an MNIST subset; {cfg['train']['steps']} Adam steps on the squared error "
               f"(the paper's schedule not read); ranking on the first {cfg['rank_examples']} training images; "
               "exact second derivatives, no thresholding")
    for i, net in enumerate(cfg["networks"]):
        model = sigmoid_mlp(inputs, net["hidden"], data.num_classes).to(run.device)
        run.reseed(f"wolfe2017 train {net['hidden']}")
        run.train(model, data.train, run.train_config("train"), desc=f"sigmoid MLP {net['hidden']}",
                  loss_fn=squared_error_loss)
        model.eval()
        base = run.accuracy(model, data.test)
        h1 = first_hidden(model, rank.x.to(run.device)).double()
        targets = F.one_hot(rank.y, data.num_classes).double().to(h1.device)
        dmodel = controls.trainable_copy(model).double()
        total = sum(net["hidden"])
        counts = {f: round(f * total) for f in net["curve"]}
        claim_count = counts[net["fraction"]]
        orders = {name: iterative_rerank(dmodel, h1, targets, fn, claim_count if name != "brute_force"
                                         else max(counts.values())) for name, fn in CRITERIA.items()}
        brute = orders["brute_force"]
        curve: dict[float, float] = {}
        if len(net["hidden"]) == 1:
            for n in counts.values():
                small = shrink(model, brute[:n])
                curve[round(_weights(model) / _weights(small), 2)] = run.accuracy(small, data.test)
        pruned = shrink(model, brute[:claim_count])
        acc = run.accuracy(pruned, data.test)
        others = {name: run.accuracy(shrink(model, order[:claim_count]), data.test)
                  for name, order in orders.items() if name != "brute_force"}
        ones = torch.ones(total, dtype=h1.dtype)
        off = ones.clone()
        off[brute[:claim_count]] = 0.0
        with torch.no_grad():
            e0 = float(total_error(dmodel, h1, targets, ones))
            e1 = float(total_error(dmodel, h1, targets, off))
        lat_dense = measure.latency_ms(model, shape, batch=64, repeats=10)
        lat_pruned = measure.latency_ms(pruned, shape, batch=64, repeats=10)
        label = f"sigmoid MLP {'-'.join(map(str, net['hidden']))}"
        run.record(
            net["claim"],
            model=f"{label}: {claim_count} of {total} hidden neurons removed by brute force, iterative re-ranking",
            metrics={
                **measure.accuracy_change(base, acc),
                "neurons_removed": claim_count,
                "neurons_removed_pct": 100.0 * claim_count / total,
                "params": measure.count_params(pruned),
                "param_compression": measure.count_params(model) / measure.count_params(pruned),
                "weight_compression": _weights(model) / _weights(pruned),
                "flop_reduction": measure.flops(model, shape) / measure.flops(pruned, shape),
                "dense_latency_ms": lat_dense, "pruned_latency_ms": lat_pruned, "speedup": lat_dense / lat_pruned,
                "error_increase_pct": 100.0 * (e1 - e0) / e0,
                "first_order_accuracy": others["first_order"],
                "second_order_accuracy": others["second_order"],
            },
            diagnosis=DIAGNOSIS,
            differs=differs + f"; {label} ({net['fraction']:.0%} of its neurons removed)",
            # the curve of the one-hidden-layer network, whose neurons all carry as many weights (a two-layer
            # network's compression at a share of its neurons depends on the layers they were taken from)
            curves=[
                controls.Series("brute-force neuron removal, iterative re-ranking (Wolfe et al.)", controls.RATIO,
                                controls.ACCURACY, curve),
                controls.pruning_curve(run, model, sorted(curve), None),
            ] if len(net["hidden"]) == 1 else [],
        )
        if i == 0:
            run.record(
                cfg["order_claim"],
                model=f"{label}: {claim_count} of {total} hidden neurons removed by each criterion, iterative re-ranking",
                metrics={
                    "baseline_accuracy": base,
                    "accuracy": others["second_order"],
                    "first_order_accuracy": others["first_order"],
                    "brute_force_accuracy": acc,
                    "second_over_first_order_pp": others["second_order"] - others["first_order"],
                    "brute_force_over_second_order_pp": acc - others["second_order"],
                },
                diagnosis=DIAGNOSIS,
                differs=differs + f"; {label}",
            )


def _weights(model: nn.Module) -> int:
    """The fully-connected weights of ``model``."""
    return sum(layer.weight.numel() for layer in linears(model))
