"""``hf-gazecons score``: gaze consistency, accuracy and Cohen's kappa of any classifier on a data set."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cam_family import ALL_METHODS, get_cam_method
from ..checks import require
from ..formatting import fmt_metric
from ..output_dir import check_output_dir
from ..specs import parse_target
from ..variants import COLLAPSE_SAFE, DEFAULT_VARIANT, KEEPS_MAPS, VARIANTS
from .common import (
    add_cam_method_option,
    add_data_options,
    add_model_options,
    add_output_dir,
    add_samples_options,
    add_seed_option,
    add_variant_option,
    atomic_directory,
    warn,
)

if TYPE_CHECKING:
    from ..consistency_result import ConsistencyResult
    from ..data.bad_images import BadImage
    from ..faithfulness_report import FaithfulnessResult
    from ..method_comparison import MethodComparison
    from ..models import LoadedModel


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    parser = commands.add_parser(
        name,
        help="score a classifier's gaze consistency, accuracy and kappa on a data set",
        description="One pass over the data: CAM maps (Grad-CAM unless --cam-method says otherwise), predictions, "
        "accuracy, Cohen's kappa and L_CAM; writes consistency.json, the per-image table samples.parquet, "
        "class_maps.safetensors, class_means.png, overlays.png, examples/ (each class's most and least "
        "consistent images) and report.html. --cam-method all scores every method in the same pass and adds "
        "how much the methods agree on which images are inconsistent (it keeps every correct image's map under "
        "every method: 4*H'*W' bytes each); the per-image files are then Grad-CAM's.",
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
        DEFAULT_VARIANT,
        DEFAULT_VARIANT,
        note=f"; {' and '.join(repr(name) for name in KEEPS_MAPS)} keeps the map of every correctly classified "
        "sample (4*H'*W' bytes each: 196 B at 7x7) and refuses when they would pass half the available memory",
    )
    add_cam_method_option(parser, allow_all=True)
    parser.add_argument(
        "--grid",
        nargs=2,
        metavar=("H", "W"),
        help="resample maps to a common H x W grid first (default: each model's own map size)",
    )
    parser.add_argument(
        "--batch-size", default=32, help="images per forward (and Score-CAM's masked inputs per forward)"
    )
    _add_sample_options(parser)
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="precision of the forward: bfloat16 or float16 run it under autocast (maps and statistics stay "
        "float32; bfloat16 is tested against float32, float16 is not tested) (default: float32)",
    )
    parser.add_argument(
        "--pointing-tolerance",
        default=0.0,
        metavar="PX",
        help="the pointing game counts a hit when the map's peak lies within PX pixels of the mask (Zhang et al. use "
        "15 at 224 px) (default: 0, on the mask)",
    )
    parser.add_argument(
        "--faithfulness",
        nargs="*",
        choices=("deletion", "road"),
        default=None,
        metavar="TEST",
        help="also score how faithful the maps are, per image, beside a random and a perfect (mask) map: 'deletion' "
        "(deletion and insertion AUC) and/or 'road' (ROAD, MoRF and LeRF); without a TEST, both. Each image costs "
        "about 40 (deletion) and 19 (road) forwards per map, three maps (default: off)",
    )
    add_output_dir(parser, "consistency.json, samples.parquet, class_maps.safetensors, pictures and report.html")
    add_samples_options(parser)
    parser.add_argument(
        "--push-results",
        metavar="ORG/NAME",
        help="add the scores to this Hub repo's model card and upload consistency.json and the per-image table "
        "beside it (default: no push)",
    )
    parser.add_argument("--create-pr", action="store_true", help="with --push-results: open a pull request")


def _add_sample_options(parser: argparse.ArgumentParser) -> None:
    """Which samples are scored, and how they are read."""
    parser.add_argument(
        "--max-samples",
        default=None,
        help="score at most this many samples: a random subset drawn with --seed, the one train's "
        "--max_eval_samples takes with the same seed (of a --streaming data set: its first N rows) (default: all)",
    )
    add_seed_option(parser, " and of the --max-samples subset; recorded in consistency.json")
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave out the images that cannot be decoded (every image is decoded once more before the run) and "
        "record their index and the reason in consistency.json (default: the first one stops the run)",
    )
    parser.add_argument(
        "--max-bad-image-share",
        default=None,
        help="with --skip-bad-images: above this share of broken images the run fails (default: 0.01, i.e. 1 %%)",
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="read the data set as a stream (datasets.load_dataset(..., streaming=True)): memory independent of "
        "its size; the labels must be a ClassLabel",
    )
    parser.add_argument("--num-workers", default=0, help="data loader worker processes")


def run(args: argparse.Namespace) -> int:
    require(args.skip_bad_images or args.max_bad_image_share is None, "--max-bad-image-share needs --skip-bad-images")
    require(
        not (args.skip_bad_images and args.streaming),
        "--skip-bad-images decodes every image before the run, which would read a stream twice; "
        "load the data set without --streaming",
    )
    check_output_dir(args.output_dir)  # before anything is loaded
    from ..hub import push_results

    dataset, split = _data(args)
    loaded = _model(args, list(dataset.features["label"].names))
    with atomic_directory(args.output_dir) as staging:
        result, comparison, skipped, written, faithful = _score_into(staging, args, loaded, dataset, split)
    print(summary_table(result, len(skipped)))
    if comparison is not None:
        print(comparison.table())
    if faithful is not None:
        from ..reference_tables import faithfulness_table

        print(faithfulness_table(faithful))
    print(f"wrote {args.output_dir}/{', '.join(written)}")
    if loaded.random_weights:
        warn(
            f"{args.model} has random weights (a bare timm architecture without --pretrained): these scores "
            "describe an untrained network (consistency.json records random_weights: true)"
        )
    if args.push_results:
        files = [Path(args.output_dir) / name for name in written if name in ("consistency.json", *_TABLE_FILES)]
        url = push_results(_scores(result, comparison), args.push_results, create_pr=args.create_pr, files=files)
        print(f"pushed the scores to {args.push_results}: {url}")
    return 0


def _data(args: argparse.Namespace) -> tuple[Any, str]:
    """The split to score (``--split``, else the default evaluation split), streamed or not, and
    its ``--max-samples`` subset; with the split's name."""
    from ..data import default_eval_split, load_image_dataset, load_streaming_dataset, select_split, select_subset
    from ..data.row_index import with_row_index

    load = load_streaming_dataset if args.streaming else load_image_dataset
    data = load(args.dataset, image_column=args.image_column, label_column=args.label_column)
    split = args.split or default_eval_split(list(data))
    dataset = with_row_index(select_split(data, split, args.dataset))  # the rows' indices before any subset
    if args.max_samples is not None:
        dataset = select_subset(dataset, args.max_samples, args.seed)
    return dataset, split


