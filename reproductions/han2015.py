"""Learning both Weights and Connections for Efficient Neural Networks (Han, Pool, Tran & Dally,
NIPS 2015; arXiv:1506.02626).

Method (Sec. 3): a three-step pipeline. (1) Train the dense network to learn which connections are
important. (2) Prune the unimportant connections: every weight whose magnitude is below a per-layer
threshold is removed (the threshold is a quality parameter times the standard deviation of the
layer's weights, Sec. 4). (3) Retrain the remaining weights with the pruned connections held at zero.
Steps 2 and 3 are iterated (Sec. 3.5): each round removes a further part of the surviving weights and
retrains, which reaches higher compression than pruning once. When the network uses dropout, the
retraining dropout ratio is reduced to ``D_r = D_o * sqrt(C_ir / C_io)`` (Sec. 3.1); the harness's
LeNets have no dropout (as Caffe's), so that rule is not exercised here.

Claims (Table 1, MNIST): LeNet-300-100 pruned 12x (267K -> 22K weights) with error 1.64% -> 1.59%,
LeNet-5 pruned 12x (431K -> 36K) with error 0.80% -> 0.77%. Tables 2/3 give the per-layer fractions
kept: LeNet-300-100 fc1/fc2/fc3 8%/9%/26%; LeNet-5 conv1/conv2/fc1/fc2 66%/12%/8%/19%.

How the threshold is chosen here: instead of searching a quality parameter per layer, each round
prunes a layer by *quantile*, keeping the ``keep`` fraction of its weights with the largest magnitude
(a magnitude threshold per layer, i.e. the paper's rule with the quality parameter that reaches the
paper's per-layer sparsity). The fraction kept after round ``t`` of ``T`` is ``target ** (t / T)``, so
the last round reaches exactly the paper's Table 2/3 sparsity. Biases are not pruned (the paper prunes
connections).

Metrics recorded per claim: ``baseline_accuracy`` is the dense model trained with the *same schedule*
(dense epochs, then the same retraining rounds without masks) so the pruned model gets no extra
training over its baseline; ``dense_accuracy`` is the dense model pruning started from;
``accuracy_change_pp``, ``param_compression`` (biases counted), ``flop_reduction`` (FLOPs left when
each layer skips its zero weights), ``kept_pct_<layer>`` (per-layer percentage kept) and
``storage_bits`` / ``storage_compression`` for a plain CSR encoding of the pruned weights (fp32 values,
``ceil(log2(columns))``-bit column indices, row pointers; conv kernels as out x (in*k*k) matrices,
biases fp32). The relative-index, quantised and Huffman-coded encoding is Deep Compression's
(``reproductions/han2016.py``).

Harness differs: Fashion-MNIST instead of MNIST for the quick profile, far fewer epochs (the paper
trains and retrains to convergence in Caffe), plain SGD with a cosine schedule per training stage.

Shared with later pruning papers (imported from here): :func:`prunable_layers`,
:func:`prune_by_magnitude`, :func:`apply_masks`, :func:`masks_of`, :func:`retrain_with_masks`,
:func:`iterative_prune`, :func:`train_dense`, :func:`train_pruned`, :func:`train_control` (the last
three cached per profile, so Deep Compression starts from the very pruned model measured here).
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from atlas.harness import Run, measure, reproduction
from atlas.harness.run import stable_hash
from atlas.harness.training import TrainConfig

# The paper's per-layer fractions of weights kept (Table 2: LeNet-300-100; Table 3: LeNet-5).
KEEP_LENET_300_100 = {"fc1": 0.08, "fc2": 0.09, "fc3": 0.26}
KEEP_LENET_5 = {"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19}

PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 1, "batch_size": 64, "lr": 0.05, "optimizer": "sgd",
        "archs": {
            "lenet-300-100": {"dense": {"epochs": 4}, "rounds": 2, "retrain": {"epochs": 1, "lr": 0.01},
                              "keep": KEEP_LENET_300_100},
            "lenet-5": {"dense": {"epochs": 2}, "rounds": 2, "retrain": {"epochs": 1, "lr": 0.03},
                        "keep": KEEP_LENET_5},
        },
    },
    "quick": {
        "dataset": "fashion-mnist", "seeds": 1, "batch_size": 128, "lr": 0.05, "optimizer": "sgd",
        "archs": {
            "lenet-300-100": {"dense": {"epochs": 10}, "rounds": 4, "retrain": {"epochs": 2, "lr": 0.01},
                              "keep": KEEP_LENET_300_100},
            "lenet-5": {"dense": {"epochs": 3}, "rounds": 3, "retrain": {"epochs": 1, "lr": 0.03},
                        "keep": KEEP_LENET_5},
        },
    },
    "paper": {
        # Sec. 4: MNIST; Caffe trains LeNets for ~10^4 iterations and the paper retrains each round
        # to convergence. Several prune/retrain rounds (Sec. 3.5).
        "dataset": "mnist", "seeds": 3, "batch_size": 64, "lr": 0.01, "optimizer": "sgd",
        "archs": {
            "lenet-300-100": {"dense": {"epochs": 20}, "rounds": 5, "retrain": {"epochs": 10, "lr": 0.001},
                              "keep": KEEP_LENET_300_100},
            "lenet-5": {"dense": {"epochs": 20}, "rounds": 5, "retrain": {"epochs": 10, "lr": 0.001},
                        "keep": KEEP_LENET_5},
        },
    },
}

#: Claim id in papers.yaml -> the harness model it is measured on.
CLAIMS = {"lenet-300-100": "lenet-300-100", "lenet-5": "lenet-5"}

Masks = dict[str, torch.Tensor]


# --------------------------------------------------------------------------------------- layers
def prunable_layers(model: nn.Module) -> dict[str, str]:
    """The paper's layer names (``conv1``, ``conv2``, ..., ``fc1``, ...) in model order, mapped to the
    names of their weight parameters. Only Conv/Linear weights are pruned, never biases."""
    names: dict[str, str] = {}
    convs = fcs = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Conv1d):
            convs += 1
            names[f"conv{convs}"] = f"{name}.weight"
        elif isinstance(module, nn.Linear):
            fcs += 1
            names[f"fc{fcs}"] = f"{name}.weight"
    return names


def keep_by_param(model: nn.Module, keep: dict[str, float]) -> dict[str, float]:
    """``{paper layer name: fraction}`` -> ``{weight parameter name: fraction}``."""
    layers = prunable_layers(model)
    return {layers[layer]: frac for layer, frac in keep.items()}


# -------------------------------------------------------------------------------------- pruning
def quality_threshold(weight: torch.Tensor, quality: float) -> float:
    """The paper's pruning threshold: a quality parameter times the std of the layer's weights."""
    return quality * float(weight.detach().std())


def magnitude_mask(weight: torch.Tensor, keep: float) -> torch.Tensor:
    """A mask keeping the ``round(keep * numel)`` weights of largest magnitude (a per-layer magnitude
    threshold at the ``1 - keep`` quantile of ``|w|``)."""
    k = max(1, min(weight.numel(), int(round(keep * weight.numel()))))
    flat = weight.detach().abs().flatten()
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[torch.topk(flat, k, sorted=False).indices] = True
    return mask.view_as(weight)


def prune_by_magnitude(model: nn.Module, keep: dict[str, float], masks: Masks | None = None) -> Masks:
    """Prune each named weight (``keep``: parameter name -> fraction of the layer to keep) to its
    largest-magnitude weights, zero the rest in place and return the masks. With ``masks`` (the
    previous round's), a connection once removed stays removed."""
    params = dict(model.named_parameters())
    out: Masks = {}
    for name, frac in keep.items():
        weight = params[name]
        mask = magnitude_mask(weight, frac)
        if masks is not None and name in masks:
            mask &= masks[name]
        out[name] = mask
    apply_masks(model, out)
    return out


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero every pruned connection (in place)."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].dtype))


def masks_of(model: nn.Module, keep: dict[str, float]) -> Masks:
    """The masks of an already pruned model: its non-zero weights in the layers named by ``keep``."""
    params = dict(model.named_parameters())
    return {name: params[name].detach() != 0 for name in keep}


def retrain_with_masks(run: Run, model: nn.Module, masks: Masks, cfg: TrainConfig, desc: str = "retrain") -> nn.Module:
    """Retrain the surviving weights, re-applying the masks after every step so that the pruned
    connections stay at zero."""
    apply_masks(model, masks)
    return run.train(model, run.dataset().train, cfg, desc=desc, after_step=lambda m: apply_masks(m, masks))


def iterative_prune(run: Run, model: nn.Module, keep: dict[str, float], rounds: int, cfg: TrainConfig,
                    desc: str = "") -> Masks:
    """Sec. 3.5: ``rounds`` rounds of prune-then-retrain; after round ``t`` each layer keeps
    ``keep ** (t / rounds)`` of its weights, so the last round reaches ``keep``."""
    masks: Masks | None = None
    for t in range(1, rounds + 1):
        frac = {name: target ** (t / rounds) for name, target in keep.items()}
        masks = prune_by_magnitude(model, frac, masks)
        retrain_with_masks(run, model, masks, cfg, desc=f"{desc} prune round {t}/{rounds}")
    assert masks is not None
    return masks


# ------------------------------------------------------------------------- the trained models
def reseed(run: Run, stage: str) -> None:
    """Seed model initialisation and data order from (seed, stage), so that a stage gives the same
    weights whether or not the stages before it came from the cache."""
    seed = int(stable_hash([run.seed, stage])[:8], 16)
    torch.manual_seed(seed)
    run.generator.manual_seed(seed)


def arch_config(run: Run, arch: str) -> dict:
    return run.config["archs"][arch]


def dense_config(run: Run, arch: str) -> TrainConfig:
    return run.train_config(**arch_config(run, arch)["dense"])


def retrain_config(run: Run, arch: str) -> TrainConfig:
    return run.train_config(**arch_config(run, arch)["retrain"])


def _code_hash() -> str:
    """Hash of the source of every function that determines the cached weights, so that a change to
    the method retrains instead of reusing stale weights."""
    fns = (prunable_layers, keep_by_param, magnitude_mask, prune_by_magnitude, apply_masks, masks_of,
           retrain_with_masks, iterative_prune, reseed, arch_config, dense_config, retrain_config,
           train_dense, train_pruned, train_control)
    return stable_hash([inspect.getsource(f) for f in fns])[:16]


def _spec(run: Run, arch: str, stage: str) -> dict:
    cfg = arch_config(run, arch)
    spec = {"arch": arch, "code": _code_hash(), "dense": vars(dense_config(run, arch))}
    if stage != "dense":
        spec |= {"retrain": vars(retrain_config(run, arch)), "rounds": cfg["rounds"]}
    if stage == "pruned":
        spec["keep"] = cfg["keep"]
    return spec


def train_dense(run: Run, arch: str) -> nn.Module:
    """Step 1: the dense network, trained once per profile, seed and data set (cached)."""

    def fit(model: nn.Module) -> None:
        reseed(run, f"{arch} dense data")
        run.train(model, run.dataset().train, dense_config(run, arch), desc=f"{arch} dense")

    def build() -> nn.Module:
        reseed(run, f"{arch} dense init")
        return run.model(arch)

    return run.cached_model(f"han2015-{arch}-dense", _spec(run, arch, "dense"), build=build, fit=fit)


def train_pruned(run: Run, arch: str) -> tuple[nn.Module, Masks]:
    """Steps 2-3, iterated: the dense network pruned to the paper's per-layer sparsity with
    retraining after each round (cached); returns the model and its masks."""
    cfg = arch_config(run, arch)
    dense = train_dense(run, arch)

    def fit(model: nn.Module) -> None:
        model.load_state_dict(dense.state_dict())
        reseed(run, f"{arch} prune data")
        iterative_prune(run, model, keep_by_param(model, cfg["keep"]), cfg["rounds"], retrain_config(run, arch),
                        desc=arch)

    model = run.cached_model(f"han2015-{arch}-pruned", _spec(run, arch, "pruned"),
                             build=lambda: run.model(arch), fit=fit)
    return model, masks_of(model, keep_by_param(model, cfg["keep"]))


def train_control(run: Run, arch: str) -> nn.Module:
    """The uncompressed baseline with the same schedule: the dense network retrained for the same
    rounds and epochs as the pruned one, without masks (cached)."""
    cfg = arch_config(run, arch)
    dense = train_dense(run, arch)

    def fit(model: nn.Module) -> None:
        model.load_state_dict(dense.state_dict())
        reseed(run, f"{arch} prune data")
        for t in range(1, cfg["rounds"] + 1):
            run.train(model, run.dataset().train, retrain_config(run, arch), desc=f"{arch} control round {t}")

    return run.cached_model(f"han2015-{arch}-control", _spec(run, arch, "control"),
                            build=lambda: run.model(arch), fit=fit)


# ------------------------------------------------------------------------------------- storage
def csr_parts(model: nn.Module, masks: Masks) -> list[measure.Encoded]:
    """The pruned model in compressed sparse row format: each pruned weight as an out x (in*k*k)
    matrix with fp32 values, ``ceil(log2(columns))``-bit column indices and ``rows + 1`` row pointers of
    ``ceil(log2(nnz + 1))`` bits; every other parameter (biases) dense fp32."""
    parts: list[measure.Encoded] = []
    for name, param in model.named_parameters():
        if name not in masks:
            parts.append(measure.Encoded(name, measure.FP32_BITS * param.numel(), "fp32"))
            continue
        rows = param.shape[0]
        cols = param.numel() // rows
        nnz = int(masks[name].sum())
        col_bits = max(1, math.ceil(math.log2(cols)))
        ptr_bits = max(1, math.ceil(math.log2(nnz + 1)))
        parts.append(measure.Encoded(name, nnz * (measure.FP32_BITS + col_bits) + (rows + 1) * ptr_bits,
                                     f"CSR: fp32 values, {col_bits}-bit column indices"))
    return parts


def kept_percent(model: nn.Module) -> dict[str, float]:
    """``kept_pct_<layer>``: the percentage of each prunable layer's weights that are non-zero."""
    params = dict(model.named_parameters())
    out = {}
    for layer, name in prunable_layers(model).items():
        w = params[name].detach()
        out[f"kept_pct_{layer}"] = 100.0 * float(torch.count_nonzero(w)) / w.numel()
    return out


def schedule_note(run: Run, arch: str) -> str:
    cfg = arch_config(run, arch)
    return (f"{cfg['dense']['epochs']} dense epochs, then {cfg['rounds']} prune/retrain rounds of "
            f"{cfg['retrain']['epochs']} epoch(s) at lr {cfg['retrain']['lr']}")


@reproduction("han2015", profiles=PROFILES)
def reproduce(run: Run) -> None:
    data = run.dataset()
    for claim, arch in CLAIMS.items():
        dense = train_dense(run, arch)
        pruned, masks = train_pruned(run, arch)
        control = train_control(run, arch)
        acc_base = run.accuracy(control, data.test)
        acc = run.accuracy(pruned, data.test)
        metrics = {
            "baseline_accuracy": acc_base,
            "dense_accuracy": run.accuracy(dense, data.test),
            "accuracy": acc,
            "accuracy_change_pp": acc - acc_base,
            **measure.compression_metrics(dense, pruned, data.input_shape, csr_parts(pruned, masks)),
            **kept_percent(pruned),
        }
        run.record(
            claim, model=arch, metrics=metrics,
            differs=f"{schedule_note(run, arch)}; per-layer quantile pruning to the paper's Table 2/3 "
                    "sparsity; baseline = dense model given the same extra epochs without pruning",
        )
