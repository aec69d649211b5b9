"""The printed report of scripts/bench.py (one block per section, with its goals) and the notes on how
each section measures, which go into the JSON report's settings."""

from __future__ import annotations

from typing import Any

from bench_common import EPS, GOALS, MAP_TOLERANCE, PEERS, VALUE_TOLERANCE, ratio


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _goal_line(section: str, values: dict[str, Any]) -> str:
    parts = []
    for key, goal in GOALS[section].items():
        parts.append(f"{key} {_fmt(values.get(key), '.3f')} (goal {goal['op']} {goal['value']})")
    met = values.get("met")
    return "  goals: " + "; ".join(parts) + f"  -> {'met' if met else 'NOT met' if met is False else 'n/a'}"


def print_report(report: dict[str, Any]) -> None:
    settings, device = report["settings"], report["device"]
    print(
        f"\nhf_gazecons benchmark on {device['name']} ({device['type']}, {device['cpu_count']} CPUs, "
        f"{device['torch_threads']} torch threads, torch {device['torch']}); medians of interleaved repetitions"
    )
    for section, printer in (
        ("gradcam", _print_gradcam),
        ("memory", _print_memory),
        ("dataset_scoring", _print_dataset_scoring),
        ("train_step", _print_train_step),
        ("train_epoch", _print_train_epoch),
        ("scoring_scale", _print_scoring_scale),
        ("cli_help", _print_cli_help),
        ("faithfulness", _print_faithfulness),
        ("cam_methods", _print_cam_methods),
    ):
        if section in report:
            printer(report[section], settings[section])


def _print_gradcam(g: dict[str, Any], s: dict[str, Any]) -> None:
    print(f"\n[gradcam] {s['model']}, {s['size']} px, batch {s['batch']}, {s['reps']} reps")
    print(f"  {'contender':<22}{'time (s)':>10}{'vs ours':>10}{'max|diff| vs ours':>20}")
    rows = [("no-grad forward", g["forward_s"], None), ("hf_gazecons GradCAM", g["ours_s"], None)]
    rows += [(peer, g[f"{peer}_s"], g[f"max_abs_diff_vs_{peer}"]) for peer in PEERS]
    for name, seconds, diff in rows:
        print(
            f"  {name:<22}{_fmt(seconds, '.4f'):>10}{_fmt(ratio(seconds, g['ours_s']), '.2f') + 'x':>10}"
            f"{_fmt(diff, '.1e') if name in PEERS else '-':>20}"
        )
    for peer in PEERS:
        diff = g[f"max_abs_diff_vs_{peer}"]
        if diff is not None and diff > MAP_TOLERANCE:
            print(f"  WARNING: maps differ from {peer}'s by {diff:.1e} > {MAP_TOLERANCE}: different computations?")
    print(_goal_line("gradcam", g))


def _print_memory(m: dict[str, Any], s: dict[str, Any]) -> None:
    print(f"\n[memory] peak growth of one batch, fresh process each ({s['model']}, {s['size']} px, batch {s['batch']})")
    rows = (("hf_gazecons GradCAM", "ours_mb"), ("no-grad inference", "inference_mb"), ("captum", "captum_mb"))
    for name, key in rows:
        print(f"  {name:<22}{_fmt(m[key], '.1f'):>10} MiB")
    print(_goal_line("memory", m))


def _print_dataset_scoring(d: dict[str, Any], s: dict[str, Any]) -> None:
    print(
        f"\n[dataset_scoring] {s['model']}, {s['size']} px, {s['n_images']} images, batch {s['batch']}, "
        f"{s['reps']} reps"
    )
    print(f"  {'gaze_consistency':<22}{_fmt(d['ours_s'], '.3f'):>10} s   L_CAM {_fmt(d['ours_value'], '.8f')}")
    print(f"  {'study way':<22}{_fmt(d['study_way_s'], '.3f'):>10} s   L_CAM {_fmt(d['study_way_value'], '.8f')}")
    print(f"  values agree (<= {VALUE_TOLERANCE}): {d['values_agree']}")
    print(_goal_line("dataset_scoring", d))


