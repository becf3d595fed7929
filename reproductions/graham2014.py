"""Spatially-sparse convolutional neural networks (Benjamin Graham, arXiv:1409.6070, 2014).

Listed in the survey's pruning section ("Sparse") for spatial sparsity, not for a smaller model: no
weight is removed. What is reproduced is the computation the method saves on a sparse input, with the
network's outputs unchanged.

Method (the paper's Sec. 2 as secondary sources quote it, feature matrix and pointer matrix included,
and the released SparseConvNet code; the paper's own sections were not available here): an input is sparse when
most of its spatial sites hold one background value (a character drawn with a one-pixel pen on a large
grid; a picture padded by a wide border). A site is *active* in the input layer when its feature vector
differs from the background's; in a later layer, a site is active when any site of its receptive field
in the layer below is active (a convolution with an f x f filter grows each active region by f - 1, a
max-pooling keeps a pooled site active when one of its pooled sites is). Every inactive site of a layer
holds the same vector, the layer's *ground state*: the input's background pushed through the layers,

    g_0 = background,   g_{l+1} = sigma(W_l (g_l, ..., g_l) + b_l)   (convolution),   pool(g_l) = g_l,

computed once per layer and forward pass. A layer is stored as a *feature matrix* (one row for the
ground state, then one row per active site) and a *pointer matrix* (for every site, the row of its
feature vector; inactive sites point at the ground-state row). A convolution is computed at the
active output sites only: each active site's patch is gathered through the pointer matrix (f^2 rows
of the feature matrix side by side) and the patches go through one dense matrix product with the
filters; a max-pooling takes the row-wise maximum over the gathered rows. The dense network and the
sparse one compute the same function: at an active site the same patch, at an inactive site the
ground state, which is what the dense network computes there because every input it sees holds the
ground state. Here ``sparse_trunk`` implements this for a convolutional trunk (convolutions,
max-poolings, ReLUs) followed by the dense classifier; padded border sites are held in an extra zero
row and count as active (their value is not the ground state), so padding stays exact.

Claims: papers.yaml holds the abstract's test errors (CASIA-OLHWDB1.1 3.82%, CIFAR-10 6.28%, CIFAR-100
24.30%), absolute errors of large networks on data sets the harness does not have: not checked. The
efficiency claim the survey lists the paper for (abstract: "Taking advantage of the sparsity allowed us
more efficiently to train and test large, deep CNNs") states no number, and the sections and tables
of the paper could not be read here (only the abstract and the released code's DeepCNet definition
were found), so claim ``sparse-efficiency`` records the measurements with no check: nothing the paper
states can be compared with them.

Measured and recorded (claim ``sparse-efficiency``, per seed), for two renderings of the data set: the
pictures as they are (unprefixed) and their outlines drawn with a one-pixel pen (``outline_*``: an
inked pixel is kept when one of its four neighbours is blank, every other pixel is blank; a separate
LeNet-5 is trained on them), nearer the paper's pen strokes: ``baseline_accuracy`` (the trained dense
LeNet-5, whole test set); on the first ``eval_examples`` test examples, ``prediction_agreement``
(share of examples where the sparse and the dense forward pass predict the same class) and
``max_abs_logit_diff``; the share of active sites per layer (``active_share_input``, then
``active_share_conv1``, ``active_share_pool1``, ``active_share_conv2``, ``active_share_pool2``: a share
of the layer's sites); ``flops`` (the dense network, ``measure.flops``), ``sparse_flops`` (torch's flop
counter run over the sparse forward pass, per example: the matrix products at the active sites, the
ground states and the classifier), ``flop_reduction`` (the dense network's counted FLOPs over these)
and ``conv_flop_reduction`` (the convolutional trunk alone); latencies on one CPU thread of the batch
of the first ``latency_batch`` test examples (real inputs: a random input has no inactive site):
``dense_latency_ms`` (torch's own convolutions), ``sparse_latency_ms``, ``speedup`` (dense over
sparse) and ``gather_dense_latency_ms`` / ``speedup_vs_gather_dense`` (the same gather-and-multiply
implementation with every site marked active: what sparsity saves inside one implementation). The
same quantities, prefixed ``deepcnet_``, for the paper's own kind of network on the paper's kind of
input: DeepCNet(4, 16) as the released code builds it (3x3 then 2x2 filters, 3x3 max-pooling of stride
2, a 63x63 input grid) on the outlines centred in the 63x63 grid; its weights are not trained (the
active sites, the FLOPs and the latency do not depend on them; the equality is checked on them), so
it has no accuracy. No curve: the method has no compression level.

Quick result (a development run, 3 seeds, machine shared by about eight jobs on 2 cores: 198 s wall, 57 s
of CPU): not comparable (no check). The sparse forward pass equals the dense one (identical predictions
on every evaluated example, largest logit difference 0 here, below 1e-5 in the unit tests). On the
Fashion-MNIST pictures 50% of the input sites are active, 84% after LeNet-5's first 5x5 convolution,
87% after its pooling and 100% after the second convolution: the counted FLOPs drop 1.04x. On their
one-pixel outlines 14% of the input sites are active, then 62%, 70%, 98% and 100%: 1.11x. LeNet-5's
5x5 filters on a 28x28 grid grow every active region by four sites a layer, so the active set fills
the grid by the second convolution. The paper's kind of network on the paper's kind of input keeps
most sites inactive for several layers: DeepCNet(4, 16) on the outlines centred in its 63x63 grid has
3% of its input sites active, then 9%, 15%, 20%, 33%, 50%, 84% and 100% in the last two convolutions:
its FLOPs drop 2.89x. Measured on one CPU thread (the timed batch of 64), the gather through the
pointer matrix costs more than LeNet-5's small savings (4x slower than torch's convolutions, speedup
0.23 to 0.33), while DeepCNet ran 1.27 to 1.49x faster than with torch's convolutions and 3.3 to 3.9x
faster than the same gather implementation with every site active.

Harness differs: Fashion-MNIST (quick) and the harness's LeNet-5 (Caffe's 20C5-MP2-50C5-MP2-500FC-10,
half width in quick; no ReLU between its convolutions, which changes nothing in the method: the ground
state is pushed through whatever the layers are) instead of the paper's DeepCNet on online
handwriting drawn on a 64x64 or larger grid or on CIFAR pictures padded to 126x126. A Fashion-MNIST
picture fills much of its 28x28 grid (about half its pixels are non-zero), so the sparsity, and the
savings, are far smaller than the paper's; the paper profile uses MNIST (handwritten digits, about a
fifth of the pixels non-zero), nearer the paper's handwriting. The paper's training-time savings
(back-propagation at the active sites) are not measured; only the forward pass (testing). Latency
is measured in PyTorch on one CPU thread, where gathering the patches through the pointer matrix is a
separate memory pass, against torch's convolution; the paper's code is CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import PositiveFloat, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, measure, reproduction
from atlas.harness.data import Split


class Sparsity(Section):
    eval_examples: PositiveInt  # test examples the equality, active shares and FLOPs are measured on
    latency_batch: PositiveInt = 64  # the timed batch: the first test examples
    deepcnet_l: PositiveInt = 4  # DeepCNet(l, k) of the released code: l pooling layers
    deepcnet_k: PositiveInt = 16  # and (i + 1) k filters in layer i (the paper's networks are wider)


class Config(Profile):
    lenet5_width: PositiveFloat  # the harness LeNet-5's width multiplier
    dense: TrainConfig  # the network whose forward pass is run sparsely
    sparsity: Sparsity


def _adam(steps: int, batch: int) -> dict:
    return {"steps": steps, "batch_size": batch, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine"}


PROFILES = {
    "smoke": {"dataset": "digits", "seeds": 2, "lenet5_width": 0.5, "dense": _adam(40, 64),
              "sparsity": {"eval_examples": 200, "latency_batch": 32}},
    # quick: the method trains nothing; the dense LeNet-5 is trained briefly (600 Adam steps) so that
    # the equality of the two forward passes is shown on a network that classifies.
    "quick": {"dataset": "fashion-mnist", "seeds": 3, "lenet5_width": 0.5, "dense": _adam(600, 64),
              "sparsity": {"eval_examples": 1000, "latency_batch": 64}},
    # paper: MNIST (handwritten digits: the nearest the harness has to the paper's handwriting), full
    # width, 10 passes of 60,000 examples; every test example evaluated.
    "paper": {"dataset": "mnist", "seeds": 3, "lenet5_width": 1.0, "dense": _adam(6000, 100),
              "sparsity": {"eval_examples": 10000, "latency_batch": 64}},
}

CLAIM = "sparse-efficiency"


# ------------------------------------------------------------------------------ the sparse layers
class SparseMap:
    """A layer of a batch in the paper's representation: ``features`` (row 0 the ground state, then one
    row per active site) and ``pointers`` (N, H, W): each site's row, 0 for an inactive site."""

    def __init__(self, features: torch.Tensor, pointers: torch.Tensor) -> None:
        self.features, self.pointers = features, pointers

    @property
    def active(self) -> torch.Tensor:
        return self.pointers > 0

    def dense(self) -> torch.Tensor:
        """The layer as an ordinary (N, C, H, W) tensor."""
        return self.features[self.pointers].permute(0, 3, 1, 2)


