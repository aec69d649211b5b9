"""``hf-gazecons sweep``: tables from fake runs, a tiny real sweep (one good run, one failing run),
resume-skip, resume from a checkpoint, presets and the reproducible command."""

from __future__ import annotations

import csv
import json
import math
import shlex
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from hf_gazecons.cli.main import build_parser
from hf_gazecons.cli.main import main as cli_main
from hf_gazecons.output_dir import last_checkpoint
from hf_gazecons.planted_ranking import planted_recall
from hf_gazecons.sweep import (
    RUNS_COLUMNS,
    explicit_command,
    plan_runs,
    resolve_config,
    run_directory,
    run_sweep,
    train_command,
    write_outputs,
)
from hf_gazecons.sweep import runner as sweep_runner

TINY_DATA = "builtin:shapes?size=48&num_classes=2&n_train=8&n_val=4&n_test=1"
PLANTED_DATA = f"{TINY_DATA}&planted=0.25"  # 2 of the 8 validation images: the planted experiment, tiny
BAD = "no_such_backbone_xyz"


def _script(name: str):
    """A script of scripts/ as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        name.removesuffix(".py"), Path(__file__).parents[1] / "scripts" / name
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _fake_run(out: Path, backbone: str, lam: float, seed: int, kappa, consistency, masks: bool = True) -> None:
    history = []
    for epoch, (k, c) in enumerate(zip(kappa, consistency), start=1):
        entry = {
            "epoch": epoch,
            "train_loss": 1.0 / epoch,
            "train_penalty": 0.1,
            "lambda": lam * min(1, epoch / 3),
            "eval_loss": 2.0 / epoch,
            "eval_accuracy": (k + 1) / 2,
            "eval_kappa": k,
            "eval_gaze_consistency": c,
        }
        if masks:
            entry.update(eval_energy_pointing_game=0.3, eval_pointing_game=0.5)
            entry.update(eval_chance_energy_pointing_game=0.1, eval_perfect_energy_pointing_game=0.8)
            entry.update(eval_chance_pointing_game=0.2, eval_perfect_pointing_game=0.9)
        history.append(entry)
    directory = run_directory(out, backbone, lam, seed)
    directory.mkdir(parents=True)
    results = {"config": {"model": backbone, "lambda_max": lam, "seed": seed}, "final": {}, "history": history}
    (directory / "results.json").write_text(json.dumps(results))


def test_correlation_table_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    series = {}
    for lam in (0.0, 100.0):
        for seed in (0, 1, 2):
            kappa, consistency = rng.uniform(0, 1, 6), rng.uniform(0, 0.1, 6)
            series[lam, seed] = (kappa, consistency)
            _fake_run(tmp_path, "resnet10t", lam, seed, kappa.tolist(), consistency.tolist())
    _fake_run(
        tmp_path, "resnet10t", -50.0, 0, [0.5] * 4, [0.1, 0.2, 0.3, 0.4], masks=False
    )  # constant kappa: r undefined
    _fake_run(tmp_path, "resnet10t", -50.0, 1, [0.1, 0.5, 0.2, 0.9], [0.4, 0.1, 0.3, 0.05], masks=False)

    outputs = write_outputs(tmp_path)

    table = {(r["backbone"], float(r["lambda"])): r for r in _read_csv(outputs["correlation"])}
    assert list(_read_csv(outputs["correlation"])[0]) == [
        "backbone", "lambda", "r_seed_0", "r_seed_1", "r_seed_2", "pearson_r_mean", "pearson_r_std", "n_seeds"
    ]  # fmt: skip
    for lam in (0.0, 100.0):
        expected = [np.corrcoef(*series[lam, seed])[0, 1] for seed in (0, 1, 2)]
        row = table["resnet10t", lam]
        for seed in (0, 1, 2):
            assert float(row[f"r_seed_{seed}"]) == pytest.approx(expected[seed], abs=1e-5)
        assert float(row["pearson_r_mean"]) == pytest.approx(np.mean(expected), abs=1e-5)
        assert float(row["pearson_r_std"]) == pytest.approx(np.std(expected, ddof=1), abs=1e-5)
        assert row["n_seeds"] == "3"
    undefined = table["resnet10t", -50.0]
    assert undefined["r_seed_0"] == "" and undefined["r_seed_2"] == ""
    assert float(undefined["pearson_r_mean"]) == pytest.approx(
        np.corrcoef([0.1, 0.5, 0.2, 0.9], [0.4, 0.1, 0.3, 0.05])[0, 1], abs=1e-5
    )
    assert undefined["pearson_r_std"] == "" and undefined["n_seeds"] == "1"

    rows = _read_csv(outputs["runs"])
    assert tuple(rows[0]) == RUNS_COLUMNS
    assert len(rows) == 6 * 6 + 2 * 4
    assert [(r["lambda"], r["seed"], r["epoch"]) for r in rows[:2]] == [("-50", "0", "1"), ("-50", "0", "2")]
    no_masks = [r for r in rows if r["lambda"] == "-50"]
    assert all(r["energy_pointing_game"] == "" and r["pointing_game"] == "" for r in no_masks)
    summary = outputs["summary"].read_text()
    assert "| `resnet10t` | 100 |" in summary and "final_vs_lambda.png" in summary
    head = next(line for line in summary.splitlines() if line.startswith("| backbone"))
    games = "energy pointing game | energy pointing game: chance | energy pointing game: perfect map | "
    games += "pointing game (0 px) | pointing game: chance | pointing game: perfect map"
    assert games in head  # each game beside its references, the tolerance named
    row = next(line for line in summary.splitlines() if line.startswith("| `resnet10t` | 100 |"))
    assert " | ".join(["0.300 ± 0.000", "0.100 ± 0.000", "0.800 ± 0.000", "0.500 ± 0.000", "0.200 ± 0.000"]) in row
    assert (tmp_path / "curves_resnet10t.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """One real tiny run (test_resnet, 2 epochs, 48 px, planted images) beside one that fails (unknown backbone)."""
    out = tmp_path_factory.mktemp("sweep")
    args = ["sweep", "--backbones", "test_resnet", BAD, "--lambdas", "10", "--seeds", "0", "--epochs", "2",
            "--t0", "0", "--t1", "1", "--dataset", PLANTED_DATA, "--image-size", "48", "--batch-size", "8",
            "--learning-rate", "3e-3", "--target-layer=-2", "--parallel", "2", "--threads", "1",
            "--output-dir", str(out)]  # fmt: skip
    code = cli_main(args)
    return out, args, code


def test_tiny_sweep_writes_tables_and_reports_the_failed_run(tiny_sweep, capsys):
    out, _, code = tiny_sweep
    assert code == 1  # one run failed
    good = run_directory(out, "test_resnet", 10.0, 0)
    assert (good / "results.json").is_file() and (good / "model.safetensors").is_file()
    assert not list(good.glob("checkpoint-*"))  # removed after the run finished
    log = run_directory(out, BAD, 10.0, 0) / "train.log"
    assert log.is_file() and BAD in log.read_text()
    rows = _read_csv(out / "runs.csv")
    assert tuple(rows[0]) == RUNS_COLUMNS
    assert [(r["backbone"], r["lambda"], r["seed"], r["epoch"]) for r in rows] == [
        ("test_resnet", "10", "0", "1"),
        ("test_resnet", "10", "0", "2"),
    ]
    for row in rows:
        for column in ("accuracy", "kappa", "eval_loss", "train_loss", "penalty", "lambda_t", "energy_pointing_game",
                       "chance_energy_pointing_game", "perfect_pointing_game"):  # fmt: skip
            assert row[column] != "", column
    assert [float(r["lambda_t"]) for r in rows] == [10.0, 10.0]  # T0 0, T1 1
    assert _read_csv(out / "correlation.csv")[0]["n_seeds"] == "0"  # 2 epochs: r undefined
    summary = (out / "summary.md").read_text()
    assert "hf-gazecons sweep --backbones test_resnet no_such_backbone_xyz" in summary
    assert (out / "curves_test_resnet.png").is_file() and (out / "final_vs_lambda.png").is_file()


def test_the_planted_experiment_at_a_small_size(tiny_sweep, capsys):
    """The pipeline of docs/RESULTS.md's planted-image table: each run's samples.parquet, recall@k of
    the deviation and of the loss, in the sweep's report and in scripts/planted_table.py."""
    out, _, _ = tiny_sweep
    table = pq.read_table(run_directory(out, "test_resnet", 10.0, 0) / "samples.parquet")
    assert table.column("planted").to_pylist().count(True) == 2 and table.num_rows == 8
    recall = {c: planted_recall(table, c) for c in ("deviation_paper", "deviation_robust", "cross_entropy")}
    cells = [f"{recall[c]:.3f}" for c in recall]
    page = (out / "report.html").read_text()
    assert "Planted images found" in page
    assert "".join(f'<td class="n">{cell}</td>' for cell in cells) in page.replace("\n", "")
    capsys.readouterr()
    assert _script("planted_table.py").main([str(out)]) == 0
    printed = capsys.readouterr().out
    beats = int(recall["deviation_paper"] > recall["cross_entropy"])
    assert f"| test_resnet | 10 | paper | 0 | 2 of 8 | 0.250 | {' | '.join(cells)} |" in printed
    assert f"| {beats} of 1 |" in printed


