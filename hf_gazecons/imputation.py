"""Noisy linear imputation of removed pixels (the imputer of ROAD, Rong et al. 2022), for many images
and masks at once.

Every removed pixel takes the weighted mean of its eight neighbours (weight 1/6 for the four edge
neighbours, 1/12 for the four corner ones; neighbours outside the image are dropped), kept pixels
keep their value. For the removed set ``U`` that is the linear system ``(D - W_UU) x_U = W_UK x_K``,
with ``D`` the sum of a pixel's in-image neighbour weights and ``W`` the symmetric neighbour
weights: a principal submatrix of the pixel grid's weighted graph Laplacian. It is symmetric, and
positive definite as soon as one pixel is kept (every connected part of ``U`` then touches a kept
pixel). With nothing kept it is singular, its right-hand side is 0, and the image becomes 0 (the
minimum-norm solution, which pytorch-grad-cam's sparse direct solve returns too). The equations are
in docs/METHOD.md, section 11.

All systems (images x masks, every colour channel) are solved together by conjugate gradients,
preconditioned with one symmetric multigrid V-cycle: the operator of each level is a 9-point stencil
per system, the next level's is its Galerkin product over 2x2 blocks, two damped-Jacobi sweeps
before and after, and a dense solve on the coarsest grid. The iterations stop when every system's
residual is below ``tolerance`` times its right-hand side.

    >>> filled = noisy_linear_impute(images, keep)      # (S, C, H, W), keep: (S, H, W) bool
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import MetricError

__all__ = ["NEIGHBOUR_WEIGHTS", "noisy_linear_impute"]

NEIGHBOUR_WEIGHTS: dict[tuple[int, int], float] = {
    (-1, -1): 1 / 12, (-1, 0): 1 / 6, (-1, 1): 1 / 12,
    (0, -1): 1 / 6, (0, 1): 1 / 6,
    (1, -1): 1 / 12, (1, 0): 1 / 6, (1, 1): 1 / 12,
}  # fmt: skip
"""(row offset, column offset) -> weight of that neighbour in a removed pixel's mean."""

_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
_CENTRE = _OFFSETS.index((0, 0))
_SMOOTHING_STEPS = 1
_JACOBI_DAMPING = 0.8  # every level's operator is a diagonally dominant M-matrix: D^-1 A has its spectrum in [0, 2]
_CORRECTION = 1.5  # over-correction of the piecewise-constant coarse grids (unsmoothed aggregation)
_COARSEST_PIXELS = 64


def noisy_linear_impute(
    images: torch.Tensor,
    keep: torch.Tensor,
    noise: float = 0.0,
    *,
    generator: torch.Generator | None = None,
    tolerance: float = 1e-6,
    max_iterations: int = 500,
) -> torch.Tensor:
    """Replace the pixels that ``keep`` drops by the linear imputation, plus ``noise`` times
    standard normal noise.

    Args:
        images: (S, C, H, W) images.
        keep: (S, H, W) bool, True where a pixel keeps its value.
        noise: standard deviation of the Gaussian noise added to each imputed value (0: none).
        generator: the random generator of the noise.
        tolerance: stop when every system's residual norm is below ``tolerance`` times the norm of
            its right-hand side.
        max_iterations: conjugate-gradient iterations at most.

    Returns:
        (S, C, H, W) float32 images; all 0 (plus the noise) where ``keep`` keeps no pixel.

    Raises:
        MetricError: the iterations did not reach ``tolerance`` (the imputation cannot be trusted).
    """
    if images.ndim != 4 or keep.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"images (S, C, H, W) and keep (S, H, W) do not match: {images.shape}, {keep.shape}")
    images = images.float()
    keep = keep.to(images.device, torch.bool)
    removed = (~keep)[:, None].float()
    solvable = keep.flatten(1).any(dim=1)
    filled = images * (1 - removed)
    if solvable.any():
        index = solvable.nonzero()[:, 0]
        values = _solve(_fine_stencil(removed[index]), _right_hand_side(filled[index], removed[index]), tolerance,
                        max_iterations)  # fmt: skip
        filled[index] += values * removed[index]
    if noise:
        draw = torch.randn(filled.shape, generator=generator, device="cpu" if generator is None else generator.device)
        filled += noise * draw.to(filled.device) * removed
    return filled


