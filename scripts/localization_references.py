"""The references of the pointing games on a data set's masks, without any model: chance (a uniform
map for the energy pointing game; a peak placed at random for the pointing game) and the perfect map
(the mask averaged onto a map grid), over every image of a split whose mask marks an object, overall
and per class. docs/RESULTS.md prints these beside the sweeps' localisation figures.

python scripts/localization_references.py "builtin:shapes?size=64&jitter=0.05&n_val=50" --grid 4 4
python scripts/localization_references.py "builtin:brain?size=128" --grid 8 8 --tolerance 15
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hf_gazecons.checks import NON_NEGATIVE_FLOAT, POSITIVE_INT  # noqa: E402
from hf_gazecons.data import load_image_dataset, select_split  # noqa: E402
from hf_gazecons.localization import Localization, localization_sums, perfect_maps  # noqa: E402
from hf_gazecons.reference_tables import localization_table  # noqa: E402


def references(dataset: str, split: str, grid: tuple[int, int], tolerance: float) -> Localization | None:
    """The chance and perfect-map values of every image of ``split`` with a non-empty mask (the
    perfect map itself scored as the map, so its EPG and PG are the figures' "perfect" columns too)."""
    data = select_split(load_image_dataset(dataset), split, dataset)
    names = list(data.features["label"].names)
    masks = torch.stack([torch.from_numpy(np.array(mask) > 0) for mask in data["mask"]])
    labels = torch.tensor(data["label"])
    located = masks.flatten(1).any(dim=1)
    sums = localization_sums(
        perfect_maps(masks[located], grid), masks[located], labels[located], len(names), tolerance
    )
    return Localization.from_class_sums(sums, names, tolerance)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="a data set with a mask column (builtin:shapes, builtin:brain, ...)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--grid", nargs=2, type=POSITIVE_INT, default=[4, 4], metavar=("H", "W"))
    parser.add_argument("--tolerance", type=NON_NEGATIVE_FLOAT, default=0.0, help="pointing-game tolerance (px)")
    args = parser.parse_args(argv)
    found = references(args.dataset, args.split, tuple(args.grid), args.tolerance)
    if found is None:
        print(f"error: no image of {args.dataset} ({args.split}) has a mask that marks an object", file=sys.stderr)
        return 2
    print(localization_table(found, tuple(args.grid)))
    for name, scores in found.per_class.items():
        print(
            f"{name}: n {scores.n}, EPG chance {scores.energy_pointing_game_chance:.4f}, perfect "
            f"{scores.energy_pointing_game_perfect:.4f}; PG chance {scores.pointing_game_chance:.4f}, perfect "
            f"{scores.pointing_game_perfect:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