def input_map(x: torch.Tensor, background: torch.Tensor) -> SparseMap:
    """The input layer: a site is active when any of its channels differs from ``background`` (C,);
    the ground state is the background."""
    active = (x != background.view(1, -1, 1, 1)).any(1)
    pointers = torch.zeros(active.shape, dtype=torch.long)
    n_active = int(active.sum())
    pointers[active] = torch.arange(1, n_active + 1)
    features = torch.cat([background.view(1, -1), x.permute(0, 2, 3, 1)[active]])
    return SparseMap(features, pointers)


def _gather_rows(m: SparseMap, k: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The active output sites of a k-window with ``stride`` (an output site is active when a site of
    its window is; padded sites point at a zero row appended to the features and count as active) and,
    for each, the feature rows of its window: ``(rows (A, kh kw), out_active (N, Ho, Wo), features)``."""
    features, pointers = m.features, m.pointers
    (kh, kw), (sh, sw), (ph, pw) = k, stride, padding
    if ph or pw:
        features = torch.cat([features, features.new_zeros(1, features.shape[1])])
        pointers = F.pad(pointers, (pw, pw, ph, ph), value=features.shape[0] - 1)
    active = (pointers > 0).float().unsqueeze(1)
    out_active = F.max_pool2d(active, (kh, kw), (sh, sw)).squeeze(1) > 0
    n, y, x = out_active.nonzero(as_tuple=True)
    dy, dx = torch.meshgrid(torch.arange(kh), torch.arange(kw), indexing="ij")
    rows = pointers[n[:, None], y[:, None] * sh + dy.flatten(), x[:, None] * sw + dx.flatten()]
    return rows, out_active, features


def _new_map(ground: torch.Tensor, values: torch.Tensor, out_active: torch.Tensor) -> SparseMap:
    pointers = torch.zeros(out_active.shape, dtype=torch.long)
    pointers[out_active] = torch.arange(1, values.shape[0] + 1)
    return SparseMap(torch.cat([ground.view(1, -1), values]), pointers)


def sparse_conv2d(m: SparseMap, conv: nn.Conv2d) -> SparseMap:
    """The convolution at the active output sites only (gathered patches, one matrix product) and once
    at the ground state."""
    if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        raise ValueError("only plain convolutions (groups 1, dilation 1, zero padding) are run sparsely")
    kh, kw = conv.kernel_size
    rows, out_active, features = _gather_rows(m, (kh, kw), conv.stride, conv.padding)  # type: ignore[arg-type]
    weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1)  # (O, kh kw C), rows' order
    patches = features[rows].reshape(rows.shape[0], -1)  # (A, kh kw C)
    values = F.linear(patches, weight, conv.bias)
    ground = F.linear(m.features[0].repeat(kh * kw).view(1, -1), weight, conv.bias)
    return _new_map(ground, values, out_active)


def sparse_max_pool2d(m: SparseMap, pool: nn.MaxPool2d) -> SparseMap:
    """Max-pooling at the active output sites; the ground state pools to itself."""
    if pool.padding not in (0, (0, 0)) or pool.dilation not in (1, (1, 1)) or pool.ceil_mode:
        raise ValueError("only unpadded, undilated max-pooling is run sparsely")
    k = pool.kernel_size if isinstance(pool.kernel_size, tuple) else (pool.kernel_size,) * 2
    s = pool.stride if isinstance(pool.stride, tuple) else (pool.stride,) * 2
    rows, out_active, features = _gather_rows(m, k, s, (0, 0))  # type: ignore[arg-type]
    return _new_map(m.features[0], features[rows].amax(1), out_active)


def sparse_trunk(features: nn.Sequential, x: torch.Tensor, background: torch.Tensor,
                 all_active: bool = False) -> list[SparseMap]:
    """Every layer of a convolutional trunk (Conv2d, MaxPool2d, ReLU), the input first, computed at the
    active sites. ``all_active``: every input site marked active (the same implementation, dense)."""
    m = input_map(x, background)
    if all_active:
        pointers = torch.arange(1, x.shape[0] * x.shape[2] * x.shape[3] + 1).view(x.shape[0], *x.shape[2:])
        m = SparseMap(torch.cat([background.view(1, -1), x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])]), pointers)
    maps = [m]
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            m = sparse_conv2d(m, layer)
        elif isinstance(layer, nn.MaxPool2d):
            m = sparse_max_pool2d(m, layer)
        elif isinstance(layer, nn.ReLU):
            m = SparseMap(F.relu(m.features), m.pointers)
        else:
            raise ValueError(f"no sparse rule for {type(layer).__name__}")
        maps.append(m)
    return maps


class SparseNet(nn.Module):
    """A model with ``features`` (a convolutional trunk) and ``classifier`` whose trunk runs sparsely;
    shares the model's weights."""

    def __init__(self, model: nn.Module, background: torch.Tensor, all_active: bool = False) -> None:
        super().__init__()
        self.model, self.all_active = model, all_active
        self.register_buffer("background", background.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = sparse_trunk(self.model.features, x, self.background, self.all_active)
        return self.model.classifier(maps[-1].dense())


def active_shares(maps: list[SparseMap]) -> list[float]:
    """The share of active sites of each layer (over the batch)."""
    return [float(m.active.float().mean()) for m in maps]


def layer_names(features: nn.Sequential) -> list[str]:
    """``input``, then ``conv1``, ``pool1``, ``relu1``, ``conv2``... for the trunk's layers."""
    names, counts = ["input"], {"conv": 0, "pool": 0, "relu": 0}
    for layer in features:
        kind = {nn.Conv2d: "conv", nn.MaxPool2d: "pool", nn.ReLU: "relu"}[type(layer)]
        counts[kind] += 1
        names.append(f"{kind}{counts[kind]}")
    return names


def counted_flops(fn: object, *args: torch.Tensor) -> tuple[int, int, object]:
    """(all, convolutional-trunk) FLOPs torch's flop counter counts while ``fn(*args)`` runs, and what it
    returns; the trunk's are the convolutions (dense) or the matrix products outside the classifier
    (sparse)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = fn(*args)  # type: ignore[operator]
    counts = counter.get_flop_counts()
    total = int(counter.get_total_flops())
    classifier = sum(int(sum(v.values())) for k, v in counts.items() if k.endswith(".classifier"))
    return total, total - classifier, out


class DeepCNet(nn.Module):
    """DeepCNet(l, k) as the released SparseConvNet code builds it (``NetworkArchitectures.cpp``): for
    i = 0..l a convolution of (i + 1) k filters (3x3 for i = 0, 2x2 after), a ReLU (the code's very leaky
    ReLU), and for i < l a 3x3 max-pooling of stride 2; the last layer is 1x1, then a fully-connected
    softmax layer. ``grid`` is the input size that leaves a 1x1 last layer (63 for l = 4)."""

    def __init__(self, in_channels: int, num_classes: int, l: int = 4, k: int = 16) -> None:  # noqa: E741
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(l + 1):
            layers += [nn.Conv2d(c, (i + 1) * k, 3 if i == 0 else 2), nn.ReLU()]
            if i < l:
                layers.append(nn.MaxPool2d(3, 2))
            c = (i + 1) * k
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c, num_classes))
        size = 1
        for i in reversed(range(l + 1)):
            size = size + (2 if i == 0 else 1)  # the convolution's input
            if i > 0:
                size = 2 * size + 1  # the pooling's input
        self.grid = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def centre(x: torch.Tensor, grid: int, background: torch.Tensor) -> torch.Tensor:
    """The pictures placed in the middle of a ``grid`` x ``grid`` field of ``background`` (the paper's
    padding: a small picture on a large, mostly blank grid)."""
    n, c, h, w = x.shape
    out = background.view(1, -1, 1, 1).expand(n, c, grid, grid).clone()
    top, left = (grid - h) // 2, (grid - w) // 2
    out[:, :, top:top + h, left:left + w] = x
    return out


def outline(x: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """The picture drawn with a one-pixel pen: its inked sites (differing from ``background``) that
    have a blank 4-neighbour (or lie on the grid's edge) keep their value, every other site is blank."""
    inked = (x != background.view(1, -1, 1, 1)).any(1, keepdim=True).float()
    cross = F.pad(inked, (1, 1, 1, 1))
    four = torch.minimum(torch.minimum(cross[..., :-2, 1:-1], cross[..., 2:, 1:-1]),
                         torch.minimum(cross[..., 1:-1, :-2], cross[..., 1:-1, 2:]))  # all four neighbours inked
    edge = (inked > 0) & (four == 0)
    return torch.where(edge, x, background.view(1, -1, 1, 1).expand_as(x))


def sparse_measurements(dense: nn.Module, x: torch.Tensor, background: torch.Tensor, latency_batch: int,
                        chunk: int = 250) -> dict[str, float]:
    """Everything recorded of one network on one set of inputs ``x`` (accuracy aside): equality of the
    sparse and dense forward passes, active shares, counted FLOPs and latencies."""
    dense = dense.cpu().eval()
    sparse = SparseNet(dense, background).eval()
    gathered = SparseNet(dense, background, all_active=True).eval()
    logits_d, logits_s, shares = [], [], []
    flops_s = flops_trunk_s = flops_d = flops_trunk_d = 0
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            xb = x[start:start + chunk]
            a, t, maps = counted_flops(sparse_trunk, dense.features, xb, background)  # type: ignore[arg-type]
            b, _, logits = counted_flops(dense.classifier, maps[-1].dense())  # type: ignore[union-attr]
            flops_s, flops_trunk_s = flops_s + a + b, flops_trunk_s + a
            logits_s.append(logits)
            shares.append(torch.tensor(active_shares(maps)) * len(xb))  # type: ignore[arg-type]
            a, t, logits = counted_flops(dense, xb)
            flops_d, flops_trunk_d = flops_d + a, flops_trunk_d + t
            logits_d.append(logits)
        xb = x[:latency_batch]
        lat_dense = measure.latency_us(lambda: dense(xb)) / 1e3
        lat_sparse = measure.latency_us(lambda: sparse(xb)) / 1e3
        lat_gathered = measure.latency_us(lambda: gathered(xb)) / 1e3
    ld, ls = torch.cat(logits_d), torch.cat(logits_s)
    share = (torch.stack(shares).sum(0) / len(x)).tolist()
    return {
        "prediction_agreement": float((ld.argmax(1) == ls.argmax(1)).float().mean()),
        "max_abs_logit_diff": float((ld - ls).abs().max()),
        **{f"active_share_{name}": v for name, v in zip(layer_names(dense.features), share, strict=True)
           if not name.startswith("relu")},
        "sparse_flops": flops_s / len(x),
        "flop_reduction": flops_d / flops_s,
        "conv_flop_reduction": flops_trunk_d / flops_trunk_s,
        "dense_latency_ms": lat_dense,
        "sparse_latency_ms": lat_sparse,
        "gather_dense_latency_ms": lat_gathered,
        "speedup": lat_dense / lat_sparse,
        "speedup_vs_gather_dense": lat_gathered / lat_sparse,
    }


@reproduction("graham2014", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = run.config
    data = run.dataset()
    shape = data.input_shape
    width = cfg["lenet5_width"]
    background = data.train.x.amin(dim=(0, 2, 3))  # the standardised value of a blank pixel
    n_eval = min(cfg["sparsity"]["eval_examples"], len(data.test))
    batch = cfg["sparsity"]["latency_batch"]
    metrics: dict[str, float] = {}
    renderings = {"": lambda x: x, "outline_": lambda x: outline(x, background)}
    for prefix, render in renderings.items():
        run.reseed(f"graham2014 dense {prefix}")
        train = Split(render(data.train.x), data.train.y)
        test = Split(render(data.test.x), data.test.y)
        net = run.train(run.model("lenet-5", width=width), train, run.train_config("dense"),
                        desc=f"dense LeNet-5 ({prefix.rstrip('_') or 'pictures'})")
        metrics[f"{prefix}baseline_accuracy"] = run.accuracy(net, test)
        metrics[f"{prefix}flops"] = measure.flops(net, shape)
        metrics.update({prefix + k: v for k, v in
                        sparse_measurements(net, test.x[:n_eval].cpu(), background, batch).items()})
    # The paper's own network (small filters, a grid several times larger than the drawing) on the
    # outlines centred in its grid: computation only (untrained weights; the active sites, FLOPs and
    # latency do not depend on the weights, and the equality is checked on these).
    run.reseed("graham2014 deepcnet")
    net = DeepCNet(shape[0], data.num_classes, cfg["sparsity"]["deepcnet_l"], cfg["sparsity"]["deepcnet_k"])
    grid = (net.grid,) * 2
    x = centre(outline(data.test.x[:n_eval].cpu(), background), net.grid, background)
    metrics["deepcnet_flops"] = measure.flops(net, (shape[0], *grid))
    metrics.update({"deepcnet_" + k: v for k, v in sparse_measurements(net, x, background, batch).items()})
    run.record(
        CLAIM,
        model=f"LeNet-5 at width {width:g}, convolutional trunk run at the active sites only (same weights)",
        metrics=metrics,
        baseline=("lenet-5", "baseline_accuracy"),
        baseline_spec={} if width == 1.0 else {"width": width},
        differs=(f"{data.name} pictures (which fill much of their grid) and their one-pixel outlines, on LeNet-5 at "
                 f"width {width:g}, instead of DeepCNet on pen strokes drawn on a large grid or padded CIFAR pictures; "
                 f"forward pass only; PyTorch on one CPU thread instead of the paper's CUDA code"),
        notes=(f"agreement, active shares and FLOPs on the first {n_eval} test examples; latency: the batch of the "
               f"first {batch} test examples on one CPU thread (measure.latency_us); outline_*: the same on a network "
               f"trained and tested on the pictures' outlines"),
    )
