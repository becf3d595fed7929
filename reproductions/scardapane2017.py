"""Group Sparse Regularization for Deep Neural Networks (Scardapane, Comminiello, Hussain & Uncini,
Neurocomputing 241, 2017; arXiv:1607.00485).

Method: a fully-connected network is trained once with a regulariser that makes whole *units*
disappear, so that the number of neurons of every hidden layer and the subset of input features are
chosen by the same training that fits the weights. Each group is the set of *outgoing* weights of
one unit: of an input feature (the column of the first layer's weights), of a hidden neuron (its
column in the next layer) or of a layer's bias unit (that layer's bias vector). With ``G`` the set of
groups and ``|g|`` a group's size, the group Lasso and the sparse group Lasso are

    R_GL(w) = sum_{g in G} sqrt(|g|) ||g||_2 ,      R_SGL(w) = R_GL(w) + ||w||_1 ,

and the network minimises ``(1/N) sum_i L(y_i, f(x_i; w)) + lambda R(w)``. A group driven to zero
removes its unit: an input feature nobody reads is dropped (feature selection), a neuron whose
outgoing weights are all zero is dropped together with its incoming weights. The ``l1`` term of the
sparse group Lasso also zeroes single weights inside the surviving groups. The paper compares the
two with weight decay (``lambda ||w||_2^2``) and the Lasso (``lambda ||w||_1``) at the same
``lambda``.

Claim (Abstract, arXiv:1607.00485): the sparse group Lasso "is able to achieve competitive
performances, while at the same time resulting in extremely compact networks with a smaller number
of input features" (the journal's abstract: "a classification accuracy which is equal or only
slightly inferior to standard regularization terms"). The paper's tables (per data set: accuracy,
neurons and features kept, for weight decay, Lasso, group Lasso and sparse group Lasso on DIGITS,
MNIST and several UCI benchmarks) could not be read where this file was written: their numbers are not
in the catalogue, and the checked reading of the abstract is that the sparse-group-Lasso network
loses at most 1 pp of test accuracy against the same network trained with weight decay for the same
steps (``accuracy_change_pp``, claim ``sgl-compact-competitive``).

Measured: ``baseline_accuracy`` (weight decay, the declared baseline), ``accuracy`` and
``accuracy_change_pp`` of the sparse-group-Lasso network; how compact it is: ``inputs_kept`` and
``hidden<k>_kept`` (units whose outgoing group is not zero), ``weight_sparsity`` (fraction of the
layer weights that are zero), ``param_compression`` (the weight-decay network's parameters over the
non-zero parameters of the smaller network), and the smaller dense network the surviving units make
(:func:`compact`, exact): ``flop_reduction`` and ``speedup`` (``measure.flops``; real CPU latency of a
forward pass of 64 examples, ``measure.latency_ms``, against the weight-decay network, in the same
run), ``removal_exact``. Every other penalty of the profile's ``others`` (group Lasso ``gl``, Lasso
``l1``) is trained too and records ``<penalty>_accuracy``, ``<penalty>_inputs_kept`` and
``<penalty>_hidden<k>_kept``. The curve: the sparse-group-Lasso network pruned after training by
global weight magnitude to each ``curve_ratios`` level (its own zeros kept), beside the shared
control, the weight-decay network pruned the same way (:func:`atlas.harness.controls.pruning_curve`,
no retraining: both networks have had the same steps), so the curve shows whether training with the
penalty leaves a network that survives pruning better than weight decay.

Zero: a weight counts as zero when its magnitude is below ``zero_below`` after training (the
sub-gradient steps of the penalties make weights oscillate around zero rather than land on it); those
weights are set to zero before anything is measured. The authors' released Theano/Lasagne script
(the code the ispamm group-Lasso demo's README names as the paper's; read here) counts a weight as
zero when it rounds to 0 at three decimals (|w| < 5e-4) and tests the network without zeroing; it
trains every penalty with Adam (Lasagne's defaults, learning rate 1e-3), ``lambda = 10^-3.5`` (about
3.2e-4) for all four penalties, a 40-20 leaky-ReLU network on DIGITS for 1,500 epochs of batch 300,
and penalises the weights only (Lasagne's ``regularize_network_params`` leaves biases out; the README:
"in the code we do not regularize biases"). ``mode: code`` does the same; ``mode: paper`` (the
default) keeps the paper's bias-unit groups. Zeroing is not what costs accuracy here: on the
validation split (seed 1001) the network's accuracy before and after zeroing at 5e-4 or 1e-3 differs
by at most 0.1 pp (lambda 1e-4 and 3e-4, SGD and Adam), and the hidden neurons kept differ by at most
one between the two thresholds (the inputs kept do depend on it: 784 against 743 at lambda 1e-4).

Harness differs: Fashion-MNIST (quick) and the 8x8 digits (smoke; the paper's DIGITS toy set is
scikit-learn's 8x8 digits) instead of the paper's data sets; the harness's one-hidden-layer MLP
784-128-10 with ReLU (quick; LeNet-300-100 in the smoke and paper profiles) instead of the paper's
networks; 2,500 steps of SGD with momentum and a cosine schedule (the learning rate decays to zero, so
the penalties' oscillating weights settle below the zero threshold) instead of the code's Adam, because
Adam, swept on this harness, removed fewer neurons for the same accuracy loss (below); the baseline is
the optimizer's weight decay 1e-4 rather than the code's ``10^-3.5 ||w||^2``. ``lambda`` = 3e-4 is
the released code's ``10^-3.5`` (rounded); it is also what a sweep on the validation split (the
training set's last 10,000 examples, seeds 1000-1001, never the published seeds) picks as the smallest
value of the grid 3e-5, 1e-4, 3e-4 that removes at least half of the hidden neurons:

    lambda  optimizer  hidden kept (of 128)  inputs kept (of 784)  param. compression  accuracy change
    3e-5    SGD        128, 128              784, 784              1.4x, 1.4x          -0.2, -0.1 pp
    1e-4    SGD        92, 97                736, 743              3.4x, 3.3x          -1.4, -1.3 pp
    3e-4    SGD        24, 35                685, 673              10.6x, 9.4x         -4.2, -4.1 pp
    3e-5    Adam       120                   784                   1.35x               -0.5 pp
    1e-4    Adam       119                   778                   2.3x                -2.0 pp
    3e-4    Adam       112                   718                   4.2x                -4.6 pp

(two values: seeds 1000 and 1001; Adam, learning rate 1e-3, seed 1000, against a baseline trained with
Adam and the same weight decay; on seed 1001 Adam kept 118 and 110 neurons at 1e-4 and 3e-4, with
86.6% and 84.0% validation accuracy where SGD's weight-decay network has 89.1%). No ``lambda`` of the grid, nor of
the code, gives a drastic reduction of neurons within 1 pp: the accuracy falls faster than the neurons.
The quick profile trains the weight-decay and sparse-group-Lasso networks only (the group Lasso and
the Lasso are in the smoke and paper profiles: time).

Quick verdict: not reproduced, and why (seeds 0-2; baseline 88.5%, 0.4 pp below its reference). The
sparse-group-Lasso network is compact (27-37 of 128 hidden neurons and 681-699 of 784 inputs keep an
outgoing group, 88-90% of the weights zero, 8.6-10.4x fewer non-zero parameters than the weight-decay
network) but 4.2 pp less accurate (95% interval -4.58 to -3.86 against the check's -1): competitive
and compact are not had together here. Its curve beats the control: pruned to 10x and 20x by weight
magnitude it keeps 84.1-84.4% and 83.8-84.1%, where the weight-decay network pruned the same way
without retraining falls to 72-82% and 51-67%. The smaller dense network's measured CPU speed-up is
0.90-0.94x (the gather of the kept inputs costs more than the rows it saves at this size), its FLOPs
3.9-5.3x fewer. See ``DIAGNOSIS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import NonNegativeFloat, PositiveFloat
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction

Penalty = Literal["wd", "l1", "gl", "sgl"]


class Config(Profile):
    model: Literal["lenet-300-100", "mlp"]  # the harness model
    hidden: list[int] | None = None  # the MLP's hidden widths ("mlp" only)
    train: TrainConfig  # every network, from scratch, with its penalty (the same steps for all)
    strength: PositiveFloat  # lambda of the group penalties and of the Lasso
    weight_decay: NonNegativeFloat  # lambda of the weight-decay network (the baseline; the optimizer's)
    zero_below: NonNegativeFloat = 1e-3  # |w| below this counts (and is set) as zero after training
    others: list[Literal["gl", "l1"]] = []  # penalties trained besides weight decay and SGL
    curve_ratios: list[PositiveFloat]  # global magnitude pruning levels of the curve
    # paper: the bias units' groups are penalised too (Section 3); code: the authors' Lasagne script
    # penalises the weights only (regularize_network_params skips biases)
    mode: Literal["paper", "code"] = "paper"


PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "model": "lenet-300-100",  # and the group Lasso and the Lasso
        "train": {"steps": 150, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "schedule": "cosine"},
        "strength": 1e-3, "weight_decay": 1e-4, "others": ["gl", "l1"], "curve_ratios": [2.0, 5.0, 10.0],
    },
    "quick": {
        # per seed two networks of 2,500 steps (weight decay and sparse group Lasso), 784-128-10
        "dataset": "fashion-mnist", "seeds": 3, "model": "mlp", "hidden": [128],
        "train": {"steps": 2500, "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "schedule": "cosine"},
        "strength": 3e-4, "weight_decay": 1e-4, "curve_ratios": [5.0, 10.0, 20.0],
    },
    "paper": {
        # MNIST and the four penalties; the paper's network and schedule were not read: the harness's
        # LeNet-300-100 for 20 passes over MNIST at batch 128.
        "dataset": "mnist", "seeds": 3, "model": "lenet-300-100",
        "train": {"steps": 9400, "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "schedule": "cosine"},
        "strength": 3e-4, "weight_decay": 1e-4, "others": ["gl", "l1"], "curve_ratios": [5.0, 10.0, 20.0],
    },
}


# ------------------------------------------------------------------------------ the groups
def linears(model: nn.Module) -> list[nn.Linear]:
    """The network's fully-connected layers, input to output."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def outgoing_groups(model: nn.Module, biases: bool = True) -> list[torch.Tensor]:
    """Every group of the paper, as a (units, group size) matrix per kind and layer: the outgoing
    weights of each input feature and of each hidden neuron (the columns of each layer's weights) and,
    with ``biases``, each layer's bias unit (its bias vector, one group)."""
    groups = []
    for layer in linears(model):
        groups.append(layer.weight.t())  # unit j's outgoing weights: column j
        if biases and layer.bias is not None:
            groups.append(layer.bias[None, :])
    return groups


