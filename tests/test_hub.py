"""Publishing to the Hub: ``hf-gazecons push``, ``train(push_to_hub=True)``, ``score --push-results``,
loading pushed models, the model card, failures and tokens.

Everything talks to the LocalHub of tests/conftest.py (HF_ENDPOINT points at it); repos persist across
the session, so every test uses its own repo name.  One tiny training output is made per module.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hf_gazecons.cli.main import main
from hf_gazecons.errors import HubError, ModelLoadError
from hf_gazecons.finetune import ModelDataArguments, train
from hf_gazecons.models import load_model
from hf_gazecons.trainer import GazeConsistencyTrainingArguments

DATASET = "builtin:shapes?size=48&n_train=8&n_val=4&n_test=2"
SHAPES = ["circle", "square", "triangle", "cross"]
TOKEN = "hf_secret_test_token_5f3a9c1e7b2d4086aa"
WRONG_TOKEN = "hf_wrong_test_token_0b1c2d3e4f5a6978bb"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
REQUIRED_PUSHED = {
    "model.safetensors",
    "config.json",
    "gazecons_state.safetensors",
    "results.json",
    "class_means.png",
    "kappa_vs_consistency.png",
    "learning_curves.png",
    "README.md",
    "class_maps.safetensors",
    "samples.parquet",
}
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there

_names = itertools.count()


def _repo_id(prefix: str) -> str:
    """A repo name unique within the session (the LocalHub keeps repos between tests)."""
    return f"org/hubtest-{prefix}-{os.getpid()}-{next(_names)}"


def _args(output_dir: Path, **extra) -> GazeConsistencyTrainingArguments:
    return GazeConsistencyTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=2,
        lambda_max=10,
        t0=0,
        t1=1,
        save_strategy="epoch",
        disable_tqdm=True,
        **extra,
    )


def _data_args() -> ModelDataArguments:
    return ModelDataArguments(model="test_resnet", dataset=DATASET, image_size=48, faithfulness=True)


def _snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (recursively), path -> bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _front_matter(text: str) -> tuple[dict, str]:
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
    assert match, f"no YAML front matter in:\n{text[:300]}"
    meta = yaml.safe_load(match.group(1))
    assert isinstance(meta, dict)
    return meta, text[match.end() :]


def _metrics(entry: dict) -> dict[str, float]:
    return {m["type"]: m["value"] for m in entry["metrics"]}


def _is_forbidden(path: str) -> bool:
    return path.endswith(PICKLE_SUFFIXES) or "checkpoint-" in path


def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


_PROGRESS = re.compile(r"\d+it \[")  # tqdm lines of `score`, which are not about the Hub


def _assert_one_line_error(rc: int, err: str, *fragments: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").strip().splitlines() if line and not _PROGRESS.search(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]
    return lines[0]


def _logits(model: torch.nn.Module, x: torch.Tensor, transformers: bool = False) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(pixel_values=x).logits if transformers else model(x)


# ----------------------------------------------------------------------------------------------
# module fixtures: one training output, one push of it
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A complete training output, with checkpoint folders full of pickles beside it."""
    output_dir = tmp_path_factory.mktemp("hub") / "out"
    run = train(_data_args(), _args(output_dir))
    assert run.output_dir == output_dir
    files = _snapshot(output_dir)
    assert {"README.md", "model.safetensors", "config.json", "results.json", "gazecons_state.safetensors"} <= set(files)
    # the precondition of "no pickles are pushed": there are pickles to leave behind
    assert any(p.startswith("checkpoint-") and p.endswith((".bin", ".pt", ".pth")) for p in files)
    return output_dir


@pytest.fixture(scope="module")
def pushed(trained, local_hub_session):
    """``hf-gazecons push OUT --repo-id ORG/NAME`` once; what it printed, sent and left behind."""
    hub = local_hub_session
    repo_id = _repo_id("push")
    before = _snapshot(trained)
    hub.reset()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["push", str(trained), "--repo-id", repo_id])
    requests = [(r.method, r.path, r.status) for r in hub.requests]
    hub.reset()
    return dict(repo_id=repo_id, rc=rc, out=out.getvalue(), err=err.getvalue(), requests=requests, before=before)


