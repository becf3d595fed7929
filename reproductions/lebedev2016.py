"""Fast ConvNets Using Group-Wise Brain Damage (Lebedev & Lempitsky, CVPR 2016; arXiv:1506.02515).

Method (the abstract, and the CVPR text's Table 1 as ShrinkBench records it): a convolution computed
as a matrix product (im2col) multiplies the ``T x (S d d)`` kernel matrix, whose column ``(s, i, j)``
holds the weights ``W[:, s, i, j]`` of every output map for input map ``s`` at kernel offset ``(i, j)``,
by the ``(S d d) x (H W)`` matrix of input patches. Group-wise brain damage prunes whole columns: a
group ``g = (s, i, j)`` removed is a column of the kernel matrix and a row of the patch matrix
removed, so the layer becomes the product of two *thinner dense* matrices, and its cost falls in
proportion to the groups kept (the layer's receptive field takes a data-driven shape; a map all of
whose groups are removed is no longer read). The groups are pruned during training by a
group-sparsity regulariser, the group lasso

    L(W) + lambda sum_g ||W_g||_2,

and, in the "gradual" variant, by shrinking the layer gradually: the fraction of groups removed
rises during the regularised training, each time the groups of smallest norm being removed for good
(their weights held at zero), until the target sparsity is reached; the network is then fine-tuned
with the sparsity pattern fixed.

Claims: Table 1 (CaffeNet on ImageNet, only its second convolution accelerated; via ShrinkBench's
results table, Blalock et al. 2020): sparsity patterns learned with the group-sparsity regulariser
("groupwise", with fine-tuning) range from a 0.09 pp top-1 gain to a 1.50 pp loss at 50-90% of the layer's groups removed
(2x-10x fewer FLOPs in the layer); "gradual" shrinking loses 0.28 pp at 89% (9x), 1.04 pp at 88%
(8.5x) and 1.07 pp at 95% (20x); training with "fixed" sparsity patterns ranges from a 0.53 pp gain
(46%) to a 1.54 pp loss (88%). These ImageNet rows are not comparable with the harness; the claim measured here (``gradual-layer-9x``)
maps the 9x row onto the harness: the second convolution of a small conv net shrunk gradually to 89%
of its groups removed, checked as ``accuracy_change_pp`` (against the same network trained on for the
same steps without pruning) at least -0.28 - 1 pp; the layer's FLOP reduction (9x by construction)
is recorded, not checked.

Measured: ``baseline_accuracy``, ``accuracy``, ``accuracy_change_pp``, ``dense_accuracy``,
``layer_flop_reduction`` (``measure.flops`` of the layer alone, the dense ``nn.Conv2d`` against its
thinned im2col product), ``flop_reduction`` (the whole network), ``groups_kept``,
``maps_read`` (input maps the thinned layer still reads), ``layer_latency_us`` /
``thinned_latency_us`` / ``layer_speedup`` (``measure.kernel_latency``: the layer as the dense
im2col product against the thinned one, on the same input, CPU, one thread), ``dense_latency_ms`` /
``latency_ms`` / ``speedup`` (the whole network, ``measure.latency_ms``, batch 64),
``one_shot_accuracy`` (the same number of groups removed from the dense network by norm, no
regularised training, fine-tuned for the same steps: what the regulariser adds). Curve: the method at
``curve`` sparsities (each a gradual run), against the network's weight compression ratio, beside
global magnitude pruning of the same dense network fine-tuned for the same steps.

Harness differs: Fashion-MNIST instead of ImageNet; the harness's VGG-style conv net (three 3x3
conv-BN-ReLU stages, 8-16-32 channels) instead of CaffeNet, its second convolution accelerated
(3x3 kernels: 72 groups of 16 weights, CaffeNet's conv2 has 48 x 25 groups per half); a few hundred
SGD steps; lambda, the shrinking schedule (a linear ramp of the removed fraction over the first
``ramp`` of the regularised steps, a removal every ``every`` steps) and the fine-tuning length are
chosen here, not read in the paper (its text was not read beyond the abstract).

Quick verdict: not reproduced (helper's run, 3 seeds, one thread on a heavily loaded machine, 55 s of
CPU). With 89% of the second convolution's 72 groups removed (8 kept, 3 of its 8 input maps still
read; the layer's FLOPs 9.0x fewer, the network's 1.65x) the network ended 3.0 pp below the dense
network trained on for the same 200 steps (95% interval -4.6 to -1.4; per seed -2.2, -3.4, -3.3):
the check (at least -1.28) fails. The thinned layer as an im2col product ran 1.9-3.1x faster than
the full im2col product on the same input, but the whole network with it ran slower than the dense
network (0.64-0.81x): PyTorch's direct convolution beats unfold plus a matrix product at this size.
The curve: 83% at 50% of the groups removed, 80-82% at 75%, 77-80% at 89%, where global magnitude
pruning of as many weights anywhere in the network kept 84-85% (the control may prune any layer).
"""

