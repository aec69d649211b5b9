"""GazeConsistencyTrainer and the end-to-end training run (docs/METHOD.md, section 5), on tiny CPU models.

* lambda_max = 0 trains bit-for-bit like the plain ``transformers.Trainer``;
* with lambda_max > 0 the penalty is logged and follows the per-epoch curriculum, evaluation logs
  the metrics and never touches the EMA maps;
* the EMA maps are checkpointed and a resumed run ends exactly where the straight run ends;
* ``hf_gazecons.finetune.train`` writes a complete output folder that timm, transformers and
  ``load_model`` read back (RGB timm, grayscale timm, a transformers classifier);
* the second-order option trains.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
from functools import partial
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from transformers import AutoModelForImageClassification, Trainer, TrainerCallback, TrainingArguments

from hf_gazecons.data import ImageClassificationDataset, load_image_dataset
from hf_gazecons.errors import GazeConsError
from hf_gazecons.finetune import ModelDataArguments, epoch_history, train
from hf_gazecons.metric import gaze_consistency
from hf_gazecons.models import GAZE_STATE_FILE, load_model, save_model
from hf_gazecons.trainer import GazeConsistencyTrainer, GazeConsistencyTrainingArguments

# 2 classes x 8 training images (2 steps of 8 per epoch), 2 x 4 validation images, 48 px
SHAPES = "builtin:shapes?num_classes=2&size=48&n_train=8&n_val=4&n_test=2"
SIZE = 48
BATCH = 8
COMMON = {
    "per_device_train_batch_size": BATCH,
    "per_device_eval_batch_size": BATCH,
    "learning_rate": 1e-3,
    "use_cpu": True,
    "seed": 7,
    "report_to": "none",
    "disable_tqdm": True,
}
NO_EVAL = {"eval_strategy": "no", "save_strategy": "no", "lr_scheduler_type": "constant"}  # plateau needs evaluations


@pytest.fixture(scope="module")
def shapes():
    return load_image_dataset(SHAPES)


@pytest.fixture(scope="module")
def names(shapes):
    return list(shapes["train"].features["label"].names)


@pytest.fixture(scope="module")
def base(names):
    """One random-init timm test_resnet (every trainer starts from a deep copy of it)."""
    torch.manual_seed(0)
    return load_model("test_resnet", label_names=names, image_size=SIZE)


def datasets_for(loaded, shapes):
    prep = loaded.preprocessing
    train_ds = ImageClassificationDataset(shapes["train"], partial(prep, train=True), mode=prep.mode)
    eval_ds = ImageClassificationDataset(shapes["validation"], prep, mode=prep.mode)
    return train_ds, eval_ds


def gaze_trainer(base, shapes, names, out, **overrides):
    options = dict(COMMON, lambda_max=5.0, t0=0, t1=1, num_train_epochs=2)
    options.update(overrides)
    args = GazeConsistencyTrainingArguments(str(out), **options)
    train_ds, eval_ds = datasets_for(base, shapes)
    model = copy.deepcopy(base.model)
    return GazeConsistencyTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, label_names=names
    )


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=0, atol=atol, msg=lambda m, key=key: f"{key}: {m}")


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def snapshot(trainer) -> dict[str, torch.Tensor]:
    """A copy of the EMA state (not relying on ``gaze_state()`` copying, see the test below)."""
    return {k: v.clone() for k, v in trainer.gaze_state().items()}


def train_logs(trainer) -> list[dict]:
    return [e for e in trainer.state.log_history if "loss" in e]


def eval_logs(trainer) -> list[dict]:
    return [e for e in trainer.state.log_history if "eval_loss" in e]


# ------------------------------------------------------------------------------------------------
# 1. lambda_max = 0 is the plain Trainer
# ------------------------------------------------------------------------------------------------
class PixelsAndLabels(torch.utils.data.Dataset):
    """Only what a transformers model's forward takes (the plain Trainer passes every key on)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        return {"pixel_values": item["pixel_values"], "labels": item["labels"]}


