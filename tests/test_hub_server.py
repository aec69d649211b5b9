"""The LocalHub stands in for the Hugging Face Hub with the real clients (huggingface_hub, timm,
transformers).  conftest.py points HF_ENDPOINT at it before these imports."""

import itertools
import json
import os
import subprocess
import sys

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, ModelCardData, hf_hub_download, metadata_update, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RevisionNotFoundError

_names = itertools.count()


def _repo_id(prefix: str = "repo") -> str:
    """A repo name unique within the session (the hub keeps repos between tests)."""
    return f"org/{prefix}-{os.getpid()}-{next(_names)}"


def _export_tiny_timm(path) -> None:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=3)
    timm.models.save_for_hf(model, str(path), safe_serialization=True)
    config_file = path / "config.json"
    config = json.loads(config_file.read_text())
    config.get("model_args", {}).pop("num_classes", None)  # timm writes it, TimmWrapper then gets it twice
    config_file.write_text(json.dumps(config))


def test_endpoint_points_at_local_hub(local_hub):
    assert huggingface_hub.constants.ENDPOINT == local_hub.url == os.environ["HF_ENDPOINT"]
    assert local_hub.url.startswith("http://127.0.0.1:")
    assert os.environ["HF_HOME"] in huggingface_hub.constants.HF_HUB_CACHE
    assert "HF_TOKEN" not in os.environ


def test_upload_folder_then_load_with_timm_and_transformers(local_hub, tmp_path):
    import timm
    from transformers import AutoModelForImageClassification

    repo_id = _repo_id("tiny")
    api = HfApi()
    api.create_repo(repo_id)
    api.create_repo(repo_id, exist_ok=True)  # 409 handled by the client
    _export_tiny_timm(tmp_path / "export")
    info = api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "export", commit_message="add model")

    files = local_hub.files(repo_id)
    assert {"config.json", "model.safetensors", ".gitattributes"} <= set(files)
    assert files["model.safetensors"] == (tmp_path / "export" / "model.safetensors").read_bytes()
    assert info.oid == local_hub.refs(repo_id)["main"] == api.model_info(repo_id).sha
    assert [c.message for c in local_hub.commits(repo_id)] == ["add model", "initial commit"]
    assert sorted(api.list_repo_files(repo_id)) == sorted(files)

    x = torch.randn(1, 3, 64, 64)
    timm_model = timm.create_model(f"hf-hub:{repo_id}", pretrained=True).eval()
    hf_model = AutoModelForImageClassification.from_pretrained(repo_id).eval()
    with torch.no_grad():
        expected = timm_model(x)
        got = hf_model(pixel_values=x).logits
    assert expected.shape == (1, 3)
    torch.testing.assert_close(got, expected)

    # Everything downloaded went through the local hub, by branch name or by commit sha.
    resolved = [r.path for r in local_hub.requests if "/resolve/" in r.path]
    assert any(p.endswith("/model.safetensors") for p in resolved)

    snapshot = snapshot_download(repo_id, revision=info.oid)
    assert (tmp_path / "export" / "config.json").read_bytes() == open(f"{snapshot}/config.json", "rb").read()


def test_missing_file_revision_and_repo(local_hub):
    repo_id = _repo_id()
    local_hub.create_repo(repo_id, files={"a.txt": b"hello"})
    assert open(hf_hub_download(repo_id, "a.txt"), "rb").read() == b"hello"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.bin")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "a.txt", revision="no-such-branch")
    with pytest.raises(huggingface_hub.errors.RepositoryNotFoundError):
        HfApi().model_info(_repo_id("never-created"))


def test_model_card_round_trip(local_hub):
    repo_id = _repo_id("card")
    HfApi().create_repo(repo_id)
    card = ModelCard.from_template(ModelCardData(license="apache-2.0", tags=["gaze"]), model_id="tiny")
    card.push_to_hub(repo_id, commit_message="card")
    loaded = ModelCard.load(repo_id)
    assert loaded.data.license == "apache-2.0" and loaded.data.tags == ["gaze"]
    assert loaded.content == str(card)  # ModelCard.load re-reads exactly what was pushed
    assert HfApi().model_info(repo_id).card_data.tags == ["gaze"]


