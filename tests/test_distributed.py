"""Two CPU processes under ``accelerate launch`` (gloo, DDP): the metric merges across ranks to the
single-process result, and a regularised training run (``scripts/train.py``) keeps one EMA state and
one set of weights on both ranks and writes its output folder once.

One launch (``tests/distributed_worker.py``) does both jobs; the tests below read its reports.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from hf_gazecons import gaze_consistency, load_model
from hf_gazecons.data import ImageClassificationDataset, load_image_dataset
from hf_gazecons.models import GAZE_STATE_FILE, save_model
from hf_gazecons.samples import SampleRecorder, with_run_columns

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "distributed_worker.py"
TIMEOUT_S = 240

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or not torch.distributed.is_available(),
    reason="needs torch.distributed with gloo and POSIX process groups",
)

# 3 classes x 5 validation images = 15: shards of 8 and 7
METRIC_DATA = "builtin:shapes?num_classes=3&size=64&n_train=1&n_val=5&n_test=1"
METRIC_VARIANTS = [
    ["paper", "paper", None],
    ["reference", "reference", None],
    ["paper-grid", "paper", [5, 5]],
    ["reference-grid", "reference", [5, 5]],
]
# 2 classes x 8 training images, 2 x 3 validation images; 2 x 4 per step = 2 steps per epoch
TRAIN_DATA = "builtin:shapes?num_classes=2&size=48&n_train=8&n_val=3&n_test=1"
TRAIN_NAMES = ["circle", "square"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fitted_metric_model(directory: Path) -> None:
    """A test_resnet fitted to the metric data for a few steps, so that every class has correct
    samples (a random one puts everything in one class) - saved with save_model."""
    dataset = load_image_dataset(METRIC_DATA, "validation")
    torch.manual_seed(0)
    loaded = load_model("test_resnet", label_names=dataset.features["label"].names, image_size=64)
    items = ImageClassificationDataset(dataset, loaded.preprocessing, mode=loaded.preprocessing.mode)
    x = torch.stack([items[i]["pixel_values"] for i in range(len(items))])
    y = torch.tensor([items[i]["labels"] for i in range(len(items))])
    optimizer = torch.optim.Adam(loaded.model.parameters(), lr=2e-2)
    loaded.model.train()
    for _ in range(12):
        optimizer.zero_grad()
        F.cross_entropy(loaded.model(x), y).backward()
        optimizer.step()
    loaded.model.eval()
    save_model(loaded, directory)


def launch(job_path: Path, log_dir: Path) -> None:
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        str(WORKER), str(job_path),
    ]  # fmt: skip
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    env.pop("ACCELERATE_USE_CPU", None)
    with open(log_dir / "stdout.txt", "w") as stdout, open(log_dir / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
        try:
            code = process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the launcher and both workers (a rank may hang in a collective)
            process.wait()
            code = None
    if code != 0:
        tail = (log_dir / "stderr.txt").read_text()[-6000:]
        pytest.fail(f"accelerate launch {'timed out' if code is None else f'exited with {code}'}:\n{tail}")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    reports, output = root / "reports", root / "train-out"
    reports.mkdir()
    fitted_metric_model(root / "metric-model")
    train_argv = [
        "--model", "test_resnet", "--dataset", TRAIN_DATA, "--image_size", "48",
        "--output_dir", str(output), "--use_cpu", "true", "--num_train_epochs", "2",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--learning_rate", "1e-3", "--lambda_max", "5", "--t0", "0", "--t1", "1",
        "--seed", "3", "--disable_tqdm", "true",
    ]  # fmt: skip
    job = {
        "out": str(reports),
        "metric_model": str(root / "metric-model"),
        "metric_data": METRIC_DATA,
        "metric_variants": METRIC_VARIANTS,
        "train_argv": train_argv,
    }
    job_path = root / "job.json"
    job_path.write_text(json.dumps(job))
    launch(job_path, root)
    return root, reports, output


def read(path: Path):
    return json.loads(path.read_text())


def assert_close_json(actual, expected, path="", tol=1e-6):
    """Recursive equality of JSON-like data, floats within ``tol`` (NaN equals NaN)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), path
        for key in expected:
            assert_close_json(actual[key], expected[key], f"{path}.{key}", tol)
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close_json(a, e, f"{path}[{i}]", tol)
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert isinstance(actual, (int, float)), path
        if math.isnan(expected):
            assert math.isnan(actual), path
        else:
            assert actual == pytest.approx(expected, abs=tol), f"{path}: {actual} != {expected}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def test_two_gloo_processes(run):
    _, reports, _ = run
    infos = [read(reports / f"info_rank{r}.json") for r in (0, 1)]
    for rank, info in enumerate(infos):
        assert info["rank"] == info["dist_rank"] == rank
        assert info["dist_initialized"] and info["dist_world_size"] == 2 and info["accelerate_num_processes"] == 2
        assert info["backend"] == "gloo" and info["distributed_type"].endswith("MULTI_CPU")
        assert info["omp_num_threads"] == "1"
    for rank in (0, 1):
        trainer = read(reports / f"trainer_rank{rank}.json")
        assert trainer["args_world_size"] == 2 and trainer["args_process_index"] == rank
        assert trainer["model_wrapped"] == "DistributedDataParallel"


