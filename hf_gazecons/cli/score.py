"""``hf-gazecons score``: gaze consistency, accuracy and Cohen's kappa of any classifier on a data set."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..checks import NON_NEGATIVE_INT, POSITIVE_INT
from ..formatting import fmt_metric
from ..output_dir import check_output_dir
from ..specs import parse_target
from .common import (
    add_data_options,
    add_model_options,
    add_output_dir,
    add_samples_options,
    add_variant_option,
    atomic_directory,
    warn,
)

if TYPE_CHECKING:
    from ..consistency_result import ConsistencyResult

DEFAULT_SUBSET_SEED = 42
"""The default ``--seed``: transformers' default training seed, so that ``score --max-samples N`` and
``train --max_eval_samples N`` pick the same images unless told otherwise."""


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    parser = commands.add_parser(
        name,
        help="score a classifier's gaze consistency, accuracy and kappa on a data set",
        description="One pass over the data: Grad-CAM maps, predictions, accuracy, Cohen's kappa and L_CAM; "
        "writes consistency.json, the per-image table samples.parquet, class_maps.safetensors, class_means.png, "
        "overlays.png, examples/ (each class's most and least consistent images) and report.html.",
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
    parser.add_argument(
        "--grid",
        nargs=2,
        type=POSITIVE_INT,
        metavar=("H", "W"),
        help="resample maps to a common H x W grid first (default: each model's own map size)",
    )
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="images per Grad-CAM forward")
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
    add_output_dir(parser, "consistency.json, samples.parquet, class_maps.safetensors, the pictures and report.html")
    add_samples_options(parser)
    parser.add_argument(
        "--push-results",
        metavar="ORG/NAME",
        help="add the scores to this Hub repo's model card and upload consistency.json and the per-image table "
        "beside it (default: no push)",
    )
    parser.add_argument("--create-pr", action="store_true", help="with --push-results: open a pull request")


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.output_dir)  # before anything is loaded
    import torch

    from ..class_maps import save_class_maps
    from ..data import (
        align_labels,
        default_eval_split,
        load_image_dataset,
        load_streaming_dataset,
        select_split,
        select_subset,
    )
    from ..data.row_index import with_row_index, with_row_metadata
    from ..explain import example_images, explain
    from ..extremes import write_extremes
    from ..filenames import CLASS_MAPS_FILE
    from ..hub import push_results
    from ..jsonio import write_json
    from ..metric import gaze_consistency
    from ..models import load_model
    from ..plots import plot_class_means, plot_overlays
    from ..report import write_report
    from ..samples import SampleRecorder, write_samples
    from ..specs import parse_model_spec

    load = load_streaming_dataset if args.streaming else load_image_dataset
    data = load(args.dataset, image_column=args.image_column, label_column=args.label_column)
    split = args.split or default_eval_split(list(data))
    dataset = with_row_index(select_split(data, split, args.dataset))
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
    recorder = SampleRecorder() if args.samples_format != "none" else None
    written = ["consistency.json", CLASS_MAPS_FILE, "class_means.png", "overlays.png"]
    with atomic_directory(args.output_dir) as staging:
        result = gaze_consistency(
            loaded,
            aligned.dataset,
            variant=args.variant,
            grid=tuple(args.grid) if args.grid else None,
            target=parse_target(args.target_layer),
            batch_size=args.batch_size,
            label_names=aligned.label_names,
            num_workers=args.num_workers,
            dtype=getattr(torch, args.dtype),
            samples=recorder,
        )
        per_class = {name: result.per_class[name] for name in scored}
        result = replace(result, model=args.model, dataset=args.dataset, split=split, per_class=per_class)
        write_json(staging / "consistency.json", {**result.to_dict(), "random_weights": loaded.random_weights})
        means = result.class_means[[aligned.label_names.index(name) for name in scored]]
        save_class_maps(
            staging / CLASS_MAPS_FILE,
            means,
            scored,
            target_layer=result.target_name,
            grid=result.grid,
            variant=result.variant,
        )
        plot_class_means({args.model: means}, scored, staging / "class_means.png")
        seen = [aligned.label_names.index(name) for name in scored if per_class[name].n_samples]
        images, labels = example_images(aligned.dataset, per_class=2, classes=seen)
        explained = explain(loaded, images, parse_target(args.target_layer), [aligned.label_names[i] for i in labels])
        plot_overlays(explained.images, explained.maps, explained.titles(), staging / "overlays.png")
        samples = None
        if recorder is not None:
            table = with_row_metadata(recorder.table, aligned.dataset)
            samples = write_samples(table, staging, args.samples_format)
            write_extremes(loaded, aligned.dataset, table, staging, parse_target(args.target_layer))
            written += [samples.name, "examples/"]
        if not args.no_report:
            written.append(write_report(staging).name)
    print(summary_table(result))
    print(f"wrote {args.output_dir}/{', '.join(written)}")
    if loaded.random_weights:
        warn(
            f"{args.model} has random weights (a bare timm architecture without --pretrained): these scores "
            "describe an untrained network (consistency.json records random_weights: true)"
        )
    if args.push_results:
        folder = Path(args.output_dir)
        files = [folder / "consistency.json"] + ([folder / samples.name] if samples else [])
        url = push_results(result.to_dict(), args.push_results, create_pr=args.create_pr, files=files)
        print(f"pushed the scores to {args.push_results}: {url}")
    return 0


def _label_map(text: str) -> dict[str, str]:
    from ..data.labels import parse_label_map

    try:
        return parse_label_map(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
