"""``hf-gazecons score``: gaze consistency, accuracy and Cohen's kappa of any classifier on a data set."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import TYPE_CHECKING

from ..variants import VARIANT_HELP, VARIANTS
from ..errors import DataError
from ..formatting import fmt_metric
from .common import add_data_options, add_model_options, atomic_directory, target

if TYPE_CHECKING:
    import datasets

    from ..metric import ConsistencyResult

DEFAULT_SUBSET_SEED = 42
"""The default ``--seed``: transformers' default training seed, so that ``score --max-samples N`` and
``train --max_eval_samples N`` pick the same images unless told otherwise."""


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    parser = commands.add_parser(
        name,
        help="score a classifier's gaze consistency, accuracy and kappa on a data set",
        description="One pass over the data: Grad-CAM maps, predictions, accuracy, Cohen's kappa and L_CAM; "
        "writes consistency.json, class_means.png and overlays.png.",
    )
    add_model_options(parser)
    add_data_options(parser)
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="paper",
        help=VARIANT_HELP,
    )
    parser.add_argument("--grid", nargs=2, type=int, metavar=("H", "W"), help="resample maps to a common grid first")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--max-samples",
        type=int,
        default=None,
        help="score at most this many samples: a random subset drawn with --seed, the one train's "
        "--max_eval_samples takes with the same seed (of a --streaming data set: its first N rows)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SUBSET_SEED, help="seed of the --max-samples subset")
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="read the data set as a stream (datasets.load_dataset(..., streaming=True)): memory independent of "
        "its size; the labels must be a ClassLabel",
    )
    parser.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--output-dir", required=True, help="a new (or empty) folder for the outputs")
    parser.add_argument("--push-results", metavar="ORG/NAME", help="add the scores to this Hub repo's model card")
    parser.add_argument("--create-pr", action="store_true", help="with --push-results: open a pull request")


def run(args: argparse.Namespace) -> int:
    from ..data import default_eval_split, load_image_dataset, load_streaming_dataset, select_split, select_subset
    from ..explain import example_images, explain
    from ..hub import push_results
    from ..metric import gaze_consistency
    from ..models import is_bare_architecture, load_model
    from ..plots import plot_class_means, plot_overlays

    load = load_streaming_dataset if args.streaming else load_image_dataset
    data = load(args.dataset, image_column=args.image_column, label_column=args.label_column)
    split = args.split or default_eval_split(list(data))
    dataset = select_split(data, split, args.dataset)
    if args.max_samples is not None:
        if args.max_samples < 1:
            raise DataError(f"--max-samples must be at least 1, got {args.max_samples}")
        dataset = select_subset(dataset, args.max_samples, args.seed)
    dataset_names = list(dataset.features["label"].names)
    # a bare timm architecture has no trained head to keep: one output per class of the data set
    head = dataset_names if is_bare_architecture(args.model) else None
    loaded = load_model(
        args.model, label_names=head, image_size=args.image_size, trust_remote_code=args.trust_remote_code
    )
    dataset, label_names = _align_labels(dataset, dataset_names, loaded.label_names)
    with atomic_directory(args.output_dir) as staging:
        result = gaze_consistency(
            loaded,
            dataset,
            variant=args.variant,
            grid=tuple(args.grid) if args.grid else None,
            target=target(args.target_layer),
            batch_size=args.batch_size,
            label_names=label_names,
            num_workers=args.num_workers,
        )
        result = replace(result, model=args.model, dataset=args.dataset, split=split)
        (staging / "consistency.json").write_text(json.dumps(result.to_dict(), indent=2))
        plot_class_means({args.model: result.class_means}, label_names, staging / "class_means.png")
        seen = [c for c, per_class in enumerate(result.per_class.values()) if per_class.n_samples]
        images, labels = example_images(dataset, per_class=2, classes=seen)
        explained = explain(loaded, images, target(args.target_layer), [label_names[i] for i in labels])
        plot_overlays(explained.images, explained.maps, explained.titles(), staging / "overlays.png")
    print(summary_table(result))
    print(f"wrote {args.output_dir}/consistency.json, class_means.png, overlays.png")
    if args.push_results:
        url = push_results(result.to_dict(), args.push_results, create_pr=args.create_pr)
        print(f"pushed the scores to {args.push_results}: {url}")
    return 0


def _align_labels(
    dataset: datasets.Dataset | datasets.IterableDataset, dataset_names: list[str], model_names: list[str]
) -> tuple[datasets.Dataset | datasets.IterableDataset, list[str]]:
    """Map the data set's labels onto the model's classes: by name when the model knows the names."""
    if len(dataset_names) > len(model_names):
        raise DataError(
            f"the data set has {len(dataset_names)} classes but the model has {len(model_names)} outputs; "
            "labels would fall outside the model's classes"
        )
    model_index = {name.lower(): i for i, name in enumerate(model_names)}
    if (
        all(name.lower() in model_index for name in dataset_names)
        and dataset_names != model_names[: len(dataset_names)]
    ):
        mapping = {name: model_index[name.lower()] for name in dataset_names}
        if hasattr(dataset, "align_labels_with_mapping"):
            return dataset.align_labels_with_mapping(mapping, "label"), model_names
        from ..data import align_stream_labels

        return align_stream_labels(dataset, mapping, model_names), model_names
    default_names = model_names == [str(i) for i in range(len(model_names))]
    if default_names and len(dataset_names) == len(model_names):
        return dataset, dataset_names
    return dataset, model_names


def summary_table(result: ConsistencyResult) -> str:
    """A short text table: overall metrics, then one line per class."""

    lines = [
        f"target layer {result.target_name}  map {result.cam_size[0]}x{result.cam_size[1]}  variant {result.variant}",
        f"samples {result.n_samples}  correct {result.n_correct}  accuracy {fmt_metric(result.accuracy)}  "
        f"kappa {fmt_metric(result.kappa)}  L_CAM {fmt_metric(result.value)}  "
        f"all-zero maps {result.n_zero_maps} ({fmt_metric(result.zero_map_share, 3)} of the correct)",
    ]
    if result.localization is not None:
        lines.append(
            f"energy pointing game {fmt_metric(result.localization.energy_pointing_game)}  "
            f"pointing game {fmt_metric(result.localization.pointing_game)}"
        )
    if result.n_zero_maps:
        lines.append(
            f"warning: {result.n_zero_maps} of {result.n_correct} correct samples have an all-zero map "
            "(a collapsed gaze scores as perfectly consistent under the paper and reference variants)"
        )
    width = max(len(name) for name in result.per_class)
    lines.append(f"{'class':<{width}}  L_CAM   correct/samples")
    for name, per_class in result.per_class.items():
        lines.append(f"{name:<{width}}  {fmt_metric(per_class.value):>6}  {per_class.n_correct}/{per_class.n_samples}")
    return "\n".join(lines)
