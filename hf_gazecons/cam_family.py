"""The CAM family: one registry of saliency methods, each one function of what one forward gives.

Every method turns the target layer's activations ``A`` (B, C, H', W') — and, for the gradient
methods, every sample's own gradient ``G = dy_i^{c_i} / dA_i`` — into a map before the ReLU
(B, H', W'); :class:`~hf_gazecons.cam.CAM` then applies the ReLU and the per-sample min-max, the
same for all. docs/METHOD.md, section 12, has the equations and sign conventions.

=======================  ===============================================  ===========  ==========
name                     map before the ReLU                              gradients    training
=======================  ===============================================  ===========  ==========
``gradcam``              ``sum_k mean_ij(G_k) A_k``                       yes          yes
``gradcampp``            ``sum_k (sum_ij a_kij relu(G_kij)) A_k``         yes          yes
``xgradcam``             ``sum_k (sum_ij G_k A_k / sum_ij A_k) A_k``      yes          yes
``layercam``             ``sum_k relu(G_k) * A_k``                        yes          yes
``hirescam``             ``sum_k G_k * A_k``                              yes          yes
``gradcam_elementwise``  ``sum_k relu(G_k * A_k)``                        yes          yes
``scorecam``             ``sum_k softmax_k(y^c(U(A_k) * x)) A_k``         no           no
``eigencam``             projection on the first principal component      no           no
=======================  ===============================================  ===========  ==========

A new method is one function here, decorated with :func:`register`, and its test against its
reference (tests/test_cam_methods.py). The module imports no torch (the command line builds its
``--cam-method`` choices from :func:`cam_methods`); the functions use tensor methods, and import
torch where they need more.

    >>> cam_methods()
    ('gradcam', 'gradcampp', 'xgradcam', 'layercam', 'hirescam', 'gradcam_elementwise', 'scorecam', 'eigencam')
    >>> get_cam_method("layercam").differentiable
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = [
    "ALL_METHODS",
    "CAMInputs",
    "CAMMethod",
    "CAM_METHOD_HELP",
    "DEFAULT_CAM_METHOD",
    "cam_methods",
    "check_cam_method",
    "get_cam_method",
    "register",
]

DEFAULT_CAM_METHOD = "gradcam"
ALL_METHODS = "all"
"""The command line's name for every method at once (``score --cam-method all``)."""

XGRADCAM_EPS = 1e-8
"""Added to ``sum_ij A_k`` in XGrad-CAM's weights (torchcam's value)."""


@dataclass(frozen=True)
class CAMInputs:
    """What one forward gives a method.

    ``activations`` and ``gradients`` are (B, C, H', W') float tensors; ``gradients`` is every
    sample's gradient of its own target score (None for methods that use none). In training the
    activations carry the graph to the parameters (and the gradients too, with ``second_order``).
    ``pixel_values``, ``targets`` (B,), ``model`` and ``masked_batch_size`` serve methods that run
    the model again on masked inputs (Score-CAM).
    """

    activations: Tensor
    gradients: Tensor | None
    pixel_values: Tensor
    targets: Tensor
    model: nn.Module
    masked_batch_size: int = 32


@dataclass(frozen=True)
class CAMMethod:
    """A registered method: ``compute(inputs)`` is its (B, H', W') map before the ReLU."""

    name: str
    title: str
    reference: str
    compute: Callable[[CAMInputs], Tensor]
    uses_gradients: bool = True
    differentiable: bool = True


_METHODS: dict[str, CAMMethod] = {}


def register(
    name: str, title: str, reference: str, *, uses_gradients: bool = True, differentiable: bool = True
) -> Callable[[Callable[[CAMInputs], Tensor]], Callable[[CAMInputs], Tensor]]:
    """Register the decorated function as method ``name``. ``differentiable``: its map can be
    differentiated to the parameters (training); ``uses_gradients``: it reads ``inputs.gradients``."""

    def add(function: Callable[[CAMInputs], Tensor]) -> Callable[[CAMInputs], Tensor]:
        if name in _METHODS or name == ALL_METHODS:
            raise ValueError(f"CAM method {name!r} is already registered")
        _METHODS[name] = CAMMethod(name, title, reference, function, uses_gradients, differentiable)
        return function

    return add