def test_lambda_zero_trains_exactly_like_the_plain_trainer(base, shapes, names, tmp_path):
    save_model(base, tmp_path / "init")
    train_ds = PixelsAndLabels(datasets_for(base, shapes)[0])  # with augmentation: the RNG streams must agree too
    same = dict(
        COMMON,
        num_train_epochs=2,
        lr_scheduler_type="constant",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="epoch",
        remove_unused_columns=False,
    )
    ours_model = AutoModelForImageClassification.from_pretrained(tmp_path / "init")
    plain_model = AutoModelForImageClassification.from_pretrained(tmp_path / "init")
    start = state(plain_model)
    ours = GazeConsistencyTrainer(
        model=ours_model,
        args=GazeConsistencyTrainingArguments(str(tmp_path / "ours"), lambda_max=0.0, **same),
        train_dataset=train_ds,
        label_names=names,
    )
    ours.train()
    # Trainer seeds in __init__ (not in train()): build each trainer right before its run
    plain = Trainer(model=plain_model, args=TrainingArguments(str(tmp_path / "plain"), **same), train_dataset=train_ds)
    plain.train()

    # the penalty was computed (and logged) but weighted 0
    assert [e["lambda"] for e in train_logs(ours)] == [0.0, 0.0]
    assert [e["loss"] for e in train_logs(ours)] == pytest.approx([e["loss"] for e in train_logs(plain)], abs=1e-6)
    assert ours.state.global_step == plain.state.global_step == 4
    assert_same_tensors(state(ours_model), state(plain_model))
    assert any(not torch.equal(v, start[k]) for k, v in state(plain_model).items() if v.is_floating_point())


# ------------------------------------------------------------------------------------------------
# 2. penalty, curriculum, evaluation metrics, evaluation leaves the EMA alone
# ------------------------------------------------------------------------------------------------
def test_penalty_logs_curriculum_and_evaluation(base, shapes, names, tmp_path):
    trainer = gaze_trainer(
        base, shapes, names, tmp_path, lambda_max=4.0, t0=1, t1=3, num_train_epochs=3, save_strategy="no"
    )
    trainer.train()
    logs = train_logs(trainer)
    assert [round(e["epoch"]) for e in logs] == [1, 2, 3]
    for entry in logs:
        assert {"penalty", "lambda", "penalty_samples", "penalty_classes"} <= entry.keys()
        assert math.isfinite(entry["penalty"]) and entry["penalty"] >= 0
        assert 0 <= entry["penalty_classes"] <= len(names)
    # lambda = 0 for e <= t0, linear in between, lambda_max from t1 on (1-based epochs)
    assert [e["lambda"] for e in logs] == [0.0, 2.0, 4.0]
    assert sum(e["penalty_samples"] for e in logs) > 0, "no class ever took part: the test data is too hard"

    evals = eval_logs(trainer)
    assert [round(e["epoch"]) for e in evals] == [1, 2, 3]
    for entry in evals:
        for key in ("eval_accuracy", "eval_kappa", "eval_gaze_consistency", "eval_loss"):
            assert key in entry
        for name in names:
            assert f"eval_gaze_consistency_{name}" in entry
        assert "penalty" not in entry

    # evaluate(): the metrics of one gaze_consistency pass, and the EMA state is untouched
    before = snapshot(trainer)
    assert before["initialized"].any()
    model = trainer.model
    model.train()
    metrics = trainer.evaluate()
    assert_same_tensors(trainer.gaze_state(), before, atol=0)
    assert model.training  # the evaluation restores the mode it found
    expected = gaze_consistency(
        model, DataLoader(trainer.eval_dataset, batch_size=BATCH), label_names=names, progress=False
    ).to_metrics()
    for key, value in expected.items():
        if value is None:
            assert metrics[key] is None, key
        else:
            assert metrics[key] == pytest.approx(value, abs=1e-6), key

    # compute_loss in eval mode: plain cross-entropy, no penalty, no EMA update
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(BATCH)])
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
        expected_loss = torch.nn.functional.cross_entropy(model(batch["pixel_values"]), batch["labels"])
    torch.testing.assert_close(loss, expected_loss)
    assert_same_tensors(trainer.gaze_state(), before, atol=0)


def test_history_keeps_fractional_epochs(base, shapes, names, tmp_path):
    """Logging and evaluating every step (2 per epoch): one history row per half epoch."""
    trainer = gaze_trainer(
        base,
        shapes,
        names,
        tmp_path,
        eval_strategy="steps",
        eval_steps=1,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="no",
        lr_scheduler_type="constant",
    )
    trainer.train()
    history = epoch_history(trainer.state.log_history)
    assert [row["epoch"] for row in history] == [0.5, 1, 1.5, 2]
    for row in history:
        assert {"train_loss", "train_penalty", "eval_accuracy", "eval_gaze_consistency"} <= row.keys()


