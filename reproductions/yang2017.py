"""Designing Energy-Efficient Convolutional Neural Networks Using Energy-Aware Pruning (Yang, Chen &
Sze, CVPR 2017; arXiv:1611.05128).

Method: pruning guided by an energy model instead of the weight count.

Energy model (Sec. 3). A layer's energy is computation plus data movement,
``E = E_comp + E_data``. ``E_comp = e_MAC * M_eff``, with ``M_eff`` the MACs left when zero weights
are skipped (``M * nnz(W) / numel(W)``). ``E_data`` is the accesses at each level of the memory
hierarchy (DRAM, global buffer, inter-PE array, register file) times their energy per access,
normalised to one MAC. The paper takes these costs from the Eyeriss energy model (its tool at
eyeriss.mit.edu/energy.html); the values used here are the Eyeriss ones, DRAM 200, buffer 6,
array 2, RF 1, MAC 1 (``EYERISS_COST``), not confirmed in the paper's text read here (only its
abstract and introduction). The data-flow mapping of the paper's tool is not reproduced; this file
uses a simple stated mapping, computed here (the harness has no energy model): every non-zero
weight, every input activation and every output activation moves once through DRAM, buffer and
array (batch 1), and every effective MAC reads its weight and input and reads-and-writes its
partial sum in the RF (3 RF accesses):
``E = M_eff (e_MAC + 3 e_RF) + (e_DRAM + e_buf + e_array) (nnz(W) + N_in + N_out)``.

Pruning (Sec. 4): layer by layer, the layers in order of their energy (most energy first); within
a layer, iteratively remove the smallest-magnitude weights and restore the layer's output by a
closed-form least-squares fit of the remaining weights: for output unit ``j`` with kept inputs
``S_j``, ``w_{j,S} = argmin || Y_j - X_S w ||^2`` on sampled inputs ``X`` of the (already pruned)
network and the dense network's outputs ``Y`` (the paper minimises the error in the output feature
maps, not in the weights). Pruning of a layer stops when the accuracy drop exceeds a threshold; after
all layers, the whole network is fine-tuned with back-propagation (pruned weights held at zero).

Claims (abstract of arXiv:1611.05128; two abstract texts were read, the version was not determined): the energy of AlexNet is reduced 3.7x and of
GoogLeNet 1.6x with less than 1% top-5 accuracy loss; energy-aware pruning reduces energy more
than magnitude-based pruning (Han et al. 2015, whose magnitude pruning and masked retraining this
method builds on and compares against: ``reproductions/han2015.py``).

Measured (claim ``alexnet-energy``, LeNet-300-100): ``energy_dense`` and ``energy_pruned`` from the
model above (normalised MAC units, computed here), ``energy_reduction`` (their ratio),
``param_compression`` etc. (``measure.compression_metrics``), ``accuracy_change_pp`` against the same
dense network fine-tuned for the same steps without masks, ``energy_magnitude`` (global magnitude
pruning at the same weight count, ``controls.global_magnitude_masks``) and
``energy_gain_over_magnitude`` (``energy_magnitude / energy_pruned``), and ``kept_pct_<layer>``.
The curve: the method at ``ratios`` beside ``controls.pruning_curve`` with the same fine-tuning steps.

Target weight count. The paper's stopping rule (an accuracy threshold per layer) gives whatever
compression it gives; so that the curve has the same ratios on every seed, each layer (energy
order) is pruned down the ``keep_grid`` while the accuracy on ``val_samples`` training examples stays
within ``max_drop_pp`` of the dense network's, but never below the count that reaches the target
ratio; when the target is reached the remaining (less energy-hungry) layers stay dense, and when the
threshold stops every layer before the target the most energy-hungry layer is pruned further.

Harness differs: LeNet-300-100 on Fashion-MNIST (quick) instead of AlexNet/GoogLeNet on ImageNet:
a conv net's least-squares restore and steps did not fit the quick time budget; for a fully
connected net the energy is dominated by weight fetches from DRAM, so energy reduction follows
weight compression closely. Top-1 instead of top-5; SGD, cosine schedules; one dense network for
all seeds; a simple mapping instead of the Eyeriss row-stationary mapping.

What the quick record shows (Fashion-MNIST, 3 seeds): the energy order is fc1 > fc2 > fc3; at 10x
fewer weights the estimated energy falls 9.5x with a top-1 change of about -0.4 pp against the dense
network fine-tuned for the same 400 steps, so the claim's pair (at least 3.7x at under 1 pp) holds.
The energy of global magnitude pruning at the same weight count is the same (gain 1.0): for a fully
connected network at batch 1 every weight is used by exactly one MAC and fetched once, so this model's
energy is affine in the total non-zero count whichever layer the weights come from; the energy order
can only pay off where layers reuse weights differently (convolutions), which the quick profile does
not measure. The layer-wise least-squares restore does pay off in accuracy: the method's curve lies
above global magnitude pruning's at the same ratios and fine-tuning steps (about +0.6 pp at 10x and
+1 pp at 20x in the record this docstring was written from).
"""
from __future__ import annotations