def _model(args: argparse.Namespace, dataset_names: list[str]) -> LoadedModel:
    """The model; one without a trained head (a bare timm architecture) gets the data set's classes,
    and random weights drawn from ``--seed``."""
    from transformers import set_seed

    from ..models import load_model
    from ..specs import parse_model_spec

    spec = parse_model_spec(args.model)
    set_seed(args.seed)  # a bare architecture's random weights, or a new head's
    return load_model(
        spec,
        label_names=None if spec.has_head(args.pretrained) else dataset_names,
        pretrained=args.pretrained,
        image_size=args.image_size,
        trust_remote_code=args.trust_remote_code,
    )


def _score_into(
    staging: Path, args: argparse.Namespace, loaded: LoadedModel, dataset: Any, split: str
) -> tuple[ConsistencyResult, MethodComparison | None, list[BadImage], list[str], FaithfulnessResult | None]:
    """Score the data set's classes (matched to the model's by name), leaving out unreadable images
    with ``--skip-bad-images``, and with ``--faithfulness`` the maps' faithfulness (with ``--cam-method all``: Grad-CAM's), and write
    consistency.json, class_maps.safetensors, class_means.png, overlays.png, the per-image table
    with examples/ and report.html into ``staging``; the result (with ``--cam-method all``:
    Grad-CAM's, and the comparison of the methods), the images left out, the names written and the
    faithfulness report (None without ``--faithfulness``)."""
    import torch

    from ..class_maps import save_class_maps
    from ..data import align_labels, drop_bad_images
    from ..explain import example_images, explain
    from ..filenames import CLASS_MAPS_FILE
    from ..jsonio import write_json
    from ..method_comparison import compare_cam_methods
    from ..metric import gaze_consistency
    from ..plots import plot_class_means, plot_overlays
    from ..samples import SampleRecorder, with_run_columns

    aligned = align_labels(dataset, loaded.label_names, args.label_map)
    scored = aligned.model_classes  # the model's classes that the data set has
    scored_data, skipped = aligned.dataset, []
    recorder = SampleRecorder() if args.samples_format != "none" else None
    if args.skip_bad_images:
        scored_data, skipped = drop_bad_images(
            scored_data, loaded.preprocessing, args.max_bad_image_share, args.num_workers
        )
    options = dict(
        variant=args.variant,
        grid=tuple(args.grid) if args.grid else None,
        target=parse_target(args.target_layer),
        batch_size=args.batch_size,
        label_names=aligned.label_names,
        num_workers=args.num_workers,
        dtype=getattr(torch, args.dtype),
        pointing_tolerance=args.pointing_tolerance,
        samples=recorder,
    )
    comparison = None
    if args.cam_method == ALL_METHODS:
        comparison = compare_cam_methods(loaded, scored_data, **options)
        results = comparison.results
    else:
        results = {args.cam_method: gaze_consistency(loaded, scored_data, cam_method=args.cam_method, **options)}
    for method, found in results.items():
        per_class = {name: found.per_class[name] for name in scored}
        results[method] = replace(found, model=args.model, dataset=args.dataset, split=split, per_class=per_class)
    result = next(iter(results.values()))  # --cam-method all: the first, Grad-CAM
    scores = {
        **_scores(result, comparison),
        "random_weights": loaded.random_weights,
        "seed": args.seed,
        "skipped_images": [bad.to_dict() for bad in skipped],
    }
    faithful = None
    if args.faithfulness is not None:
        from ..faithfulness_report import FaithfulnessSettings, evaluate_faithfulness

        settings = FaithfulnessSettings(tests=tuple(args.faithfulness) or ("deletion", "road"), seed=args.seed)
        faithful = evaluate_faithfulness(
            loaded, scored_data, settings, target=parse_target(args.target_layer), batch_size=args.batch_size,
            num_workers=args.num_workers, cam_method=result.cam_method,
        )  # fmt: skip
        scores["faithfulness"] = faithful.to_dict()
    write_json(staging / "consistency.json", scores)
    means = result.class_means[[aligned.label_names.index(name) for name in scored]]
    target = parse_target(args.target_layer)
    save_class_maps(
        staging / CLASS_MAPS_FILE,
        means,
        scored,
        target_layer=result.target_name,
        grid=result.grid,
        variant=args.variant,
    )
    rows = {
        method if comparison else args.model: found.class_means[[aligned.label_names.index(name) for name in scored]]
        for method, found in results.items()
    }
    plot_class_means(rows, scored, staging / "class_means.png", title=_class_means_title(result, comparison))
    seen = [aligned.label_names.index(name) for name in scored if result.per_class[name].n_samples]
    images, labels = example_images(scored_data, per_class=2, classes=seen)
    titles = [aligned.label_names[i] for i in labels]
    explained = explain(loaded, images, target, titles, cam_method=result.cam_method)
    plot_overlays(explained.images, explained.maps, explained.titles(), staging / "overlays.png")
    written = ["consistency.json", CLASS_MAPS_FILE, "class_means.png", "overlays.png"]
    if recorder is not None:
        table = with_run_columns(recorder.table, result.cam_method, faithful.per_image_columns() if faithful else None)
        written += _per_image_into(staging, args.samples_format, loaded, scored_data, table, target, result)
    if not args.no_report:
        from ..report import write_report

        written.append(write_report(staging).name)
    return result, comparison, skipped, written, faithful