def cam_methods(differentiable: bool | None = None) -> tuple[str, ...]:
    """The registered method names, in registration order (``differentiable=True``: those a
    training penalty can use; ``False``: the scoring-only ones)."""
    return tuple(n for n, m in _METHODS.items() if differentiable is None or m.differentiable == differentiable)


def get_cam_method(name: str) -> CAMMethod:
    """The method called ``name``, or a :class:`~hf_gazecons.errors.UsageError` that lists them."""
    if name not in _METHODS:
        raise UsageError(f"unknown CAM method {name!r}; choose one of {', '.join(_METHODS)}")
    return _METHODS[name]


def check_cam_method(name: str, *, training: bool = False, allow_all: bool = False) -> str:
    """``name`` if it names a method (or is ``"all"`` with ``allow_all``) that can serve ``training``
    when asked; else a :class:`~hf_gazecons.errors.UsageError` saying why."""
    if allow_all and name == ALL_METHODS:
        return name
    method = get_cam_method(name)
    if training and not method.differentiable:
        raise UsageError(
            f"{name} ({method.title}) is scoring only: its maps cannot be differentiated to the parameters; "
            f"train with one of {', '.join(cam_methods(differentiable=True))}"
        )
    return name


def _weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """``sum_k w_k A_k`` for (B, C) or (B, C, 1, 1) channel weights."""
    return (weights.reshape(*weights.shape[:2], 1, 1) * activations).sum(dim=1)


@register("gradcam", "Grad-CAM", "Selvaraju et al., Grad-CAM, ICCV 2017")
def gradcam(x: CAMInputs) -> Tensor:
    """Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017): channel weights are the spatial means of the
    gradient, ``sum_k mean_ij(G_kij) A_k``."""
    return _weighted_sum(x.gradients.mean(dim=(2, 3)), x.activations)


@register("gradcampp", "Grad-CAM++", "Chattopadhay et al., Grad-CAM++, WACV 2018")
def gradcampp(x: CAMInputs) -> Tensor:
    """Grad-CAM++ (Chattopadhay et al., "Grad-CAM++: Improved Visual Explanations for Deep
    Convolutional Networks", WACV 2018), with the paper's exponential of the score (its eq. 19):
    ``w_k = sum_ij a_kij relu(G_kij)``, ``a_kij = G^2 / (2 G^2 + sum_ab A_kab G^3)``, which is
    ``1 / (2 + G_kij S_k)`` with ``S_k = sum_ab A_kab`` wherever ``G_kij > 0`` (elsewhere ``relu(G)``
    is 0 and so is the term). No epsilon (pytorch-grad-cam adds 1e-6 to ``2 G^2 + S G^3``, which
    at the gradients of a 7x7 map, often below 1e-3, changes the weights). Where ``2 + G S`` is
    exactly 0 (possible only where ``S_k < 0``) the formula is infinite; that term is left out.
    The weights are computed in float64: near such a position ``2 + G S`` is a small difference of
    numbers near 2."""
    g, a = x.gradients.double(), x.activations.double()
    denominator = 2 + g * a.sum(dim=(2, 3), keepdim=True)
    usable = (g > 0) & (denominator != 0)
    alpha = (1 / denominator.where(usable, denominator.new_ones(()))).where(usable, denominator.new_zeros(()))
    return _weighted_sum((alpha * g.relu()).sum(dim=(2, 3)).to(x.activations.dtype), x.activations)


@register("xgradcam", "XGrad-CAM", "Fu et al., Axiom-based Grad-CAM, BMVC 2020")
def xgradcam(x: CAMInputs) -> Tensor:
    """XGrad-CAM (Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation
    of CNNs", BMVC 2020): ``w_k = sum_ij G_kij A_kij / (sum_ij A_kij + eps)``, eps
    :data:`XGRADCAM_EPS`."""
    g, a = x.gradients, x.activations
    return _weighted_sum((g * a).sum(dim=(2, 3)) / (a.sum(dim=(2, 3)) + XGRADCAM_EPS), a)


@register("layercam", "LayerCAM", "Jiang et al., LayerCAM, IEEE TIP 2021")
def layercam(x: CAMInputs) -> Tensor:
    """LayerCAM (Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for
    Localization", IEEE TIP 2021): a weight per position, ``sum_k relu(G_k) * A_k``."""
    return (x.gradients.relu() * x.activations).sum(dim=1)