@pytest.mark.parametrize("name, variant, grid", METRIC_VARIANTS, ids=[v[0] for v in METRIC_VARIANTS])
def test_metric_merges_across_ranks_to_the_single_process_result(run, name, variant, grid):
    root, reports, _ = run
    recorder = SampleRecorder()
    expected = gaze_consistency(
        load_model(str(root / "metric-model")),
        load_image_dataset(METRIC_DATA, "validation"),
        variant=variant,
        grid=tuple(grid) if grid else None,
        batch_size=4,
        progress=False,
        samples=recorder,
    )
    assert expected.n_samples == 15
    assert sum(c.value is not None for c in expected.per_class.values()) >= 2, "the fitted model is too weak"
    for rank in (0, 1):
        got = read(reports / f"metric_rank{rank}.json")[name]
        assert got["dict"]["n_samples"] == 15  # merged, not one shard
        assert_close_json(got["dict"], expected.to_dict(), f"rank{rank}")
        assert got["value"] == pytest.approx(expected.value, abs=1e-6)
        torch.testing.assert_close(
            torch.tensor(got["class_means"], dtype=torch.float32),
            expected.class_means,
            rtol=0,
            atol=1e-6,
            equal_nan=True,
        )
        # the per-image table: both shards' rows, rank 0's first, as one process has them
        assert_close_json(got["samples"], recorder.table.to_pylist(), f"rank{rank}.samples")


def test_training_keeps_one_ema_state_on_both_ranks(run):
    _, reports, output = run
    ema = [load_file(str(reports / f"ema_rank{r}.safetensors")) for r in (0, 1)]
    assert ema[0].keys() == ema[1].keys() == {"ema", "initialized"}
    assert ema[0]["initialized"].any()
    assert torch.equal(ema[0]["ema"], ema[1]["ema"]) and torch.equal(ema[0]["initialized"], ema[1]["initialized"])
    saved = load_file(str(output / GAZE_STATE_FILE))
    assert torch.equal(saved["ema"], ema[0]["ema"])
    history = read(reports / "trainer_rank0.json")["log_history"]
    assert sum(e.get("penalty_samples", 0) for e in history) > 0, "the penalty never acted"
    assert [e["lambda"] for e in history if "lambda" in e] == [5.0, 5.0]


