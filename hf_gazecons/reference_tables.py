"""Text tables of localisation and faithfulness in which every figure stands beside its references:
chance (a uniform map or a random peak; a random map) and the perfect map (the mask on the map's
grid), with the pointing game's tolerance named. ``score`` prints them; the demo's comparison uses
the same words.

    >>> print(localization_table(result.localization, result.cam_size))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .formatting import fmt_interval, fmt_metric

if TYPE_CHECKING:
    from .faithfulness_report import FaithfulnessResult
    from .localization import Localization, LocalizationScores

__all__ = [
    "CLASS_LOCALIZATION_HEADER",
    "class_localization_cells",
    "faithfulness_table",
    "localization_table",
]

FAITHFULNESS_LABELS = {
    "deletion_auc": "deletion AUC",
    "insertion_auc": "insertion AUC",
    "road_morf": "ROAD MoRF",
    "road_lerf": "ROAD LeRF",
}


def localization_table(localization: Localization, cam_size: tuple[int, int]) -> str:
    """Both pointing games over every class, with the pointing game's interval, chance and perfect-map values."""
    grid = f"{cam_size[0]}x{cam_size[1]}"
    return "\n".join([
        f"localisation over {localization.n} correct images with a mask ({localization.n_zero_maps} all-zero maps left "
        f"out: {fmt_metric(localization.zero_map_share, 3)}); pointing game tolerance {localization.tolerance:g} px",
        f"{'':<22}{'value':>8}  {'95 % interval':<16}{'chance':>8}  perfect map (mask on the {grid} grid)",
        f"{'energy pointing game':<22}{fmt_metric(localization.energy_pointing_game):>8}  {'':<16}"
        f"{fmt_metric(localization.energy_pointing_game_chance):>8}  "
        f"{fmt_metric(localization.energy_pointing_game_perfect)}",
        f"{'pointing game':<22}{fmt_metric(localization.pointing_game):>8}  "
        f"{fmt_interval(localization.pointing_game_interval):<16}{fmt_metric(localization.pointing_game_chance):>8}  "
        f"{fmt_metric(localization.pointing_game_perfect)}",
    ])  # fmt: skip


CLASS_LOCALIZATION_HEADER = "EPG (chance, perfect)  PG (chance, perfect)"
"""The header of :func:`class_localization_cells`."""


def class_localization_cells(scores: LocalizationScores | None) -> str:
    """One class's ``EPG (chance, perfect)  PG (chance, perfect)``, to 3 decimals."""
    if scores is None:
        return f"{'n/a':<21}  n/a"
    epg = (scores.energy_pointing_game, scores.energy_pointing_game_chance, scores.energy_pointing_game_perfect)
    pg = (scores.pointing_game, scores.pointing_game_chance, scores.pointing_game_perfect)
    first = "{} ({}, {})".format(*(fmt_metric(v, 3) for v in epg))
    return f"{first:<21}  " + "{} ({}, {})".format(*(fmt_metric(v, 3) for v in pg))


def faithfulness_table(result: FaithfulnessResult) -> str:
    """Mean [95 % interval] of each metric for the Grad-CAM, random and perfect maps, and how to read it."""
    summary = result.summary()
    images = len(result.images)
    with_mask = summary["perfect"][result.settings.metrics[0]]["n"] + summary["perfect"][result.settings.metrics[0]][
        "n_undefined"
    ]  # fmt: skip
    lines = [
        f"faithfulness of the predicted class's map over {images} images (mean [95 % interval]; the perfect map: the "
        f"mask on the map's grid, {with_mask} images with a mask)",
        f"{'':<15}{'Grad-CAM':<26}{'random map':<26}{'perfect map':<26}",
    ]
    from .faithfulness_report import FAITHFULNESS_METRICS

    for metric in result.settings.metrics:
        cells = []
        for name in ("gradcam", "random", "perfect"):
            entry = summary[name][metric]
            cells.append(f"{fmt_metric(entry['mean'], 3)} {fmt_interval(entry['interval'])}".strip())
        lines.append(
            f"{FAITHFULNESS_LABELS[metric]:<15}" + "".join(f"{c:<26}" for c in cells) + FAITHFULNESS_METRICS[metric][2]
        )
    undefined = summary["gradcam"][result.settings.metrics[0]]["n_undefined"]
    if undefined:
        lines.append(f"{undefined} Grad-CAM maps have no ranking (all zero or constant): left out")
    return "\n".join(lines)