def _print_train_step(t: dict[str, Any], s: dict[str, Any]) -> None:
    print(
        f"\n[train_step] {s['model']}, {s['size']} px, lambda {s['lam']}, {s['reps']} reps "
        f"(exact: {s['exact_reps']}); regularised step / cross-entropy step"
    )
    print(f"  {'batch':>5}{'CE step (s)':>13}{'default target':>16}{'stage -2 held_stats':>21}{'2nd order':>11}"
          f"{'stage -2 exact':>16}{'probe (s)':>11}{'|held - exact| mean / max':>27}")  # fmt: skip
    for row in t["rows"]:
        print(
            f"  {row['batch']:>5}{_fmt(row['plain_s'], '.4f'):>13}{_times(row['default_ratio']):>16}"
            f"{_times(row['stage_held_stats_ratio']):>21}{_times(row['stage_second_order_ratio']):>11}"
            f"{_times(row['stage_exact_ratio']):>16}"
            f"{_fmt(row['probe_s'], '.4f'):>11}"
            f"{_fmt(row['maps_mean_abs_diff'], '.4f') + ' / ' + _fmt(row['maps_max_abs_diff'], '.4f'):>27}"
        )
    print(_goal_line("train_step", t) + f" (the worst of batches >= {s['goal_min_batch']})")


def _print_rates(rows: tuple[tuple[str, str], ...], values: dict[str, Any]) -> None:
    """One line per (label, key of ``values``): the images/s."""
    width = max(len(name) for name, _ in rows) + 2
    for name, key in rows:
        print(f"  {name:<{width}}{_fmt(values[key], '.1f'):>9} images/s")


def _print_train_epoch(t: dict[str, Any], s: dict[str, Any]) -> None:
    print(
        f"\n[train_epoch] {s['model']}, {s['size']} px from {s['image_px']} px grayscale JPEGs, batch {s['batch']}, "
        f"{s['n_train']} images, {s['workers']} loader workers, {s['reps']} rep(s)"
    )
    rows = (
        (f"GazeConsistencyTrainer (lambda {s['lam']:g})", "gazecons_images_per_s"),
        ("plain transformers Trainer", "trainer_images_per_s"),
        ("hand-written timm loop", "timm_loop_images_per_s"),
    )
    _print_rates(rows, t)
    print(f"  regularised / plain Trainer: {_fmt(t['ratio_vs_trainer'], '.3f')}")
    print(
        f"  data alone, main process: ours {_fmt(t['loader_images_per_s'], '.0f')} images/s, "
        f"timm's {_fmt(t['timm_loader_images_per_s'], '.0f')} images/s"
    )
    print(_goal_line("train_epoch", t))


def _print_scoring_scale(c: dict[str, Any], s: dict[str, Any]) -> None:
    print(
        f"\n[scoring_scale] {s['model']}, {s['size']} px, batch {s['batch']}, {s['per_rep']} images x {s['reps']} "
        f"reps, {s['workers']} loader workers; memory: {s['rss_small']} vs {s['rss_large']} streamed images"
    )
    rows = (
        ("gaze_consistency (paper)", "paper_images_per_s"),
        (f"  ... with --grid {s['grid'][0]} {s['grid'][1]}", "paper_grid_images_per_s"),
        ("no-grad inference", "inference_images_per_s"),
    )
    _print_rates(rows, c)
    print(
        f"  peak RSS of the scoring process: {_fmt(c['rss_small_mb'], '.1f')} MiB for {s['rss_small']} images, "
        f"{_fmt(c['rss_large_mb'], '.1f')} MiB for {s['rss_large']}"
    )
    print(_goal_line("scoring_scale", c))


def _print_cli_help(c: dict[str, Any], s: dict[str, Any]) -> None:
    print(f"\n[cli_help] fresh processes, median of {s['reps']}")
    print(f"  {'train --help, first':<22}{_fmt(c['train_help_cold_s'], '.2f'):>10} s  (builds the help cache)")
    print(f"  {'train --help, cached':<22}{_fmt(c['train_help_cached_s'], '.2f'):>10} s")
    print(f"  {'--help':<22}{_fmt(c['help_s'], '.2f'):>10} s")
    print(_goal_line("cli_help", c))