def _scores(result: ConsistencyResult, comparison: MethodComparison | None) -> dict[str, Any]:
    """consistency.json's scores: the result's, and the comparison's with ``--cam-method all``."""
    return {**result.to_dict(), **(comparison.to_dict() if comparison else {})}


def _class_means_title(result: ConsistencyResult, comparison: MethodComparison | None) -> str:
    if comparison is not None:
        return "Class-mean maps (representative gaze) under each CAM method"
    return f"Class-mean {get_cam_method(result.cam_method).title} (representative gaze)"


_TABLE_FILES = ("samples.parquet", "samples.csv")


def _per_image_into(
    staging: Path,
    samples_format: str,
    loaded: LoadedModel,
    scored: Any,
    table: Any,
    target: str | int | None,
    result: ConsistencyResult,
) -> list[str]:
    """The per-image table (with the data set's row indices, ids and planted marks) and each class's
    most and least consistent images (examples/, under the result's CAM method); the names written."""
    from ..data.row_index import with_row_metadata
    from ..extremes import write_extremes
    from ..samples import write_samples

    table = with_row_metadata(table, scored)
    written = write_samples(table, staging, samples_format).name
    write_extremes(loaded, scored, table, staging, target, cam_method=result.cam_method)
    return [written, "examples/"]