from __future__ import annotations

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn
from torch.nn import functional as F

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction


class Shrinking(Section):
    """The regularised training with gradual shrinking."""

    train: TrainConfig  # the regularised training, from the dense network
    strength: PositiveFloat  # lambda of the group lasso (per group norm, added to the mean loss)
    ramp: float = Field(default=0.75, gt=0, le=1)  # fraction of the training over which the removed share rises
    every: PositiveInt = 10  # steps between removals


class Config(Profile):
    chans: list[PositiveInt] = Field(min_length=2)  # the staged-conv net's channels (one conv per stage)
    layer: int = 1  # the accelerated convolution (0-based; Table 1: CaffeNet's second)
    dense: TrainConfig
    dense_per_seed: bool = True
    shrink: Shrinking
    finetune: TrainConfig  # with the sparsity pattern fixed
    sparsity: float = Field(gt=0, lt=1)  # the claim's fraction of the layer's groups removed
    curve: list[float] = Field(min_length=3)  # sparsities of the curve (one of them the claim's)
    latency_batch: PositiveInt = 64


def _sgd(steps: int, lr: float, batch_size: int, schedule: str = "cosine") -> dict:
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": schedule}


PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "chans": [8, 16, 32], "dense": _sgd(60, 0.05, 64), "dense_per_seed": False,
        "shrink": {"train": _sgd(30, 0.01, 64, "constant"), "strength": 1e-3, "every": 5},
        "finetune": _sgd(10, 0.01, 64, "constant"), "sparsity": 0.89, "curve": [0.5, 0.75, 0.89],
    },
    "quick": {
        # One dense net (600 SGD steps at batch 32) for every seed; per seed three gradual runs (the
        # curve, one of them the claim's), the one-shot ablation, the continued baseline and the
        # control at three ratios, each 150 + 50 steps: 1,200 steps a seed.
        "dataset": "fashion-mnist", "seeds": 3, "test_limit": 3000, "chans": [8, 16, 32],
        "dense": _sgd(600, 0.05, 32), "dense_per_seed": False,
        "shrink": {"train": _sgd(150, 0.01, 32, "constant"), "strength": 1e-3, "every": 10},
        "finetune": _sgd(50, 0.01, 32, "constant"), "sparsity": 0.89, "curve": [0.5, 0.75, 0.89],
    },
    "paper": {
        # CIFAR-10 with a wider net (64-128-256); budgets for a GPU.
        "dataset": "cifar10", "seeds": 3, "chans": [64, 128, 256], "dense": _sgd(64000, 0.1, 128, "step"),
        "shrink": {"train": _sgd(20000, 0.01, 128, "constant"), "strength": 1e-4, "every": 100},
        "finetune": _sgd(10000, 0.001, 128, "constant"), "sparsity": 0.89, "curve": [0.5, 0.75, 0.89],
    },
}

CLAIM = "gradual-layer-9x"

