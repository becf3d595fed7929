"""The object a reproduction receives: its configuration and seed, the harness's data, models,
training and caching, and :meth:`Run.record` to report what it measured for a claim."""

from __future__ import annotations

import functools
import hashlib
import inspect
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
    baseline: dict[str, Any] | None = None


_DATASET_CACHE: dict[tuple, Dataset] = {}


@functools.cache
def _file_code_hash(path: str) -> str:
    from atlas.harness.registry import code_hash_of

    return code_hash_of(Path(path))


def _defining_code_hash(fn: Callable[..., Any]) -> str:
    """The hash of the code that trains a cached model: the harness, the file that defines ``fit``
    and the reproduction files that file imports. Editing any of them retrains the model."""
    source = inspect.getsourcefile(fn)
    return _file_code_hash(str(Path(source).resolve())) if source else ""


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
    train_size: int | None = None  # a smaller training set than the data set's (``--train-size``)
    measured: list[Measured] = field(default_factory=list)
    budgets: list[dict[str, Any]] = field(default_factory=list)  # what each training stage got
    cache_hits: list[dict[str, Any]] = field(default_factory=list)  # models loaded from the cache
    cache_trained: list[str] = field(default_factory=list)  # cache files this run trained and wrote

    def __post_init__(self) -> None:
        self.generator = training.seed_everything(self.seed)

    # ------------------------------------------------------------------------------------ data
    def dataset(self, name: str | None = None) -> Dataset:
        """The profile's data set (``config['dataset']``, or ``name``), limited to
        ``config['train_limit']`` / ``config['test_limit']`` examples where the profile says so."""
        name = name or self.config["dataset"]
        limits = self._limits()
        cache_key = (name, str(self.data_dir), *limits)
        if cache_key not in _DATASET_CACHE:
            full = data_mod.load_dataset(name, data_dir=self.data_dir, allow_download=self.allow_download)
            _DATASET_CACHE[cache_key] = full.limited(*limits)
        return _DATASET_CACHE[cache_key]

    def _limits(self) -> tuple[int | None, int | None]:
        train = self.config.get("train_limit")
        if self.train_size is not None:
            train = self.train_size if train is None else min(train, self.train_size)
        return train, self.config.get("test_limit")

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
        """Train for ``cfg.steps`` optimizer steps; the budget is noted in the record's provenance."""
        self.budgets.append({"stage": desc, "steps": cfg.steps, "batch_size": cfg.batch_size,
                             "examples": len(split), "epochs": round(cfg.epochs_on(len(split)), 2)})
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
        ``name``, ``spec`` (everything that determines the weights), the seed, the data set and its
        limits, the torch version and the code that trains it (the harness and the file defining
        ``fit``, with the files it imports).

        ``per_seed=False`` trains one model for every seed of the run (from seed 0): a teacher
        trained once per profile and reused by every distillation paper and every student seed."""
        seed = self.seed if per_seed else 0
        ident = {"name": name, "spec": spec, "seed": seed, "dataset": self.config["dataset"],
                 "limits": list(self._limits()), "torch": torch.__version__,
                 "code": _defining_code_hash(fit)}
        path = self.cache_dir / "models" / f"{name}-{stable_hash(ident)[:16]}.pt"
        # The model's own random stream depends on the seed and its name alone, so the same weights
        # come out whichever paper trains it first; the stream after it is the same whether the
        # model was trained or loaded from the cache.
        self.reseed(f"build:{name}", seed=seed)
        model = build().to(self.device)
        loaded = False
        budget_file = path.with_suffix(".budget.json")
        if path.exists():
            try:
                model.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
                loaded = True
            except (RuntimeError, OSError, EOFError):
                path.unlink(missing_ok=True)  # a damaged cache entry: train again
        if loaded:
            self.cache_hits.append({"model": name, "file": path.name, "code_hash": ident["code"]})
            try:  # the training the cached model had, so that the record still describes it
                cached = json.loads(budget_file.read_text(encoding="utf-8"))
                self.budgets.extend({**b, "from_cache": True} for b in cached if isinstance(b, dict))
            except (OSError, ValueError):
                pass
        else:
            first = len(self.budgets)
            fit(model)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(model.state_dict(), tmp)
            tmp.replace(path)
            budget_tmp = budget_file.with_suffix(f".{os.getpid()}.tmp")
            budget_tmp.write_text(json.dumps(self.budgets[first:]), encoding="utf-8")
            budget_tmp.replace(budget_file)
            self.cache_trained.append(path.name)
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
               differs: str = "", notes: str = "", baseline: tuple[str, str] | None = None,
               baseline_spec: dict[str, Any] | None = None, baseline_data: Dataset | None = None) -> None:
        """Report what this seed measured for ``claim`` (a claim id of the paper in papers.yaml).

        ``baseline=(harness model name, metric)`` names the uncompressed model the claim's accuracy
        change is measured against and the metric holding its accuracy: the verdict compares it with
        the model's reference accuracy (``atlas calibrate``) to tell whether it converged.
        ``baseline_data`` is the data set it was trained on, if not the profile's."""
        clean = {k: float(v) for k, v in metrics.items()}
        base = None
        if baseline is not None:
            name, metric = baseline
            if metric not in clean:
                raise KeyError(f"baseline metric '{metric}' is not among the recorded metrics")
            data = baseline_data or self.dataset()
            base = {"model": name, "spec": dict(baseline_spec or {}), "metric": metric,
                    "dataset": data.name, "train_size": len(data.train), "test_size": len(data.test)}
        self.measured.append(Measured(claim, model, dataset or self.config["dataset"], clean, differs, notes,
                                      base))
