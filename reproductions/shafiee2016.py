"""StochasticNet: Forming Deep Neural Networks via Stochastic Connectivity (Shafiee, Siva & Wong,
IEEE Access 2016; arXiv:1508.05463).

Method: a deep network whose connectivity is a realisation of a random graph, formed *before*
training. Between the neurons of consecutive layers each possible connection ``c_ij`` exists with
probability ``p(i, j)``,

    c_ij ~ Bernoulli(p(i, j)),        here p(i, j) = p for every connection of a layer,

and the network so formed is then trained from scratch with its absent connections held at zero (they
never exist: no pruning of a trained network). In a convolutional layer a connection is one weight of
a kernel (a kernel is shared over positions, so one realisation of the graph serves every position):
the mask ``C`` has the weight tensor's shape. Here each layer gets exactly ``round(p n)`` of its
``n`` possible connections, a uniformly random subset (the random graph G(n, M): every connection is
present with probability ``p``, as in the paper's G(n, p), but the count does not vary by
``~sqrt(n p (1 - p))`` between realisations, so that every seed has the same compression). Formed by
:func:`random_connections` and trained through :func:`connect` (the layer computes with ``W * C``, so
an absent connection gets no gradient) and :func:`bake` (the trained weights with their zeros); these
two are imported by later papers that train a network with a fixed random connectivity
(:mod:`atlas_reproductions.changpinyo2017`).

Claims (abstract, arXiv:1508.05463v4; the tables were not read): a StochasticNet "using less than
half the number of neural connections as a conventional deep neural network, achieves comparable
accuracy and reduces overfitting on the CIFAR-10, MNIST and SVHN" data sets; on STL-10 it achieved a
higher accuracy (a relative improvement in test error of ~6%). Checked here (``comparable-accuracy``)
as ``accuracy_change_pp``: the StochasticNet at ``p = 0.5`` (every convolution's kernel weights kept
with probability 1/2; fewer than half of the network's connections once its dense classifier, whose
weights are few, is counted) against the same network fully connected, both trained from the same
initial weights for the same steps; "comparable" read as a loss of at most 1 pp. The STL-10 claim
(a data set the harness does not have; 5,000 training images) has no check.

Recorded per seed: ``baseline_accuracy`` (the fully connected network), ``accuracy`` and
``accuracy_change_pp`` (``p = 0.5``), ``param_compression`` (its conv/linear weights over their
non-zero ones), and for every ``p`` of the curve ``accuracy_p<100 p>`` and ``ratio_p<100 p>``.

The curve: the StochasticNet at ``p = 0.5, 0.25, 0.125`` (x: the compression ratio of the conv/linear
weights, :func:`atlas.harness.controls.compression_ratio`) beside global magnitude pruning of the
trained fully connected network at the same ratios without retraining
(:func:`atlas.harness.controls.pruning_curve`, ``finetune=None``): every network is trained for the
same ``train.steps`` from scratch and nothing after, so the control gets the same budget.

Harness differs: Fashion-MNIST (quick; its first 6,000 training images, the size the harness's
reference for this network is calibrated on) and the 8x8 digits (smoke) instead of CIFAR-10 / MNIST /
SVHN / STL-10; the harness's small conv net (``staged-conv``: three 3x3 conv-BN-ReLU layers of
8-16-32 channels, each followed by a 2x2 max pool, global average pooling and a linear classifier)
instead of the paper's networks; 150 SGD steps of batch 64 per network (cosine) instead of training
to convergence; the classifier is left fully connected (its 320 weights); the connection probability
``p`` is the same for every connection of every convolution (the paper's random-graph model allows a
``p(i, j)`` per connection; the abstract's "less than half" is met by ``p = 0.5`` on the
convolutions).

Result (quick, 3 seeds, 150 steps a network): at ``p = 0.5`` (1.9x fewer conv/linear weights) the
StochasticNet is +1.0 pp above the fully connected network (95% interval [-0.4, +2.4]: "comparable"
passes); at ``p = 0.25`` (3.5x) about -0.6 pp and at ``p = 0.125`` (5.9x) about -2.8 pp, while
magnitude pruning of the trained dense network without retraining falls to ~55% and ~28%. The fully
connected baseline (~75%) is ~10 pp below the harness's reference for this network (85.5%, 6,000 Adam
steps): 150 steps a network is what the quick budget allows, so both are short-trained, and an
accuracy check can pass but cannot fail (the atlas's convergence rule); the higher accuracy of the
sparse network here may be faster early training as much as the paper's reduced overfitting.
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field, PositiveInt
from torch import nn
from torch.nn.utils import prune

from atlas.harness import Profile, Run, Section, TrainConfig, controls, reproduction

Masks = dict[str, torch.Tensor]


class Connectivity(Section):
    p: float = Field(gt=0, le=1)  # the claim's connection probability (abstract: "less than half")
    curve: list[float] = Field(min_length=3)  # the curve's probabilities (chosen here)


class Config(Profile):
    chans: list[PositiveInt]  # the staged-conv network's channels per stage (one conv per stage)
    train: TrainConfig  # every network's training from scratch: fully connected and StochasticNets
    connectivity: Connectivity


def _sgd(steps: int, lr: float, batch_size: int) -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": "cosine"}


CONNECTIVITY = {"p": 0.5, "curve": [0.5, 0.25, 0.125]}

PROFILES = {
    "smoke": {
        # ~3 passes over digits' 1,437 images at batch 64, per network
        "dataset": "digits", "seeds": 2, "chans": [8, 16, 32], "train": _sgd(70, 0.05, 64),
        "connectivity": CONNECTIVITY,
    },
    "quick": {
        # per seed 4 networks (fully connected and p = 0.5, 0.25, 0.125) of 150 steps each: 1.6 passes
        # over the first 6,000 training images (the size the harness's reference is calibrated on)
        "dataset": "fashion-mnist", "seeds": 3, "train_limit": 6000, "chans": [8, 16, 32],
        "train": _sgd(150, 0.05, 64), "connectivity": CONNECTIVITY,
    },
    "paper": {
        # CIFAR-10 on the harness's staged conv net at VGG-like widths, 160 epochs of batch 128
        # (62,500 steps); the paper's networks and schedules were not read
        "dataset": "cifar10", "seeds": 3, "chans": [64, 128, 256, 512], "train": _sgd(62500, 0.1, 128),
        "connectivity": CONNECTIVITY,
    },
}


# --------------------------------------------------------------------------- forming the network
def random_connections(model: nn.Module, p: float, generator: torch.Generator) -> Masks:
    """One realisation of the random graph: for every convolution's weight (name -> mask of its shape),
    a uniformly random subset of ``round(p * n)`` of its ``n`` connections (each connection present
    with probability ``p``; the count fixed, so every seed has the same compression)."""
    if not 0 < p <= 1:
        raise ValueError(f"connection probability must be in (0, 1], not {p}")
    masks: Masks = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight
            keep = torch.zeros(w.numel(), dtype=torch.bool)
            keep[torch.randperm(w.numel(), generator=generator)[: max(1, round(p * w.numel()))]] = True
            masks[f"{name}.weight"] = keep.view(w.shape)
    return masks


def connect(model: nn.Module, masks: Masks) -> nn.Module:
    """Form the network with only the connections of ``masks`` (weight name -> mask): each masked layer
    computes with ``weight_orig * mask`` (``torch.nn.utils.prune.custom_from_mask``), so an absent
    connection never enters the forward pass and gets no gradient."""
    for name, mask in masks.items():
        prune.custom_from_mask(model.get_submodule(name.rsplit(".", 1)[0]), "weight", mask)
    return model


def bake(model: nn.Module) -> nn.Module:
    """Make the masked weights plain parameters again (``weight = weight_orig * mask``), zeros included."""
    for module in model.modules():
        if prune.is_pruned(module) and hasattr(module, "weight_orig"):
            prune.remove(module, "weight")
    return model


def train_stochasticnet(run: Run, initial: nn.Module, p: float) -> nn.Module:
    """Form a StochasticNet from ``initial`` (its weights, a random connectivity of probability ``p``)
    and train it from scratch."""
    model = controls.trainable_copy(initial)
    run.reseed(f"connectivity {p:g}")
    generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
    masks = random_connections(model, p, generator)
    run.train(connect(model, masks), run.dataset().train, run.train_config("train"), desc=f"StochasticNet p={p:g}")
    return bake(model).eval()


@reproduction("shafiee2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    chans = list(run.config["chans"])
    conn = run.config["connectivity"]
    initial = run.model("staged-conv", chans=chans, per_stage=1)
    run.reseed("fully connected")
    dense = run.train(copy.deepcopy(initial), data.train, run.train_config("train"), desc="fully connected").eval()
    base_acc = run.accuracy(dense, data.test)

    metrics: dict[str, float] = {"baseline_accuracy": base_acc}
    curve: dict[float, float] = {}
    for p in sorted({*conn["curve"], conn["p"]}, reverse=True):
        net = train_stochasticnet(run, initial, p)
        acc, ratio = run.accuracy(net, data.test), controls.compression_ratio(net)
        tag = f"p{round(100 * p)}"
        metrics |= {f"accuracy_{tag}": acc, f"ratio_{tag}": ratio}
        if p in conn["curve"]:
            curve[round(ratio, 4)] = acc
        if p == conn["p"]:
            metrics |= {"accuracy": acc, "accuracy_change_pp": acc - base_acc, "param_compression": ratio}

    train = run.config["train"]
    run.record(
        "comparable-accuracy",
        model=f"staged-conv {'-'.join(map(str, chans))} (one 3x3 conv-BN-ReLU per stage), every convolution's "
              f"connections formed with probability {conn['p']:g} before training",
        metrics=metrics,
        differs=f"small staged conv net ({'-'.join(map(str, chans))}) instead of the paper's networks; "
                + (f"first {limit} training examples; " if (limit := run.config.get("train_limit")) else "")
                + f"{train['steps']} steps of batch {train['batch_size']} from scratch for every network; "
                "one connection probability for every convolution weight, classifier fully connected",
        baseline=("staged-conv", "baseline_accuracy"),
        baseline_spec={"chans": chans, "per_stage": 1},
        curves=[controls.Series("StochasticNet (random connectivity, from scratch)", controls.RATIO,
                                controls.ACCURACY, curve),
                controls.pruning_curve(run, dense, sorted(curve), None)],
    )