from typing import Literal

import torch
from atlas_reproductions.han2015 import apply_masks, magnitude_mask, prunable_layers, retrain_with_masks
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction

#: Normalised energy per access (per MAC for "mac"): Eyeriss's values (DRAM 200x, global buffer 6x,
#: inter-PE array 2x, RF 1x a MAC), the costs the paper's energy tool is built on.
EYERISS_COST = {"mac": 1.0, "rf": 1.0, "array": 2.0, "buffer": 6.0, "dram": 200.0}
RF_ACCESSES_PER_MAC = 3  # weight read, input read, partial sum read+write counted as one access pair


class Pruning(Section):
    ratios: list[PositiveFloat]  # compression ratios of the curve (prunable weights / kept)
    claim_ratio: PositiveFloat  # the ratio the claim's metrics are measured at (one of ratios)
    keep_grid: list[float] = Field(min_length=1)  # decreasing kept fractions tried in each layer
    max_drop_pp: float = Field(ge=0)  # per-layer stop: accuracy drop on the sample (pp)
    val_samples: PositiveInt  # training examples used for the LS fit and the stop rule
    ridge: float = Field(ge=0, default=1e-4)  # relative damping of the normal equations


class Config(Profile):
    model: Literal["lenet-300-100"]
    dense: TrainConfig  # the dense network (one for all seeds)
    finetune: TrainConfig  # the global fine-tune after layer-wise pruning (and the control's)
    pruning: Pruning


def _sgd(steps: int, lr: float, batch: int) -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": "cosine"}


GRID = [0.5, 0.3, 0.2, 0.12, 0.08, 0.05, 0.03, 0.02]
PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "model": "lenet-300-100", "dense": _sgd(150, 0.05, 64),
              "finetune": _sgd(40, 0.01, 64),
              "pruning": {"ratios": [4.0, 8.0], "claim_ratio": 8.0, "keep_grid": GRID, "max_drop_pp": 2.0,
                          "val_samples": 512}},
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100",
              "dense": _sgd(3000, 0.05, 128), "finetune": _sgd(400, 0.01, 128),
              "pruning": {"ratios": [5.0, 10.0, 20.0], "claim_ratio": 10.0, "keep_grid": GRID,
                          "max_drop_pp": 1.0, "val_samples": 2048}},
    "paper": {"dataset": "mnist", "seeds": 5, "model": "lenet-300-100", "dense": _sgd(18750, 0.01, 64),
              "finetune": _sgd(9375, 0.001, 64),
              "pruning": {"ratios": [5.0, 10.0, 20.0], "claim_ratio": 10.0, "keep_grid": GRID,
                          "max_drop_pp": 1.0, "val_samples": 4096}},
}

Masks = dict[str, torch.Tensor]


# ------------------------------------------------------------------------------- energy model
def layer_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, int, int]]:
    """``{weight name: (dense MACs, input activations, output activations)}`` at batch 1, for every
    Conv/Linear layer (forward hooks)."""
    out: dict[str, tuple[int, int, int]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear | nn.Conv2d):
            def hook(m: nn.Module, inp: tuple, res: torch.Tensor, name: str = name) -> None:
                w = m.weight
                per_out = w[0].numel()  # in_features, or in_ch/groups * k * k
                macs = res[0].numel() * per_out
                out[f"{name}.weight"] = (macs, inp[0][0].numel(), res[0].numel())
            hooks.append(mod.register_forward_hook(hook))
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was)
    for h in hooks:
        h.remove()
    return out


def layer_energy(macs: int, n_in: int, n_out: int, nnz: int, numel: int,
                 cost: dict[str, float] = EYERISS_COST) -> float:
    """One layer's energy (MAC units): computation on the non-zero weights plus each datum's trip
    through the memory hierarchy (module docstring)."""
    m_eff = macs * nnz / numel
    move = cost["dram"] + cost["buffer"] + cost["array"]
    return m_eff * (cost["mac"] + RF_ACCESSES_PER_MAC * cost["rf"]) + move * (nnz + n_in + n_out)


