"""QNN (hubara2018): the k-bit quantizer and its straight-through gradient, the 1-bit QNN as BNN, the
quantized network built from the fp32 MLP, and the packed k-bit encoding (round trip, bit count, the
same logits through ``atlas_kernels.lowbit_matmul``)."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions import courbariaux2016
from atlas_reproductions.hubara2018 import (
    PROFILES,
    KBitLinear,
    QuantizedActivation,
    encode_kbit,
    encode_qnn,
    linear_quantize,
    lowbit_forward,
    qnn_storage,
    quantize_codes,
    quantize_network,
    quantized_tanh,
)
from torch import nn

from atlas.harness import measure


def test_two_bit_levels_are_four_evenly_spaced_values_on_minus_one_one() -> None:
    x = torch.tensor([-3.0, -1.0, -0.7, -0.34, -0.3, 0.0, 0.32, 0.5, 0.7, 1.0, 2.0])
    third = 1.0 / 3.0
    expected = [-1, -1, -1, -third, -third, -third, third, third, 1, 1, 1]
    # round((x + 1) / 2 * 3): -0.34 -> round(0.99) = 1; 0.0 -> round(1.5) = 2 (half to even) -> +1/3
    expected[5] = third
    assert torch.allclose(linear_quantize(x, 2), torch.tensor(expected))
    assert quantize_codes(x, 2).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3]


def test_k_bit_quantizer_has_2_to_the_k_levels_and_error_at_most_half_a_step() -> None:
    x = torch.linspace(-1, 1, 10001)
    for k in (2, 3, 4, 8):
        q = linear_quantize(x, k)
        assert q.unique().numel() == 2**k
        assert float((q - x).abs().max()) <= 1.0 / (2**k - 1) + 1e-6  # half of the step 2 / (2^k - 1)


def test_one_bit_qnn_is_bnn() -> None:
    x = torch.tensor([-2.0, -1e-8, 0.0, 0.3, 1.5], requires_grad=True)
    y = quantized_tanh(x, 1)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]  # BNN's sign: 0 -> +1
    x2 = x.detach().clone().requires_grad_(True)
    g = torch.arange(1.0, 6.0)
    y.backward(g)
    courbariaux2016.binary_tanh(x2).backward(g)
    assert torch.equal(x.grad, x2.grad)


def test_straight_through_gradient_is_htanh_s() -> None:
    x = torch.tensor([-1.5, -1.0, -0.2, 0.4, 1.0, 1.2], requires_grad=True)
    quantized_tanh(x, 2).backward(torch.ones(6))
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # cancelled only outside [-1, 1]


def _qnn(bits: int, hidden: list[int] = [40, 33], seed: int = 0) -> nn.Sequential:  # noqa: B006
    torch.manual_seed(seed)
    model = quantize_network(courbariaux2016.mlp((1, 4, 16), 3, hidden), bits)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, KBitLinear):
                m.weight.uniform_(-1, 1)  # latent weights over the whole grid, as after training
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return model.eval()


def test_quantized_network_quantizes_weights_and_activations_to_k_bits() -> None:
    model = _qnn(2)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Flatten", "KBitLinear", "BatchNorm1d", "QuantizedActivation", "KBitLinear", "BatchNorm1d",
                     "QuantizedActivation", "KBitLinear", "BatchNorm1d"]
    seen: list[torch.Tensor] = []
    for m in model:
        if isinstance(m, KBitLinear):
            m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
            w = m.propagation_weight()
            assert w.unique().numel() == 4 and torch.allclose(w, linear_quantize(m.weight, 2))
    model(torch.randn(5, 1, 4, 16))
    assert seen[0].unique().numel() > 4  # the image is not quantized
    for inp in seen[1:]:
        assert inp.unique().numel() <= 4 and torch.allclose(inp, linear_quantize(inp, 2))
    assert all(m.bits == 2 for m in model if isinstance(m, QuantizedActivation))


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_encoding_decodes_exactly_to_the_quantized_weights(bits: int) -> None:
    w = torch.randn(7, 45) * 0.6
    q = encode_kbit(w, bits)
    assert torch.equal(q.dequantize(), linear_quantize(w, bits))
    cpw = 32 // bits
    assert q.storage_bytes() == 4 * 7 * -(-45 // cpw) + 4 + 4  # packed words + scale + zero


def test_storage_counts_the_packed_codes_and_fp32_bn() -> None:
    model = _qnn(4)
    parts = qnn_storage(model)
    words = sum(4 * m.out_features * -(-m.in_features // 8) + 8 for m in model if isinstance(m, KBitLinear))
    bn = sum(2 * m.num_features * 4 for m in model if isinstance(m, nn.BatchNorm1d))
    assert measure.storage_bits(parts) == 8 * (words + bn)
    assert sorted(encode_qnn(model)) == ["1.weight", "4.weight", "7.weight"]


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_lowbit_kernel_gives_the_pytorch_qnns_logits(bits: int) -> None:
    model = _qnn(bits)
    x = torch.randn(16, 1, 4, 16)
    with torch.no_grad():
        expected = model(x)
    got = lowbit_forward(model, x)
    assert torch.allclose(got, expected, atol=1e-4)
    assert isinstance(encode_qnn(model)["4.weight"], ak.LowBitWeight)


def test_profiles_keep_bnns_budget_and_three_bit_widths() -> None:
    for name in ("smoke", "quick"):
        assert PROFILES[name]["hidden"] == courbariaux2016.PROFILES[name]["hidden"]
        assert len(PROFILES[name]["bits"]) >= 3 and {2, 4} <= set(PROFILES[name]["bits"])
    assert PROFILES["quick"]["seeds"] >= 3


class _FakeRun:
    """Just what :func:`train_qnn` asks of a run: its config, a training section, and ``train``."""

    def __init__(self, latent_lr: str) -> None:
        self.config = {"latent_lr": latent_lr, "train": {"steps": 1, "optimizer": "adam", "lr": 0.01}}
        self.seen: dict = {}

    def train_config(self, section: str):
        from atlas.harness import TrainConfig
        return TrainConfig.from_dict(self.config[section])

    def reseed(self, stage: str) -> None:
        pass

    def dataset(self):
        class _D:
            train = None
        return _D()

    def train(self, model, split, cfg, desc, **hooks):
        self.seen = hooks
        return model


@pytest.mark.parametrize("latent_lr", ["plain", "glorot"])
def test_latent_rate_is_plain_adam_or_bnns_glorot_scaling(latent_lr: str) -> None:
    from atlas_reproductions import hubara2018

    torch.manual_seed(0)
    initial = courbariaux2016.mlp((1, 4, 16), 3, [40])
    run = _FakeRun(latent_lr)
    model = hubara2018.train_qnn(run, initial, 2)  # type: ignore[arg-type]
    assert run.seen["after_step"] is hubara2018.clip_latent
    params = run.seen["params"]
    if latent_lr == "plain":
        assert params is None  # one Adam rate for every parameter (the QNN authors' PyTorch code)
    else:
        first = model[1].weight
        group = next(g for g in params if any(p is first for p in g["params"]))
        # 0.01 / sqrt(1.5 / (64 + 40)): the inverse of Glorot's bound (BNN's Theano code)
        assert group["lr"] == pytest.approx(0.01 / (1.5 / 104) ** 0.5)
    assert hubara2018.Config.model_validate({**PROFILES["quick"], "latent_lr": latent_lr}).latent_lr == latent_lr