def group_lasso(model: nn.Module, biases: bool = True) -> torch.Tensor:
    """``R_GL(w) = sum_g sqrt(|g|) ||g||_2`` over the outgoing groups of every unit (and bias)."""
    return sum(g.shape[1] ** 0.5 * g.norm(dim=1).sum() for g in outgoing_groups(model, biases))


def lasso(model: nn.Module, biases: bool = True) -> torch.Tensor:
    """``||w||_1`` over every weight (and bias)."""
    return sum(p.abs().sum() for name, p in model.named_parameters() if biases or not name.endswith("bias"))


def penalty(model: nn.Module, kind: Penalty, biases: bool = True) -> torch.Tensor:
    """``R(w)`` of each penalty: ``l1``, ``gl``, ``sgl = gl + l1`` (weight decay is the optimizer's);
    ``biases=False``: the released code's, on the weights alone."""
    if kind == "l1":
        return lasso(model, biases)
    if kind == "gl":
        return group_lasso(model, biases)
    if kind == "sgl":
        return group_lasso(model, biases) + lasso(model, biases)
    raise ValueError(f"'{kind}' is the optimizer's weight decay, not a loss term")


def regularised_loss(kind: Penalty, strength: float, biases: bool = True
                     ) -> Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy plus ``lambda R(w)``."""

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), y) + strength * penalty(model, kind, biases)

    return loss


@torch.no_grad()
def zero_small(model: nn.Module, below: float) -> None:
    """Set every weight and bias of magnitude below ``below`` to zero."""
    for p in model.parameters():
        p.masked_fill_(p.abs() < below, 0.0)


def units_kept(model: nn.Module) -> list[torch.Tensor]:
    """Per layer, which of its input units (input features, then each hidden layer's neurons) still
    have a non-zero outgoing weight (boolean)."""
    return [layer.weight.detach().abs().sum(0) > 0 for layer in linears(model)]


# ------------------------------------------------------------------------ the smaller network
class CompactMLP(nn.Module):
    """The network the surviving units make: the kept input features gathered, then the layers with
    the kept neurons only (ReLU between them, as the harness's MLPs)."""

    def __init__(self, features: torch.Tensor, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.register_buffer("features", features)
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)[:, self.features]
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i + 1 < len(self.layers):
                h = torch.relu(h)
        return h


@torch.no_grad()
def compact(model: nn.Module) -> CompactMLP:
    """The smaller dense network: a unit whose outgoing group is zero contributes nothing downstream,
    so removing it (and its incoming weights and bias) leaves the function unchanged."""
    kept = units_kept(model)
    layers = linears(model)
    small = []
    for i, layer in enumerate(layers):
        rows = kept[i + 1] if i + 1 < len(layers) else torch.ones(layer.out_features, dtype=torch.bool)
        w = layer.weight.detach()[rows][:, kept[i]]
        new = nn.Linear(w.shape[1], w.shape[0]).to(w)
        new.weight.copy_(w)
        new.bias.copy_(layer.bias.detach()[rows] if layer.bias is not None else torch.zeros(w.shape[0]))
        small.append(new)
    return CompactMLP(kept[0].nonzero().flatten(), small).eval()


# ------------------------------------------------------------------------------- the runs
def model_kwargs(config: dict) -> dict:
    return {"hidden": list(config["hidden"])} if config["model"] == "mlp" and config.get("hidden") else {}


def train_network(run: Run, kind: Penalty) -> nn.Module:
    """One network from scratch with penalty ``kind`` (``wd``: the optimizer's weight decay alone), the
    same initial weights and data order for every penalty; weights below ``zero_below`` set to zero
    afterwards (except for weight decay, the dense baseline)."""
    cfg = run.config
    run.reseed("scardapane2017 initial weights")
    model = run.model(cfg["model"], **model_kwargs(cfg))
    run.reseed("scardapane2017 data order")
    if kind == "wd":
        run.train(model, run.dataset().train, run.train_config("train", weight_decay=cfg["weight_decay"]),
                  desc="weight decay")
        return model
    run.train(model, run.dataset().train, run.train_config("train", weight_decay=0.0), desc=kind,
              loss_fn=regularised_loss(kind, cfg["strength"], biases=cfg["mode"] == "paper"))
    zero_small(model, cfg["zero_below"])
    return model.eval()


def compactness(model: nn.Module, prefix: str = "") -> dict[str, float]:
    """How many input features and hidden neurons keep a non-zero outgoing group, and the fraction of
    zero weights."""
    kept = units_kept(model)
    out = {f"{prefix}inputs_kept": float(kept[0].sum())}
    out |= {f"{prefix}hidden{i}_kept": float(k.sum()) for i, k in enumerate(kept[1:], start=1)}
    weights = [layer.weight.detach() for layer in linears(model)]
    out[f"{prefix}weight_sparsity"] = 1.0 - sum(int(torch.count_nonzero(w)) for w in weights) / sum(
        w.numel() for w in weights)
    return out


#: Why the atlas publishes "not reproduced"; shown beside the verdict.
DIAGNOSIS = """
Checked against the paper and the authors' released Theano/Lasagne script: the groups (outgoing
weights of every input and neuron, weighted by sqrt(|g|), and the bias units in the paper's mode),
R_SGL = R_GL + l1 added to the mean cross-entropy, and the removal of units with a zero outgoing
group (removal_exact = 1). The profile's lambda 3e-4 is the code's 10^-3.5. Is the gap the lambda's?
A sweep on the validation split (the training set's last 10,000 examples, seeds 1000 and 1001, the
quick budget) says no: SGD, lambda 3e-5 kept 128 of 128 neurons (1.4x fewer parameters) at -0.2 and
-0.1 pp; 1e-4 kept 92 and 97 (3.4x, 3.3x) at -1.4 and -1.3 pp; 3e-4 kept 24 and 35 (10.6x, 9.4x) at
-4.2 and -4.1 pp. Accuracy falls before the neurons do: no lambda removes half of them within 1 pp.
The code's optimizer, Adam (lr 1e-3), removes fewer neurons at the same loss (seed 1000: 120, 119,
112 kept at -0.5, -2.0, -4.6 pp); the code's unpenalised biases barely change it (3e-4, seed 1000:
29 kept, -4.5 pp, against 24 and -4.2). Zeroing weights below 1e-3 costs at most 0.1 pp (the network's accuracy before
zeroing is the same), and four times the steps (10,000, seed 1001) left the gap at -4.3 pp with a
smaller network (17 neurons): the gap is not the threshold's or the budget's. We believe it is the
method's on this harness: a few passes over 60,000 examples leave little overfitting for the penalty
to remove, so its shrinkage costs accuracy (not measured here); the paper's DIGITS runs (1,500 epochs
on about 1,350 examples) are the regime where it could help. The paper's tables could not be read,
so "competitive" as within 1 pp of weight decay is this atlas's reading. The penalised network is far
more robust to magnitude pruning than the weight-decay one (the curve).
"""


@reproduction("scardapane2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg, data = run.config, run.dataset()
    baseline = train_network(run, "wd")
    sgl = train_network(run, "sgl")
    small = compact(sgl)
    base_acc, acc = run.accuracy(baseline, data.test), run.accuracy(sgl, data.test)
    exact = torch.allclose(run.predict(small, data.test), run.predict(sgl, data.test), atol=1e-4)
    dense_ms = measure.latency_ms(baseline, data.input_shape)
    small_ms = measure.latency_ms(small, data.input_shape)
    metrics = {
        **measure.accuracy_change(base_acc, acc),
        **compactness(sgl),
        "params": measure.count_params(small),
        "nonzero_params": measure.count_nonzero(small),
        "param_compression": measure.count_params(baseline) / max(1, measure.count_nonzero(small)),
        "flop_reduction": measure.flops(baseline, data.input_shape) / max(1, measure.flops(small, data.input_shape)),
        "dense_latency_ms": dense_ms, "latency_ms": small_ms, "speedup": dense_ms / small_ms,
        "removal_exact": float(exact),
    }
    for kind in cfg["others"]:
        other = train_network(run, kind)
        metrics[f"{kind}_accuracy"] = run.accuracy(other, data.test)
        metrics |= {k: v for k, v in compactness(other, f"{kind}_").items() if not k.endswith("weight_sparsity")}
    method = {float(r): run.accuracy(controls.global_magnitude_prune(run, sgl, r, None), data.test)
              for r in cfg["curve_ratios"]}
    train = cfg["train"]
    run.record(
        "sgl-compact-competitive",
        model=f"{cfg['model']} trained with the sparse group Lasso (lambda={cfg['strength']:g})",
        metrics=metrics, baseline=(cfg["model"], "baseline_accuracy"), baseline_spec=model_kwargs(cfg),
        differs=f"{data.name}; the harness's {cfg['model']}; {train['steps']} SGD steps of batch "
                f"{train['batch_size']} for each network from the same initial weights; weights below "
                f"{cfg['zero_below']:g} counted as zero; baseline = the same network with weight decay "
                f"{cfg['weight_decay']:g}",
        notes="speedup: measure.latency_ms of the smaller dense network (inputs and neurons with a zero outgoing "
              "group removed) against the weight-decay network, a forward pass of 64 examples on this CPU",
        diagnosis=DIAGNOSIS,
        curves=[controls.Series("sparse group Lasso, then global magnitude pruning", controls.RATIO,
                                controls.ACCURACY, method),
                controls.pruning_curve(run, baseline, sorted(method), None)],
    )