def energy_by_layer(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """``{weight name: energy}`` of the model as it is (its zero weights skipped)."""
    params = dict(model.named_parameters())
    return {name: layer_energy(macs, n_in, n_out, int(torch.count_nonzero(params[name])), params[name].numel())
            for name, (macs, n_in, n_out) in layer_shapes(model, input_shape).items()}


def energy(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    return sum(energy_by_layer(model, input_shape).values())


def energy_order(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Weight names, the most energy-hungry layer first (the paper's pruning order)."""
    e = energy_by_layer(model, input_shape)
    return sorted(e, key=lambda n: -e[n])


# ----------------------------------------------------------------------------- LS restoration
def restore_linear(weight: torch.Tensor, mask: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                   ridge: float = 1e-4) -> torch.Tensor:
    """Least-squares weights of a pruned linear layer: for each output unit ``j`` the kept weights
    minimise ``||y_j - x[:, S_j] w||^2`` (``y``: target outputs with the bias removed), through the
    normal equations ``G[S,S] w = x[:, S]^T y_j`` with ``G = x^T x`` damped by ``ridge * mean(diag G)``."""
    g = x.T @ x
    g = g + ridge * g.diagonal().mean() * torch.eye(g.shape[0], dtype=g.dtype)
    b = x.T @ y  # in x out
    new = torch.zeros_like(weight)
    for j in range(weight.shape[0]):
        s = mask[j].nonzero().flatten()
        if s.numel():
            new[j, s] = torch.linalg.solve(g[s][:, s], b[s, j])
    return new


def _layer_io(model: nn.Module, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The input and output (pre-activation) of the layer owning weight ``name`` on ``x``."""
    mod = dict(model.named_modules())[name.rsplit(".", 1)[0]]
    got: dict[str, torch.Tensor] = {}
    h = mod.register_forward_hook(lambda m, i, o: got.update(i=i[0].detach(), o=o.detach()))
    with torch.no_grad():
        model(x)
    h.remove()
    return got["i"].flatten(1), got["o"].flatten(1)


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * float((model(x).argmax(1) == y).float().mean())


def energy_aware_prune(dense: nn.Module, x: torch.Tensor, y: torch.Tensor, ratio: float, cfg: Pruning,
                       input_shape: tuple[int, ...]) -> tuple[nn.Module, Masks]:
    """Sec. 4 at a target compression ratio: layers in energy order, each pruned by magnitude down
    ``keep_grid`` with a least-squares restore of its outputs after every step, while the sample
    accuracy stays within ``max_drop_pp`` of the dense network's (module docstring). Returns the
    pruned (not fine-tuned) model and its masks."""
    model = controls.trainable_copy(dense).eval()
    params = dict(model.named_parameters())
    names = energy_order(model, input_shape)
    numel = {n: params[n].numel() for n in names}
    target = max(1, round(sum(numel.values()) / ratio))
    nnz = dict(numel)
    masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    base_acc = _acc(model, x, y)

    def prune_to(name: str, keep: float) -> None:
        w = params[name]
        mask = magnitude_mask(w, keep) & masks[name]
        inp, _ = _layer_io(model, name, x)
        _, out = _layer_io(dense, name, x)
        bias = dict(model.named_parameters()).get(name[: -len("weight")] + "bias")
        tgt = out - (bias.detach() if bias is not None else 0.0)
        with torch.no_grad():
            w.copy_(restore_linear(w.detach(), mask, inp, tgt, cfg.ridge))
        masks[name] = mask
        nnz[name] = int(mask.sum())

    for name in names:
        others = sum(v for n, v in nnz.items() if n != name)
        floor = (target - others) / numel[name]
        if floor >= 1.0:
            continue
        saved = (params[name].detach().clone(), masks[name].clone())
        for keep in cfg.keep_grid:
            keep = max(keep, floor)
            prune_to(name, keep)
            if keep <= floor + 1e-12:
                break
            if base_acc - _acc(model, x, y) > cfg.max_drop_pp:  # step back to the last good state
                with torch.no_grad():
                    params[name].copy_(saved[0])
                masks[name] = saved[1]
                nnz[name] = int(saved[1].sum())
                break
            saved = (params[name].detach().clone(), masks[name].clone())
        if sum(nnz.values()) <= target:
            break
    if sum(nnz.values()) > target:  # the threshold stopped every layer: prune the first layer further
        first = names[0]
        others = sum(v for n, v in nnz.items() if n != first)
        prune_to(first, max(1, target - others) / numel[first])
    apply_masks(model, masks)
    return model, masks


# ------------------------------------------------------------------------------------ the runs
def train_dense(run: Run) -> nn.Module:
    cfg = Config.model_validate(run.config)

    def fit(model: nn.Module) -> None:
        run.reseed("yang2017 dense data", seed=0)
        run.train(model, run.dataset().train, cfg.dense, desc="dense")
    return run.cached_model("yang2017-dense", {"model": cfg.model, "dense": cfg.dense.model_dump()},
                            build=lambda: run.model(cfg.model), fit=fit, per_seed=False)


def sample(run: Run, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training examples drawn for this seed (the LS fit's inputs and the stop rule's sample)."""
    run.reseed("yang2017 sample")
    train = run.dataset().train
    idx = torch.randperm(len(train), generator=run.generator)[:n]
    return train.x[idx], train.y[idx]


DIAGNOSIS = ""


@reproduction("yang2017", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    data = run.dataset()
    shape = tuple(data.input_shape)
    dense = train_dense(run).eval()
    x, y = sample(run, cfg.pruning.val_samples)

    method: dict[float, float] = {}
    claim_model, claim_masks = None, None
    for ratio in cfg.pruning.ratios:
        pruned, masks = energy_aware_prune(dense, x, y, ratio, cfg.pruning, shape)
        run.reseed(f"yang2017 finetune {ratio:g}")
        retrain_with_masks(run, pruned, masks, cfg.finetune, desc=f"energy-aware {ratio:g}x fine-tune")
        pruned.eval()
        method[float(ratio)] = run.accuracy(pruned, data.test)
        if ratio == cfg.pruning.claim_ratio:
            claim_model, claim_masks = pruned, masks
    assert claim_model is not None and claim_masks is not None

    control = controls.trainable_copy(dense)
    run.reseed("yang2017 dense fine-tune")
    run.train(control, data.train, cfg.finetune, desc="dense, same fine-tuning steps")
    acc_base = run.accuracy(control.eval(), data.test)
    acc = method[float(cfg.pruning.claim_ratio)]

    magnitude = controls.trainable_copy(dense)
    apply_masks(magnitude, controls.global_magnitude_masks(magnitude, cfg.pruning.claim_ratio))
    e_dense, e_pruned, e_mag = energy(dense, shape), energy(claim_model, shape), energy(magnitude, shape)
    layers = {v: k for k, v in prunable_layers(dense).items()}
    kept = {f"kept_pct_{layers[n]}": 100.0 * float(m.float().mean()) for n, m in claim_masks.items()}
    order = [layers[n] for n in energy_order(dense, shape)]
    metrics = {
        "baseline_accuracy": acc_base, "dense_accuracy": run.accuracy(dense, data.test), "accuracy": acc,
        "accuracy_change_pp": acc - acc_base,
        "energy_dense": e_dense, "energy_pruned": e_pruned, "energy_reduction": e_dense / e_pruned,
        "energy_magnitude": e_mag, "energy_reduction_magnitude": e_dense / e_mag,
        "energy_gain_over_magnitude": e_mag / e_pruned,
        **measure.compression_metrics(dense, claim_model, shape), **kept,
    }
    curves = [controls.Series("energy-aware pruning (Yang et al.)", controls.RATIO, controls.ACCURACY, method),
              controls.pruning_curve(run, dense, cfg.pruning.ratios, cfg.finetune)]
    run.record("alexnet-energy", model=cfg.model, metrics=metrics, baseline=(cfg.model, "baseline_accuracy"),
               baseline_spec={}, curves=curves, diagnosis=DIAGNOSIS,
               differs=(f"LeNet-300-100, {cfg.dense.steps} dense steps (one dense model), energy order "
                        f"{' > '.join(order)}, target {cfg.pruning.claim_ratio:g}x weights, per-layer stop at "
                        f"{cfg.pruning.max_drop_pp:g} pp on {cfg.pruning.val_samples} training examples, "
                        f"{cfg.finetune.steps} fine-tuning steps; energy from a stated Eyeriss-cost model "
                        "computed in the reproduction, not the paper's tool"))
