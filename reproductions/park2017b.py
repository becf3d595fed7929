"""Weighted-Entropy-Based Quantization for Deep Neural Networks (Park, Ahn & Yoo, CVPR 2017).

Method: weights and activations are quantized to a chosen number of levels each, the levels chosen
to maximise a *weighted entropy*: the entropy of the levels' frequencies with each level weighted by
the importance of the values it holds, so that rare but important (large) values keep their own
levels while the many small values share few.

* **Weights** (per layer): the importance of a weight is ``w^2``. The magnitudes are sorted and cut
  into ``ceil(N / 2)`` consecutive clusters (``N = 2^b`` levels: the sign is kept, so each magnitude
  cluster gives the two levels ``±r_k``; for an odd ``N`` the first is the zero level). With ``p_k``
  the fraction of the weights in cluster ``k`` and ``I_k`` their mean importance, the boundaries
  maximise

  .. math:: S = -\\sum_k I_k \\, p_k \\log \\frac{p_k}{2},

  found as the released code does: from equal-count clusters, each boundary in turn is moved to the
  best place between its neighbours by a binary search on the entropy of the two clusters it
  separates, and the sweeps repeat while ``S`` grows. Each cluster's level is the root of its mean
  importance, ``r_k = sqrt(mean w^2)``; a weight takes the level of its cluster, with its sign.
* **Activations** (after each ReLU, "LogQuant"): a positive activation ``x`` is rounded in the log
  domain, ``2^{(f + s \\, round((16 \\log_2 x - f) / s)) / 16}``, to one of ``N - 1`` levels above the
  first ``2^{f/16}`` (the largest level clamps), and to 0 below it; the offset ``f`` and the step
  ``s`` (in sixteenths of an octave, even, at most 32) maximise the weighted entropy of the levels
  (each level's frequency weighted by its value), searched over a histogram of ``16 log2 x`` of the
  batch (the released code, at every training forward pass; the last values serve at test time).
* **Fine-tuning**: the network is trained with both quantizers in its forward pass; the gradient
  passes straight through to the full-precision weights (and through the ReLU's mask for the
  activations), and the weights' clusters are re-optimised as the weights move (here every
  ``requantize_every`` steps; the released layer re-optimises at every forward pass).

Implemented from the authors' released Caffe layers (``caffe-WQ``: ``eh_functions.cu`` for the
weights, ``weight_log_quant_relu_layer.cu`` for the activations).

Claims (the abstract; the paper's tables could not be read where this file was written, so no
number is checked): multi-bit quantization of weights and activations "by any number of bits
depending on the target accuracy", with "minimal accuracy loss" on AlexNet, GoogLeNet and
ResNet-50/101 (ImageNet), R-FCN and an LSTM, and "higher accuracy with a similar resource constraint"
than existing quantization schemes. Claim ``multibit-weights-activations`` (unconfirmed, unchecked)
records, at ``bits`` for both weights and activations: ``baseline_accuracy`` (the same network
trained for the same steps in full precision: the declared baseline), ``accuracy`` and
``accuracy_change_pp`` of the quantized network, ``weights_only_accuracy`` (its weights quantized,
activations full precision), ``post_training_accuracy`` (both quantizers on the pretrained network,
before fine-tuning), ``control_accuracy`` and ``gain_over_control_pp`` (uniform quantization of the
baseline's weights at the same bits, post-training: the shared control, which keeps full-precision
activations), ``storage_bits`` / ``storage_compression`` (each layer's ``b``-bit level indices packed
into int32 words with its fp32 table of ``2^b`` levels, ``atlas_kernels.encode_codebook``, checked to
decode to the quantized weights; biases fp32) and ``weighted_entropy`` (the weights' ``S``, mean over
layers).

Curve: the method at each of ``curve_bits`` (weights and activations at ``b`` bits, fine-tuned)
beside uniform quantization of the baseline's weights at the same bits, post-training (the baseline
had the same steps).

Harness differs: Fashion-MNIST (quick) and digits (smoke) with the harness's LeNet-300-100 instead of
ImageNet CNNs; one pretrained network for every seed in the quick profile (Adam), fine-tuned per
seed with Adam at a small learning rate for a few hundred steps; the weights' clusters re-optimised
every ``requantize_every`` steps (50 in the quick profile, for time; every step in the paper profile)
rather than at every forward pass; LogQuant's first level searched over the whole histogram of the
batch (the released layer starts its search 40 bins, two and a half octaves, above its histogram's
start, and caps the range at the histogram's fullest bin); only the ReLU outputs are quantized (the
network's input and its logits stay fp32); all layers' weights are quantized, the first and last
included.

Quick result (3 seeds; not comparable: the claim has no number that could be read): at 3-bit weights
and 3-bit LogQuant activations the fine-tuned LeNet-300-100 loses 0.71-0.82 pp against the
full-precision baseline trained for the same steps (89.2-89.4%), 9.8x smaller in storage; with the
activations left in full precision it loses 0.3-0.5 pp. It is 0.1-0.6 pp above uniform 3-bit weight
quantization of the baseline (whose activations stay fp32), and at 2 bits 8 pp above it (87.8-88.3%
against 79.7-80.3%); at 4 bits both are within 0.2 pp of the baseline. Quantizing the pretrained
network without fine-tuning gives 87.4%.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import atlas_kernels as ak
import torch
from pydantic import Field, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, reproduction

BASE = 16  # the log histogram's bins per octave (the released code's BASE_SIZE)


class Quant(Section):
    bits: PositiveInt  # the claim's bits, weights and activations
    curve_bits: list[PositiveInt]  # the curve's bits (the claim's among them)
    requantize_every: PositiveInt = Field(10)  # steps between re-optimisations of the weight clusters


class Config(Profile):
    model: str  # the harness network
    dense: TrainConfig  # the pretrained network
    dense_per_seed: bool = True  # False: one pretrained network for every seed
    finetune: TrainConfig  # fine-tuning with both quantizers (the baseline gets the same steps unquantized)
    quant: Quant


_FT = {"lr": 1e-4, "optimizer": "adam", "schedule": "cosine"}
PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "model": "lenet-300-100",
              "dense": {"steps": 100, "lr": 1e-3, "batch_size": 64, "optimizer": "adam"},
              "finetune": {"steps": 20, "batch_size": 64, **_FT},
              "quant": {"bits": 3, "curve_bits": [2, 3, 4], "requantize_every": 10}},
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100", "dense_per_seed": False,
              "dense": {"steps": 4000, "lr": 1e-3, "batch_size": 128, "optimizer": "adam"},
              "finetune": {"steps": 300, "batch_size": 128, **_FT},
              "quant": {"bits": 3, "curve_bits": [2, 3, 4], "requantize_every": 50}},
    "paper": {"dataset": "mnist", "seeds": 3, "model": "lenet-5",
              "dense": {"steps": 10000, "lr": 1e-3, "batch_size": 64, "optimizer": "adam"},
              "finetune": {"steps": 3000, "batch_size": 64, **_FT},
              "quant": {"bits": 3, "curve_bits": [2, 3, 4], "requantize_every": 1}},
}


# ------------------------------------------------------------------------------------- weights
class _Floats(Sequence[float]):
    """A 1-D tensor read element by element as Python floats (the boundary search reads a few
    thousand of its entries, not all)."""

    def __init__(self, t: torch.Tensor) -> None:
        self.t = t

    def __len__(self) -> int:
        return len(self.t)

    def __getitem__(self, i):  # type: ignore[override]
        return float(self.t[i])


@dataclass
class Clusters:
    """A layer's weighted-entropy clusters: ``slices[k]`` is the end (exclusive) of cluster ``k`` in the
    sorted importances; ``levels`` the magnitudes ``r_k``; ``bounds`` the smallest magnitude of each."""

    slices: list[int]
    levels: torch.Tensor
    bounds: torch.Tensor
    entropy: float


def weighted_entropy(cum: Sequence[float], slices: list[int], num_levels: int, lo: int = 0, hi: int | None = None) -> float:
    """``-sum_k I_k p_k log(p_k / 2)`` over clusters ``lo..hi-1`` (all by default), from the cumulative
    sums ``cum`` of the sorted importances (a zero cluster, odd ``num_levels``, has no term)."""
    n = len(cum)
    hi = len(slices) if hi is None else hi
    ent = 0.0
    for k in range(max(lo, num_levels % 2), hi):
        begin = slices[k - 1] if k > 0 else 0
        count = slices[k] - begin
        if count <= 0:
            continue
        mass = cum[slices[k] - 1] - (cum[begin - 1] if begin > 0 else 0.0)
        ent -= mass / n * math.log(count / n / 2)
    return ent


def _best_boundary(cum: Sequence[float], slices: list[int], k: int, num_levels: int) -> None:
    """Move boundary ``k`` (between clusters ``k`` and ``k + 1``) to the best place between its
    neighbours: binary search on the two clusters' entropy (the released ``recUpdate``)."""
    begin = slices[k - 1] if k > 0 else 0
    end = slices[k + 1] - 1

    def local(at: int) -> float:
        slices[k] = at
        return weighted_entropy(cum, slices, num_levels, k, k + 2)

    while end - begin > 1:
        center = (begin + end) // 2
        if local(center) > local(center + 1):
            end = center
        else:
            begin = center
    slices[k] = begin if local(begin) > local(end) else end


