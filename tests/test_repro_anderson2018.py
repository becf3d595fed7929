"""The geometry of binary networks: angles between vectors and their signs, dot-product correlations."""

from __future__ import annotations

import math

import torch
from atlas_reproductions.anderson2018 import (
    PREDICTED_ANGLE_DEG,
    PREDICTED_CORRELATION,
    angles_deg,
    binarization_angles,
    bnn_geometry,
    correlation,
    layer_activations,
    random_geometry,
)
from atlas_reproductions.courbariaux2016 import binarize_network, mlp


def test_predicted_values() -> None:
    assert abs(PREDICTED_ANGLE_DEG - 37.07) < 0.01
    assert abs(PREDICTED_CORRELATION - 0.7979) < 1e-4
    assert abs(math.cos(math.radians(PREDICTED_ANGLE_DEG)) - PREDICTED_CORRELATION) < 1e-12


def test_angles_on_known_vectors() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, -3.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
    assert torch.allclose(angles_deg(a, b), torch.tensor([90.0, 0.0, 0.0], dtype=torch.float64), atol=1e-5)
    # a vector whose entries all have the same magnitude is its own sign's direction; a uniform one is
    # at arccos(sqrt(3)/2) = 30 degrees in high dimension
    assert float(binarization_angles(torch.tensor([[2.0, -2.0, 2.0]]))[0]) < 1e-5
    u = torch.rand(20, 20000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert abs(float(binarization_angles(u).mean()) - 30.0) < 0.3


def test_random_gaussian_vectors_meet_their_signs_at_the_predicted_angle() -> None:
    out = random_geometry([1024], 400, torch.Generator().manual_seed(0))
    assert abs(out["random_angle_deg"] - PREDICTED_ANGLE_DEG) < 0.3
    assert abs(out["random_pair_angle_deg"] - 90.0) < 1.0
    assert abs(out["random_dot_correlation"] - PREDICTED_CORRELATION) < 0.02
    low = random_geometry([4], 2000, torch.Generator().manual_seed(0))  # low dimension: far from the limit
    assert low["random_angle_std_deg"] > 3 * out["random_angle_std_deg"]


def test_correlation_is_pearsons() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert abs(correlation(x, 2 * x + 1) - 1.0) < 1e-12
    assert abs(correlation(x, -x) + 1.0) < 1e-12
    assert abs(correlation(x, torch.tensor([1.0, -1.0, -1.0, 1.0]))) < 1e-12


def test_bnn_layer_activations_and_geometry() -> None:
    torch.manual_seed(0)
    bnn = binarize_network(mlp((1, 4, 4), 3, [8, 8]))
    x = torch.randn(32, 1, 4, 4)
    layers = layer_activations(bnn, x)
    assert [a_b.shape[1] for _, a_b, _ in layers] == [16, 8, 8]
    assert torch.equal(layers[0][1], x.flatten(1))  # the first layer sees the real image
    for _, a_b, a_c in layers[1:]:
        assert set(a_b.unique().tolist()) <= {-1.0, 1.0}  # the others see signs
        assert torch.equal(torch.where(a_c >= 0, 1.0, -1.0), a_b)  # of the activations before the sign
    g = bnn_geometry(bnn, x)
    assert set(g) >= {"weight_angle_deg", "dot_correlation", "activation_correlation", "saturated_fraction",
                      "weight_angle_deg_layer1", "dot_correlation_layer3"}
    assert g["weight_angle_deg"] == (g["weight_angle_deg_layer2"] + g["weight_angle_deg_layer3"]) / 2
    # binarised weights at the clipping bound: the latent weights equal their signs
    with torch.no_grad():
        for m, _, _ in layers:
            m.weight.copy_(torch.where(m.weight >= 0, 1.0, -1.0))
    g = bnn_geometry(bnn, x)
    assert g["weight_angle_deg"] < 1e-3 and abs(g["dot_correlation"] - 1.0) < 1e-9 and g["saturated_fraction"] == 1.0