def _label_map(text: str) -> dict[str, str]:
    from ..data.labels import parse_label_map

    try:
        return parse_label_map(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def summary_table(result: ConsistencyResult, skipped: int = 0) -> str:
    """A short text table: overall metrics (and how many images were ``skipped`` as unreadable),
    localisation beside its references, then one line per class."""
    from ..reference_tables import CLASS_LOCALIZATION_HEADER, class_localization_cells, localization_table

    lines = [
        f"target layer {result.target_name}  map {result.cam_size[0]}x{result.cam_size[1]}  variant {result.variant}  "
        f"CAM method {result.cam_method}",
        f"samples {result.n_samples}{f'  skipped {skipped} unreadable' if skipped else ''}  "
        f"correct {result.n_correct}  accuracy {fmt_metric(result.accuracy)}  "
        f"kappa {fmt_metric(result.kappa)}  L_CAM {fmt_metric(result.value)}  "
        f"all-zero maps {result.n_zero_maps} ({fmt_metric(result.zero_map_share, 3)} of the correct)",
    ]
    if result.localization is not None:
        lines.append(localization_table(result.localization, result.cam_size))
    if result.n_zero_maps:
        unsafe = [name for name in VARIANTS if name not in COLLAPSE_SAFE]
        lines.append(
            f"warning: {result.n_zero_maps} of {result.n_correct} correct samples have an all-zero map "
            f"(a collapsed gaze scores as perfectly consistent under the {' and '.join(unsafe)} variants)"
        )
    width = max(len(name) for name in result.per_class)
    located = result.localization
    header = f"  {CLASS_LOCALIZATION_HEADER}, tolerance {located.tolerance:g} px" if located else ""
    lines.append(f"{'class':<{width}}  L_CAM   correct/samples{header}")
    for name, per_class in result.per_class.items():
        counts = f"{per_class.n_correct}/{per_class.n_samples}"
        games = f"  {class_localization_cells(located.per_class.get(name))}" if located else ""
        lines.append(f"{name:<{width}}  {fmt_metric(per_class.value):>6}  {counts:<15}{games}")
    return "\n".join(lines)