# ----------------------------------------------------------------------------------------------
# hf-gazecons push
# ----------------------------------------------------------------------------------------------


def test_push_makes_one_commit_with_safetensors_only(pushed, trained, local_hub):
    repo_id = pushed["repo_id"]
    assert pushed["rc"] == 0, pushed["err"]
    assert pushed["err"] == ""
    assert repo_id in pushed["out"]

    commits = local_hub.commits(repo_id)
    assert len(commits) == 2, [c.message for c in commits]  # the push, on top of create_repo's initial commit
    assert commits[1].message == "initial commit" and set(commits[1].files) == {".gitattributes"}
    assert len([r for r in pushed["requests"] if r[0] == "POST" and "/commit/" in r[1]]) == 1

    files = local_hub.files(repo_id)
    assert REQUIRED_PUSHED <= set(files), sorted(files)
    forbidden = [p for p in files if _is_forbidden(p)]
    assert not forbidden, f"pickles or checkpoints pushed: {forbidden}"
    for path, content in files.items():  # everything else is a byte copy of a top-level output file
        if path not in ("README.md", ".gitattributes"):
            assert "/" not in path
            assert content == (trained / path).read_bytes(), path


def test_a_pushed_model_is_its_own_app_reference(pushed, trained, local_hub):
    from hf_gazecons.app import load_reference

    reference = load_reference(pushed["repo_id"])
    local = load_reference(str(trained))
    assert reference.class_maps.label_names == local.class_maps.label_names == SHAPES
    assert torch.equal(reference.class_maps.maps.nan_to_num(-1), local.class_maps.maps.nan_to_num(-1))
    assert reference.deviations.keys() == local.deviations.keys()
    for name, values in local.deviations.items():
        assert reference.deviations[name].tolist() == values.tolist()


def test_push_leaves_the_output_dir_unchanged(pushed, trained):
    assert pushed["rc"] == 0, pushed["err"]
    after = _snapshot(trained)
    assert after == pushed["before"]  # the local README.md (card without a repo id) included
    assert "<your-org>/" in after["README.md"].decode()


def test_pushed_model_loads_three_ways_with_identical_logits(pushed, trained):
    import timm
    from transformers import AutoModelForImageClassification

    repo_id = pushed["repo_id"]
    assert pushed["rc"] == 0, pushed["err"]
    local = load_model(str(trained))
    local_state = load_file(str(trained / "gazecons_state.safetensors"))
    assert local.label_names == SHAPES

    torch.manual_seed(0)
    x = torch.randn(2, 3, 48, 48)
    expected = _logits(local.model, x)
    assert expected.shape == (2, 4)

    timm_model = timm.create_model(f"hf-hub:{repo_id}", pretrained=True)
    torch.testing.assert_close(_logits(timm_model, x), expected, rtol=0, atol=0)

    hf_model = AutoModelForImageClassification.from_pretrained(repo_id)
    assert hf_model.config.id2label == dict(enumerate(SHAPES))
    torch.testing.assert_close(_logits(hf_model, x, transformers=True), expected, rtol=0, atol=0)

    for spec in (repo_id, f"hf-hub:{repo_id}"):
        loaded = load_model(spec)
        assert loaded.library == "timm" and loaded.spec == spec
        assert loaded.label_names == local.label_names
        assert loaded.gaze_state is not None and loaded.gaze_state.keys() == local_state.keys()
        for key, value in local_state.items():
            assert torch.equal(loaded.gaze_state[key], value), key
        torch.testing.assert_close(_logits(loaded.model, x), expected, rtol=0, atol=0)


