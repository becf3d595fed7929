"""Training and evaluation, seeded and deterministic on the CPU: the same seed gives the same numbers.

Budgets are counted in optimizer steps (``TrainConfig.steps``), never in epochs: a data set of
another size gets the same number of updates (more passes over a small set, fewer over a large one),
so a baseline converges as far on any data set as on the one a profile was written for, and a
baseline and its compressed model given the same ``steps`` get the same budget.

A paper changes training through three hooks rather than a loop of its own: ``loss_fn`` (the paper's
objective, e.g. a distillation loss), ``before_step`` (e.g. binarising weights for the forward pass)
and ``after_step`` (e.g. re-applying a pruning mask, clipping latent weights).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt
from torch import nn
from tqdm.auto import tqdm

from atlas.harness.data import Split

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
StepHook = Callable[[nn.Module], None]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, make torch's kernels deterministic, and return a generator for
    the data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def batches(split: Split, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
            device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y, index)`` mini-batches; ``index`` lets a loss look up cached per-example targets
    (a teacher's logits)."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield split.x[idx].to(device), split.y[idx].to(device), idx


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)



def against_targets(targets: torch.Tensor,
                    criterion: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> LossFn:
    """A training loss against per-example ``targets`` computed once for the whole training set (a
    teacher's logits or features): ``criterion(model(x), targets[index], y)`` on each batch."""

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return criterion(model(x), targets[index], y)

    return loss

class TrainConfig(BaseModel):
    """One training stage's whole budget and optimizer; a profile section of this type states every
    value it changes from these defaults, and refuses keys it does not know."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: PositiveInt  # optimizer steps (mini-batches), whatever the size of the training set
    lr: PositiveFloat = 0.1
    batch_size: PositiveInt = 128
    optimizer: Literal["sgd", "adam"] = "sgd"  # sgd with momentum, or adam
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant", "step"] = "cosine"  # step: x0.1 at 50% and 75%

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> TrainConfig:
        if "epochs" in cfg:
            raise ValueError("training budgets are optimizer steps ('steps'), not 'epochs'")
        if "steps" not in cfg:
            raise ValueError("a training configuration needs 'steps' (optimizer steps)")
        return cls.model_validate(dict(cfg))

    def epochs_on(self, n_examples: int) -> float:
        """How many passes over ``n_examples`` this budget makes."""
        return self.steps * self.batch_size / max(1, n_examples)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer '{cfg.optimizer}'")


def _lr_factor(schedule: str, step: int, total: int) -> float:
    if schedule == "constant" or total <= 0:
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + float(np.cos(np.pi * step / total)))
    if schedule == "step":
        return 0.1 ** (int(step >= total * 0.5) + int(step >= total * 0.75))
    raise ValueError(f"unknown schedule '{schedule}'")


def train(
    model: nn.Module,
    data: Split,
    cfg: TrainConfig,
    *,
    generator: torch.Generator,
    loss_fn: LossFn = cross_entropy,
    before_step: StepHook | None = None,
    after_step: StepHook | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    params=None,
    device: torch.device | str = "cpu",
    desc: str = "train",
    progress: bool = True,
) -> nn.Module:
    """Train ``model`` on ``data`` for ``cfg.steps`` optimizer steps with the given hooks (the data
    reshuffled at each pass); returns the model."""
    if len(data) == 0:
        raise ValueError(f"{desc}: no training examples (an empty split cannot be trained on)")
    model.to(device).train()
    opt = optimizer or make_optimizer(params if params is not None else model.parameters(), cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]
    total = cfg.steps
    step = 0
    bar = tqdm(total=total, desc=desc, leave=False, disable=not progress or not sys.stderr.isatty(),
               unit="step", file=sys.stderr)
    loss = None
    while step < total:
        for x, y, idx in batches(data, cfg.batch_size, shuffle=True, generator=generator, device=device):
            if step >= total:
                break
            factor = _lr_factor(cfg.schedule, step, total)
            for group, base in zip(opt.param_groups, base_lrs, strict=True):
                group["lr"] = base * factor
            if before_step is not None:
                before_step(model)
            loss = loss_fn(model, x, y, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step(model)
            step += 1
        bar.update(step - bar.n)
    if loss is not None:
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    for group, base in zip(opt.param_groups, base_lrs, strict=True):
        group["lr"] = base
    model.eval()
    return model


@torch.no_grad()
def predict(model: nn.Module, data: Split, *, batch_size: int = 256, device: torch.device | str = "cpu") -> torch.Tensor:
    """The model's logits on every example of ``data``, in order. Batches of 256: on a CPU, small
    conv nets run 1.3-1.8x as fast as in batches of 1,000 (``benchmarks/bench_eval_batch.py``)."""
    model.to(device).eval()
    return torch.cat([model(x).float().cpu() for x, _, _ in batches(data, batch_size, shuffle=False, device=device)])


def accuracy(model: nn.Module, data: Split, *, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy in percent."""
    return accuracy_of(predict(model, data, device=device), data)


def accuracy_of(logits: torch.Tensor, data: Split) -> float:
    """Top-1 accuracy in percent of ``logits`` (one row per example of ``data``)."""
    return 100.0 * (logits.argmax(1) == data.y).float().mean().item()
