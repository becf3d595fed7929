"""The object a reproduction receives: its configuration and seed, the harness's data, models,
training and caching, and :meth:`Run.record` to report what it measured for a claim."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlas.harness import data as data_mod
from atlas.harness import models, training
from atlas.harness.data import Dataset, Split
from atlas.harness.training import TrainConfig


@dataclass
class Measured:
    claim: str
    model: str
    dataset: str
    metrics: dict[str, float]
    differs: str = ""
    notes: str = ""


_DATASET_CACHE: dict[tuple, Dataset] = {}


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Run:
    key: str
    profile: str
    config: dict[str, Any]
    seed: int
    device: str = "cpu"
    data_dir: Path | None = None
    allow_download: bool = False
    cache_dir: Path = field(default_factory=lambda: data_mod.default_cache_dir())
    progress: bool = True
    measured: list[Measured] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.generator = training.seed_everything(self.seed)

    # ------------------------------------------------------------------------------------ data
    def dataset(self, name: str | None = None) -> Dataset:
        """The profile's data set (``config['dataset']``, or ``name``), limited to
        ``config['train_limit']`` / ``config['test_limit']`` examples where the profile says so."""
        name = name or self.config["dataset"]
        cache_key = (name, str(self.data_dir), self.config.get("train_limit"), self.config.get("test_limit"))
        if cache_key not in _DATASET_CACHE:
            full = data_mod.load_dataset(name, data_dir=self.data_dir, allow_download=self.allow_download)
            _DATASET_CACHE[cache_key] = full.limited(self.config.get("train_limit"), self.config.get("test_limit"))
        return _DATASET_CACHE[cache_key]

    # ---------------------------------------------------------------------------------- models
    def model(self, name: str, data: Dataset | None = None, **kwargs: Any) -> nn.Module:
        data = data or self.dataset()
        return models.build(name, data.input_shape, data.num_classes, **kwargs).to(self.device)

    # -------------------------------------------------------------------------------- training
    def train_config(self, section: str | None = None, **overrides: Any) -> TrainConfig:
        """A :class:`TrainConfig` from the profile (``config[section]`` if given, else the top level)."""
        cfg = dict(self.config)
        if section is not None:
            cfg.update(self.config[section])
        cfg.update(overrides)
        return TrainConfig.from_dict(cfg)

    def train(self, model: nn.Module, split: Split, cfg: TrainConfig, desc: str = "train", **hooks: Any) -> nn.Module:
        return training.train(model, split, cfg, generator=self.generator, device=self.device,
                              desc=f"{self.key} {desc}", progress=self.progress, **hooks)

    def accuracy(self, model: nn.Module, split: Split) -> float:
        return training.accuracy(model, split, device=self.device)

    def predict(self, model: nn.Module, split: Split) -> torch.Tensor:
        return training.predict(model, split, device=self.device)

    # --------------------------------------------------------------------------------- caching
    def cached_model(self, name: str, spec: dict[str, Any], build: Callable[[], nn.Module],
                     fit: Callable[[nn.Module], None], *, per_seed: bool = True) -> nn.Module:
        """A trained model shared between runs and papers: ``build()`` then ``fit(model)`` the first
        time, afterwards the saved weights (loaded with ``weights_only=True``). The cache key is
        ``name``, ``spec`` (everything that determines the weights), the seed, the data set and the
        torch version.

        ``per_seed=False`` trains one model for every seed of the run (from seed 0): a teacher
        trained once per profile and reused by every distillation paper and every student seed."""
        seed = self.seed if per_seed else 0
        ident = {"name": name, "spec": spec, "seed": seed, "dataset": self.config["dataset"],
                 "limits": [self.config.get("train_limit"), self.config.get("test_limit")],
                 "torch": torch.__version__}
        path = self.cache_dir / "models" / f"{name}-{stable_hash(ident)[:16]}.pt"
        # The model's own random stream depends on the seed and its name alone, so the same weights
        # come out whichever paper trains it first; the stream after it is the same whether the
        # model was trained or loaded from the cache.
        self.reseed(f"build:{name}", seed=seed)
        model = build().to(self.device)
        loaded = False
        if path.exists():
            try:
                model.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
                loaded = True
            except (RuntimeError, OSError, EOFError):
                path.unlink(missing_ok=True)  # a damaged cache entry: train again
        if not loaded:
            fit(model)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(model.state_dict(), tmp)
            tmp.replace(path)
        model.eval()
        self.reseed(f"after:{name}")
        return model

    def reseed(self, stage: str, seed: int | None = None) -> None:
        """Restart the random streams (torch's global one and the data-order generator) from a seed
        derived from the run's seed (or ``seed``) and ``stage``."""
        derived = int(stable_hash([self.seed if seed is None else seed, stage])[:15], 16)
        torch.manual_seed(derived)
        self.generator.manual_seed(derived)

    # ------------------------------------------------------------------------------- reporting
    def record(self, claim: str, *, model: str, metrics: dict[str, float], dataset: str | None = None,
               differs: str = "", notes: str = "") -> None:
        """Report what this seed measured for ``claim`` (a claim id of the paper in papers.yaml)."""
        clean = {k: float(v) for k, v in metrics.items()}
        self.measured.append(Measured(claim, model, dataset or self.config["dataset"], clean, differs, notes))