def test_pushed_card_metadata_and_snippets(pushed, trained, local_hub):
    from huggingface_hub import ModelCard

    repo_id = pushed["repo_id"]
    assert pushed["rc"] == 0, pushed["err"]
    card = local_hub.files(repo_id)["README.md"].decode()
    meta, body = _front_matter(card)
    results = json.loads((trained / "results.json").read_text())
    final = results["final_test"]  # the data set has a test split: the model-index reports it
    assert results["config"]["test_split"] == "test" and final["test_accuracy"] is not None

    assert meta["library_name"] == "timm"
    assert {"image-classification", "timm", "gaze-consistency"} <= set(meta["tags"])
    assert meta.get("license")
    assert meta.get("pipeline_tag") == "image-classification"
    (model_entry,) = meta["model-index"]
    (result,) = model_entry["results"]
    assert result["task"]["type"] == "image-classification"
    assert result["dataset"]["split"] == "test"
    assert _metrics(result) == {
        "accuracy": final["test_accuracy"],
        "cohen_kappa": final["test_kappa"],
        "gaze_consistency": final["test_gaze_consistency"],
    }
    assert "(test split)" in body and f"({results['config']['eval_split']} split)" in body
    assert len(ModelCard(card).data.eval_results) == 3  # huggingface_hub reads it back too

    # localisation beside its chance and perfect-map values, per class, with the tolerance named;
    # the final model's faithfulness beside a random and the perfect map
    row = next(line for line in body.splitlines() if line.startswith("| energy pointing game"))  # the test split's
    assert row.split("|")[2:5] == [
        f" {final[f'test_{key}']:.4f} "
        for key in ("energy_pointing_game", "chance_energy_pointing_game", "perfect_energy_pointing_game")
    ]
    assert "| pointing game (peak within 0 px of the object) |" in body
    assert all(f"| {name} |" in body for name in results["config"]["label_names"])
    summary = results["faithfulness"]["summary"]
    row = next(line for line in body.splitlines() if line.startswith("| deletion AUC |"))
    assert [cell.split()[0] for cell in row.split("|")[2:5]] == [
        f"{summary[name]['deletion_auc']['mean']:.4f}" for name in ("gradcam", "random", "perfect")
    ]

    assert f'timm.create_model("hf-hub:{repo_id}", pretrained=True)' in body
    assert f'AutoModelForImageClassification.from_pretrained("{repo_id}")' in body
    assert f'load_model("{repo_id}")' in body
    assert "<your-org>" not in card


def test_push_private(trained, local_hub, capsys, monkeypatch):
    repo_id = _repo_id("private")
    rc, out, err = _run_cli(capsys, "push", trained, "--repo-id", repo_id, "--private")
    assert rc == 0, err
    assert local_hub.repo(repo_id).private is True
    assert REQUIRED_PUSHED <= set(local_hub.files(repo_id))

    with pytest.raises(ModelLoadError) as excinfo:  # no token: a private repo is not readable
        load_model(repo_id)
    assert "\n" not in str(excinfo.value)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert load_model(repo_id).label_names == SHAPES


def test_push_to_a_branch_leaves_main_untouched(trained, local_hub, capsys):
    repo_id = _repo_id("branch")
    rc, out, err = _run_cli(capsys, "push", trained, "--repo-id", repo_id, "--revision", "dev")
    assert rc == 0, err

    refs = local_hub.refs(repo_id)
    assert set(refs) == {"main", "dev"}
    assert set(local_hub.files(repo_id, "main")) == {".gitattributes"}
    assert [c.message for c in local_hub.commits(repo_id, "main")] == ["initial commit"]
    assert len(local_hub.commits(repo_id, "dev")) == 2
    dev_files = local_hub.files(repo_id, "dev")
    assert REQUIRED_PUSHED <= set(dev_files)
    assert not [p for p in dev_files if _is_forbidden(p)]

    assert load_model(repo_id, revision="dev").label_names == SHAPES
    assert load_model(f"hf-hub:{repo_id}@dev").gaze_state is not None


def test_push_of_an_incomplete_output_fails_before_any_request(tmp_path, local_hub, capsys):
    (tmp_path / "config.json").write_text("{}")
    rc, out, err = _run_cli(capsys, "push", tmp_path, "--repo-id", _repo_id("incomplete"))
    _assert_one_line_error(rc, err, "model.safetensors", "results.json")
    assert local_hub.requests == []