def _print_faithfulness(f: dict[str, Any], s: dict[str, Any]) -> None:
    print(
        f"\n[faithfulness] {s['model']}, {s['size']} px, batch {s['batch']}, random {s['grid']}x{s['grid']} maps; "
        f"deletion/insertion {s['steps']} steps, {s['reps']} reps; ROAD {len(s['percentiles'])} percentiles x "
        f"MoRF and LeRF, {s['road_reps']} rep(s)"
    )
    rows = (
        ("deletion/insertion", "deletion_ours_s", "deletion_torchcam_s", "torchcam", "speedup_vs_torchcam",
         "max_abs_diff_vs_torchcam"),
        ("ROAD", "road_ours_s", "road_pytorch_grad_cam_s", "pytorch-grad-cam", "speedup_vs_pytorch_grad_cam",
         "max_abs_diff_vs_pytorch_grad_cam"),
    )  # fmt: skip
    for name, ours, theirs, peer, speedup, diff in rows:
        print(
            f"  {name:<20} ours {_fmt(f[ours], '.2f')} s, {peer} {_fmt(f[theirs], '.2f')} s: "
            f"{_fmt(f[speedup], '.1f')}x faster; max|diff| {_fmt(f[diff], '.1e')}"
        )
        if f[diff] is not None and f[diff] > MAP_TOLERANCE:
            print(f"  WARNING: {name} differs from {peer}'s by {f[diff]:.1e} > {MAP_TOLERANCE}")
    print(_goal_line("faithfulness", f))


def _print_cam_methods(c: dict[str, Any], s: dict[str, Any]) -> None:
    print(f"\n[cam_methods] {s['model']}, {s['size']} px, batch {s['batch']}, {s['reps']} reps (scoring, one batch)")
    print(
        f"  {'method':<21}{'time (s)':>9}{'vs Grad-CAM':>12}{'pgc speedup':>12}{'torchcam sp.':>13}"
        f"{'|diff| pgc':>11}{'|diff| tc':>10}"
    )
    print(f"  {'Grad-CAM (today)':<21}{_fmt(c['gradcam_today_s'], '.3f'):>9}")
    for method in (*METHODS_PRINTED, "eigencam"):
        torchcam = f"{method}_speedup_vs_torchcam" in c  # torchcam has Grad-CAM++, XGrad-CAM and LayerCAM
        print(
            f"  {method:<21}{_fmt(c[f'{method}_s'], '.3f'):>9}{_times(c[f'{method}_ratio_vs_gradcam']):>12}"
            f"{_times(c[f'{method}_speedup_vs_pytorch_grad_cam']):>12}"
            f"{_times(c[f'{method}_speedup_vs_torchcam']) if torchcam else '-':>13}"
            f"{_fmt(c[f'{method}_max_abs_diff_vs_pytorch_grad_cam'], '.1e'):>11}"
            f"{_fmt(c[f'{method}_max_abs_diff_vs_torchcam'], '.1e') if torchcam else '-':>10}"
        )
    print(
        "  (torchcam's GradCAMpp is not Grad-CAM++: its alpha division acts on a copy, so its weights are "
        "sum G^2 relu(G); tests/test_cam_methods.py)"
    )
    print(
        f"  score, 7 one-forward methods in one pass: {_fmt(c['score_all_one_forward_s'], '.3f')} s, "
        f"{_fmt(c['all_one_forward_ratio_vs_slowest'], '.2f')}x the slowest alone "
        f"({c['score_slowest_one_forward_method']})"
    )
    print(
        f"  Score-CAM of {s['scorecam_images']} image(s), {s['scorecam_reps']} rep(s), 32 masked inputs per forward: "
        f"ours {_fmt(c['scorecam_s'], '.2f')} s, torchcam {_fmt(c['torchcam_scorecam_s'], '.2f')} s "
        f"({_fmt(c['scorecam_speedup_vs_torchcam'], '.2f')}x faster; max|diff| "
        f"{_fmt(c['scorecam_max_abs_diff_vs_torchcam'], '.1e')}); peak memory {_fmt(c['scorecam_mb'], '.1f')} MiB vs "
        f"{_fmt(c['torchcam_scorecam_mb'], '.1f')} MiB"
    )
    print(
        f"  score, all 8 methods in one pass: {_fmt(c['score_all_s'], '.2f')} s, "
        f"{_fmt(c['all_ratio_vs_slowest'], '.2f')}x Score-CAM alone ({_fmt(c['score_scorecam_s'], '.2f')} s)"
    )
    print(_goal_line("cam_methods", c))