@pytest.mark.parametrize("epochs, t0, lambda_max, fails", [(2, 2, 5.0, True), (2, 0, 5.0, False), (2, 2, 0.0, False)])
def test_a_lambda_that_never_switches_on_is_an_error(tmp_path, epochs, t0, lambda_max, fails):
    options = dict(COMMON, lambda_max=lambda_max, t0=t0, t1=t0 + 1, num_train_epochs=epochs)
    if fails:
        with pytest.raises(GazeConsError, match="never switches on.*--t0 0"):
            GazeConsistencyTrainingArguments(str(tmp_path), **options)
    else:
        GazeConsistencyTrainingArguments(str(tmp_path), **options)


def test_collapse_is_logged_and_warned_about_once(base, shapes, names, tmp_path, monkeypatch):
    trainer = gaze_trainer(base, shapes, names, tmp_path, num_train_epochs=3, **NO_EVAL)
    forward = trainer.regularizer.forward

    def collapsed(*args):  # report every participating map as all zero
        out = forward(*args)
        return dataclasses.replace(out, n_zero_maps=out.n_samples)

    monkeypatch.setattr(trainer.regularizer, "forward", collapsed)
    with pytest.warns(UserWarning, match="all zero.*--variant pearson") as caught:
        trainer.train()
    assert len([w for w in caught if "all zero" in str(w.message)]) == 1
    shares = [e["zero_map_share"] for e in train_logs(trainer)]
    assert len(shares) == 3 and all(share == 1.0 for share in shares)


def test_evaluation_reports_the_training_variant_beside_the_paper_one(base, shapes, names, tmp_path):
    trainer = gaze_trainer(base, shapes, names, tmp_path, variant="reference", num_train_epochs=1, **NO_EVAL)
    trainer.train()
    metrics = trainer.evaluate()
    loader = DataLoader(trainer.eval_dataset, batch_size=BATCH)
    for variant, key in (("paper", "eval_gaze_consistency"), ("reference", "eval_reference_gaze_consistency")):
        expected = gaze_consistency(trainer.model, loader, variant=variant, label_names=names, progress=False).value
        assert metrics[key] == pytest.approx(expected, abs=1e-6), key
    assert metrics["eval_robust_gaze_consistency"] is not None and metrics["eval_pearson_gaze_consistency"] is not None


def test_penalty_changes_training(base, shapes, names, tmp_path):
    """Same run with and without the penalty: different weights (the penalty reaches the trunk)."""
    with_penalty = gaze_trainer(base, shapes, names, tmp_path / "a", **NO_EVAL)
    with_penalty.train()
    without = gaze_trainer(base, shapes, names, tmp_path / "b", lambda_max=0.0, **NO_EVAL)
    without.train()
    assert sum(e["penalty_samples"] for e in train_logs(with_penalty)) > 0
    assert all(e["lambda"] == 5.0 for e in train_logs(with_penalty))
    a, b = state(with_penalty.model), state(without.model)
    assert not torch.allclose(a["conv1.0.weight"], b["conv1.0.weight"])


def test_gaze_state_is_a_snapshot(base, shapes, names, tmp_path):
    """``gaze_state()`` must not alias the live EMA buffers: a later step must not change it."""
    trainer = gaze_trainer(base, shapes, names, tmp_path, num_train_epochs=1, **NO_EVAL)
    trainer.train()
    taken = trainer.gaze_state()
    copied = {k: v.clone() for k, v in taken.items()}
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(BATCH)])
    trainer.model.train()
    trainer.compute_loss(trainer.model, batch)  # a training-mode loss updates the EMA maps
    assert not torch.equal(trainer.gaze_state()["ema"], copied["ema"])
    assert_same_tensors(taken, copied, atol=0)


# ------------------------------------------------------------------------------------------------
# 3. checkpoints hold the EMA state; resuming is exact
# ------------------------------------------------------------------------------------------------
class RecordStateOnSave(TrainerCallback):
    def __init__(self):
        self.trainer = None
        self.saved: dict[int, dict[str, torch.Tensor]] = {}

    def on_save(self, args, state, control, **kwargs):
        self.saved[state.global_step] = snapshot(self.trainer)