def _shifted(x: torch.Tensor) -> list[torch.Tensor]:
    """The nine views ``x(i + offset)`` of (..., h, w) ``x`` in :data:`_OFFSETS` order, zero outside."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return [padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in _OFFSETS]


def _fine_stencil(removed: torch.Tensor) -> torch.Tensor:
    """(S, 9, H, W): row i of ``D - W_UU`` as coefficients of x(i + offset), for removed pixels i
    ((S, 1, H, W) float mask); zero rows and columns elsewhere."""
    inside = _shifted(torch.ones_like(removed[:1]))
    neighbours = _shifted(removed)
    stencil = torch.zeros(removed.shape[0], 9, *removed.shape[2:], device=removed.device)
    for k, offset in enumerate(_OFFSETS):
        if k == _CENTRE:
            continue
        weight = NEIGHBOUR_WEIGHTS[offset]
        stencil[:, _CENTRE] += weight * inside[k][:, 0]
        stencil[:, k] = -weight * neighbours[k][:, 0]
    return stencil * removed


def _right_hand_side(filled: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """``W_UK x_K``: the weighted sum of each removed pixel's kept neighbours (kept values in ``filled``)."""
    shifted = _shifted(filled)
    total = sum(NEIGHBOUR_WEIGHTS[offset] * shifted[k] for k, offset in enumerate(_OFFSETS) if k != _CENTRE)
    return total * removed


