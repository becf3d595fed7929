"""BNN (courbariaux2016): the sign activation and its straight-through gradient, the binarised network
built from the fp32 MLP, its 1-bit encodings (round trip and bit count) and the deployed network through
``atlas_kernels.binary_matmul`` (the same logits as the PyTorch BNN)."""

from __future__ import annotations

import atlas_kernels as ak
import pytest
import torch
from atlas_reproductions import courbariaux2015
from atlas_reproductions.courbariaux2016 import (
    PROFILES,
    SignActivation,
    binarize_network,
    binary_tanh,
    bnn_storage,
    dense_products,
    deployed_forward,
    encode_bnn,
    mlp,
    xnor_latency,
    xnor_products,
)
from torch import nn


def test_binary_tanh_is_the_sign_forward_and_htanh_gradient_backward() -> None:
    x = torch.tensor([-2.0, -1.0, -0.5, -1e-8, 0.0, 0.3, 1.0, 1.5], requires_grad=True)
    y = binary_tanh(x)
    assert y.tolist() == [-1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]  # exact signs, 0 -> +1
    y.backward(torch.arange(1.0, 9.0))
    # g_r = g_q * 1_{|r| <= 1}: cancelled only outside [-1, 1]
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0]


def _bnn(hidden: list[int] = [40], inputs: tuple[int, ...] = (1, 4, 16), classes: int = 3,  # noqa: B006
         seed: int = 0) -> tuple[nn.Sequential, nn.Sequential]:
    torch.manual_seed(seed)
    fp32 = mlp(inputs, classes, hidden)
    bnn = binarize_network(fp32)
    with torch.no_grad():  # BN running statistics as after training, so that eval is not trivial
        for m in bnn.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-3, 3)
                m.running_var.uniform_(0.5, 4)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    return fp32, bnn.eval()


def test_binarized_network_keeps_the_fp32_weights_and_binarises_weights_and_activations() -> None:
    fp32, bnn = _bnn(hidden=[12, 12])
    kinds = [type(m).__name__ for m in bnn]
    assert kinds == ["Flatten", "BinaryLinear", "BatchNorm1d", "SignActivation", "BinaryLinear", "BatchNorm1d",
                     "SignActivation", "BinaryLinear", "BatchNorm1d"]
    assert [type(m).__name__ for m in fp32].count("ReLU") == 2  # the fp32 MLP is left as it was
    for a, b in zip(fp32.parameters(), binarize_network(fp32).parameters(), strict=True):
        assert torch.equal(a, b)  # the same latent weights (and BN parameters)
    seen: list[torch.Tensor] = []
    for m in bnn:
        if isinstance(m, courbariaux2015.BinaryLinear):
            m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    bnn(torch.randn(5, 1, 4, 16))
    assert not set(seen[0].unique().tolist()) <= {-1.0, 1.0}  # the image is not binarised
    for inp in seen[1:]:
        assert set(inp.unique().tolist()) <= {-1.0, 1.0}  # every later layer's input is


def test_gradient_reaches_the_latent_weights_through_the_sign_units() -> None:
    _, bnn = _bnn()
    bnn.train()
    courbariaux2015.hinge(bnn, torch.randn(8, 1, 4, 16), torch.arange(8) % 3, torch.arange(8)).backward()
    first = bnn[1].weight.grad
    assert first is not None and first.abs().sum() > 0


def test_encodings_decode_to_the_signs_with_the_first_layer_in_low_bit_codes() -> None:
    _, bnn = _bnn(hidden=[40, 33])
    encoded = encode_bnn(bnn)
    assert sorted(encoded) == ["1.weight", "4.weight", "7.weight"]
    assert isinstance(encoded["1.weight"], ak.LowBitWeight)  # real input: BinaryConnect's 1-bit codes
    assert all(isinstance(encoded[n], ak.BinaryWeight) and encoded[n].alpha is None for n in ("4.weight", "7.weight"))
    params = dict(bnn.named_parameters())
    for name, q in encoded.items():
        assert torch.equal(q.dequantize(), courbariaux2015.binarize_deterministic(params[name].detach()))


