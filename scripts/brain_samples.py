"""Draw docs/brain_samples.png: builtin:brain samples, one row per class, tumour masks outlined.

python scripts/brain_samples.py --output docs/brain_samples.png
"""

from __future__ import annotations

import argparse

from hf_gazecons.data import make_brain
from hf_gazecons.plots import plot_masked_samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="docs/brain_samples.png")
    parser.add_argument("--size", type=int, default=128, help="image size (pixels), as the benchmark's default")
    parser.add_argument("--columns", type=int, default=7, help="samples per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = make_brain(size=args.size, n_train=1, n_val=args.columns, n_test=1, seed=args.seed)["validation"]
    names = data.features["label"].names
    rows = {name: [] for name in names}
    for row in data:
        rows[names[row["label"]]].append((row["image"], row["mask"]))
    title = f"builtin:brain (size={args.size}, seed={args.seed}, validation split): tumour masks in red"
    print(plot_masked_samples(rows, args.output, title=title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