METHODS_PRINTED = ("gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "gradcam_elementwise")

NOTES: dict[str, str] = {
    "gradcam": (
        "random-init timm model in eval mode; every contender explains the predicted class (peers get it from an "
        "untimed forward); pytorch-grad-cam target model.layer4[-1], captum/torchcam model.layer4, ours "
        "forward_features (the same tensor); pytorch-grad-cam and torchcam are built per call in a with-block; "
        f"maps compared at the target resolution after min-max with eps {EPS}"
    ),
    "memory": "each probe: fresh process, model and batch built, warm-up on one image, then one batch",
    "dataset_scoring": (
        "random images; labels = the model's prediction except every 4th sample (a wrong class); paper variant; "
        "study way = prediction pass + per-class pass over correct samples with forward hooks and .backward()"
    ),
    "train_step": (
        "labels = train-mode argmax of the initial model's logits on the batch (all correct at the start); "
        "3 untimed warm-up steps; Adam lr 1e-4; each contender trains its own copy of the same initial model; "
        "'penalty' = samples/classes that took part in the last regularised step; stage -2 is followed by "
        "train-mode BatchNorm layers that couple the samples: 'held_stats' holds their statistics in the score "
        "gradient (one backward; also timed with second_order=True), 'exact' takes one vector-Jacobian product "
        "per sample, timed against its own "
        "interleaved plain steps (stage_exact_plain_s); 'per_sample_paths' = the path each GradCAM took; "
        "'probe_s' = one coupling probe at stage -2, paid on a GradCAM's first call only; 'maps_*_abs_diff' = "
        "held_stats against exact maps at stage -2 on the initial model and batch (scoring mode); overhead and "
        "overhead_stage = the worst ratio at the batches >= goal_min_batch"
    ),
    "train_epoch": (
        "random-init timm model, 1 channel; the Trainers read the folder through load_image_dataset and "
        "ImageClassificationDataset (JPEGs decoded near the input size), the timm loop through "
        "timm.data.ImageDataset with the same transform; lambda from the first step (t0=0, t1=1); "
        "'penalty' = lambda and mean samples/classes per step in the penalty (GazeConsistencyTrainer's log); "
        "loader rates: reading + transforming only, in the main process"
    ),
    "scoring_scale": (
        "random-init 1-channel model; the folder's images in a seeded random order, repeated; throughput: "
        "gaze_consistency and a no-grad forward over the same batch_source DataLoader of a datasets.Dataset; "
        "memory: peak resident set (VmHWM) of a fresh process that loads the model and scores a "
        "datasets.IterableDataset stream (paper variant, no loader workers); rss_growth = large / small"
    ),
    "cli_help": "fresh python -m hf_gazecons.cli.main processes with an empty XDG_CACHE_HOME; medians of reps",
    "faithfulness": (
        "random-init timm model in eval mode, random images, uniform random maps of the given grid (upsampled "
        "bilinearly by every contender), the predicted classes; torchcam through an extractor that returns those "
        "maps (its metric still runs its own scoring forward); pytorch-grad-cam's PerturbationConfidenceMetric "
        "with RemoveMostRelevantFirst / RemoveLeastRelevantFirst and NoisyLinearImputer(noise=0), one metric per "
        "percentile as its ROAD averagers run them; ours: deletion_insertion and road (noise 0); max|diff|: "
        "deletion/insertion batch means vs torchcam's summary, every ROAD value vs pytorch-grad-cam's; ROAD "
        "without a warm-up round"
    ),
    "cam_methods": (
        "random-init timm model in eval mode, random batch; every contender explains the predicted class (peers get "
        "it from an untimed forward); ours: CAM(model, method=m) at forward_features, pytorch-grad-cam at "
        "model.layer4[-1] built per call in a with-block (maps resized to the input), torchcam at layer4; "
        "ratio_vs_gradcam: against GradCAM(model) on the same batch; score_*: gaze_consistency / compare_cam_methods "
        "on that batch; Score-CAM: ours and torchcam's ScoreCAM with 32 masked inputs per forward on the first "
        "scorecam_images images, no warm-up round; its peak memory: fresh processes, VmHWM growth of one call; "
        "agreement at the target resolution (pytorch-grad-cam's get_cam_image on what it captured, Grad-CAM++ on "
        "(A / 1e4, 1e4 G) to neutralise its 1e-6, Eigen-CAM up to its sign)"
    ),
}
"""How each section measures, for the JSON report's settings."""
