"""Improving the speed of neural networks on CPUs (Vanhoucke, Senior & Mao, NIPS 2011 Workshop on Deep
Learning and Unsupervised Feature Learning; not on arXiv: https://research.google/pubs/pub37631/).

Method: a trained network is run in 8-bit fixed point. Its weights are linearly quantized to 8-bit
integers and its activations to 8-bit integers before every layer; each layer's products are
computed with the CPU's 8-bit integer SIMD instructions (SSSE3/SSE4), accumulated in integers, and
scaled back to real values, to which the (real-valued) bias is added:

.. math:: y = s_x s_W \\, (q_x^\\top q_W) + b, \\qquad q_W = \\mathrm{round}(W / s_W), \\;
          q_x = \\mathrm{round}(x / s_x)

Here the encoding is the atlas's int8 kernel (``atlas_kernels.int8``): symmetric, ``s_W = max|W[n]| /
127`` per output unit (``quantize_int8_weight``), ``s_x = max|x[m]| / 127`` per example
(``quantize_int8_activation``), exact int32 accumulation (``int8_matmul``), fp32 bias. No retraining:
the fp32 network is quantized after training.

Claims (the paper's abstract, as quoted by the catalogue; its body was not read here): the SSSE3 and
SSE4 fixed-point instructions "provide a 3x improvement over an optimized floating-point baseline",
and the optimised system runs "at no cost in accuracy" (a large-vocabulary hybrid HMM/NN speech
recogniser on Google voice search data). Checked here: ``int8-speedup``: ``speedup``, the measured
latency of the whole 8-bit network's forward pass through ``atlas_kernels.int8_matmul`` against the
same network in fp32 (``F.linear``), timed in the same run (``measure.kernel_latency``, one CPU
thread, a batch of ``latency_batch`` examples: the paper batches frames); ``int8-accuracy``:
``accuracy_change_pp`` of the 8-bit network against the same fp32 network, within 0.5 pp.

Recorded: ``baseline_accuracy``, ``accuracy``, ``accuracy_change_pp``, ``storage_bits``,
``storage_compression`` (int8 weights and their fp32 scales, fp32 biases) on ``int8-accuracy``;
``dense_latency_us``, ``encoded_latency_us`` and ``speedup`` on ``int8-speedup``. The curve
(``int8-accuracy``): the 8-bit network's accuracy at 8 bits beside the fp32 network's weights
uniformly quantized after training to 8, 6 and 4 bits (``controls.quantization_curve``,
post-training: no retraining, as here; the control leaves activations in fp32).

Harness differs: Fashion-MNIST and the harness MLP 784-256-256-10 with ReLU (the paper: a speech
acoustic model with sigmoid units, whose [0, 1] outputs it quantizes as unsigned bytes); symmetric
per-unit weight scales and per-example activation scales (the atlas's int8 format); the CPU is this
machine's, timed on one thread at batch ``latency_batch``. On a CPU, ``atlas_kernels.int8_matmul``
runs PyTorch's integer GEMM (``torch._int_mm``: int8 products, exact int32 accumulation on the CPU's
integer SIMD units); the fp32 baseline is PyTorch's own SIMD-optimised GEMM (``F.linear``), not 2011's
floating-point code. On CUDA tensors the same call runs the atlas's Triton int8 kernel.
"""

from __future__ import annotations

import copy

import atlas_kernels as ak
import torch
from pydantic import PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, controls, measure, reproduction


class Config(Profile):
    hidden: list[PositiveInt]  # the MLP's hidden widths
    train: TrainConfig  # the fp32 network that is quantized
    latency_batch: PositiveInt  # examples per timed forward pass (the paper batches frames)


PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "hidden": [64, 64], "latency_batch": 32,
        "train": {"steps": 100, "batch_size": 64, "optimizer": "adam", "lr": 0.003, "schedule": "cosine"},
    },
    "quick": {
        # 1,500 Adam steps of batch 128 (3.2 passes over Fashion-MNIST) per seed; one training, 3 seeds
        "dataset": "fashion-mnist", "seeds": 3, "hidden": [256, 256], "latency_batch": 128,
        "train": {"steps": 1500, "batch_size": 128, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
    },
    "paper": {
        # no speech data in the harness: MNIST and a wide MLP (chosen here, not the paper's network)
        "dataset": "mnist", "seeds": 3, "hidden": [2000, 2000, 2000, 2000], "latency_batch": 128,
        "train": {"steps": 30000, "batch_size": 128, "optimizer": "adam", "lr": 0.001, "schedule": "cosine"},
    },
}