def test_training_keeps_one_set_of_parameters_on_both_ranks(run):
    _, reports, _ = run
    weights = [load_file(str(reports / f"weights_rank{r}.safetensors")) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    parameters = [k for k in weights[0] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    for key in parameters:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_training_keeps_one_set_of_buffers_on_both_ranks(run):
    """BatchNorm running statistics: each rank updates them from its own batches (DDP broadcasts
    rank 0's at the start of every training forward, not after the last one). The final evaluation
    must not run rank 1's shard through a different model from the one rank 0 saves."""
    _, reports, _ = run
    weights = [load_file(str(reports / f"weights_rank{r}.safetensors")) for r in (0, 1)]
    buffers = [k for k in weights[0] if k.endswith(("running_mean", "running_var"))]
    assert buffers
    differing = [k for k in buffers if not torch.equal(weights[0][k], weights[1][k])]
    assert not differing, (
        f"{len(differing)} of {len(buffers)} BatchNorm buffers differ between ranks, e.g. {differing[:3]}"
    )


def test_output_written_once_by_rank_zero(run):
    _, reports, output = run
    assert read(reports / "writes_rank0.json") == [str(output)]
    assert not (reports / "writes_rank1.json").exists()
    for name in (
        "config.json",
        "model.safetensors",
        GAZE_STATE_FILE,
        "results.json",
        "README.md",
        "learning_curves.png",
        "class_means.png",
        "kappa_vs_consistency.png",
        "class_maps.safetensors",
        "samples.parquet",
        "report.html",
    ):
        assert (output / name).is_file(), name
    checkpoints = sorted(p.name for p in output.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    for name in checkpoints:
        assert (output / name / GAZE_STATE_FILE).is_file()
    results = read(output / "results.json")
    assert results["config"]["batch_size"] == 8  # 4 per process x 2
    assert [h["epoch"] for h in results["history"]] == [1, 2]
    loaded = load_model(str(output))
    assert loaded.label_names == TRAIN_NAMES and loaded.gaze_state is not None


def test_final_metrics_are_those_of_the_saved_model(run):
    """results.json ``final`` (each rank scored its shard, merged) equals one process scoring the
    saved model on the whole evaluation split."""
    _, _, output = run
    final = read(output / "results.json")["final"]
    recorder = SampleRecorder()
    split = load_image_dataset(TRAIN_DATA, "validation")
    expected = gaze_consistency(load_model(str(output)), split, progress=False, samples=recorder)
    table = pd.read_parquet(output / "samples.parquet")
    one_process = with_run_columns(recorder.table, "gradcam").to_pandas().drop(columns="index")
    pd.testing.assert_frame_equal(table.drop(columns="index"), one_process, atol=1e-6)
    assert table["index"].tolist() == list(range(len(split)))
    assert expected.n_samples == 6
    assert final["eval_accuracy"] == pytest.approx(expected.accuracy, abs=1e-6)
    assert final["eval_loss"] == pytest.approx(expected.loss, abs=1e-5)
    if expected.value is None:
        assert final["eval_gaze_consistency"] is None
    else:
        assert final["eval_gaze_consistency"] == pytest.approx(expected.value, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# The penalty's gradient under DDP equals one process's gradient on the union batch
# ---------------------------------------------------------------------------------------------
PENALTY_LAMBDA = 10.0


def penalty_model() -> torch.nn.Module:
    """test_resnet with random BatchNorm affine parameters (non-zero maps), in eval mode: with
    running statistics the samples are independent, so each rank's forward equals its part of the
    union's forward and only the penalty's reduction is under test."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=3, zero_init_last=False)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(module.weight, 1.0, 0.5)
            torch.nn.init.normal_(module.bias, 0.0, 0.2)
    return model.eval()


def uneven_shards() -> tuple[torch.Tensor, torch.Tensor, list[slice]]:
    """12 images in two shards of 6: on rank 0 six correct samples of one class, on rank 1 one
    correct sample of that class and five misclassified ones, so 6 and 1 samples take part."""
    model = penalty_model()
    pool = torch.randn(64, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        predictions = model(pool).argmax(dim=1)
    common = int(torch.bincount(predictions).argmax())
    same = torch.nonzero(predictions == common).flatten()
    assert len(same) >= 12, "the random model does not give the shards this test needs"
    x = pool[same[:12]]
    labels = torch.full((12,), common)
    labels[7:] = (common + 1) % 3  # misclassified: they never take part
    return x, labels, [slice(0, 6), slice(6, 12)]


def penalty_step(model, x, labels) -> tuple[dict[str, torch.Tensor], torch.Tensor, float]:
    from hf_gazecons.cam import GradCAM
    from hf_gazecons.regularizer import GazeConsistencyLoss

    out = GradCAM(model, -2, differentiable=True)(x, labels)
    regularizer = GazeConsistencyLoss(3)
    penalty = regularizer(out.maps, out.logits, labels)
    loss = F.cross_entropy(out.logits, labels) + PENALTY_LAMBDA * penalty.loss
    loss.backward()
    inner = getattr(model, "module", model)
    grads = {n: p.grad.detach().clone() for n, p in inner.named_parameters() if p.grad is not None}
    return grads, regularizer.ema.detach().clone(), float(penalty.n_samples)


def _ddp_penalty_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        x, labels, shards = uneven_shards()
        model = torch.nn.parallel.DistributedDataParallel(penalty_model(), find_unused_parameters=False)
        grads, ema, n_samples = penalty_step(model, x[shards[rank]], labels[shards[rank]])
        torch.save({"grads": grads, "ema": ema, "n_samples": n_samples}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_penalty_gradients_on_two_processes_equal_one_process_on_the_union(tmp_path):
    x, labels, shards = uneven_shards()
    expected, expected_ema, expected_samples = penalty_step(penalty_model(), x, labels)
    assert expected_samples == 7  # 6 on rank 0 and 1 on rank 1
    torch.multiprocessing.spawn(_ddp_penalty_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["n_samples"] == expected_samples
        torch.testing.assert_close(got["ema"], expected_ema, rtol=0, atol=1e-6)
        assert got["grads"].keys() == expected.keys()
        for name, gradient in expected.items():
            torch.testing.assert_close(got["grads"][name], gradient, rtol=1e-4, atol=1e-5, msg=name)
    penalised = [n for n in expected if n.startswith(("conv1", "layer1", "layer2", "layer3"))]
    assert any(expected[n].abs().max() > 1e-4 for n in penalised)
