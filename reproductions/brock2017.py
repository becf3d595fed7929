"""FreezeOut: Accelerate Training by Progressively Freezing Layers (Brock, Lim, Ritchie & Weston,
arXiv preprint 2017; arXiv:1706.04983).

Not a compression method. The survey lists FreezeOut under pruning, but it removes no weight: it
shortens *training* by taking the early layers out of the backward pass once they have learnt enough.
What is reproduced here is the claim it is known for, its training wall-clock saving at a small cost
in accuracy; a compression curve (accuracy against compression ratio) has no meaning for a method
whose trained network is exactly as large as the normal one, so none is recorded (issue 12).

Method (Sec. 2, and the released code ``densenet.py``): the network's layers ``i = 0 .. L`` (``L`` the
last, classifier, which trains to the end) each get their own learning rate, annealed by cosine from
``alpha_i`` to zero at the layer's freeze point ``t_i`` (a fraction of the ``T`` iterations):

.. math:: \\alpha_i(t) = \\tfrac{1}{2}\\,\\alpha_i \\left(1 + \\cos\\frac{\\pi t}{t_i T}\\right)
          \\quad (t < t_i T), \\qquad
          t_i = s\\!\\left(t_0 + (1 - t_0)\\frac{i}{L}\\right)

with ``s`` the identity (linear spacing), a square or a cube (cubic spacing: later layers get
cubically more time); with learning-rate scaling ``alpha_i = alpha / t_i`` (each layer travels about
as far as when trained for the whole run), else ``alpha_i = alpha``. Past ``t_i T`` the layer is frozen:
its parameters stop receiving updates and it is excluded from the backward pass (the code returns a
detached output and puts its batch norm in inference mode). As layers freeze from the first one on,
the frozen layers are always a prefix of the network, so no gradient is computed for them at all; the
saving is their share of the backward pass (early convolutions hold most of a conv net's compute and
few of its parameters, the paper's premise). The README notes the paper's typo (the 1/2 in front of
``alpha``), used here as in the code. Defaults (the code's): cubic spacing, scaled learning rates,
``t_0 = 0.8`` before cubing (0.512 after), SGD with Nesterov momentum 0.9, weight decay 1e-4.

Claims (abstract, arXiv:1706.04983v2; released code README): "savings of up to 20% wall-clock time
during training with 3% loss in accuracy for DenseNets, a 20% speedup without loss of accuracy for
ResNets, and no improvement for VGG networks"; the README: "speedups below 20% should be within a 3%
relative error envelope". The tables were not read. ``cifar-speedup`` checks the saving (at least 15%,
the 20% less 5 points of timing noise on a shared CPU) and the accuracy change (at most 1 pp lost).

Measured (claim ``cifar-speedup``, per seed): the same harness network, from the same initial
weights and the same data order, trained for the same ``train.steps`` twice in the same run: normally
(every layer annealed by cosine to zero at the end: FreezeOut with every ``t_i = 1``, through the
same code, so that both pay the same bookkeeping) and with FreezeOut. ``baseline_accuracy`` /
``accuracy`` / ``accuracy_change_pp`` are their test accuracies and the difference;
``normal_train_s`` / ``freezeout_train_s`` the wall-clock seconds of the two trainings;
``training_time_saving_pct`` = ``100 (1 - freezeout_train_s / normal_train_s)`` and
``training_speedup`` their ratio; ``training_cpu_saving_pct`` the same from the process's CPU time
(less sensitive to other jobs on a shared machine; wall time is what the paper claims);
``estimated_saving_pct`` the saving the schedule predicts from each layer's forward FLOPs when a
layer's backward costs its forward (the code's ``calc_speedup``): ``1 - (sum c_i + sum c_i t_i) /
(2 sum c_i)``. Which order the two trainings run in alternates with the seed (normal first on even
seeds), so neither always gets the warm caches.

Harness differs: Fashion-MNIST (6,000 training examples) and the harness's plain staged conv net
(three 3x3 conv-BN-ReLU layers of 8, 16 and 32 channels, each followed by a 2x2 pool, then a linear
classifier: four FreezeOut layers) instead of CIFAR and a DenseNet-BC / Wide ResNet, 500 steps at
batch 64 instead of the paper's 100-epoch runs, one CPU thread. The staged conv net is VGG-like (a
plain chain), the family for which the abstract reports no improvement; its early layers still hold
most of its compute. The paper profile runs the harness's ResNet-20 on CIFAR-10 (its Wide ResNet's
stand-in; every residual block is one FreezeOut layer).

Quick result when written (3 seeds, a 2-core machine shared with other jobs at load ~10):
inconclusive. The wall-clock saving was 16.6% (95% interval -11.8 to 45; per seed 29, 14, 7%): other
jobs' load made each training's wall time vary by tens of percent, so three seeds cannot decide the
15% threshold. The CPU-time saving was steadier (20, 16, 19%) and the schedule's FLOP estimate is
14.6% (the three convolutions, frozen after 51%, 65% and 81% of the steps, hold 11%, 44% and 44% of
this net's forward FLOPs). The
accuracy change was -0.52 pp (-1.53 to 0.49), the baseline 0.3 pp from its calibrated reference. On an
otherwise idle CPU the wall time of a one-thread run is its CPU time.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, reproduction


class FreezeOutConfig(Section):
    t_0: float = Field(gt=0, le=1)  # the first layer's freeze point before scaling (code default 0.8)
    how_scale: Literal["linear", "squared", "cubic"] = "cubic"  # spacing of later t_i (code default)
    scale_lr: bool = True  # alpha_i = alpha / t_i (code default True)
    nesterov: bool = True  # the code's SGD uses Nesterov momentum (both trainings here)


class Config(Profile):
    model: str  # the harness model
    model_kwargs: dict[str, Any] = {}  # its arguments (the staged conv net's channels, ...)
    train: TrainConfig  # both trainings: steps, batch, base learning rate alpha, momentum, weight decay
    freezeout: FreezeOutConfig


def _sgd(steps: int, batch_size: int, lr: float = 0.1) -> dict:
    """SGD with momentum 0.9 and weight decay 1e-4 (the released code), cosine annealing."""
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "momentum": 0.9,
            "weight_decay": 1e-4, "schedule": "cosine"}


CONV = {"model": "staged-conv", "model_kwargs": {"chans": [8, 16, 32], "per_stage": 1}}
DEFAULT = {"t_0": 0.8, "how_scale": "cubic", "scale_lr": True}  # the released code's defaults

PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, **CONV, "train": _sgd(60, 64), "freezeout": DEFAULT},
    "quick": {
        # 6,000 training examples (the staged conv net's calibrated reference); 500 steps at batch 64
        # (5.3 passes): two trainings a seed, ~15 ms a normal step on one CPU thread, ~45 s for 3 seeds.
        "dataset": "fashion-mnist", "seeds": 3, "train_limit": 6000, **CONV,
        "train": _sgd(500, 64), "freezeout": DEFAULT,
    },
    "paper": {
        # CIFAR-10 with the harness's ResNet-20 for the paper's Wide ResNet; 100 epochs of 50,000 at
        # batch 50 (the code counts 1,000 iterations an epoch) = 100,000 steps, lr 0.1.
        "dataset": "cifar10", "seeds": 3, "model": "resnet-20", "model_kwargs": {},
        "train": _sgd(100_000, 50), "freezeout": DEFAULT,
    },
}

SCALE = {"linear": lambda x: x, "squared": lambda x: x**2, "cubic": lambda x: x**3}


# ----------------------------------------------------------------------------------- layers
def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=True))


def freeze_units(model: nn.Module) -> list[list[nn.Module]]:
    """The network's FreezeOut layers in forward order: each convolution or fully-connected layer
    with the batch norms that follow it, and each composite block with parameters (a residual block)
    as one layer. Sequential containers (and the model itself) are walked into."""
    units: list[list[nn.Module]] = []

    def walk(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, nn.Sequential):
                walk(child)
            elif isinstance(child, nn.Conv1d | nn.Conv2d | nn.Linear):
                units.append([child])
            elif isinstance(child, nn.modules.batchnorm._BatchNorm):
                if not units:
                    units.append([])
                units[-1].append(child)
            elif _has_params(child):
                units.append([child])

    walk(model)
    return units


# --------------------------------------------------------------------------------- schedule
def freeze_points(n_layers: int, t_0: float, how_scale: str) -> list[float]:
    """``t_i = s(t_0 + (1 - t_0) i / L)`` for ``i = 0 .. L = n_layers - 1`` (the last layer: 1)."""
    last = max(1, n_layers - 1)
    return [SCALE[how_scale](t_0 + (1 - t_0) * i / last) for i in range(n_layers)]


def layer_lr(alpha: float, t_i: float, step: int, total: int, scale_lr: bool) -> float:
    """The layer's learning rate at ``step`` of ``total``: ``alpha_i / 2 (1 + cos(pi t / (t_i T)))``
    before its freeze point, 0 after (``alpha_i = alpha / t_i`` with scaling)."""
    end = t_i * total
    if step >= end:
        return 0.0
    return 0.5 * (alpha / t_i if scale_lr else alpha) * (1 + math.cos(math.pi * step / end))


class FreezeOut:
    """Per-layer learning rates and progressive freezing, as a ``before_step`` hook of the harness's
    training loop with its own optimizer (one parameter group per layer)."""

    def __init__(self, model: nn.Module, points: list[float], cfg: TrainConfig, *, scale_lr: bool,
                 nesterov: bool) -> None:
        self.units = freeze_units(model)
        if len(points) != len(self.units):
            raise ValueError(f"{len(points)} freeze points for {len(self.units)} layers")
        self.points, self.cfg, self.scale_lr, self.step = points, cfg, scale_lr, 0
        groups = [{"params": [p for m in unit for p in m.parameters()]} for unit in self.units]
        covered = {id(p) for g in groups for p in g["params"]}
        rest = [p for p in model.parameters() if id(p) not in covered]
        if rest:  # parameters outside every layer (none in the harness models): trained to the end
            raise ValueError(f"{len(rest)} parameters belong to no FreezeOut layer")
        self.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov,
                                         weight_decay=cfg.weight_decay)
        self.frozen = [False] * len(self.units)

    def freeze(self, i: int) -> None:
        """Take layer ``i`` out of training and of the backward pass: no gradient for its parameters
        (frozen layers form a prefix, so autograd stops before them) and its batch norm in inference
        mode (running statistics, no longer updated), as the code does."""
        self.frozen[i] = True
        for module in self.units[i]:
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
                p.grad = None

    def before_step(self, model: nn.Module) -> None:
        for i, (group, t_i) in enumerate(zip(self.optimizer.param_groups, self.points, strict=True)):
            lr = layer_lr(self.cfg.lr, t_i, self.step, self.cfg.steps, self.scale_lr)
            if lr == 0.0 and not self.frozen[i]:
                self.freeze(i)
            group["lr"] = lr
        self.step += 1


def train_timed(run: Run, model: nn.Module, points: list[float], desc: str) -> tuple[nn.Module, float, float]:
    """Train ``model`` with the given freeze points (all 1: normal training) for the profile's steps;
    returns it with the wall-clock and CPU seconds the training took."""
    cfg = run.train_config("train")
    fo = run.config["freezeout"]
    hook = FreezeOut(model, points, cfg, scale_lr=fo["scale_lr"], nesterov=fo["nesterov"])
    run.reseed("brock2017 data")  # both trainings see the same batches
    wall, cpu = time.perf_counter(), time.process_time()
    run.train(model, run.dataset().train, cfg, desc=desc, optimizer=hook.optimizer, before_step=hook.before_step)
    return model, time.perf_counter() - wall, time.process_time() - cpu


# ------------------------------------------------------------------------------ estimation
def layer_flops(model: nn.Module, input_shape: tuple[int, ...]) -> list[float]:
    """Each FreezeOut layer's forward FLOPs on one example (its convolutions and linear layers)."""
    units = freeze_units(model)
    owner = {id(m): i for i, unit in enumerate(units) for top in unit for m in top.modules()}
    flops = [0.0] * len(units)

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(module, nn.Conv1d | nn.Conv2d):
            per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
            flops[owner[id(module)]] += 2.0 * out[0].numel() * per_out
        elif isinstance(module, nn.Linear):
            flops[owner[id(module)]] += 2.0 * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear) and id(m) in owner]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    model.train(was_training)
    for h in handles:
        h.remove()
    return flops