def test_restart_skips_finished_runs(tiny_sweep, monkeypatch, capsys):
    out, args, _ = tiny_sweep
    results = run_directory(out, "test_resnet", 10.0, 0) / "results.json"
    mtime = results.stat().st_mtime_ns
    launched = []
    monkeypatch.setattr(sweep_runner, "_launch", lambda command, env, log: launched.append(command) or 3)

    assert cli_main(args) == 1  # the bad backbone is tried again and fails again
    assert [c[c.index("--model") + 1] for c in launched] == [BAD]
    assert "skip    test_resnet lambda=10 seed=0: results.json exists" in capsys.readouterr().out

    launched.clear()
    good_only = [a for a in args if a != BAD]
    assert cli_main(good_only) == 0
    assert launched == []  # nothing to do: no training process at all
    assert results.stat().st_mtime_ns == mtime
    assert len(_read_csv(out / "runs.csv")) == 2


def test_sanity_on_the_finished_sweep(tiny_sweep):
    out, _, _ = tiny_sweep
    assert cli_main(["sweep", "--collect", "--sanity", "--sanity-samples", "6", "--output-dir", str(out)]) == 0
    rows = _read_csv(out / "sanity.csv")
    assert [r["randomized_up_to"] for r in rows][:2] == ["none", "fc"]
    assert rows[-1]["randomized_up_to"] == "conv1+bn1"
    assert "Sanity check: cascading randomization" in (out / "summary.md").read_text()
    summary = {int(r["step"]): r for r in _read_csv(out / "sanity_summary.csv")}
    # docs/RESULTS.md's table of it: steps 1, 2 and the last, constant maps before and after
    (line,) = _script("results_tables.py").sanity_table(out).splitlines()[2:]
    cells = line.strip("| ").split(" | ")
    assert cells[:3] == ["`test_resnet`", "10", "1"] and len(cells) == 7

    def formatted(text: str, digits: int) -> str:  # one run: no std; no ranking: n/a
        return f"{float(text):.{digits}f}" if text else "n/a"

    for cell, step in zip(cells[3:6], (1, 2, max(summary))):
        assert cell == formatted(summary[step]["spearman_mean"], 2)
    last = summary[max(summary)]
    assert cells[6] == f"{formatted(summary[0]['constant_original'], 3)} / {formatted(last['constant_randomized'], 3)}"