def test_checkpoints_hold_the_ema_state_and_resume_is_exact(base, shapes, names, tmp_path):
    straight = gaze_trainer(base, shapes, names, tmp_path / "straight", num_train_epochs=3)
    recorder = RecordStateOnSave()
    recorder.trainer = straight
    straight.add_callback(recorder)
    straight.train()
    assert sum(e["penalty_samples"] for e in train_logs(straight)) > 0

    checkpoints = sorted((tmp_path / "straight").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [p.name for p in checkpoints] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    for folder in checkpoints:
        saved = load_file(str(folder / GAZE_STATE_FILE))
        assert_same_tensors(saved, recorder.saved[int(folder.name.split("-")[1])], atol=0)
    assert_same_tensors(load_file(str(checkpoints[-1] / GAZE_STATE_FILE)), straight.gaze_state(), atol=0)
    first = load_file(str(checkpoints[0] / GAZE_STATE_FILE))
    assert first["initialized"].any() and first["ema"].numel() > 0

    # the load hook alone restores the state
    probe = gaze_trainer(base, shapes, names, tmp_path / "probe", num_train_epochs=3)
    probe._load_from_checkpoint(str(checkpoints[0]))
    assert_same_tensors(probe.gaze_state(), first, atol=0)

    resumed = gaze_trainer(base, shapes, names, tmp_path / "resumed", num_train_epochs=3)
    resumed.train(resume_from_checkpoint=str(checkpoints[0]))
    assert resumed.state.global_step == straight.state.global_step == 6
    assert_same_tensors(resumed.gaze_state(), straight.gaze_state())
    assert_same_tensors(state(resumed.model), state(straight.model))
    # the resumed log history starts with the checkpoint's (epoch 1), then the same losses follow
    assert [e["loss"] for e in train_logs(resumed)] == pytest.approx(
        [e["loss"] for e in train_logs(straight)], abs=1e-6
    )

    # without the state file the resumed run starts with empty EMA maps and ends elsewhere
    bare = tmp_path / "bare-checkpoint"
    shutil.copytree(checkpoints[0], bare)
    (bare / GAZE_STATE_FILE).unlink()
    amnesiac = gaze_trainer(base, shapes, names, tmp_path / "amnesiac", num_train_epochs=3, save_strategy="no")
    amnesiac.train(resume_from_checkpoint=str(bare))
    assert not torch.allclose(amnesiac.gaze_state()["ema"], straight.gaze_state()["ema"], atol=1e-6)


# ------------------------------------------------------------------------------------------------
# 4. train(): the output folder
# ------------------------------------------------------------------------------------------------
def run_train(tmp_path, model="test_resnet", epochs=2, **data_options):
    data_args = ModelDataArguments(model=model, dataset=SHAPES, image_size=SIZE, **data_options)
    args = GazeConsistencyTrainingArguments(
        str(tmp_path), **dict(COMMON, lambda_max=5.0, t0=0, t1=1, num_train_epochs=epochs)
    )
    return train(data_args, args)


def first_conv(model: torch.nn.Module) -> torch.nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def front_matter(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def model_index_metrics(card: dict) -> dict[str, float]:
    (entry,) = card["model-index"]
    return {m["type"]: m["value"] for result in entry["results"] for m in result["metrics"]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train-rgb")
    run = run_train(out)
    return out, run


def test_train_writes_a_complete_output(trained, names):
    out, run = trained
    for name in (
        "config.json",
        "model.safetensors",
        GAZE_STATE_FILE,
        "results.json",
        "learning_curves.png",
        "class_means.png",
        "kappa_vs_consistency.png",
        "README.md",
    ):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name

    results = json.loads((out / "results.json").read_text())
    assert {"config", "final", "history"} <= results.keys()
    assert results == json.loads(json.dumps(run.results.to_dict()))
    config = results["config"]
    assert config["label_names"] == names and config["lambda_max"] == 5.0 and config["channels"] == 3
    environment = results["environment"]  # what a bit-for-bit rerun needs besides the config
    assert environment["cpu_threads"] == torch.get_num_threads() and environment["processes"] == 1
    assert environment["device"] == "cpu" and environment["torch"] == torch.__version__
    history = results["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    for row in history:
        for key in (
            "epoch",
            "lambda",
            "train_loss",
            "train_penalty",
            "eval_accuracy",
            "eval_kappa",
            "eval_gaze_consistency",
            "eval_loss",
        ):
            assert key in row, key
        assert row["lambda"] == 5.0
    final = results["final"]
    for key in ("eval_accuracy", "eval_kappa", "eval_gaze_consistency", "eval_loss"):
        assert final[key] == history[-1][key]
    assert final["eval_gaze_consistency"] is not None

    # the data has a test split: the final model is scored on it, and the card's model-index reports it
    assert config["eval_split"] == "validation" and config["test_split"] == "test"
    final_test = results["final_test"]
    expected = gaze_consistency(load_model(str(out)), load_image_dataset(SHAPES, "test"), progress=False)
    assert final_test["test_accuracy"] == pytest.approx(expected.accuracy)
    assert final_test["test_loss"] == pytest.approx(expected.loss, abs=1e-5)
    assert final_test["test_gaze_consistency"] == pytest.approx(expected.values["paper"], abs=1e-6)
    card = front_matter(out / "README.md")
    metrics = model_index_metrics(card)
    assert metrics["accuracy"] == pytest.approx(final_test["test_accuracy"])
    assert metrics["cohen_kappa"] == pytest.approx(final_test["test_kappa"])
    assert metrics["gaze_consistency"] == pytest.approx(final_test["test_gaze_consistency"])
    assert card["model-index"][0]["results"][0]["dataset"]["split"] == "test"


def test_train_output_loads_in_timm_transformers_and_hf_gazecons(trained, names):
    out, run = trained
    timm_model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    hf_model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert hf_model.config.id2label == dict(enumerate(names))
    assert hf_model.config.label2id == {n: i for i, n in enumerate(names)}
    assert timm_model.pretrained_cfg.get("label_names") == names

    loaded = load_model(str(out))
    assert loaded.label_names == names and loaded.library == "timm"
    assert loaded.gaze_state is not None
    assert_same_tensors(loaded.gaze_state, load_file(str(out / GAZE_STATE_FILE)), atol=0)
    assert loaded.gaze_state["initialized"].any()

    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        a, b, c = timm_model(x), hf_model(pixel_values=x).logits, loaded.model.eval()(x)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(a, c, rtol=0, atol=1e-6)

    # the saved final metrics are the saved model's metrics on the evaluation split
    result = gaze_consistency(loaded, load_image_dataset(SHAPES, "validation"), progress=False)
    final = run.results.final
    assert final["eval_accuracy"] == pytest.approx(result.accuracy, abs=1e-6)
    assert final["eval_gaze_consistency"] == pytest.approx(result.value, abs=1e-6)
    assert final["eval_loss"] == pytest.approx(result.loss, abs=1e-5)


def test_train_grayscale_gives_a_one_channel_model(tmp_path, names):
    run = run_train(tmp_path, epochs=1, grayscale=True)
    assert run.results.config.channels == 1
    timm_model = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert first_conv(timm_model).in_channels == 1
    loaded = load_model(str(tmp_path))
    assert loaded.preprocessing.num_channels == 1 and loaded.preprocessing.mode == "L"
    assert first_conv(loaded.model).in_channels == 1
    hf_model = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    x = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(timm_model(x), hf_model(pixel_values=x).logits, rtol=0, atol=1e-6)
        torch.testing.assert_close(timm_model(x), loaded.model.eval()(x), rtol=0, atol=1e-6)
    assert hf_model.config.id2label == dict(enumerate(names))


def test_train_a_transformers_classifier(tmp_path, names):
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=3)
    ResNetForImageClassification(config).save_pretrained(tmp_path / "hf-resnet")
    out = tmp_path / "out"
    run = run_train(out, model=str(tmp_path / "hf-resnet"))
    assert run.results.config.library == "transformers"
    assert len(run.results.history) == 2
    for name in ("config.json", "model.safetensors", GAZE_STATE_FILE, "results.json", "README.md"):
        assert (out / name).is_file(), name
    hf_model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert hf_model.config.id2label == dict(enumerate(names))
    loaded = load_model(str(out))
    assert loaded.library == "transformers" and loaded.label_names == names and loaded.gaze_state is not None
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(hf_model(pixel_values=x).logits, loaded.model.eval()(pixel_values=x).logits)
    card = front_matter(out / "README.md")
    assert model_index_metrics(card)["accuracy"] == pytest.approx(run.results.final["eval_accuracy"])


# ------------------------------------------------------------------------------------------------
# 5. second order
# ------------------------------------------------------------------------------------------------
def test_second_order_trains_and_differs_from_first_order(base, shapes, names, tmp_path):
    second = gaze_trainer(base, shapes, names, tmp_path / "second", second_order=True, **NO_EVAL)
    second.train()
    first = gaze_trainer(base, shapes, names, tmp_path / "first", **NO_EVAL)
    first.train()
    logs = train_logs(second)
    assert all(math.isfinite(e["loss"]) and math.isfinite(e["penalty"]) for e in logs)
    assert sum(e["penalty_samples"] for e in logs) > 0
    assert all(torch.isfinite(v).all() for v in state(second.model).values() if v.is_floating_point())
    # the channel weights depend on the classifier: double backprop changes its update
    a, b = state(second.model), state(first.model)
    assert not torch.allclose(a["fc.weight"], b["fc.weight"], rtol=0, atol=1e-7)


def test_follow_flips_hands_each_batch_s_flip_flags_to_the_penalty(base, shapes, names, tmp_path, monkeypatch):
    options = dict(follow_flips=True, variant="pearson", num_train_epochs=1, **NO_EVAL)
    unflagged = gaze_trainer(base, shapes, names, tmp_path / "a", **options)
    with pytest.raises(GazeConsError, match="--follow_flips needs training items that report"):
        unflagged.train()  # these items do not say whether they were flipped
    trainer = gaze_trainer(base, shapes, names, tmp_path / "b", **options)
    trainer.train_dataset = ImageClassificationDataset.with_preprocessing(
        shapes["train"], base.preprocessing, True, report_flips=True
    )
    forward, seen = trainer.regularizer.forward, []

    def spy(maps, logits, labels, raw, flipped):
        seen.append(flipped)
        return forward(maps, logits, labels, raw, flipped)

    monkeypatch.setattr(trainer.regularizer, "forward", spy)
    trainer.train()
    flags = torch.cat(seen)
    assert len(flags) == len(shapes["train"]) and flags.dtype == torch.bool and 0 < int(flags.sum()) < len(flags)


def test_per_sample_mode_reaches_grad_cam_and_the_results(tmp_path):
    """``--per_sample exact`` at stage -2 (train-mode BatchNorm after it): the exact path, recorded."""
    data_args = ModelDataArguments(model="test_resnet", dataset=SHAPES, image_size=SIZE)
    options = dict(COMMON, lambda_max=5.0, t0=0, t1=1, num_train_epochs=1, save_strategy="no")
    args = GazeConsistencyTrainingArguments(str(tmp_path), **options, target_layer="-2", per_sample="exact")
    train(data_args, args)
    config = json.loads((tmp_path / "results.json").read_text())["config"]
    assert (config["per_sample"], config["per_sample_path"], config["target_layer"]) == ("exact", "exact", "layer3")
    with pytest.raises(GazeConsError, match="per_sample must be one of held_stats, exact"):
        GazeConsistencyTrainingArguments(str(tmp_path / "x"), **options, per_sample="loop")


# ------------------------------------------------------------------------------------------------
# 8. loader workers keep training deterministic
# ------------------------------------------------------------------------------------------------
def test_training_with_two_loader_workers_is_bit_identical_across_runs(shapes, tmp_path):
    """Two ``train`` runs with ``--dataloader_num_workers 2`` on a JPEG folder (decoded near the input
    size, augmented in the workers) end with the same weights, bit for bit."""
    folder = tmp_path / "jpegs"
    for split in ("train", "validation"):
        for i, row in enumerate(shapes[split]):
            path = folder / split / shapes[split].features["label"].names[row["label"]] / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            row["image"].resize((96, 96)).save(path, quality=90)  # twice the input size: drafted to 1/2

    def run(out: Path) -> dict[str, torch.Tensor]:
        data_args = ModelDataArguments(model="test_resnet", dataset=str(folder), image_size=SIZE)
        options = dict(COMMON, lambda_max=5.0, t0=0, t1=1, num_train_epochs=1, dataloader_num_workers=2)
        train(data_args, GazeConsistencyTrainingArguments(str(out), **options, save_strategy="no"))
        history = json.loads((out / "results.json").read_text())["history"]
        assert history[-1]["lambda"] == 5.0 and history[-1]["train_penalty"] > 0  # the penalty took part
        return load_file(out / "model.safetensors")

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
