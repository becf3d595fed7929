"""Less Is More: Towards Compact CNNs (Zhou, Alvarez & Porikli, ECCV 2016; doi:10.1007/978-3-319-46493-0_40).

Method: instead of pruning a trained network, the number of neurons is optimised while the network
is trained from scratch, by adding sparse constraints on the neurons to the objective,

    min_W  L(W) + lambda sum_l sum_n ||W_{l,n}||,

``W_{l,n}`` the incoming weights of neuron ``n`` of a constrained layer ``l`` and ``||.||`` either the
l2 norm of the group (a group-sparse, l_{2,1} constraint: whole neurons go to zero) or the l1 norm of
its weights (the l1 constraint: a neuron goes once all its weights are zero). The penalty is not
differentiable at zero, where the neurons it is meant to remove end, so it is not minimised by
sub-gradients: the problem is solved by forward-backward splitting (Duchi & Singer 2009), a
gradient step on the loss followed by the penalty's proximal operator with the step's learning rate
``eta``:

    group:  W_{l,n} <- W_{l,n} max(0, 1 - eta lambda / ||W_{l,n}||_2)
    l1:     w <- sign(w) max(0, |w| - eta lambda),

which sets neurons *exactly* to zero during training. A neuron whose incoming weights are zero
outputs the constant ``ReLU(b_n)``; it is removed and that constant is folded into the next layer's
bias, so the compact network computes exactly what the trained one does, with fewer parameters,
less memory and fewer operations at test time (no sparse kernel is needed).

Claims: the abstract (the chapter's sections and tables could not be read where this file was
written; secondary notes confirm the proximal, forward-backward splitting solver): on AlexNet and VGG
over several data sets including ImageNet, "taking first fully connected layer as an example, our
compact CNN contains only 30% of the original neurons without any degradation of the top-1
classification accuracy" (claim ``imagenet-fc-neurons``). Checked: ``accuracy_change_pp`` at least
-1 pp when the first fully-connected layer keeps 30% of its neurons.

Measured here: the harness's LeNet-300-100 (its first hidden layer stands for the first
fully-connected layer) trained from scratch with the group constraint (strength ``lam``) on that
layer's neurons, then compacted to the claim's 30% of its neurons: those the constraint set to zero
first, then, if more remain than the level allows, those of least group norm (so that every seed has
the same levels; ``neurons_zeroed`` counts the neurons the constraint zeroed, ``zeroed_pct`` the share
of the removed neurons that were zero, ``removal_exact`` whether the compact network's test logits
equal the trained one's within 1e-4). No fine-tuning follows (the paper removes the neurons during training).
``baseline_accuracy`` is the same network trained for the same steps on the same minibatches without
the constraint (the declared baseline); ``sparse_accuracy`` the constrained network before removal;
``params`` / ``param_compression``, ``flops`` / ``flop_reduction``, ``dense_latency_ms`` /
``compact_latency_ms`` / ``speedup`` (``measure.latency_ms``, CPU, batch 64) and ``neurons_kept``
(the first hidden layer's width) describe the compact network against the dense baseline. The curve:
the one constrained network compacted to each of ``kept`` (50%, 30%, 15% of the neurons), against its
weight compression, beside global magnitude pruning of the dense baseline at the same ratios, without
retraining (the method trains no longer than its baseline; :func:`atlas.harness.controls.pruning_curve`).

Harness differs: Fashion-MNIST and LeNet-300-100 trained for 2,500 SGD steps instead of AlexNet /
VGG on ImageNet; only the first hidden layer is constrained (the claim's layer); the strength
``lambda`` is set here (the paper's values were not read): on seed 10, 0.01, 0.02, 0.03 and 0.04
zeroed 11%, 50%, 72% and 82% of the neurons, so 0.03 is used, the claim's 70%; one constrained network per seed is
read at the three curve levels; SGD with momentum, the proximal step applied after each update with
the update's learning rate.

Quick verdict (helper's run, one thread on a machine loaded 12-14 deep, 58 s of CPU): inconclusive.
On 3 seeds the constraint zeroed 210-213 of the 300 neurons (70-71%: the claim's level is reached by
the constraint itself, and their removal is exact); the compact network (3.3x fewer parameters and
FLOPs, 2.3-2.6x faster on the CPU at batch 64) was 1.1 pp below the network trained without the
constraint (95% interval -1.40 to -0.85 pp, per seed -1.02, -1.11, -1.24; the baseline converged, 0.7
pp below its reference). The loss is the constraint's, not the removal's. With 0.04 (80% zeroed) the
first quick run lost 1.4 pp (-1.85 to -1.02). On seed 10 a schedule twice as long (5,000 steps) gave
a baseline of 89.6% and, with 0.03, 86% of the neurons zeroed and -1.8 pp: the threshold
accumulates with the steps, so a longer run removes more rather than recovering. Global magnitude
pruning of the dense network (unstructured, no retraining) lost 0.5-0.9 pp at 3.3x. The paper's
first fully-connected layer has 4,096 neurons (AlexNet's fc6); the harness's has 300, on a data set
where the dense network is 89% accurate, so 30% of it has less room than the paper's layer.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat, model_validator
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction
from atlas.harness.training import make_optimizer


class Config(Profile):
    model: Literal["lenet-300-100", "mlp"]  # the harness's fully-connected network
    hidden: list[int] | None = None  # the hidden widths of ``mlp`` (the paper profile: fc6 and fc7)
    train: TrainConfig  # the training from scratch, with the constraint (and of the baseline, without)
    constraint: Literal["group", "l1"] = "group"  # l_{2,1} over each neuron's weights, or l1
    lam: PositiveFloat  # the constraint's strength lambda (set here: the paper's values were not read)
    # the first hidden layer's share of neurons kept at each curve level, read from the one constrained
    # network; the claim's level is 0.3 (Abstract: "only 30% of the original neurons")
    kept: list[float] = Field(min_length=3)
    claim_kept: float = 0.3

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.claim_kept not in self.kept or not all(0 < k < 1 for k in self.kept):
            raise ValueError("kept's levels must lie in (0, 1) and hold claim_kept")
        if (self.model == "mlp") != (self.hidden is not None):
            raise ValueError("hidden is the mlp's widths, and only the mlp's")
        return self


def _sgd(steps: int, lr: float, batch_size: int) -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "momentum": 0.9,
            "weight_decay": 5e-4, "schedule": "cosine"}


LEVELS = [0.5, 0.3, 0.15]

# quick: per seed 2 trainings of 2,500 SGD steps at batch 128 of LeNet-300-100 (the baseline and the
# constrained network; 2,000 steps at batch 64 left the baseline 1.9 pp below its reference, not
# converged); the curve reads the one constrained network at its 3 levels, the control prunes the
# baseline without retraining. lambda: on seed 10, 0.01 zeroed 34 of the 300 neurons, 0.02 149,
# 0.03 216 (72%, the claim's level) and 0.04 247; the first quick run used 0.04 (236-243 zeroed on
# seeds 0-2); 0.03 is the strength whose zeroed share is nearest the claim's 70%.
PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "model": "lenet-300-100", "train": _sgd(300, 0.05, 64),
        "lam": 0.03, "kept": LEVELS,
    },
    "quick": {
        "dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100", "train": _sgd(2500, 0.05, 128),
        "lam": 0.03, "kept": LEVELS,
    },
    "paper": {
        # CIFAR-10 and an MLP with AlexNet's fully-connected widths (fc6, fc7: 4096), trained from scratch
        # for about 100 passes at batch 128 (the ImageNet schedule was not read); lambda: the quick profile's.
        "dataset": "cifar10", "seeds": 3, "model": "mlp", "hidden": [4096, 4096], "train": _sgd(40000, 0.01, 128),
        "lam": 0.03, "kept": LEVELS,
    },
}

CLAIM = "imagenet-fc-neurons"


# -------------------------------------------------------------------------- the proximal operators
def group_norms(weight: torch.Tensor) -> torch.Tensor:
    """``||W_n||_2`` of every neuron's incoming weights (the rows of a Linear weight)."""
    return weight.detach().flatten(1).norm(dim=1)