class Int8Linear(nn.Module):
    """A trained ``nn.Linear`` run in 8-bit fixed point: its weight as int8 codes with a scale per
    output unit, its input quantized to int8 per example, the products accumulated in int32
    (``atlas_kernels.int8_matmul``) and scaled back, plus the fp32 bias."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = ak.quantize_int8_weight(linear.weight.detach())
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, xs = ak.quantize_int8_activation(x)
        return ak.int8_matmul(xq, self.weight, xs, bias=self.bias)


def to_int8(model: nn.Module) -> nn.Module:
    """A copy of the trained ``model`` with every ``nn.Linear`` run in 8-bit fixed point."""
    clone = copy.deepcopy(model).eval()
    for name, module in list(clone.named_modules()):
        if isinstance(module, nn.Linear):
            parent = clone.get_submodule(name.rsplit(".", 1)[0]) if "." in name else clone
            setattr(parent, name.rsplit(".", 1)[-1], Int8Linear(module))
    return clone


def int8_storage(model: nn.Module) -> list[measure.Encoded]:
    """An :func:`to_int8` model as stored: each layer's int8 codes and fp32 scales (the encoding's
    bytes), and its fp32 bias; any other parameter in fp32."""
    parts: list[measure.Encoded] = []
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear):
            parts.append(measure.encoded(f"{name}.weight", module.weight, "int8 codes, fp32 scale per unit"))
            if module.bias is not None:
                parts.append(measure.Encoded(f"{name}.bias", measure.FP32_BITS * module.bias.numel(), "fp32"))
    return parts + measure.fp32_parts(model)


@torch.no_grad()
def int8_latency(dense: nn.Module, batch: int, input_shape: tuple[int, ...]) -> dict[str, float]:
    """The whole network's forward pass on ``batch`` fixed random examples: fp32 against 8-bit through
    ``atlas_kernels.int8_matmul`` (``dense_latency_us``, ``encoded_latency_us``, ``speedup``), timed
    one after the other (``measure.kernel_latency``)."""
    dense = dense.eval()
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0)).to(next(dense.parameters()).device)
    int8 = to_int8(dense)
    return measure.kernel_latency(lambda: dense(x), lambda: int8(x))


#: What limits the measured CPU speed-up; shown beside the verdict.
DIAGNOSIS = """
The speed-up is the whole 8-bit forward pass through atlas_kernels.int8_matmul, which on a CPU runs
PyTorch's integer GEMM (torch._int_mm), against the same network in fp32 through PyTorch's own
SIMD-optimised float GEMM, on one thread, in the same run. Two things separate it from the paper's
3x: the float baseline here is a modern vectorised GEMM (AVX2/FMA), far stronger than 2011's, and
each 8-bit layer also quantizes its input (a max, a division and a rounding per example) in separate
element-wise passes that the paper's hand-written SSE code fused into the product. The int8 GEMM
alone is timed in benchmarks/bench_kernels.py. On CUDA the check times the atlas's Triton int8 kernel.
"""


@reproduction("vanhoucke2011", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    cfg = Config.model_validate(run.config)
    data = run.dataset()
    dense = run.train(run.model("mlp", hidden=cfg.hidden), data.train, run.train_config("train"), desc="fp32")
    base_acc = run.accuracy(dense, data.test)
    int8 = to_int8(dense)
    acc = run.accuracy(int8, data.test)
    bits = measure.storage_bits(int8_storage(int8))

    arch = "-".join(str(n) for n in (data.input_shape[0] * data.input_shape[1] * data.input_shape[2],
                                     *cfg.hidden, data.num_classes))
    model = f"MLP {arch} (ReLU), 8-bit weights and activations, int32 accumulation"
    differs = (f"harness MLP {arch} with ReLU (the paper: a speech acoustic model with sigmoid units), "
               f"{cfg.train.steps} Adam steps of batch {cfg.train.batch_size}; symmetric int8 with a scale per "
               "output unit (weights) and per example (activations); quantized after training")
    spec = {"hidden": list(cfg.hidden)}
    run.record("int8-accuracy", model=model, differs=differs, baseline=("mlp", "baseline_accuracy"),
               baseline_spec=spec,
               metrics={**measure.accuracy_change(base_acc, acc), "storage_bits": bits,
                        "storage_compression": measure.dense_bits(dense) / bits},
               curves=[controls.Series("8-bit fixed point (weights and activations)", controls.BITS,
                                       controls.ACCURACY, {8.0: acc}),
                       controls.quantization_curve(run, dense, [8, 6, 4], None)])

    timing = int8_latency(dense, cfg.latency_batch, tuple(data.input_shape))
    on = next(dense.parameters())
    backend = "Triton kernel" if ak.resolve_backend("auto", on) == "triton" else "PyTorch CPU fallback"
    notes = (f"speed-up of the whole forward pass at batch {cfg.latency_batch} through atlas_kernels.int8_matmul "
             f"({backend}) against the same network in fp32 (F.linear), in the same run; "
             "torch.utils.benchmark blocked_autorange"
             + ("" if on.is_cuda else ", one CPU thread"))
    run.record("int8-speedup", model=model, differs=differs, notes=notes, metrics=timing,
               diagnosis="" if on.is_cuda else DIAGNOSIS)