#: Shown beside the "not reproduced" verdict.
DIAGNOSIS = """
The groups (the im2col kernel matrix's columns), the group lasso, the gradual removal of the
smallest groups and the thinned product are unit-tested (the thinned layer computes the masked
convolution exactly, its FLOPs fall with the groups kept) and the recorded network is checked to
compute the same logits as the masked one. The harness's layer is small: 72 groups (8 input maps of
3x3) of which 89% leaves 8, where CaffeNet's conv2 has 1,200 groups per half; its budget is 150
regularised and 50 fine-tuning steps where the paper fine-tunes CaffeNet on ImageNet. A probe on seed
10 pruning the third convolution instead (144 groups, 16 kept) lost 5.9 pp against its baseline, and
removing the same groups by norm from the dense network with the same steps (the one-shot ablation)
reached about the same accuracy as the gradual shrinking (77-80% against 77-80%), so the
regulariser adds nothing measurable at this budget. The continued baseline itself moved 0.7-4 pp
around the dense network's 84.7% with SGD at a constant 0.01: the short schedule is noisy. The gap is
believed to be the small layer's and the short budget's; the paper profile (CIFAR-10, 64-128-256
channels, 30,000 steps) is where 89% of a wide layer's groups can be tested.
"""


# -------------------------------------------------------------------------------- the groups
def conv_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def group_norms(conv: nn.Conv2d) -> torch.Tensor:
    """``||W[:, s, i, j]||_2`` for every group ``(s, i, j)``, flattened in im2col order (``S x d x d``)."""
    return conv.weight.pow(2).sum(0).flatten().sqrt()


def group_lasso(conv: nn.Conv2d) -> torch.Tensor:
    return conv.weight.pow(2).sum(0).add(1e-12).sqrt().sum()


def smallest_groups(conv: nn.Conv2d, n_remove: int, already: torch.Tensor) -> torch.Tensor:
    """The mask of kept groups after removing the ``n_remove`` of smallest norm (those already removed
    stay removed and count)."""
    norms = group_norms(conv).detach().clone()
    norms[~already] = -1.0  # removed groups first
    keep = torch.ones_like(already)
    if n_remove > 0:
        keep[torch.topk(norms, n_remove, largest=False).indices] = False
    return keep


def apply_group_mask(conv: nn.Conv2d, keep: torch.Tensor) -> None:
    with torch.no_grad():
        conv.weight.mul_(keep.view(1, *conv.weight.shape[1:]).to(conv.weight.dtype))


class ThinnedConv2d(nn.Module):
    """A convolution as the product of the thinned kernel matrix (kept columns) and the kept rows of
    the im2col patch matrix."""

    def __init__(self, conv: nn.Conv2d, keep: torch.Tensor) -> None:
        super().__init__()
        if conv.groups != 1 or conv.dilation != (1, 1):
            raise ValueError("grouped or dilated convolutions are not supported")
        self.kernel_size, self.padding, self.stride = conv.kernel_size, conv.padding, conv.stride
        self.out_channels = conv.out_channels
        idx = keep.nonzero().flatten()
        self.register_buffer("index", idx)
        self.weight = nn.Parameter(conv.weight.detach().flatten(1)[:, idx].clone())  # T x G'
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        kh, kw = self.kernel_size
        oh = (h + 2 * self.padding[0] - kh) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - kw) // self.stride[1] + 1
        patches = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)  # N x (S d d) x L
        out = self.weight @ patches.index_select(1, self.index)  # N x T x L
        if self.bias is not None:
            out = out + self.bias[None, :, None]
        return out.view(n, self.out_channels, oh, ow)


