"""The batched linear imputation against pytorch-grad-cam's own NoisyLinearImputer (sparse direct solve)."""

import warnings

import numpy as np
import pytest
import torch

from hf_gazecons import imputation
from hf_gazecons.errors import MetricError
from hf_gazecons.imputation import noisy_linear_impute

road = pytest.importorskip(
    "pytorch_grad_cam.metrics.road", reason="the peer pytorch-grad-cam (pip install -e '.[peers]')"
)


def peer_impute(image: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's __array_wrap__ deprecation inside scipy.sparse
        return road.NoisyLinearImputer(noise=0.0)(image, keep.float())


def blob_keep(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Masks like ROAD's: a smooth random map thresholded at a random quantile."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 4, 5, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    levels = torch.rand(n, generator=generator) * 0.8 + 0.1
    return smooth < torch.quantile(smooth.flatten(1), levels, dim=1).diagonal()[:, None, None]


@pytest.mark.parametrize("height, width", [(24, 24), (13, 17), (40, 33)])
def test_matches_the_peer_sparse_solve(height, width):
    generator = torch.Generator().manual_seed(height)
    images = torch.randn(6, 3, height, width, generator=generator)
    keep = blob_keep(6, height, width, seed=width)
    keep[5] = torch.rand(height, width, generator=generator) < 0.5  # scattered pixels
    ours = noisy_linear_impute(images, keep)
    for image, kept, filled in zip(images, keep, ours):
        expected = peer_impute(image, kept)
        assert torch.equal(filled[:, kept], image[:, kept])  # kept pixels untouched
        assert (filled - expected).abs().max() < 1e-4


def test_the_system_is_the_peers_and_symmetric_positive_definite():
    """Our stencil is minus the peer's matrix (its sign convention), symmetric, with positive
    eigenvalues once one pixel is kept; with nothing kept it is singular and both give 0."""
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(3, 7, 6, generator=generator)
    for keep in (blob_keep(1, 7, 6, seed=3)[0], torch.rand(7, 6, generator=generator) < 0.1):
        matrix, _ = road.NoisyLinearImputer.setup_sparse_system(
            keep.float().numpy(), image.numpy(), road.neighbors_weights
        )
        peer = -matrix.toarray()
        removed = (~keep)[None, None].float()
        stencil = imputation._fine_stencil(removed)
        dense = imputation._dense(stencil, removed)[0].numpy()
        unknown = (~keep).flatten().numpy()
        ours = dense[np.ix_(unknown, unknown)]
        assert np.allclose(ours, peer, atol=1e-7)
        assert np.allclose(peer, peer.T)
        assert np.linalg.eigvalsh(peer).min() > 1e-6
    nothing = torch.zeros(7, 6, dtype=torch.bool)
    matrix, _ = road.NoisyLinearImputer.setup_sparse_system(
        nothing.float().numpy(), image.numpy(), road.neighbors_weights
    )
    assert abs(np.linalg.eigvalsh(-matrix.toarray()).min()) < 1e-9  # the grid's Laplacian: singular
    assert torch.equal(peer_impute(image, nothing), torch.zeros_like(image))
    assert torch.equal(noisy_linear_impute(image[None], nothing[None])[0], torch.zeros_like(image))


def test_noise_is_added_to_imputed_pixels_only():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 32, 32, generator=generator)
    keep = blob_keep(4, 32, 32, seed=5)
    exact = noisy_linear_impute(images, keep)
    noisy = noisy_linear_impute(images, keep, noise=0.05, generator=torch.Generator().manual_seed(1))
    difference = (noisy - exact).permute(1, 0, 2, 3)
    assert torch.equal(difference[:, keep], torch.zeros_like(difference[:, keep]))
    assert difference[:, ~keep].std().item() == pytest.approx(0.05, rel=0.05)


def test_a_solve_that_does_not_converge_fails_loudly():
    images = torch.randn(2, 3, 32, 32)
    with pytest.raises(MetricError, match="did not converge"):
        noisy_linear_impute(images, blob_keep(2, 32, 32, seed=0), max_iterations=1)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="do not match"):
        noisy_linear_impute(torch.zeros(2, 3, 8, 8), torch.ones(2, 8, 7, dtype=torch.bool))