@torch.no_grad()
def prox_group(weight: torch.Tensor, threshold: float) -> None:
    """In place: ``W_n <- W_n max(0, 1 - threshold / ||W_n||_2)`` for every row (group soft-thresholding)."""
    norms = group_norms(weight)
    scale = (1 - threshold / norms.clamp_min(torch.finfo(weight.dtype).tiny)).clamp_min(0)
    weight.mul_(scale.view(-1, *([1] * (weight.dim() - 1))))


@torch.no_grad()
def prox_l1(weight: torch.Tensor, threshold: float) -> None:
    """In place: ``w <- sign(w) max(0, |w| - threshold)`` (soft-thresholding)."""
    weight.copy_(weight.sign() * (weight.abs() - threshold).clamp_min(0))


PROX = {"group": prox_group, "l1": prox_l1}


def hidden_linears(model: nn.Sequential) -> list[int]:
    """The indices in the MLP's Sequential of the Linear layers followed by a ReLU (the hidden layers)."""
    mods = list(model)
    return [i for i, m in enumerate(mods[:-1]) if isinstance(m, nn.Linear) and isinstance(mods[i + 1], nn.ReLU)]


def train_sparse(run: Run, model: nn.Sequential, lam: float, layers: list[int], desc: str) -> nn.Sequential:
    """Forward-backward splitting: each SGD update (the forward step on the loss) followed by the
    constraint's proximal operator (the backward step) on the constrained layers' weights, with the
    update's own learning rate ``eta``: threshold ``eta * lambda``. ``lam = 0``: plain training."""
    cfg = run.train_config("train")
    opt = make_optimizer(model.parameters(), cfg)
    prox = PROX[run.config["constraint"]]

    def after(m: nn.Module) -> None:
        eta = opt.param_groups[0]["lr"]
        for i in layers:
            prox(m[i].weight, eta * lam)

    run.reseed("zhou2016 training")  # the baseline and every level see the same minibatches
    run.train(model, run.dataset().train, cfg, desc=desc, optimizer=opt,
              after_step=after if lam > 0 else None)
    return model.eval()