def thinned(model: nn.Module, name: str, keep: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with the convolution ``name`` computed by :class:`ThinnedConv2d`."""
    out = controls.trainable_copy(model)
    parent, _, child = name.rpartition(".")
    setattr(out.get_submodule(parent) if parent else out, child, ThinnedConv2d(model.get_submodule(name), keep))
    return out.eval()


# ---------------------------------------------------------------------------------- training
def train_dense(run: Run) -> nn.Module:
    cfg = run.config
    per_seed = cfg["dense_per_seed"]

    def fit(model: nn.Module) -> None:
        run.reseed("lebedev2016 dense data", seed=None if per_seed else 0)
        run.train(model, run.dataset().train, run.train_config("dense"), desc="dense")

    spec = {"chans": cfg["chans"], "dense": run.train_config("dense").model_dump()}
    return run.cached_model("lebedev2016-dense", spec, build=lambda: build(run), fit=fit, per_seed=per_seed)


def build(run: Run) -> nn.Module:
    return run.model("staged-conv", chans=list(run.config["chans"]), per_stage=1)


def n_groups(conv: nn.Conv2d) -> int:
    return conv.weight[0].numel()


def gradual_shrinking(run: Run, dense: nn.Module, sparsity: float) -> tuple[nn.Module, torch.Tensor]:
    """The regularised training from ``dense``: the group lasso on the accelerated layer, the removed
    share of its groups raised linearly to ``sparsity`` over ``ramp`` of the steps, the smallest-norm
    groups removed every ``every`` steps and held at zero; then fine-tuning with the pattern fixed."""
    cfg = run.config
    shrink = Shrinking.model_validate(cfg["shrink"])
    model = controls.trainable_copy(dense)
    name = conv_names(model)[cfg["layer"]]
    conv = model.get_submodule(name)
    total = n_groups(conv)
    keep = torch.ones(total, dtype=torch.bool)
    ramp_steps = max(1, int(shrink.ramp * shrink.train.steps))
    step = 0

    def loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(m(x), y) + shrink.strength * group_lasso(m.get_submodule(name))

    def after(m: nn.Module) -> None:
        nonlocal step, keep
        step += 1
        c = m.get_submodule(name)
        if step % shrink.every == 0 or step >= ramp_steps:
            target = round(sparsity * total * min(1.0, step / ramp_steps))
            keep = smallest_groups(c, target, keep) if target > int((~keep).sum()) else keep
        apply_group_mask(c, keep)

    run.reseed(f"lebedev2016 shrink {sparsity:g}")
    run.train(model, run.dataset().train, shrink.train, desc=f"gradual shrinking {sparsity:g}", loss_fn=loss,
              after_step=after)
    keep = smallest_groups(conv, round(sparsity * total), keep)
    apply_group_mask(conv, keep)
    return finetune(run, model, name, keep, f"fine-tune {sparsity:g}"), keep


def finetune(run: Run, model: nn.Module, name: str, keep: torch.Tensor, stage: str) -> nn.Module:
    run.reseed("lebedev2016 finetune")
    run.train(model, run.dataset().train, run.train_config("finetune"), desc=stage,
              after_step=lambda m: apply_group_mask(m.get_submodule(name), keep))
    return model.eval()


def one_shot(run: Run, dense: nn.Module, sparsity: float) -> nn.Module:
    """The ablation: the same number of groups removed from the dense network by norm, fine-tuned for
    the regularised and fine-tuning steps with the pattern fixed."""
    model = controls.trainable_copy(dense)
    name = conv_names(model)[run.config["layer"]]
    conv = model.get_submodule(name)
    keep = smallest_groups(conv, round(sparsity * n_groups(conv)), torch.ones(n_groups(conv), dtype=torch.bool))
    apply_group_mask(conv, keep)
    steps = total_steps(run)
    run.reseed("lebedev2016 finetune")
    run.train(model, run.dataset().train, run.train_config("finetune", steps=steps), desc="one-shot by norm",
              after_step=lambda m: apply_group_mask(m.get_submodule(name), keep))
    return model.eval()


def total_steps(run: Run) -> int:
    return Shrinking.model_validate(run.config["shrink"]).train.steps + run.train_config("finetune").steps


def weight_ratio(model: nn.Module) -> float:
    return controls.compression_ratio(model)


@reproduction("lebedev2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = run.config
    data = run.dataset()
    shape = data.input_shape
    dense = train_dense(run)
    name = conv_names(dense)[cfg["layer"]]
    base = controls.trainable_copy(dense)
    budget = run.train_config("finetune", steps=total_steps(run))
    run.reseed("lebedev2016 baseline")
    run.train(base, data.train, budget, desc="dense, continued")

    curve: dict[float, float] = {}
    result: tuple[nn.Module, torch.Tensor] | None = None
    for s in sorted(set(cfg["curve"]) | {cfg["sparsity"]}):
        model, keep = gradual_shrinking(run, dense, s)
        if s in cfg["curve"]:
            curve[round(weight_ratio(model), 4)] = run.accuracy(model, data.test)
        if s == cfg["sparsity"]:
            result = (model, keep)
    assert result is not None
    model, keep = result
    small = thinned(model, name, keep)
    exact = torch.allclose(run.predict(small, data.test), run.predict(model, data.test), atol=1e-4)
    acc, base_acc = run.accuracy(small, data.test), run.accuracy(base, data.test)

    conv = dense.get_submodule(name)
    x = torch.randn(cfg["latency_batch"], conv.in_channels, *layer_input_hw(dense, name, shape))
    dense_im2col = ThinnedConv2d(conv, torch.ones(n_groups(conv), dtype=torch.bool)).eval()
    thin = small.get_submodule(name)
    in_shape = tuple(x.shape[1:])
    with torch.no_grad():
        lat = measure.kernel_latency(lambda: dense_im2col(x), lambda: thin(x))
    batch = cfg["latency_batch"]
    dense_ms, small_ms = measure.latency_ms(dense, shape, batch=batch), measure.latency_ms(small, shape, batch=batch)
    kept = keep.view(conv.in_channels, -1)
    metrics = {
        "dense_accuracy": run.accuracy(dense, data.test),
        **measure.accuracy_change(base_acc, acc),
        "one_shot_accuracy": run.accuracy(one_shot(run, dense, cfg["sparsity"]), data.test),
        "removal_exact": float(exact),
        "layer_flop_reduction": measure.flops(conv, in_shape) / measure.flops(thin, in_shape),
        "flops": float(measure.flops(small, shape)),
        "flop_reduction": measure.flops(dense, shape) / measure.flops(small, shape),
        "groups_kept": float(keep.sum()), "maps_read": float(kept.any(1).sum()),
        "layer_latency_us": lat["dense_latency_us"], "thinned_latency_us": lat["encoded_latency_us"],
        "layer_speedup": lat["speedup"],
        "dense_latency_ms": dense_ms, "latency_ms": small_ms, "speedup": dense_ms / small_ms,
        "weight_compression": weight_ratio(model),
    }
    run.record(
        CLAIM, model=f"staged-conv {'-'.join(map(str, cfg['chans']))}, conv{cfg['layer'] + 1} group-wise",
        metrics=metrics, baseline=("staged-conv", "baseline_accuracy"),
        baseline_spec={"chans": cfg["chans"], "per_stage": 1},
        curves=[controls.Series("group-wise brain damage, gradual (Lebedev & Lempitsky)", controls.RATIO,
                                controls.ACCURACY, curve),
                controls.pruning_curve(run, dense, sorted(curve), budget)],
        differs=f"{data.name} instead of ImageNet; a small VGG-style net, its conv{cfg['layer'] + 1} accelerated; "
                f"{total_steps(run)} steps of regularised training and fine-tuning; lambda {cfg['shrink']['strength']:g}",
        notes="layer speed-up: the layer as the dense im2col product against the thinned one (the paper's "
              "implementation), CPU, one thread; whole-network speed-up against the dense nn.Conv2d network",
        diagnosis=DIAGNOSIS,
    )


def layer_input_hw(model: nn.Module, name: str, shape: tuple[int, ...]) -> tuple[int, int]:
    captured: list[torch.Tensor] = []
    h = model.get_submodule(name).register_forward_hook(lambda m, i, o: captured.append(i[0]))
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    h.remove()
    return int(captured[0].shape[2]), int(captured[0].shape[3])
