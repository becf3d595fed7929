"""The object a reproduction receives: its configuration and seed, the harness's data, models,
training and caching, and :meth:`Run.record` to report what it measured for a claim."""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import shutil
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

from atlas.fsio import atomic_write, default_cache_dir, temporary_files
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
    diagnosis: str = ""
    curves: list[Any] = field(default_factory=list)  # controls.Series: the method's and its control's


_DATASET_CACHE: dict[tuple, Dataset] = {}
#: Outputs of shared models (a teacher trained once for every seed) on the harness's data splits,
#: computed once per process: see :meth:`Run.shared_output`.
_SHARED_OUTPUTS: dict[tuple, Any] = {}


def _weights_fingerprint(model: nn.Module) -> str:
    """A hash of every parameter and buffer: a shared model changed in place is a different model."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _is_harness_split(split: Split) -> bool:
    """Whether ``split`` is one of the loaded data sets' own (kept alive by the data cache)."""
    return any(split is s for d in _DATASET_CACHE.values() for s in (d.train, d.test))


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


class DamagedEntry(Exception):
    """A cached model that must not be used; the message says why (after the entry's name)."""


def _meta_path(path: Path) -> Path:
    """The entry's sidecar: the SHA-256 of the weights file and the training it had."""
    return path.with_suffix(".meta.json")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _non_finite(state: Mapping[str, Any]) -> str | None:
    """The first tensor of a state dict holding a NaN or an infinity, if any."""
    return next((k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
                 and not bool(torch.isfinite(v).all())), None)


def _load_entry(model: nn.Module, path: Path, device: str) -> dict[str, Any]:
    """Load a cache entry's weights into ``model`` and return its metadata, after checking, in
    order: a plain file, a readable sidecar, the checksum, a weights-only load, finite weights,
    and that the weights fit the model. :class:`DamagedEntry` says which failed."""
    if not path.is_file():
        raise DamagedEntry("is not a file")
    try:
        meta = json.loads(_meta_path(path).read_text(encoding="utf-8"))
        if not (isinstance(meta, dict) and isinstance(meta.get("sha256"), str)
                and isinstance(meta.get("budgets"), list)):
            raise ValueError("no sha256")
    except (OSError, ValueError) as exc:
        raise DamagedEntry(f"has no readable checksum ({type(exc).__name__})") from None
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise DamagedEntry(f"cannot be read ({exc.strerror or exc})") from None
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise DamagedEntry("does not match its checksum")
    try:
        with warnings.catch_warnings():  # the warning line above is the one the user needs
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(blob), map_location=device, weights_only=True)
    except Exception as exc:  # whatever a damaged file makes the unpickler raise
        raise DamagedEntry(f"cannot be loaded ({type(exc).__name__})") from None
    if not isinstance(state, Mapping):
        raise DamagedEntry(f"holds a {type(state).__name__}, not a state dict")
    if (bad := _non_finite(state)) is not None:
        raise DamagedEntry(f"has non-finite weights ({bad})")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError) as exc:
        raise DamagedEntry(f"does not fit the model ({str(exc).splitlines()[0][:160]})") from None
    return meta