# ----------------------------------------------------------------------------------------------
# failures: one line on stderr, exit 2, the output dir intact, nothing half-written on the Hub
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("401-no-token", ["401", "token"]),
        ("401-wrong-token", ["401", "token"]),
        ("403-commit", ["403"]),
        ("500-commit", ["500"]),
    ],
)
def test_push_failure_is_one_line_and_changes_nothing(case, fragments, trained, local_hub, capsys, caplog, monkeypatch):
    repo_id = _repo_id(case)
    local_hub.create_repo(repo_id, files={"README.md": b"# an earlier card\n"})
    refs_before = local_hub.refs(repo_id)
    files_before = local_hub.files(repo_id)
    output_before = _snapshot(trained)

    if case == "401-no-token":
        local_hub.require_token(TOKEN)
    elif case == "401-wrong-token":
        local_hub.require_token(TOKEN)
        monkeypatch.setenv("HF_TOKEN", WRONG_TOKEN)
    elif case == "403-commit":
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        local_hub.fail("POST", r"/commit/", 403, message="You don't have the rights to write to this repo")
    else:
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        local_hub.require_token(TOKEN)
        local_hub.fail("POST", r"/commit/", 500)

    rc, out, err = _run_cli(capsys, "push", trained, "--repo-id", repo_id)
    _assert_one_line_error(rc, err, repo_id, *fragments)
    assert "pushed" not in out
    for secret in (TOKEN, WRONG_TOKEN):
        assert secret not in out + err + caplog.text

    assert _snapshot(trained) == output_before
    assert local_hub.refs(repo_id) == refs_before
    assert local_hub.files(repo_id) == files_before


@pytest.mark.parametrize("case", ["403-create", "500-commit"])
def test_push_failure_on_a_new_repo_leaves_no_commit(case, trained, local_hub, capsys):
    repo_id = _repo_id(f"new-{case}")
    if case == "403-create":  # no right to create in this namespace (and the repo does not exist yet)
        local_hub.fail("POST", r"/api/repos/create", 403, message="You don't have the rights to create a model")
    else:
        local_hub.fail("POST", r"/commit/", 500)
    rc, out, err = _run_cli(capsys, "push", trained, "--repo-id", repo_id)
    _assert_one_line_error(rc, err, repo_id, case[:3])
    if case == "403-create":
        assert ("model", repo_id) not in local_hub.repos
    if ("model", repo_id) in local_hub.repos:  # create_repo may have run; the commit must not have
        assert [c.message for c in local_hub.commits(repo_id)] == ["initial commit"]
        assert set(local_hub.files(repo_id)) == {".gitattributes"}


def test_push_with_create_forbidden_still_commits_to_an_existing_repo(trained, local_hub, capsys):
    """huggingface_hub's create_repo(exist_ok=True) treats a 403 on create as fine when the repo exists."""
    repo_id = _repo_id("create-403-existing")
    local_hub.create_repo(repo_id)
    local_hub.fail("POST", r"/api/repos/create", 403)
    rc, out, err = _run_cli(capsys, "push", trained, "--repo-id", repo_id)
    assert rc == 0, err
    assert REQUIRED_PUSHED <= set(local_hub.files(repo_id))