def test_storage_counts_packed_signs_and_bn_in_fp32() -> None:
    _, bnn = _bnn()
    parts = {p.name: p.bits for p in bnn_storage(bnn)}
    # 64 -> 40: 40 rows of 2 int32 words + the low-bit encoding's two fp32 constants; 40 -> 3: 3 rows of
    # 2 words, no scale (BNN); BN scale and shift of 40 and 3 units in fp32
    assert parts == {"1.weight": 40 * 2 * 32 + 64, "4.weight": 3 * 2 * 32, "2.weight": 40 * 32, "2.bias": 40 * 32,
                     "5.weight": 3 * 32, "5.bias": 3 * 32}
    assert 32 * (64 * 40 + 40 * 3) / (parts["1.weight"] + parts["4.weight"]) == pytest.approx(30.45, abs=0.01)  # 40 inputs padded to 64 bits


def test_deployed_network_through_the_xnor_kernel_gives_the_bnn_logits() -> None:
    _, bnn = _bnn(hidden=[70, 50], seed=3)
    x = torch.randn(64, 1, 4, 16)
    expected = bnn(x)
    encoded = encode_bnn(bnn)
    xnor = deployed_forward(bnn, xnor_products(encoded, x.device), x)
    assert torch.equal(xnor, expected)
    assert torch.equal(deployed_forward(bnn, dense_products(encoded, x.device), x), expected)
    # a product that binarised the real image too would compute another network
    wrong = xnor_products(encoded, x.device) | {"1.weight": lambda v: ak.binary_matmul(
        v, ak.binarize_weight(encoded["1.weight"].dequantize(), scale=False))}
    assert not torch.equal(deployed_forward(bnn, wrong, x), expected)


def test_xnor_latency_times_the_two_paths_of_the_same_network() -> None:
    _, bnn = _bnn()
    out = xnor_latency(bnn, encode_bnn(bnn), torch.randn(16, 1, 4, 16))
    assert set(out) == {"dense_latency_us", "encoded_latency_us", "speedup"}
    assert out["speedup"] == pytest.approx(out["dense_latency_us"] / out["encoded_latency_us"])


def test_dropout_is_placed_on_the_input_and_after_every_hidden_unit() -> None:
    fp32 = mlp((1, 4, 16), 3, [8, 8], dropout_input=0.2, dropout_hidden=0.5)
    assert [type(m).__name__ for m in fp32] == ["Flatten", "Dropout", "Linear", "BatchNorm1d", "ReLU", "Dropout",
                                               "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d"]
    assert [m.p for m in fp32 if isinstance(m, nn.Dropout)] == [0.2, 0.5, 0.5]
    assert isinstance(binarize_network(fp32)[5], nn.Dropout) and isinstance(binarize_network(fp32)[4], SignActivation)


def test_profiles_are_binaryconnects_budgets_and_the_released_mnist_mlp() -> None:
    for name in ("smoke", "quick"):  # BinaryConnect's MLP and training
        assert PROFILES[name]["hidden"] == courbariaux2015.PROFILES[name]["hidden"]
        assert PROFILES[name]["train"] == courbariaux2015.PROFILES[name]["train"]
    # the quick verdict was recorded with this budget: a change upstream must be seen here
    assert PROFILES["quick"]["hidden"] == [256, 256, 256] and PROFILES["quick"]["seeds"] >= 3
    assert {k: PROFILES["quick"]["train"][k] for k in ("steps", "batch_size", "lr")} == {
        "steps": 750, "batch_size": 200, "lr": 0.01}
    paper = PROFILES["paper"]
    assert (paper["hidden"], paper["dropout_input"], paper["dropout_hidden"]) == ([4096] * 3, 0.2, 0.5)