@register("hirescam", "HiResCAM", "Draelos & Carin, HiResCAM, arXiv:2011.08891")
def hirescam(x: CAMInputs) -> Tensor:
    """HiResCAM (Draelos and Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks", arXiv:2011.08891, 2020): the element-wise product summed over
    channels, ``sum_k G_k * A_k`` (for a global-average-pooling head followed by a linear layer,
    the map's positions sum to the score up to the bias)."""
    return (x.gradients * x.activations).sum(dim=1)


@register(
    "gradcam_elementwise", "Grad-CAM element-wise", "Gildenblat et al., pytorch-grad-cam (GradCAMElementWise)"
)
def gradcam_elementwise(x: CAMInputs) -> Tensor:
    """Element-wise Grad-CAM (pytorch-grad-cam's ``GradCAMElementWise``, Gildenblat and
    contributors, https://github.com/jacobgil/pytorch-grad-cam): the ReLU of every channel's
    element-wise product before the sum, ``sum_k relu(G_k * A_k)``."""
    return (x.gradients * x.activations).relu().sum(dim=1)


@register("scorecam", "Score-CAM", "Wang et al., Score-CAM, CVPR-W 2020", uses_gradients=False, differentiable=False)
def scorecam(x: CAMInputs) -> Tensor:
    """Score-CAM (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks", CVPR Workshops 2020): each channel, min-max normalised and upsampled to the
    input, masks the input; the channel's weight is the softmax over channels of the target's score
    on its masked input (torchcam's convention: logits, bilinear upsampling). See
    :func:`~hf_gazecons.score_cam.score_cam_weights` for how the masked forwards are batched.
    Scoring only: the weights come from forward passes without a gradient to the parameters."""
    from .score_cam import score_cam_weights

    weights = score_cam_weights(x.model, x.pixel_values, x.activations, x.targets, x.masked_batch_size)
    return _weighted_sum(weights, x.activations)


@register("eigencam", "Eigen-CAM", "Muhammad & Yeasin, IJCNN 2020", uses_gradients=False, differentiable=False)
def eigencam(x: CAMInputs) -> Tensor:
    """Eigen-CAM (Muhammad and Yeasin, "Eigen-CAM: Class Activation Map using Principal
    Components", IJCNN 2020): the activations as an (H'W', C) matrix ``X``, each channel centred over
    the positions, projected on their first right singular vector ``v``: ``X v``. Class-agnostic:
    every target gets the same map. Sign convention (a singular vector's sign is arbitrary):
    ``sum_k v_k >= 0``, i.e. the map correlates non-negatively with the channel sum of the
    activations. Computed in float64 from the top eigenvector of the smaller of ``X X^T`` and
    ``X^T X`` (``X v = sqrt(lambda_1) u_1`` for ``X X^T``): a batched SVD of the whole matrix costs
    far more on a CPU. Scoring only (the gradient of an eigenvector is unstable where eigenvalues
    are close)."""
    import torch

    a = x.activations
    batch, _, height, width = a.shape
    matrix = a.detach().double().flatten(2).transpose(1, 2)  # (B, H'W', C)
    matrix = matrix - matrix.mean(dim=1, keepdim=True)
    if matrix.shape[1] <= matrix.shape[2]:  # fewer positions than channels: the (H'W', H'W') Gram matrix
        values, vectors = torch.linalg.eigh(matrix @ matrix.transpose(1, 2))
        projection = vectors[..., -1] * values[..., -1:].clamp(min=0).sqrt()
        total = (matrix.transpose(1, 2) @ vectors[..., -1:]).sum(dim=(1, 2))  # sqrt(lambda_1) * sum_k v_k
    else:
        _, vectors = torch.linalg.eigh(matrix.transpose(1, 2) @ matrix)
        projection = (matrix @ vectors[..., -1:])[..., 0]
        total = vectors[..., -1].sum(dim=1)
    sign = torch.where(total >= 0, 1.0, -1.0).to(projection)[:, None]
    return (projection * sign).reshape(batch, height, width).to(a.dtype)


CAM_METHOD_HELP = (
    "saliency method of the maps: "
    + ", ".join(_METHODS)
    + " (the gradient methods cost one forward; scorecam one more forward per channel and image; "
    "scorecam and eigencam are scoring only)"
)