@dataclass
class Run:
    key: str
    profile: str
    config: dict[str, Any]
    seed: int
    device: str = "cpu"
    data_dir: Path | None = None
    allow_download: bool = False
    cache_dir: Path = field(default_factory=default_cache_dir)
    progress: bool = True
    train_size: int | None = None  # a smaller training set than the data set's (``--train-size``)
    validation: int | None = None  # tuning: evaluate on the training set's last N examples (Dataset.validation)
    measured: list[Measured] = field(default_factory=list)
    budgets: list[dict[str, Any]] = field(default_factory=list)  # what each training stage got
    cache_hits: list[dict[str, Any]] = field(default_factory=list)  # models loaded from the cache
    cache_trained: list[str] = field(default_factory=list)  # cache files this run trained and wrote

    def __post_init__(self) -> None:
        self.generator = training.seed_everything(self.seed)

    # ------------------------------------------------------------------------------------ data
    def dataset(self, name: str | None = None, *, full_train: bool = False) -> Dataset:
        """The profile's data set (``config['dataset']``, or ``name``), limited to
        ``config['train_limit']`` / ``config['test_limit']`` examples where the profile says so.
        ``full_train``: the training set without the profile's ``train_limit`` (a user's
        ``--train-size`` still applies): the data of a teacher that has seen more than its students.
        With ``validation``, the data set's :meth:`~atlas.harness.data.Dataset.validation` split."""
        name = name or self.config["dataset"]
        limits = self._limits(full_train)
        cache_key = (name, str(self.data_dir), *limits, self.validation)
        if cache_key not in _DATASET_CACHE:
            full = data_mod.load_dataset(name, data_dir=self.data_dir, allow_download=self.allow_download)
            if self.validation is not None:
                full = full.validation(self.validation)
            _DATASET_CACHE[cache_key] = full.limited(*limits)
        return _DATASET_CACHE[cache_key]

    def _limits(self, full_train: bool = False) -> tuple[int | None, int | None]:
        train = None if full_train else self.config.get("train_limit")
        if self.train_size is not None:
            train = self.train_size if train is None else min(train, self.train_size)
        return train, self.config.get("test_limit")

    # ---------------------------------------------------------------------------------- models
    def model(self, name: str, data: Dataset | None = None, **kwargs: Any) -> nn.Module:
        data = data or self.dataset()
        return models.build(name, data.input_shape, data.num_classes, **kwargs).to(self.device)

    # -------------------------------------------------------------------------------- training
    def train_config(self, section: str | None = None, **overrides: Any) -> TrainConfig:
        """The :class:`TrainConfig` of the profile's training ``section`` (complete in itself: nothing
        is taken from the level above), with ``overrides``; ``section=None``: ``overrides`` alone.
        Keys a section's class adds to :class:`TrainConfig` (e.g. ``dropout``) are left out."""
        # A section may add its own declared keys (a teacher's dropout, an architecture): those are
        # not training settings. The section's keys were validated against its class at registration.
        values = ({k: v for k, v in self.config[section].items() if k in TrainConfig.model_fields}
                  if section is not None else {})
        return TrainConfig.from_dict({**values, **overrides})

    def train(self, model: nn.Module, split: Split, cfg: TrainConfig, desc: str = "train", **hooks: Any) -> nn.Module:
        """Train for ``cfg.steps`` optimizer steps; the budget is noted in the record's provenance."""
        self.budgets.append({"stage": desc, "steps": cfg.steps, "batch_size": cfg.batch_size,
                             "examples": len(split), "epochs": round(cfg.epochs_on(len(split)), 2)})
        return training.train(model, split, cfg, generator=self.generator, device=self.device,
                              desc=f"{self.key} {desc}", progress=self.progress, **hooks)

    def accuracy(self, model: nn.Module, split: Split) -> float:
        """Top-1 accuracy in percent (from :meth:`predict`, so a shared teacher's is computed once)."""
        return training.accuracy_of(self.predict(model, split), split)

    def predict(self, model: nn.Module, split: Split) -> torch.Tensor:
        """The model's logits on every example of ``split``; computed once per process for a shared
        model (:meth:`shared_output`). Not to be modified in place."""
        return self.shared_output(model, split, "logits", lambda: training.predict(model, split, device=self.device))

    def shared_output(self, model: nn.Module, split: Split, what: str, compute: Callable[[], Any]) -> Any:
        """``compute()``: something a model computes on every example of ``split`` (its logits, its
        feature maps; ``what`` names it). For a model :meth:`cached_model` shares between seeds (a
        teacher) on one of the run's data splits, it is computed once per process and its value reused
        by the next seeds and papers while the weights are unchanged; otherwise it is computed each
        time. The value must not be modified in place."""
        tag = getattr(model, "_atlas_shared", None)
        if tag is None or not _is_harness_split(split):
            return compute()
        key = (tag, _weights_fingerprint(model), id(split), what, str(self.device))
        # The entry holds the split itself: while it exists no other split can take that id.
        entry = _SHARED_OUTPUTS.get(key)
        if entry is None or entry[0] is not split:
            entry = _SHARED_OUTPUTS[key] = (split, compute())
        return entry[1]

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
                 "limits": list(self._limits()), "validation": self.validation, "torch": torch.__version__,
                 "code": _defining_code_hash(fit)}
        path = self.cache_dir / "models" / f"{name}-{stable_hash(ident)[:16]}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        # One process trains an entry; another that wants it meanwhile waits, then loads it.
        with FileLock(path.with_suffix(".lock")):
            for leftover in [*temporary_files(path), *temporary_files(_meta_path(path))]:
                leftover.unlink(missing_ok=True)  # of a writer that was killed
            model, cached = self._load_or_build(name, seed, build, path)
            if cached is not None:
                self.cache_hits.append({"model": name, "file": path.name, "code_hash": ident["code"],
                                        "sha256": cached["sha256"]})
                # the training the cached model had, so that the record still describes it
                self.budgets.extend({**b, "from_cache": True} for b in cached["budgets"] if isinstance(b, dict))
            else:
                first = len(self.budgets)
                fit(model)
                self._save_cached(name, model, path, self.budgets[first:])
                self.cache_trained.append(path.name)
        model.eval()
        if not per_seed:
            model._atlas_shared = path.name  # its outputs may be reused by the next seeds (shared_output)
        self.reseed(f"after:{name}")
        return model

    def _load_or_build(self, name: str, seed: int, build: Callable[[], nn.Module],
                       path: Path) -> tuple[nn.Module, dict[str, Any] | None]:
        """A freshly built model (the same random stream whether or not it is then loaded) with the
        cached weights loaded, and the entry's metadata; ``None`` when there is no usable entry. A
        damaged entry is removed with a one-line warning, and the model built anew to be trained."""
        self.reseed(f"build:{name}", seed=seed)
        model = build().to(self.device)
        if not (path.exists() or path.is_symlink()):
            return model, None
        try:
            return model, _load_entry(model, path, self.device)
        except DamagedEntry as exc:
            print(f"warning: cached model {path} {exc}; removed it, training the model again",
                  file=sys.stderr, flush=True)
            for item in (path, _meta_path(path)):
                _remove(item)
        self.reseed(f"build:{name}", seed=seed)  # a failed load may have changed some weights
        return build().to(self.device), None

    @staticmethod
    def _save_cached(name: str, model: nn.Module, path: Path, budgets: list[dict[str, Any]]) -> None:
        """Save the weights, then their checksum and training beside them (each file atomically,
        the checksum last: an entry without one is not trusted). Non-finite weights are not cached."""
        state = model.state_dict()
        if _non_finite(state):
            print(f"warning: training {name} gave non-finite weights ({_non_finite(state)}); not cached",
                  file=sys.stderr, flush=True)
            return
        buffer = io.BytesIO()
        torch.save(state, buffer)
        blob = buffer.getvalue()
        meta = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob), "budgets": budgets}
        atomic_write(path, blob)
        atomic_write(_meta_path(path), json.dumps(meta))

    def reseed(self, stage: str, seed: int | None = None) -> None:
        """Restart the random streams (torch's global one and the data-order generator) from a seed
        derived from the run's seed (or ``seed``) and ``stage``."""
        derived = int(stable_hash([self.seed if seed is None else seed, stage])[:15], 16)
        torch.manual_seed(derived)
        self.generator.manual_seed(derived)

    # ------------------------------------------------------------------------------- reporting
    def record(self, claim: str, *, model: str, metrics: dict[str, float], dataset: str | None = None,
               differs: str = "", notes: str = "", baseline: tuple[str, str] | None = None,
               baseline_spec: dict[str, Any] | None = None, baseline_data: Dataset | None = None,
               diagnosis: str = "", curves: list[Any] | None = None) -> None:
        """Report what this seed measured for ``claim`` (a claim id of the paper in papers.yaml).

        ``baseline=(harness model name, metric)`` names the uncompressed model the claim's accuracy
        change is measured against and the metric holding its accuracy: the verdict compares it with
        the model's reference accuracy (``atlas calibrate``) to tell whether it converged.
        ``baseline_data`` is the data set it was trained on, if not the profile's. ``diagnosis``: for
        a claim the atlas does not reproduce, what was tried and measured and why the gap is believed
        to be the method's (shown beside the verdict); a paragraph, its line breaks folded. ``curves``:
        :class:`~atlas.harness.controls.Series`, the method's accuracy at several compression levels
        and its family's control's (:mod:`atlas.harness.controls`), the same levels on every seed."""
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
                                      base, " ".join(diagnosis.split()), list(curves or [])))