def test_sanity_table_compares_the_step_after_the_classifier_with_lambda_0(tmp_path):
    from hf_gazecons.sweep.files import write_csv
    from hf_gazecons.sweep.sanity import SANITY_COLUMNS, SUMMARY_COLUMNS

    step1 = {0.0: [0.0, 0.1, -0.1], 50.0: [0.5, 0.6, 0.4], 500.0: [0.3, -0.2, 0.1]}
    runs, summary = [], []
    for lam, values in step1.items():
        for seed, value in enumerate(values):
            for step, name, spearman in ((0, "none", 1.0), (1, "fc", value), (2, "layer4", 0.0)):
                runs.append({"backbone": "test_resnet", "lambda": lam, "seed": seed, "step": step,
                             "randomized_up_to": name, "spearman_mean": spearman, "n_samples": 10})  # fmt: skip
        for step, name in ((0, "none"), (1, "fc"), (2, "layer4")):
            mean = float(np.mean(values)) if step == 1 else float(step == 0)
            summary.append({"backbone": "test_resnet", "lambda": lam, "step": step, "randomized_up_to": name,
                            "spearman_mean": mean, "spearman_std": 0.1, "n_runs": 3, "constant_original": 0.0,
                            "constant_randomized": 0.25})  # fmt: skip
    write_csv(tmp_path / "sanity.csv", SANITY_COLUMNS, runs)
    write_csv(tmp_path / "sanity_summary.csv", SUMMARY_COLUMNS, summary)
    lines = _script("results_tables.py").sanity_table(tmp_path, baseline=tmp_path).splitlines()
    assert lines[0].endswith("| after the classifier, Δ against λ = 0 |") and len(lines) == 5
    cells = [line.strip("| ").split(" | ") for line in lines[2:]]
    assert [c[1] for c in cells] == ["0", "50", "500"]
    assert cells[1][3] == "0.50 ± 0.10" and cells[1][5] == "0.00 ± 0.10" and cells[1][6] == "0.000 / 0.250"
    assert cells[1][7].startswith("+0.50 [") and cells[1][7].endswith("**higher**")  # 0.4-0.6 against -0.1-0.1
    assert cells[2][7].startswith("+0.07 [") and cells[2][7].endswith("within the spread")
    assert len(cells[0]) == 7  # lambda 0 is the reference: no difference of its own