@dataclass
class _Level:
    """One grid of the multigrid hierarchy: its stencil, which of its unknowns exist, the damped
    Jacobi step ``omega / diagonal`` (0 where a row is empty); the coarsest keeps the inverse of its
    dense matrix instead."""

    stencil: torch.Tensor
    active: torch.Tensor
    jacobi: torch.Tensor
    inverse: torch.Tensor | None = None
    centre: torch.Tensor | None = None  # the finest grid: (D + 1/3) on removed pixels, see apply

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` that is zero where the level has no unknown. On the finest grid the
        weights are separable: ``W = (1/12) [1 2 1]^T [1 2 1] - (1/3) I``, so ``(D - W) x`` takes two
        1-D filters instead of nine products with the stencil."""
        if self.centre is not None:
            padded = F.pad(x, (1, 1, 1, 1))
            rows = padded[..., :, :-2] + padded[..., :, 2:]
            rows.add_(padded[..., :, 1:-1], alpha=2)
            both = rows[..., :-2, :] + rows[..., 2:, :]
            both.add_(rows[..., 1:-1, :], alpha=2)
            return (self.centre * x).addcmul_(both, self.active, value=-1 / 12)
        shifted = _shifted(x)
        out = self.stencil[:, :1] * shifted[0]
        for k in range(1, 9):
            out.addcmul_(self.stencil[:, k : k + 1], shifted[k])
        return out

    def smooth(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """One damped Jacobi sweep."""
        return x.addcmul_(b - self.apply(x), self.jacobi)


def _level(stencil: torch.Tensor) -> _Level:
    centre = stencil[:, _CENTRE : _CENTRE + 1]
    active = (stencil != 0).any(dim=1, keepdim=True).float()
    jacobi = torch.where(active > 0, _JACOBI_DAMPING / torch.where(active > 0, centre, 1.0), 0.0)
    level = _Level(stencil, active, jacobi)
    height, width = stencil.shape[-2:]
    if height * width <= _COARSEST_PIXELS:
        level.inverse = torch.linalg.inv(_dense(stencil, active)).float()
    return level


def _dense(stencil: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """(S, n, n) float64 matrix of a small stencil; an empty row gets a 1 on the diagonal."""
    systems, _, height, width = stencil.shape
    n = height * width
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    matrix = torch.zeros(systems, n, n, dtype=torch.float64, device=stencil.device)
    for k, (dy, dx) in enumerate(_OFFSETS):
        inside = (rows + dy >= 0) & (rows + dy < height) & (cols + dx >= 0) & (cols + dx < width)
        i = (rows * width + cols)[inside]
        j = ((rows + dy) * width + cols + dx)[inside]
        matrix[:, i, j] += stencil[:, k].flatten(1)[:, inside.flatten()].double()
    diagonal = torch.arange(n)
    matrix[:, diagonal, diagonal] += 1 - active.flatten(1).double()
    return matrix


def _coarser(stencil: torch.Tensor) -> torch.Tensor:
    """The Galerkin product ``P^T A P`` of a stencil over 2x2 blocks (P: a block's value on each of
    its pixels): entry (I, J) sums the entries (i, j) of the pixels i of block I and j of block J."""
    height, width = stencil.shape[-2:]
    stencil = F.pad(stencil, (0, width % 2, 0, height % 2))
    coarse = stencil.new_zeros(stencil.shape[0], 9, (height + 1) // 2, (width + 1) // 2)
    for k, (dy, dx) in enumerate(_OFFSETS):
        for py in (0, 1):
            for px in (0, 1):
                target = _OFFSETS.index(((py + dy) // 2, (px + dx) // 2))
                coarse[:, target] += stencil[:, k, py::2, px::2]
    return coarse


def _restrict(r: torch.Tensor) -> torch.Tensor:
    """Sum over 2x2 blocks (``P^T``)."""
    height, width = r.shape[-2:]
    if height % 2 or width % 2:
        r = F.pad(r, (0, width % 2, 0, height % 2))
    return F.avg_pool2d(r, 2) * 4


def _prolong(x: torch.Tensor, level: _Level) -> torch.Tensor:
    """A block's value on each of its pixels that is an unknown of ``level`` (``P``)."""
    height, width = level.stencil.shape[-2:]
    fine = F.interpolate(x, scale_factor=2, mode="nearest")[..., :height, :width]
    return fine * level.active


def _hierarchy(stencil: torch.Tensor) -> list[_Level]:
    levels = [_level(stencil)]
    fine = levels[0]
    if fine.inverse is None:  # the finest stencil is D - W_UU: its centre is D, its weights the fixed ones
        fine.centre = (fine.stencil[:, _CENTRE : _CENTRE + 1] + 1 / 3) * fine.active
    while levels[-1].inverse is None:
        levels.append(_level(_coarser(levels[-1].stencil)))
    return levels


def _v_cycle(levels: list[_Level], b: torch.Tensor, depth: int = 0) -> torch.Tensor:
    """One symmetric V-cycle for ``A x = b`` from x = 0, the coarse corrections scaled by
    :data:`_CORRECTION`. Symmetric (as many Jacobi sweeps after as before, restriction the transpose
    of prolongation) and positive definite (a convergent smoother, a positive definite coarse
    operator), so a preconditioner that conjugate gradients may use."""
    level = levels[depth]
    if level.inverse is not None:
        flat = b.flatten(2).transpose(1, 2)  # (S, n, C)
        return (level.inverse @ flat).transpose(1, 2).reshape(b.shape) * level.active
    x = b * level.jacobi
    for _ in range(_SMOOTHING_STEPS - 1):
        x = level.smooth(x, b)
    coarse = _v_cycle(levels, _restrict(b - level.apply(x)), depth + 1)
    x = x.add_(_prolong(coarse, level), alpha=_CORRECTION)
    for _ in range(_SMOOTHING_STEPS):
        x = level.smooth(x, b)
    return x


def _solve(stencil: torch.Tensor, b: torch.Tensor, tolerance: float, max_iterations: int) -> torch.Tensor:
    """Preconditioned conjugate gradients from x = 0, one step size per system and channel."""
    levels = _hierarchy(stencil)

    def dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vecdot(u.flatten(2), v.flatten(2))[..., None, None]

    tiny = torch.finfo(b.dtype).tiny
    goal = tolerance * b.flatten(2).norm(dim=-1)
    x, r = torch.zeros_like(b), b.clone()
    p = _v_cycle(levels, r)
    rz = dot(r, p)
    for _ in range(max_iterations):
        residual = r.flatten(2).norm(dim=-1)
        if (residual <= goal).all():
            return x
        q = levels[0].apply(p)
        pq = dot(p, q)
        alpha = torch.where(pq > 0, rz / pq.clamp(min=tiny), 0.0)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, q, value=-1)
        z = _v_cycle(levels, r)
        rz_next = dot(r, z)
        beta = torch.where(rz > 0, rz_next / rz.clamp(min=tiny), 0.0)
        p = z.addcmul_(beta, p)
        rz = rz_next
    worst = float((residual / b.flatten(2).norm(dim=-1).clamp(min=tiny)).max())
    raise MetricError(
        f"the linear imputation did not converge in {max_iterations} iterations (relative residual {worst:.2e}, "
        f"asked {tolerance:.0e})"
    )
