"""Q-CNN: the response-error and error-corrected product quantization (each lowers the objective it
minimises below Gong et al.'s weight-error PQ), the encoding (decode(encode) is the quantized weight) and
the lookup-table product (the dense product)."""

from __future__ import annotations

import torch
from atlas_reproductions.wu2016 import (
    QCNN,
    Config,
    LookupLayer,
    Setting,
    error_corrected_pq,
    lut_matmul,
    quantize_network,
    response_pq,
    subvectors,
    theoretical_speedup,
    weight_pq,
)
from torch import nn

from atlas.harness import measure, registry


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _layer(n: int = 40, c: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight and correlated, anisotropic inputs (so that the response metric differs from the
    weights' Euclidean one)."""
    g = _gen(seed)
    w = torch.randn(n, c, generator=g) * 0.1
    mix = torch.randn(c, c, generator=g) * torch.logspace(0, -2, c)[None, :]
    x = torch.randn(500, c, generator=g) @ mix.T
    return w, x


def _response_error(w: torch.Tensor, q: torch.Tensor, x: torch.Tensor) -> float:
    return float(((x @ w.T - x @ q.T) ** 2).sum())


def test_subvectors_pad_and_split() -> None:
    t = torch.arange(10.0).reshape(2, 5)
    s = subvectors(t, 2)
    assert s.shape == (3, 2, 2)
    assert s[0].tolist() == [[0, 1], [5, 6]] and s[2].tolist() == [[4, 0], [9, 0]]


def test_encoding_decodes_to_the_quantized_weight_and_counts_its_bytes() -> None:
    w, _ = _layer(30, 22)
    torch.manual_seed(0)
    q = weight_pq(w, 4, 8, 10)
    enc = q.encode()
    assert torch.equal(enc.dequantize(), q.weight())
    m = 6  # ceil(22 / 4) subspaces, 3-bit indices packed 10 to an int32 word, fp32 codebooks [6, 8, 4]
    assert enc.storage_bytes() == 4 * 30 * 1 + 4 * m * 8 * 4


def test_response_pq_lowers_the_response_error_of_weight_pq() -> None:
    """With anisotropic inputs the response metric matters: Q-CNN's objective ends below Gong's PQ it
    starts from, while Gong's PQ keeps the lower weight error."""
    w, x = _layer()
    torch.manual_seed(1)
    pq = weight_pq(w, 4, 4, 30)
    torch.manual_seed(1)
    rq = response_pq(w, x, 4, 4, iters=10, kmeans_iters=30)
    assert _response_error(w, rq.weight(), x) < 0.9 * _response_error(w, pq.weight(), x)
    assert float((w - pq.weight()).pow(2).sum()) < float((w - rq.weight()).pow(2).sum())


def test_error_correction_fits_the_original_response_from_the_quantized_input() -> None:
    """Given a perturbed input (as from quantized layers below), error correction's codebooks reach a
    lower error against the ORIGINAL response than the same quantization fitted without correction, and
    with an exact input it does not raise the response error."""
    w, x = _layer(seed=2)
    x_q = x + 0.3 * x.std() * torch.randn(x.shape, generator=_gen(3))
    torch.manual_seed(2)
    init = response_pq(w, x, 4, 4, iters=5, kmeans_iters=30)
    target = x @ w.T
    ec = error_corrected_pq(target, x_q, init, 4, iters=5)
    before = float(((target - x_q @ init.weight().T) ** 2).sum())
    after = float(((target - x_q @ ec.weight().T) ** 2).sum())
    assert after < 0.8 * before
    same = error_corrected_pq(target, x, init, 4, iters=5)
    assert _response_error(w, same.weight(), x) <= _response_error(w, init.weight(), x) * (1 + 1e-5)


def test_lookup_table_product_is_the_dense_product() -> None:
    w, _ = _layer(37, 23)
    torch.manual_seed(0)
    q = weight_pq(w, 4, 8, 10)
    x = torch.randn(5, 23, generator=_gen(4))
    torch.testing.assert_close(lut_matmul(x, LookupLayer.of(q)), x @ q.weight().T, rtol=1e-5, atol=1e-5)
    # multiply-adds: 37 x 23 dense against 6 x 8 x 4 table products and 37 x 6 additions
    assert theoretical_speedup([q]) == (37 * 23) / (6 * 8 * 4 + 37 * 6)


def test_quantize_network_stores_each_layer_by_its_encoding() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 40), nn.ReLU(), nn.Linear(40, 3))
    x = torch.randn(300, 1, 8, 8, generator=_gen(5))
    cfg = QCNN(setting=Setting(dim=4, k=4), iters=2, kmeans_iters=10, examples=300)
    net = quantize_network(model, x, cfg.setting, cfg, "ec")
    params = dict(net.model.named_parameters())
    # the 3-unit classifier's encoding (4 codewords x 40 inputs of fp32) would exceed its 120 fp32 weights
    assert set(net.layers) == {"1.weight", "3.weight"}
    assert torch.equal(params["5.weight"], dict(model.named_parameters())["5.weight"])
    for name, q in net.layers.items():
        assert torch.equal(params[name].detach(), q.weight())
    expected = sum(8 * q.encode().storage_bytes() for q in net.layers.values())
    expected += sum(32 * p.numel() for n, p in model.named_parameters() if n not in net.layers)
    assert measure.storage_bits(net.parts) == expected


def test_profiles_validate() -> None:
    profiles = registry.get("wu2016").profiles
    for name in ("smoke", "quick", "paper"):
        cfg = Config.model_validate(profiles[name])
        assert len(cfg.curve) >= 3 and cfg.qcnn.setting in cfg.curve
    assert profiles["quick"]["seeds"] >= 3