def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    config = resolve_config({"preset": "smoke", "output_dir": str(tmp_path), "backbones": ["test_resnet"],
                             "lambdas": [0.0], "parallel": 1})  # fmt: skip
    directory = run_directory(tmp_path, "test_resnet", 0.0, 0)
    for step in (4, 12, 8):
        checkpoint = directory / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        (checkpoint / "model.safetensors").write_bytes(b"x")
        (checkpoint / "trainer_state.json").write_text("{}")
    (directory / "checkpoint-20").mkdir()  # no weights: an interrupted save
    assert last_checkpoint(directory) == directory / "checkpoint-12"
    launched = []
    monkeypatch.setattr(sweep_runner, "_launch", lambda command, env, log: launched.append((command, env)) or 0)

    report = run_sweep(config, echo=lambda line: None)

    ((command, env),) = launched
    assert command[command.index("--resume_from_checkpoint") + 1] == str(directory / "checkpoint-12")
    assert command[:4] == [command[0], "-m", "hf_gazecons.cli.main", "train"]
    assert command[command.index("--save_total_limit") + 1] == "1"
    assert env["OMP_NUM_THREADS"] == str(max(1, sweep_runner._cpu_count()))
    assert report.exit_code == 1 and report.failed[0].status == "failed"  # exit 0 but no results.json


def test_presets_defaults_and_reproducible_command(tmp_path):
    smoke = resolve_config({"preset": "smoke", "output_dir": "o", "seeds": [3, 4]})
    assert smoke.seeds == [3, 4] and smoke.backbones == ["test_resnet", "test_efficientnet"]
    study = resolve_config({"preset": "study", "output_dir": "o"})
    assert study.lambdas == [-100.0, 0.0, 50.0, 100.0, 500.0] and len(study.seeds) == 6
    assert (study.epochs, study.t0, study.t1, study.learning_rate, study.batch_size) == (50, 2, 10, 1e-4, 32)
    assert study.grayscale and study.pretrained and study.image_size == 224
    plain = resolve_config({"output_dir": "o"})
    assert plain.lambdas == [-100.0, 0.0, 50.0, 100.0, 500.0] and len(plain.backbones) >= 2

    cpu = resolve_config({"preset": "cpu", "output_dir": str(tmp_path), "grayscale": True, "cam_method": "layercam"})
    for config in (smoke, study, cpu):
        argv = shlex.split(explicit_command(config))[1:]
        args = build_parser().parse_args(argv)
        options = {k: v for k, v in vars(args).items() if k not in ("command", "sanity", "sanity_samples", "dry_run")}
        if args.train_args is not None:
            options["train_args"] = shlex.split(args.train_args)
        again = resolve_config(options)
        assert again == config.__class__(**{**config.__dict__, "preset": None})

    command = train_command(plan_runs(study)[0], study)
    assert command[command.index("--grayscale") + 1] == "true" and "--pretrained" in command
    assert command[command.index("--lambda_max") + 1] == "-100"
    assert command[command.index("--cam_method") + 1] == "gradcam"
    assert train_command(plan_runs(cpu)[0], cpu)[command.index("--cam_method") + 1] == "layercam"