def weighted_entropy_clusters(w: torch.Tensor, num_levels: int, max_sweeps: int = 100) -> Clusters:
    """The magnitude clusters of ``w`` maximising the weighted entropy (importance ``w^2``)."""
    imp = w.detach().flatten().abs().sort().values.double() ** 2
    cum = _Floats(imp.cumsum(0))
    n = len(imp)
    half = (num_levels + 1) // 2
    slices = [n * (k + 1) // half for k in range(half)]
    ent, prev = weighted_entropy(cum, slices, num_levels), -math.inf
    sweeps = 0
    while ent > prev and sweeps < max_sweeps:
        for k in range(half - 1):
            _best_boundary(cum, slices, k, num_levels)
        prev, ent = ent, weighted_entropy(cum, slices, num_levels)
        sweeps += 1
    levels, bounds = torch.zeros(half, dtype=torch.float64), torch.zeros(half, dtype=torch.float64)
    for k in range(num_levels % 2, half):
        begin = slices[k - 1] if k > 0 else 0
        count = max(1, slices[k] - begin)
        levels[k] = math.sqrt((cum[slices[k] - 1] - (cum[begin - 1] if begin > 0 else 0.0)) / count)
    for k in range(half - 1):
        bounds[k + 1] = math.sqrt(float(imp[slices[k]]))
    return Clusters(slices, levels.float(), bounds.float(), ent)


def quantize_weight(w: torch.Tensor, clusters: Clusters) -> tuple[torch.Tensor, torch.Tensor]:
    """Each weight at its cluster's level with its sign, and its index into the table ``[-r_{H-1}, ...,
    -r_0, r_0, ..., r_{H-1}]`` (``2H`` entries; for an odd level count ``r_0 = 0`` appears twice)."""
    mag = w.abs()
    k = (torch.bucketize(mag, clusters.bounds, right=True) - 1).clamp_(min=0)
    half = len(clusters.levels)
    neg = w < 0
    index = torch.where(neg, half - 1 - k, half + k)
    return torch.where(neg, -1.0, 1.0) * clusters.levels[k], index


def level_table(clusters: Clusters) -> torch.Tensor:
    return torch.cat([-clusters.levels.flip(0), clusters.levels])


# ---------------------------------------------------------------------------------- activations
def log_histogram(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Counts of the positive values by ``floor(16 log2 x)``, from its smallest bin; and that bin."""
    pos = x[x > 0]
    if pos.numel() == 0:
        return torch.zeros(1), 0
    bins = torch.floor(torch.log2(pos) * BASE).long()
    lo = int(bins.min())
    return torch.bincount(bins - lo).double(), lo


def log_entropies(hist: torch.Tensor, offset: int, num_levels: int, max_half: int = 16) -> torch.Tensor:
    """The weighted entropy of LogQuant's levels ``1..N-1`` for every step ``2h`` (``h = 1..max_half``)
    and first level ``fsr`` (bins from the histogram's first, ``offset``): level ``i`` is the value
    ``2^{(fsr + offset + (i-1) 2h) / 16}`` and holds the bins within ``h`` of it, the last level all
    above; ``[max_half, len(hist)]``, ``-inf`` where the levels would run past the histogram."""
    length = len(hist)
    counts = torch.cat([hist.new_zeros(1), hist.cumsum(0)])  # counts[b]: values in bins < b
    total = float(counts[-1])
    h = torch.arange(1, max_half + 1, dtype=torch.long)[:, None, None]
    fsr = torch.arange(length, dtype=torch.long)[None, :, None]
    i = torch.arange(1, num_levels, dtype=torch.long)[None, None, :]
    begin = (fsr + h * (2 * i - 3)).clamp(0, length)
    end = (fsr + h * (2 * i - 1)).clamp(0, length)
    count = counts[end] - counts[begin]
    count[..., -1] = total - counts[begin[..., -1]]
    p = count / total
    value = torch.pow(2.0, (fsr + offset + (i - 1) * 2 * h).double() / BASE)
    ent = -(value * torch.where(p > 0, p * torch.log(p.clamp_min(1e-300)), torch.zeros_like(p))).sum(-1)
    reach = fsr[..., 0] + h[..., 0] * (2 * num_levels - 5)  # the last level's lower edge
    return torch.where(reach < length, ent, torch.full_like(ent, -math.inf))


def log_quant_params(x: torch.Tensor, num_levels: int) -> tuple[float, float]:
    """``(offset, step)`` of LogQuant for the activations ``x``: the configuration of largest
    weighted entropy over steps of 2..32 sixteenths of an octave and every first level."""
    hist, lo = log_histogram(x)
    if float(hist.sum()) == 0:
        return 0.0, 2.0
    ent = log_entropies(hist, lo, num_levels)
    if not torch.isfinite(ent).any():
        return float(lo), 2.0
    best = int(ent.argmax())
    half, fsr = divmod(best, ent.shape[1])
    return float(fsr + lo), float(2 * (half + 1))


def log_quantize(x: torch.Tensor, offset: float, step: float, num_levels: int) -> torch.Tensor:
    """LogQuant of ReLU's output: 0 at or below zero and below the first level, else the nearest of
    ``N - 1`` log levels (the largest clamps)."""
    pos = x > 0
    idx = torch.round((torch.log2(x.clamp_min(1e-30)) * BASE - offset) / step).clamp(max=num_levels - 2)
    out = torch.pow(2.0, (offset + idx * step) / BASE)
    return torch.where(pos & (idx >= 0), out, torch.zeros_like(x))


class LogQuantReLU(nn.Module):
    """ReLU followed by LogQuant: the forward pass quantizes, the backward pass is ReLU's. Training
    refits ``(offset, step)`` on every batch; evaluation uses the last fit."""

    def __init__(self, num_levels: int) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.register_buffer("params", torch.tensor([0.0, 2.0]))
        self.fitted = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x)
        if self.training or not self.fitted:
            offset, step = log_quant_params(y.detach(), self.num_levels)
            self.params = torch.tensor([offset, step])
            self.fitted = True
        q = log_quantize(y.detach(), float(self.params[0]), float(self.params[1]), self.num_levels)
        return y + (q - y).detach()


# ------------------------------------------------------------------------------------ network
def weight_names(model: nn.Module) -> list[str]:
    return controls.weight_names(model)


def swap_activations(model: nn.Module, kind: type[nn.Module], make: Callable[[], nn.Module]) -> nn.Module:
    """A copy of ``model`` with every ``kind`` module replaced by ``make()``."""
    clone = controls.trainable_copy(model)
    for module in list(clone.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, kind):
                setattr(module, child_name, make())
    return clone


def with_log_relus(model: nn.Module, num_levels: int) -> nn.Module:
    """A copy of ``model`` whose every ReLU is a LogQuant ReLU."""
    return swap_activations(model, nn.ReLU, lambda: LogQuantReLU(num_levels))


@torch.no_grad()
def quantize_weights(model: nn.Module, num_levels: int) -> dict[str, tuple[torch.Tensor, Clusters, torch.Tensor]]:
    """Each weight's full-precision value, clusters and indices; the model holds the quantized weights."""
    params = dict(model.named_parameters())
    out = {}
    for name in weight_names(model):
        full = params[name].detach().clone()
        clusters = weighted_entropy_clusters(full, num_levels)
        q, index = quantize_weight(full, clusters)
        params[name].copy_(q)
        out[name] = (full, clusters, index)
    return out


def finetune(run: Run, dense: nn.Module, bits: int, cfg: Config) -> tuple[nn.Module, dict]:
    """Fine-tune with both quantizers (straight-through to the full-precision weights)."""
    levels = 2**bits
    model = with_log_relus(dense, levels)
    params = dict(model.named_parameters())
    full = {n: params[n].detach().clone() for n in weight_names(model)}
    clusters: dict[str, Clusters] = {}
    step = [0]

    @torch.no_grad()
    def before(m: nn.Module) -> None:
        for n, w in full.items():
            if step[0] % cfg.quant.requantize_every == 0 or n not in clusters:
                clusters[n] = weighted_entropy_clusters(w, levels)
            params[n].copy_(quantize_weight(w, clusters[n])[0])

    @torch.no_grad()
    def after(m: nn.Module) -> None:
        for n, w in full.items():  # the step taken at q(w), applied to w
            q = quantize_weight(w, clusters[n])[0]
            w.add_(params[n] - q)
        step[0] += 1

    run.reseed(f"park2017b fine-tuning {bits}")
    run.train(model, run.dataset().train, cfg.finetune, desc=f"{bits}-bit weighted-entropy fine-tuning",
              before_step=before, after_step=after)
    with torch.no_grad():
        for n, w in full.items():
            params[n].copy_(w)
    state = quantize_weights(model, levels)
    return model.eval(), state


def storage(model: nn.Module, state: dict, bits: int) -> list[measure.Encoded]:
    """Each layer's ``bits``-bit indices and fp32 level table (checked to decode to its weights)."""
    params = dict(model.named_parameters())
    parts = []
    for name, (_, clusters, index) in state.items():
        w = params[name].detach()
        enc = ak.encode_codebook(index.reshape(w.shape[0], -1), level_table(clusters), bits=bits)
        if not torch.equal(enc.dequantize().view_as(w), w):
            raise RuntimeError(f"park2017b: the encoding of {name} does not decode to its weights")
        parts.append(measure.encoded(name, enc, f"{bits}-bit level indices, fp32 level table"))
    return parts + measure.fp32_parts(model, skip=list(state))


def train_dense(run: Run, cfg: Config) -> nn.Module:
    def fit(model: nn.Module) -> None:
        run.reseed("park2017b dense")
        run.train(model, run.dataset().train, cfg.dense, desc=f"{cfg.model} dense")

    return run.cached_model(f"park2017b-{cfg.model}-dense", {"model": cfg.model, "dense": cfg.dense.model_dump()},
                            build=lambda: run.model(cfg.model), fit=fit, per_seed=cfg.dense_per_seed)


@reproduction("park2017b", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    data = run.dataset()
    dense = train_dense(run, cfg)
    baseline = controls.trainable_copy(dense)
    run.reseed("park2017b baseline")
    run.train(baseline, data.train, cfg.finetune, desc="baseline (full precision, same steps)")
    base = run.accuracy(baseline.eval(), data.test)
    b = cfg.quant.bits
    post = with_log_relus(dense, 2**b)
    quantize_weights(post, 2**b)
    post_acc = run.accuracy(post.eval(), data.test)
    curve, models = {}, {}
    for bits in sorted({b, *cfg.quant.curve_bits}):
        models[bits] = finetune(run, dense, bits, cfg)
        curve[float(bits)] = run.accuracy(models[bits][0], data.test)
    model, state = models[b]
    weights_only = swap_activations(model, LogQuantReLU, nn.ReLU)
    control = controls.quantization_curve(run, baseline, sorted({b, *cfg.quant.curve_bits}), None)
    acc = curve[float(b)]
    metrics = {
        **measure.accuracy_change(base, acc),
        "weights_only_accuracy": run.accuracy(weights_only.eval(), data.test),
        "post_training_accuracy": post_acc,
        "control_accuracy": control.points[float(b)],
        "gain_over_control_pp": acc - control.points[float(b)],
        **measure.compression_metrics(dense, model, data.input_shape, storage(model, state, b)),
        "weighted_entropy": sum(c.entropy for _, c, _ in state.values()) / len(state),
    }
    run.record("multibit-weights-activations", model=cfg.model, metrics=metrics, baseline=(cfg.model, "baseline_accuracy"),
               baseline_spec={},
               differs=(f"{data.name}; {cfg.dense.steps} dense steps, then {cfg.finetune.steps} fine-tuning steps "
                        f"with {b}-bit weights (weighted-entropy clusters re-optimised every "
                        f"{cfg.quant.requantize_every} steps) and {b}-bit LogQuant activations; baseline = the dense "
                        "network given the same steps in full precision"),
               curves=[controls.Series("weighted-entropy quantization (weights and activations at b bits)",
                                       controls.BITS, controls.ACCURACY, {float(k): v for k, v in curve.items()
                                                                         if k in cfg.quant.curve_bits}),
                       controls.Series(control.label, control.x, control.y,
                                       {k: v for k, v in control.points.items() if int(k) in cfg.quant.curve_bits},
                                       control=True)])