# ------------------------------------------------------------------------------------- compaction
@torch.no_grad()
def compact(model: nn.Sequential, layer: int, keep: int) -> tuple[nn.Sequential, int]:
    """A smaller dense copy of the MLP in which hidden layer ``layer`` (a Sequential index) keeps its
    ``keep`` neurons of largest incoming group norm (the zero ones go first). A removed neuron's
    constant output ``ReLU(b_n) W'_{:,n}`` is added to the next Linear's bias, so removing neurons
    whose weights are zero leaves the output unchanged. Returns the copy and how many of the removed
    neurons had zero weights."""
    mods = list(model)
    first = mods[layer]
    nxt = next(j for j in range(layer + 1, len(mods)) if isinstance(mods[j], nn.Linear))
    second = mods[nxt]
    norms = group_norms(first.weight)
    order = torch.sort(norms, descending=True, stable=True).indices
    kept, gone = order[:keep].sort().values, order[keep:]
    new_first = nn.Linear(first.in_features, keep, bias=first.bias is not None).to(first.weight)
    new_first.weight.copy_(first.weight[kept])
    if first.bias is not None:
        new_first.bias.copy_(first.bias[kept])
    new_second = nn.Linear(keep, second.out_features, bias=True).to(second.weight)
    new_second.weight.copy_(second.weight[:, kept])
    bias = second.bias.clone() if second.bias is not None else torch.zeros(second.out_features).to(second.weight)
    if first.bias is not None and len(gone):
        bias += second.weight[:, gone] @ torch.relu(first.bias[gone])
    new_second.bias.copy_(bias)
    mods[layer], mods[nxt] = new_first, new_second
    return nn.Sequential(*mods).eval(), int((norms[gone] == 0).sum())


def weight_count(model: nn.Module) -> int:
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in controls.weight_names(model))