def estimated_saving(flops: list[float], points: list[float]) -> float:
    """The code's estimate (``calc_speedup``): a layer's backward costs its forward and is paid for
    the fraction ``t_i`` of training; percent of the normal training's cost saved."""
    total = sum(flops)
    return 100.0 * (1 - (total + sum(c * t for c, t in zip(flops, points, strict=True))) / (2 * total))


@reproduction("brock2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    cfg = Config.model_validate(run.config)
    kwargs = dict(cfg.model_kwargs)

    def build() -> nn.Module:
        run.reseed("brock2017 init")  # the same initial weights for both trainings
        return run.model(cfg.model, **kwargs)

    n = len(freeze_units(build()))
    points = freeze_points(n, cfg.freezeout.t_0, cfg.freezeout.how_scale)
    runs = {"normal": [1.0] * n, "freezeout": points}
    order = ["normal", "freezeout"] if run.seed % 2 == 0 else ["freezeout", "normal"]
    out = {name: train_timed(run, build(), runs[name], name) for name in order}
    (normal, t_n, c_n), (frozen, t_f, c_f) = out["normal"], out["freezeout"]
    acc_base, acc = run.accuracy(normal, data.test), run.accuracy(frozen, data.test)
    metrics = {
        "baseline_accuracy": acc_base,
        "accuracy": acc,
        "accuracy_change_pp": acc - acc_base,
        "normal_train_s": t_n,
        "freezeout_train_s": t_f,
        "training_time_saving_pct": 100.0 * (1 - t_f / t_n),
        "training_speedup": t_n / t_f,
        "training_cpu_saving_pct": 100.0 * (1 - c_f / c_n),
        "estimated_saving_pct": estimated_saving(layer_flops(build(), data.input_shape), points),
        **{f"freeze_point_{i}": t for i, t in enumerate(points)},
    }
    fo = cfg.freezeout
    run.record(
        "cifar-speedup", model=cfg.model, metrics=metrics, baseline=(cfg.model, "baseline_accuracy"),
        baseline_spec=kwargs,
        differs=f"{cfg.train.steps} steps at batch {cfg.train.batch_size} for both trainings, {n} FreezeOut "
                f"layers, {fo.how_scale} spacing, t_0 = {fo.t_0} before scaling, learning rates "
                f"{'scaled' if fo.scale_lr else 'unscaled'}; wall-clock on {torch.get_num_threads()} CPU "
                "thread(s) of a machine other jobs may share",
        notes="training time measured in the same run for both trainings, their order alternating with the seed",
    )