def test_one_gpu_per_run_and_threads_split(monkeypatch):
    monkeypatch.setattr(sweep_runner, "_cpu_count", lambda: 16)
    env = sweep_runner._run_env(slot=3, parallel=4, gpus=2, threads=None)
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["OMP_NUM_THREADS"] == "4"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    assert sweep_runner._run_env(slot=4, parallel=3, gpus=3, threads=2)["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    env = sweep_runner._run_env(slot=0, parallel=32, gpus=0, threads=None)
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert env["OMP_NUM_THREADS"] == "1"


def test_two_shards_and_a_collect_give_the_tables_of_one_sweep(tmp_path):
    """Each shard trains every second run into the shared folder and writes no table; the collect
    then writes the same runs.csv and correlation.csv as one unsharded sweep of the same grid."""
    grid = ["--backbones", "test_resnet", "--lambdas", "0", "5", "--seeds", "0", "--epochs", "3", "--t0", "0",
            "--t1", "1", "--dataset", TINY_DATA, "--image-size", "48", "--batch-size", "8",
            "--learning-rate", "3e-3", "--target-layer=-2", "--parallel", "1", "--threads", "1"]  # fmt: skip
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert cli_main(["sweep", *grid, "--output-dir", str(whole)]) == 0
    for shard in ("1/2", "2/2"):
        assert cli_main(["sweep", *grid, "--shard", shard, "--output-dir", str(sharded)]) == 0
        assert not (sharded / "runs.csv").exists()  # a shard writes no table
    assert sorted(p.name for p in sharded.glob("sweep*.json")) == ["sweep.shard-1-of-2.json", "sweep.shard-2-of-2.json"]
    assert (run_directory(sharded, "test_resnet", 0.0, 0) / "results.json").is_file()
    assert (run_directory(sharded, "test_resnet", 5.0, 0) / "results.json").is_file()
    assert cli_main(["sweep", "--collect", "--output-dir", str(sharded)]) == 0
    for table in ("runs.csv", "correlation.csv"):
        assert (sharded / table).read_text() == (whole / table).read_text(), table
    assert "hf-gazecons sweep --backbones test_resnet --lambdas 0 5" in (sharded / "summary.md").read_text()


@pytest.mark.parametrize("text", ["0/2", "3/2", "2", "a/b", "1/0"])
def test_a_bad_shard_is_a_usage_error(text, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main(["sweep", "--preset", "smoke", "--shard", text, "--output-dir", str(tmp_path)])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: argument --shard: a shard is K/N") and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("script", "arguments", "message"),
    [
        ("results_tables.py", ["{empty}", "--baseline", "{empty}"], "has no runs.csv"),
        ("results_tables.py", ["--class-means", "x.png"], "at least one run folder"),
        ("results_tables.py", ["--sanity", "{empty}"], "has no sanity_summary.csv"),
        ("results_tables.py", ["--sanity"], "needs the sweep folders"),
        ("per_class_table.py", ["--rows", "{empty}"], "is not a file"),
        ("per_class_table.py", ["--rows", "{empty}/runs.csv", "{empty}"], "one of the two"),
        ("per_class_table.py", ["{empty}"], "holds no finished run"),
    ],
)
def test_report_scripts_refuse_folders_without_runs(tmp_path, script, arguments, message):
    """The docs' table scripts: a folder that is not a finished sweep is a usage error, not an empty table."""
    import subprocess
    import sys

    command = [sys.executable, str(Path(__file__).parents[1] / "scripts" / script)]
    command += [a.replace("{empty}", str(tmp_path)) for a in arguments]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_a_sweep_passes_its_floats_exactly(tmp_path):
    """Values beyond %g's 6 significant digits reach the run unchanged (through train's own parser),
    keep their own folder, read back from the reproducible command, and a finished run trained with
    them is not reported as trained with other settings."""
    from hf_gazecons.cli.train import build_parser as train_parser
    from hf_gazecons.run_record import RunConfig, RunResults

    lr, alpha, lam = 0.0012345678, 0.123456789, 12.3456789
    config = resolve_config({"preset": "smoke", "output_dir": str(tmp_path), "backbones": ["test_resnet"],
                             "lambdas": [lam, 12.3456788], "learning_rate": lr, "ema_alpha": alpha})  # fmt: skip
    first, second = plan_runs(config)[:2]
    assert first.directory != second.directory  # %g gave both lambda_12.3457
    data_args, args = train_parser().parse_args_into_dataclasses(args=train_command(first, config)[4:])
    assert (args.learning_rate, args.ema_alpha, args.lambda_max) == (lr, alpha, lam)
    again = build_parser().parse_args(shlex.split(explicit_command(config))[1:])
    assert (again.learning_rate, again.ema_alpha, again.lambdas[0]) == (lr, alpha, lam)

    recorded = RunConfig(model=data_args.model, lambda_max=args.lambda_max, seed=args.seed, dataset=data_args.dataset,
                         t0=args.t0, t1=args.t1, epochs=args.num_train_epochs, learning_rate=args.learning_rate,
                         variant=args.variant, ema_alpha=args.ema_alpha)  # fmt: skip
    first.directory.mkdir(parents=True)
    RunResults(config=recorded, final={}).save(first.directory)
    assert sweep_runner._settings_differ(first.results_path, config) == ""
    lines = []
    run_sweep(config, dry_run=True, echo=lines.append)
    assert any(line.startswith("skip    test_resnet") for line in lines)
    assert not any("WARNING" in line for line in lines), lines


def test_a_saved_run_scores_again_as_its_own_final_evaluation(tiny_sweep):
    """SavedRun: the final model, the run's evaluation split and the layer it trained with give the
    run's own last evaluation; per_class_table scores each class alone and gets that class's value."""
    from hf_gazecons.run_record import finished_runs
    from hf_gazecons.saved_run import SavedRun

    out, _, _ = tiny_sweep
    (directory,) = finished_runs(out / "runs")  # the failed run wrote no results.json
    assert directory == run_directory(out, "test_resnet", 10.0, 0)
    run = SavedRun.load(directory)
    assert run.target == "layer3"  # --target-layer=-2, recorded resolved
    result = run.score()
    again = result.to_metrics()
    assert set(again) <= set(run.results.final)  # every metric of the run's own last evaluation
    for key, value in again.items():
        recorded = run.results.final[key]
        if recorded is None:  # undefined (the kappa of a one-class prediction): null in results.json
            assert value is None or math.isnan(value), key
        else:
            assert value == pytest.approx(recorded, rel=1e-5, abs=1e-7), key
    rows = _script("per_class_table.py").score_run(directory, "validation")
    assert [row["class"] for row in rows] == list(result.per_class)
    for row in rows:
        whole = result.per_class[row["class"]]
        for variant in ("paper", "robust"):  # None for a class with fewer than 2 correct samples, in both
            expected = whole.values[variant]
            assert row[f"lcam_{variant}"] == (None if expected is None else pytest.approx(expected, rel=1e-6, abs=1e-9))
        assert (row["n_samples"], row["n_correct"]) == (whole.n_samples, whole.n_correct)


def test_finished_runs_leave_out_an_unreadable_record_and_say_so(tmp_path):
    from hf_gazecons.run_record import finished_runs

    _fake_run(tmp_path, "resnet10t", 0.0, 0, [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    broken = run_directory(tmp_path, "resnet10t", 5.0, 0)
    broken.mkdir(parents=True)
    (broken / "results.json").write_text("{not json")
    with pytest.warns(UserWarning, match=r"left out: .*lambda_5/seed_0/results.json' is not a readable results.json"):
        runs = finished_runs(tmp_path / "runs")
    assert list(runs) == [run_directory(tmp_path, "resnet10t", 0.0, 0)]
    assert runs[run_directory(tmp_path, "resnet10t", 0.0, 0)].config.model == "resnet10t"