#: Shown beside a failed check: what was tried and why the gap is believed to be the harness's network.
DIAGNOSIS = """
The group constraint's proximal step (group soft-thresholding after every SGD update, with that
update's learning rate), the l1 variant, and the removal of zeroed neurons with their constant output
folded into the next layer's bias were checked against the method (unit tests; the removal is exact
on every seed). The baseline converged (0.7 pp below its reference) and is the same network trained
on the same minibatches without the constraint. On seed 10 the strengths 0.01, 0.02, 0.03 and 0.04
zeroed 11%, 50%, 72% and 82% of the first hidden layer's 300 neurons and cost 0.3, 0.8, 1.3 and 1.7
pp; a schedule twice as long removed more neurons (86% at 0.03) and cost 1.8 pp. At the claim's 30%
the loss is about 1.1 pp on seeds 0-2, the constraint's (the removal adds nothing). The paper's
first fully-connected layer is AlexNet's fc6, 4,096 neurons trained on ImageNet; the harness's is
300 neurons of LeNet-300-100, so the gap is believed to be the small layer's lack of redundancy more
than the method; the paper profile (4,096-wide layers) is where the claim is tested at its scale.
"""


@reproduction("zhou2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = run.config
    data = run.dataset()
    shape = data.input_shape
    kwargs = {"hidden": cfg["hidden"]} if cfg["hidden"] else {}

    def fresh() -> nn.Sequential:
        run.reseed("zhou2016 init")  # the baseline and every level start from the same weights
        return run.model(cfg["model"], **kwargs)

    dense = train_sparse(run, fresh(), 0.0, [], "dense (no constraint)")
    base = run.accuracy(dense, data.test)
    layer = hidden_linears(dense)[0]  # the first fully-connected layer
    width = dense[layer].out_features

    lam = cfg["lam"]
    sparse = train_sparse(run, fresh(), lam, [layer], f"constraint {lam:g}")
    curve: dict[float, float] = {}
    for kept_frac in cfg["kept"]:
        keep_level = max(1, round(kept_frac * width))
        small_level, zeroed_level = compact(sparse, layer, keep_level)
        acc_level = run.accuracy(small_level, data.test)
        curve[round(weight_count(dense) / weight_count(small_level), 2)] = acc_level
        if kept_frac == cfg["claim_kept"]:
            small, acc, zeroed, keep = small_level, acc_level, zeroed_level, keep_level
    logits_sparse, logits_small = run.predict(sparse, data.test), run.predict(small, data.test)
    exact = float(torch.allclose(logits_sparse, logits_small, atol=1e-4, rtol=1e-4))
    removed = width - keep
    flops_dense, flops_small = measure.flops(dense, shape), measure.flops(small, shape)
    lat_dense = measure.latency_ms(dense, shape, batch=64, repeats=20)
    lat_small = measure.latency_ms(small, shape, batch=64, repeats=20)
    run.record(
        CLAIM,
        model=(f"{cfg['model']}: first hidden layer {width} -> {keep} neurons, {cfg['constraint']} constraint "
               f"lambda {lam:g} by forward-backward splitting, compacted without fine-tuning"),
        metrics={
            **measure.accuracy_change(base, acc),
            "sparse_accuracy": run.accuracy(sparse, data.test),
            "neurons_kept": keep,
            "neurons_zeroed": int((group_norms(sparse[layer].weight) == 0).sum()),
            "zeroed_pct": 100.0 * zeroed / max(1, removed),
            "removal_exact": exact,
            "params": measure.count_params(small),
            "param_compression": measure.count_params(dense) / measure.count_params(small),
            "weight_compression": weight_count(dense) / weight_count(small),
            "flops": flops_small,
            "flop_reduction": flops_dense / flops_small,
            "dense_latency_ms": lat_dense,
            "compact_latency_ms": lat_small,
            "speedup": lat_dense / lat_small,
        },
        baseline=(cfg["model"], "baseline_accuracy"),
        diagnosis=DIAGNOSIS,
        differs=(f"{data.name} instead of ImageNet; the harness's {cfg['model']} trained from scratch for "
                 f"{cfg['train']['steps']} steps instead of AlexNet / VGG; only the first hidden layer "
                 f"constrained; lambda {lam:g} set here; neurons beyond the level removed by least group norm"),
        curves=[
            controls.Series("sparse-constrained training (Zhou et al.)", controls.RATIO, controls.ACCURACY, curve),
            controls.pruning_curve(run, dense, sorted(curve), None),
        ],
    )