def test_metadata_update_with_create_pr_leaves_main_unchanged(local_hub):
    repo_id = _repo_id("meta")
    local_hub.create_repo(repo_id, files={"README.md": b"---\nlicense: mit\n---\n# Card\n"})
    main_before = local_hub.refs(repo_id)["main"]

    info = metadata_update(repo_id, {"tags": ["gaze-consistency"]}, create_pr=True)

    # metadata_update returns a CommitInfo (a str subclass whose value is the commit url)
    assert info.pr_url.endswith("/discussions/1") and info.pr_revision == "refs/pr/1" and info.pr_num == 1
    refs = local_hub.refs(repo_id)
    assert refs["main"] == main_before
    assert local_hub.files(repo_id)["README.md"] == b"---\nlicense: mit\n---\n# Card\n"
    assert "gaze-consistency" in local_hub.files(repo_id, "refs/pr/1")["README.md"].decode()
    assert local_hub.commits(repo_id, "refs/pr/1")[1].oid == main_before
    # ModelCard.load has no `revision`: read a PR's card through hf_hub_download
    pr_card = ModelCard.load(hf_hub_download(repo_id, "README.md", revision="refs/pr/1"))
    assert pr_card.data.tags == ["gaze-consistency"] and pr_card.data.license == "mit"

    api = HfApi()
    (discussion,) = list(api.get_repo_discussions(repo_id))
    assert discussion.is_pull_request and discussion.num == 1 and discussion.git_reference == "refs/pr/1"
    details = api.get_discussion_details(repo_id, 1)
    assert details.target_branch == "refs/heads/main" and details.status == "open"
    assert [ref.ref for ref in api.list_repo_refs(repo_id, include_pull_requests=True).pull_requests] == ["refs/pr/1"]


def test_injected_500_on_commit_changes_nothing(local_hub, tmp_path):
    repo_id = _repo_id("fail")
    local_hub.create_repo(repo_id, files={"a.txt": b"v1"})
    history_before = local_hub.commits(repo_id)
    (tmp_path / "a.txt").write_bytes(b"v2")
    (tmp_path / "b.txt").write_bytes(b"new")

    local_hub.fail("POST", r"/commit/", 500)
    with pytest.raises(HfHubHTTPError) as excinfo:
        HfApi().upload_folder(repo_id=repo_id, folder_path=tmp_path)
    assert excinfo.value.response.status_code == 500
    assert local_hub.files(repo_id) == {**history_before[0].files}
    assert local_hub.commits(repo_id) == history_before

    HfApi().upload_folder(repo_id=repo_id, folder_path=tmp_path)  # the failure was injected once
    assert local_hub.files(repo_id)["b.txt"] == b"new"


def test_require_token(local_hub, monkeypatch):
    repo_id = _repo_id("private")
    local_hub.create_repo(repo_id, files={"a.txt": b"secret"})
    local_hub.require_token("hf_test_token")
    api = HfApi()

    with pytest.raises(HfHubHTTPError) as excinfo:
        api.model_info(repo_id)
    assert excinfo.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.model_info(repo_id, token="hf_wrong")
    assert excinfo.value.response.status_code == 401

    assert api.model_info(repo_id, token="hf_test_token").id == repo_id
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")  # the client reads HF_TOKEN at call time
    assert open(hf_hub_download(repo_id, "a.txt", force_download=True), "rb").read() == b"secret"
    assert local_hub.requests[-1].headers["authorization"] == "Bearer hf_test_token"


def test_subprocess_inherits_the_local_hub(local_hub):
    repo_id = _repo_id("sub")
    local_hub.create_repo(repo_id, files={"a.txt": b"from-subprocess"})
    code = f"from huggingface_hub import hf_hub_download; print(open(hf_hub_download({repo_id!r}, 'a.txt')).read())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "from-subprocess"