def test_push_to_an_unreachable_hub_in_a_subprocess(trained, tmp_path):
    before = _snapshot(trained)
    env = {**os.environ, "HF_ENDPOINT": UNREACHABLE, "HF_TOKEN": TOKEN}
    proc = subprocess.run(
        [sys.executable, "-m", "hf_gazecons.cli.main", "push", str(trained), "--repo-id", _repo_id("unreachable")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    line = _assert_one_line_error(proc.returncode, proc.stderr, "reach")
    assert TOKEN not in proc.stdout + proc.stderr
    assert "pushed" not in proc.stdout
    assert len(line) < 300
    assert _snapshot(trained) == before
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# tokens
# ----------------------------------------------------------------------------------------------


def test_token_is_sent_but_never_printed_or_written(trained, local_hub, capsys, caplog, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    local_hub.require_token(TOKEN)
    repo_id = _repo_id("token")
    rc, out, err = _run_cli(capsys, "push", trained, "--repo-id", repo_id)
    assert rc == 0, err

    secret = TOKEN.encode()
    assert TOKEN not in out + err + caplog.text
    assert not [p for p, c in _snapshot(trained).items() if secret in c]
    assert not [p for p, c in local_hub.files(repo_id).items() if secret in c]

    def auth(header):  # never put the header itself into an assertion message
        return "none" if header is None else "token" if header == f"Bearer {TOKEN}" else "other"

    sent = {(r.method, r.path): auth(r.headers.get("authorization")) for r in local_hub.requests}
    assert set(sent.values()) <= {"none", "token"}, sent
    writes = {
        k: v for k, v in sent.items() if k[0] == "POST" and re.search(r"/(repos/create|preupload|commit)/?", k[1])
    }
    assert len(writes) >= 3 and set(writes.values()) == {"token"}, writes

    # a failing call does not print it either
    local_hub.fail("POST", r"/commit/", 500)
    rc, out, err = _run_cli(capsys, "push", trained, "--repo-id", _repo_id("token-fail"))
    _assert_one_line_error(rc, err, "500")
    assert TOKEN not in out + err + caplog.text


# ----------------------------------------------------------------------------------------------
# train(push_to_hub=True)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_and_pushed(tmp_path_factory, local_hub_session):
    """``train(..., push_to_hub=True, hub_model_id=..., hub_token=..., hub_private_repo=True)`` once."""
    hub = local_hub_session
    repo_id = _repo_id("train")
    output_dir = tmp_path_factory.mktemp("hub-train") / "out"
    hub.reset()
    hub.require_token(TOKEN)
    try:
        run = train(
            _data_args(),
            _args(output_dir, push_to_hub=True, hub_model_id=repo_id, hub_token=TOKEN, hub_private_repo=True),
        )
        # (method, path, status, sent the token?): no raw headers, so a failure report cannot print the token
        requests = [
            (r.method, r.path, r.status, r.headers.get("authorization") == f"Bearer {TOKEN}") for r in hub.requests
        ]
    finally:
        hub.reset()
    return dict(repo_id=repo_id, results=run.results, output_dir=output_dir, requests=requests)


def test_train_pushes_once_at_the_end(trained_and_pushed, local_hub):
    repo_id, output_dir = trained_and_pushed["repo_id"], trained_and_pushed["output_dir"]
    requests = trained_and_pushed["requests"]

    # only our push: one repo, one commit, sent with the token; the Trainer's own push never ran
    commits = [r for r in requests if r[0] == "POST" and "/commit/" in r[1]]
    assert len(commits) == 1 and commits[0][2] == 200 and commits[0][3]
    assert {r[1].split("/")[4] for r in requests if r[1].startswith("/api/models/")} <= {repo_id.split("/")[1]}
    assert len(local_hub.commits(repo_id)) == 2
    assert local_hub.repo(repo_id).private is True

    files = local_hub.files(repo_id)
    assert REQUIRED_PUSHED <= set(files)
    assert not [p for p in files if _is_forbidden(p)]
    assert (output_dir / "checkpoint-2").is_dir()  # the checkpoints exist locally, and stayed there
    for path in ("model.safetensors", "gazecons_state.safetensors", "results.json", "config.json"):
        assert files[path] == (output_dir / path).read_bytes(), path
    meta, body = _front_matter(files["README.md"].decode())
    assert (
        _metrics(meta["model-index"][0]["results"][0])["accuracy"]
        == trained_and_pushed["results"].final["eval_accuracy"]
    )
    assert f'load_model("{repo_id}")' in body


def test_train_does_not_write_the_hub_token_to_the_output_dir(trained_and_pushed, local_hub):
    secret = TOKEN.encode()
    leaked = [p for p, c in _snapshot(trained_and_pushed["output_dir"]).items() if secret in c]
    assert not leaked, f"the hub token is written to {leaked}"
    assert not [p for p, c in local_hub.files(trained_and_pushed["repo_id"]).items() if secret in c]


def test_train_push_to_hub_needs_a_hub_model_id(tmp_path, local_hub):
    with pytest.raises(HubError, match="hub_model_id"):
        train(_data_args(), _args(tmp_path / "out", push_to_hub=True))
    assert local_hub.requests == []
    assert not (tmp_path / "out" / "model.safetensors").exists()


# ----------------------------------------------------------------------------------------------
# score --push-results
# ----------------------------------------------------------------------------------------------

SEEDED_CARD = b"""---
license: mit
language: en
tags:
- custom-tag
model-index:
- name: my-model
  results:
  - task:
      type: image-classification
    dataset:
      name: other-data
      type: other-data
      split: test
    metrics:
    - type: f1
      value: 0.5
      name: F1
---

# My classifier

Custom paragraph that must stay.
"""


def _score(capsys, trained: Path, output_dir: Path, *extra: str) -> tuple[int, str, str, dict]:
    rc, out, err = _run_cli(
        capsys, "score", "--model", trained, "--dataset", DATASET, "--output-dir", output_dir, *extra
    )
    scores = json.loads((output_dir / "consistency.json").read_text()) if rc == 0 else {}
    return rc, out, err, scores


def _new_result(meta: dict, scores: dict) -> dict:
    entries = [r for entry in meta["model-index"] for r in entry["results"]]
    ours = [r for r in entries if r["dataset"]["name"] == DATASET]
    assert len(ours) == 1, entries
    (result,) = ours
    assert result["dataset"]["split"] == scores["split"]
    assert _metrics(result) == {
        "accuracy": scores["accuracy"],
        "cohen_kappa": scores["kappa"],
        "gaze_consistency": scores["gaze_consistency"],
    }
    return result


def _assert_seeded_content_kept(card: str) -> None:
    meta, body = _front_matter(card)
    assert meta["license"] == "mit" and meta["language"] == "en"
    assert "custom-tag" in meta["tags"]
    others = [r for entry in meta["model-index"] for r in entry["results"] if r["dataset"]["name"] == "other-data"]
    assert len(others) == 1 and _metrics(others[0]) == {"f1": 0.5}
    assert "# My classifier" in body and "Custom paragraph that must stay." in body


def test_score_push_results_updates_an_existing_card(trained, tmp_path, local_hub, capsys):
    repo_id = _repo_id("score")
    local_hub.create_repo(repo_id, files={"README.md": SEEDED_CARD})
    n_commits = len(local_hub.commits(repo_id))

    rc, out, err, scores = _score(capsys, trained, tmp_path / "scores", "--push-results", repo_id)
    assert rc == 0, err
    assert repo_id in out
    assert len(local_hub.commits(repo_id)) == n_commits + 2  # the card, then the per-image files
    card = local_hub.files(repo_id)["README.md"].decode()
    _assert_seeded_content_kept(card)
    _new_result(_front_matter(card)[0], scores)
    _assert_results_uploaded(local_hub.files(repo_id), tmp_path / "scores", "validation")


def _assert_results_uploaded(files: dict[str, bytes], scores_dir: Path, split: str) -> None:
    """consistency.json and the per-image table, byte copies, under gazecons/<data set>-<split>/."""
    folder = "gazecons/" + re.sub(r"[^A-Za-z0-9._-]", "_", f"{DATASET}-{split}")
    for name in ("consistency.json", "samples.parquet"):
        assert files[f"{folder}/{name}"] == (scores_dir / name).read_bytes(), name


def test_score_push_results_with_create_pr_leaves_main_unchanged(trained, tmp_path, local_hub, capsys):
    repo_id = _repo_id("score-pr")
    local_hub.create_repo(repo_id, files={"README.md": SEEDED_CARD})
    main_before = local_hub.refs(repo_id)["main"]

    rc, out, err, scores = _score(
        capsys, trained, tmp_path / "scores", "--split", "test", "--push-results", repo_id, "--create-pr"
    )
    assert rc == 0, err
    assert "/discussions/1" in out
    refs = local_hub.refs(repo_id)
    assert refs["main"] == main_before
    assert local_hub.files(repo_id)["README.md"] == SEEDED_CARD
    assert "refs/pr/1" in refs
    assert [pr["status"] for pr in local_hub.prs(repo_id)] == ["open"]
    card = local_hub.files(repo_id, "refs/pr/1")["README.md"].decode()
    _assert_seeded_content_kept(card)
    assert _new_result(_front_matter(card)[0], scores)["dataset"]["split"] == "test"
    _assert_results_uploaded(local_hub.files(repo_id, "refs/pr/1"), tmp_path / "scores", "test")
    assert not any(path.startswith("gazecons/") for path in local_hub.files(repo_id))  # main is untouched
    assert len(local_hub.prs(repo_id)) == 1


def test_score_push_results_to_a_repo_without_a_card(trained, tmp_path, local_hub, capsys):
    repo_id = _repo_id("score-nocard")
    local_hub.create_repo(repo_id)
    assert "README.md" not in local_hub.files(repo_id)

    rc, out, err, scores = _score(capsys, trained, tmp_path / "scores", "--push-results", repo_id)
    assert rc == 0, err
    meta, _ = _front_matter(local_hub.files(repo_id)["README.md"].decode())
    _new_result(meta, scores)


def test_score_push_results_of_every_cam_method_names_each_method(trained, tmp_path, local_hub, capsys):
    """--cam-method all pushes one gaze consistency per method, each naming its method."""
    from hf_gazecons.cam_family import cam_methods, get_cam_method

    repo_id = _repo_id("score-all")
    local_hub.create_repo(repo_id)
    rc, _, err, scores = _score(capsys, trained, tmp_path / "scores", "--cam-method", "all", "--push-results", repo_id)
    assert rc == 0, err
    meta, _ = _front_matter(local_hub.files(repo_id)["README.md"].decode())
    metrics = [m for entry in meta["model-index"] for r in entry["results"] for m in r["metrics"]]
    pushed = {m["config"]: m for m in metrics if m["type"] == "gaze_consistency"}
    expected = {m: scores["by_cam_method"][m]["gaze_consistency"] for m in cam_methods()}
    assert {m: entry["value"] for m, entry in pushed.items()} == {m: v for m, v in expected.items() if v is not None}
    assert len(pushed) >= 2
    assert all(get_cam_method(m).title in entry["name"] for m, entry in pushed.items())


def test_score_push_results_failure_keeps_the_scores(trained, tmp_path, local_hub, capsys):
    repo_id = _repo_id("score-fail")
    local_hub.create_repo(repo_id, files={"README.md": SEEDED_CARD})
    refs_before = local_hub.refs(repo_id)
    local_hub.fail("POST", r"/commit/", 500)

    rc, out, err, _ = _score(capsys, trained, tmp_path / "scores", "--push-results", repo_id)
    _assert_one_line_error(rc, err, repo_id, "500")
    assert (tmp_path / "scores" / "consistency.json").is_file()
    assert local_hub.refs(repo_id) == refs_before


# ----------------------------------------------------------------------------------------------
# loading what is not there
# ----------------------------------------------------------------------------------------------


def test_load_model_of_a_missing_repo(local_hub):
    with pytest.raises(ModelLoadError) as excinfo:
        load_model("org/does-not-exist")
    message = str(excinfo.value)
    assert "\n" not in message and "org/does-not-exist" in message
    with pytest.raises(ModelLoadError) as excinfo:
        load_model("hf-hub:org/does-not-exist")
    assert "\n" not in str(excinfo.value)


def test_the_training_output_s_table_carries_the_cam_method_and_faithfulness(trained):
    """``--faithfulness`` in training: each evaluation image's deletion and insertion AUC in samples.parquet,
    whose means are the summary in results.json."""
    import pandas as pd

    frame = pd.read_parquet(trained / "samples.parquet")
    summary = json.loads((trained / "results.json").read_text())["faithfulness"]["summary"]["gradcam"]
    assert set(frame["cam_method"]) == {"gradcam"}
    for metric in ("deletion_auc", "insertion_auc"):
        assert frame[metric].count() == summary[metric]["n"]
        assert frame[metric].mean() == pytest.approx(summary[metric]["mean"], abs=1e-12)
