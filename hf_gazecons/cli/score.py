"""``hf-gazecons score``: gaze consistency, accuracy and Cohen's kappa of any classifier on a data set."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING

from ..cam_family import ALL_METHODS, get_cam_method
from ..checks import NON_NEGATIVE_INT, POSITIVE_INT
from ..formatting import fmt_metric
from ..output_dir import check_output_dir
from ..specs import parse_target
from .common import (
    add_cam_method_option,
    add_data_options,
    add_model_options,
    add_output_dir,
    add_variant_option,
    atomic_directory,
    warn,
)

if TYPE_CHECKING:
    from ..consistency_result import ConsistencyResult
    from ..method_comparison import MethodComparison

DEFAULT_SUBSET_SEED = 42
"""The default ``--seed``: transformers' default training seed, so that ``score --max-samples N`` and
``train --max_eval_samples N`` pick the same images unless told otherwise."""


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    parser = commands.add_parser(
        name,
        help="score a classifier's gaze consistency, accuracy and kappa on a data set",
        description="One pass over the data: CAM maps (Grad-CAM unless --cam-method says otherwise), predictions, "
        "accuracy, Cohen's kappa and L_CAM; writes consistency.json, class_means.png and overlays.png. "
        "--cam-method all scores every method in the same pass and adds how much the methods agree on which "
        "images are inconsistent (it keeps every correct image's map under every method: 4*H'*W' bytes each).",
    )
    add_model_options(parser)
    add_data_options(parser)
    parser.add_argument(
        "--label-map",
        type=_label_map,
        default=None,
        metavar="DATA=MODEL,...",
        help="the model class of each data set class whose name differs, e.g. cat=Cat,dog=Dog "
        "(default: classes are matched by name)",
    )
    add_variant_option(
        parser,
        "paper",
        "paper",
        note="; 'reference' keeps the map of every correctly classified sample (4*H'*W' bytes each: 196 B at 7x7) "
        "and refuses when they would pass half the available memory",
    )
    add_cam_method_option(parser, allow_all=True)
    parser.add_argument(
        "--grid",
        nargs=2,
        type=POSITIVE_INT,
        metavar=("H", "W"),
        help="resample maps to a common H x W grid first (default: each model's own map size)",
    )
    parser.add_argument(
        "--batch-size",
        type=POSITIVE_INT,
        default=32,
        help="images per forward (and Score-CAM's masked inputs per forward)",
    )
    parser.add_argument(
        "--max-samples",
        type=POSITIVE_INT,
        default=None,
        help="score at most this many samples: a random subset drawn with --seed, the one train's "
        "--max_eval_samples takes with the same seed (of a --streaming data set: its first N rows) (default: all)",
    )
    parser.add_argument(
        "--seed",
        type=NON_NEGATIVE_INT,
        default=DEFAULT_SUBSET_SEED,
        help=f"seed of the --max-samples subset (default: {DEFAULT_SUBSET_SEED}, train's default seed)",
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="read the data set as a stream (datasets.load_dataset(..., streaming=True)): memory independent of "
        "its size; the labels must be a ClassLabel",
    )
    parser.add_argument("--num-workers", type=NON_NEGATIVE_INT, default=0, help="data loader worker processes")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="precision of the forward: bfloat16 or float16 run it under autocast (maps and statistics stay "
        "float32; bfloat16 is tested against float32, float16 is not tested) (default: float32)",
    )
    add_output_dir(parser, "consistency.json, class_means.png and overlays.png")
    parser.add_argument(
        "--push-results", metavar="ORG/NAME", help="add the scores to this Hub repo's model card (default: no push)"
    )
    parser.add_argument("--create-pr", action="store_true", help="with --push-results: open a pull request")


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.output_dir)  # before anything is loaded
    import torch

    from ..data import (
        align_labels,
        default_eval_split,
        load_image_dataset,
        load_streaming_dataset,
        select_split,
        select_subset,
    )
    from ..explain import example_images, explain
    from ..hub import push_results
    from ..jsonio import write_json
    from ..method_comparison import compare_cam_methods
    from ..metric import gaze_consistency
    from ..models import load_model
    from ..plots import plot_class_means, plot_overlays
    from ..specs import parse_model_spec

    load = load_streaming_dataset if args.streaming else load_image_dataset
    data = load(args.dataset, image_column=args.image_column, label_column=args.label_column)
    split = args.split or default_eval_split(list(data))
    dataset = select_split(data, split, args.dataset)
    if args.max_samples is not None:
        dataset = select_subset(dataset, args.max_samples, args.seed)
    dataset_names = list(dataset.features["label"].names)
    loaded = load_model(
        args.model,
        label_names=None if parse_model_spec(args.model).has_head(args.pretrained) else dataset_names,
        pretrained=args.pretrained,
        image_size=args.image_size,
        trust_remote_code=args.trust_remote_code,
    )
    aligned = align_labels(dataset, loaded.label_names, args.label_map)
    scored = aligned.model_classes  # the model's classes that the data set has
    options = dict(
        variant=args.variant,
        grid=tuple(args.grid) if args.grid else None,
        target=parse_target(args.target_layer),
        batch_size=args.batch_size,
        label_names=aligned.label_names,
        num_workers=args.num_workers,
        dtype=getattr(torch, args.dtype),
    )
    comparison = None
    with atomic_directory(args.output_dir) as staging:
        if args.cam_method == ALL_METHODS:
            comparison = compare_cam_methods(loaded, aligned.dataset, **options)
            results = comparison.results
        else:
            single = gaze_consistency(loaded, aligned.dataset, cam_method=args.cam_method, **options)
            results = {args.cam_method: single}
        for method, found in results.items():
            per_class = {name: found.per_class[name] for name in scored}
            results[method] = replace(found, model=args.model, dataset=args.dataset, split=split, per_class=per_class)
        result = next(iter(results.values()))  # --cam-method all: the first, Grad-CAM
        scores = {**result.to_dict(), **(comparison.to_dict() if comparison else {})}
        write_json(staging / "consistency.json", {**scores, "random_weights": loaded.random_weights})
        rows = {
            method if comparison else args.model: r.class_means[[aligned.label_names.index(name) for name in scored]]
            for method, r in results.items()
        }
        plot_class_means(rows, scored, staging / "class_means.png", title=_class_means_title(result, comparison))
        seen = [aligned.label_names.index(name) for name in scored if result.per_class[name].n_samples]
        images, labels = example_images(aligned.dataset, per_class=2, classes=seen)
        explained = explain(
            loaded,
            images,
            parse_target(args.target_layer),
            [aligned.label_names[i] for i in labels],
            cam_method=result.cam_method,
        )
        plot_overlays(explained.images, explained.maps, explained.titles(), staging / "overlays.png")
    print(summary_table(result))
    if comparison is not None:
        print(comparison.table())
    print(f"wrote {args.output_dir}/consistency.json, class_means.png, overlays.png")
    if loaded.random_weights:
        warn(
            f"{args.model} has random weights (a bare timm architecture without --pretrained): these scores "
            "describe an untrained network (consistency.json records random_weights: true)"
        )
    if args.push_results:
        url = push_results(scores, args.push_results, create_pr=args.create_pr)
        print(f"pushed the scores to {args.push_results}: {url}")
    return 0


def _label_map(text: str) -> dict[str, str]:
    from ..data.labels import parse_label_map

    try:
        return parse_label_map(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _class_means_title(result: ConsistencyResult, comparison: MethodComparison | None) -> str:
    if comparison is not None:
        return "Class-mean maps (representative gaze) under each CAM method"
    return f"Class-mean {get_cam_method(result.cam_method).title} (representative gaze)"


def summary_table(result: ConsistencyResult) -> str:
    """A short text table: overall metrics, then one line per class."""

    lines = [
        f"target layer {result.target_name}  map {result.cam_size[0]}x{result.cam_size[1]}  variant {result.variant}  "
        f"CAM method {result.cam_method}",
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
