"""The Hub: model cards (template in ``model_cards/``), pushing a training output, pushing scores.

Everything goes through ``huggingface_hub``; the token comes from where it always does
(``HF_TOKEN``, ``hf auth login``) and is never printed or written.

    >>> push_output("out", "my-org/resnet18-gazecons")          # one atomic commit
    >>> push_results(result, "some-org/any-classifier", create_pr=True)
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from huggingface_hub import (
    CommitOperationAdd,
    EvalResult,
    HfApi,
    ModelCard,
    ModelCardData,
    constants,
    get_token,
    metadata_update,
)
from huggingface_hub.errors import HfHubHTTPError, HTTPError
from huggingface_hub.utils import get_session

from .cam_family import DEFAULT_CAM_METHOD, get_cam_method
from .errors import HubError, first_line
from .filenames import CLASS_MAPS_FILE, RESULTS_FILE
from .formatting import fmt_interval, fmt_metric
from .run_record import CONSISTENCY, RunResults, class_metric, metric_key

__all__ = [
    "model_card",
    "eval_results",
    "push_output",
    "push_results",
    "results_folder",
    "check_hub_reachable",
    "check_push_access",
    "CARD_TEMPLATE",
    "PUSHED_PATTERNS",
]

PUSHED_PATTERNS = ("*.safetensors", "*.json", "*.png", "samples.parquet", "samples.csv")
"""What ``push_output`` uploads from a training output (plus the card): never pickles, never checkpoints;
``class_maps.safetensors`` and the per-image table are the reference of ``hf-gazecons app``."""
_REQUIRED = ("config.json", "model.safetensors", CLASS_MAPS_FILE, RESULTS_FILE)

CARD_TEMPLATE = importlib.resources.files("hf_gazecons.templates") / "gazecons_model_card.md"
"""The Jinja template of the model card: ``model_cards/gazecons_model_card.md`` in a checkout, package
data of ``hf_gazecons.templates`` once installed."""

_METRICS = (  # model-index type, its name, and the metric's name in the run record
    ("accuracy", "Accuracy", "accuracy"),
    ("cohen_kappa", "Cohen's kappa", "kappa"),
    (CONSISTENCY, "Gaze consistency under {method} (L_CAM, lower is more consistent)", CONSISTENCY),
)


def eval_results(
    metrics: dict[str, Any], dataset: str, split: str, prefix: str = "eval", cam_method: str = DEFAULT_CAM_METHOD
) -> list[EvalResult]:
    """model-index entries for accuracy, Cohen's kappa and gaze consistency (those that exist)
    from flat ``{prefix}_*`` metrics; the gaze consistency names its CAM method (in its name and as
    its ``metric_config``)."""
    return [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=metric_type,
            metric_name=name.format(method=get_cam_method(cam_method).title),
            metric_value=metrics[metric_key(prefix, key)],
            metric_config=cam_method if metric_type == CONSISTENCY else None,
        )
        for metric_type, name, key in _METRICS
        if metrics.get(metric_key(prefix, key)) is not None
    ]


def model_card(results: RunResults, repo_id: str | None = None) -> ModelCard:
    """Render the card of a training output from its run record.

    The model-index reports the test split where the run has one (``final_test``), else the
    evaluation split; the card's tables show both."""
    config = results.config
    name = repo_id.split("/")[-1] if repo_id else f"{config.architecture}-gazecons"
    evaluations = [(config.eval_split, "eval", results.final)]
    if results.final_test:
        evaluations.insert(0, (config.test_split, "test", results.final_test))
    reported_split, reported_prefix, reported = evaluations[0]
    card_data = ModelCardData(
        model_name=name,
        library_name=config.library,
        pipeline_tag="image-classification",
        tags=["image-classification", config.library, "gaze-consistency"],
        base_model=config.base_model,
        datasets=[config.dataset] if _is_hub_id(config.dataset) else None,
        license="apache-2.0",
        eval_results=eval_results(reported, config.dataset, reported_split, reported_prefix, config.cam_method),
    )
    method = get_cam_method(config.cam_method)
    return ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE.read_text(encoding="utf-8"),
        model_name=name,
        repo_id=repo_id or f"<your-org>/{name}",
        architecture=config.architecture,
        dataset=config.dataset,
        split=config.eval_split,
        variant=config.variant,
        cam_method=method,
        evaluations=[(s, _Attrs(_unprefixed(m, p))) for s, p, m in evaluations],
        per_class=[(label, results.metric(class_metric(label))) for label in config.label_names],
        pearson_r=results.pearson_r_kappa_consistency,
        faithfulness=results.faithfulness,
        interval=fmt_interval,
        config=config,
        fmt=fmt_metric,
    )


def _unprefixed(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {key.removeprefix(metric_key(prefix, "")): value for key, value in metrics.items()}


class _Attrs(dict):
    """A dict whose missing keys read as None in the template (``final.eval_pointing_game``)."""

    def __getattr__(self, key: str) -> Any:
        return self.get(key)


def _is_hub_id(spec: str) -> bool:
    return spec.count("/") == 1 and ":" not in spec and not Path(spec).exists()


def push_output(
    output_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Upload a training output to ``repo_id`` in ONE commit and return the commit URL.

    Sends the weights and configs (``*.safetensors``, ``*.json``), the pictures and the model card,
    re-rendered for ``repo_id`` so its loading snippets name the repo. Checkpoint folders and pickle
    files stay local. The local folder is not modified.

    Raises:
        HubError: the folder is not a complete training output, or the Hub refused or failed the push.

    Example::

        >>> push_output("out/resnet18-l100", "my-org/resnet18-gazecons", private=True)
        'https://huggingface.co/my-org/resnet18-gazecons/commit/4f2c...'
    """
    output_dir = Path(output_dir)
    missing = [name for name in _REQUIRED if not (output_dir / name).is_file()]
    if missing:
        raise HubError(f"{str(output_dir)!r} is not a complete training output (missing {', '.join(missing)})")
    results = RunResults.load(output_dir)
    files = sorted({p for pattern in PUSHED_PATTERNS for p in output_dir.glob(pattern) if p.is_file()})
    operations = [CommitOperationAdd(path.name, str(path)) for path in files]
    card = str(model_card(results, repo_id=repo_id)).encode()
    operations.append(CommitOperationAdd("README.md", card))
    api = HfApi(token=token)
    with _hub_errors(f"push to {repo_id}"):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(
            repo_id,
            operations=operations,
            commit_message=commit_message or f"Upload {results.config.architecture} trained with hf_gazecons",
            revision=revision,
        )
    return info.commit_url


def push_results(
    scores: dict[str, Any],
    repo_id: str,
    *,
    create_pr: bool = False,
    revision: str | None = None,
    token: str | None = None,
    files: Sequence[str | Path] = (),
) -> str:
    """Add a ``consistency.json`` result (``ConsistencyResult.to_dict()``) to ``repo_id``'s card.

    The accuracy, Cohen's kappa and gaze consistency (of each CAM method scored) become
    ``model-index`` eval results, merged into the card's metadata with
    ``huggingface_hub.metadata_update``; the rest of the card is kept. ``files``
    (``consistency.json``, the per-image table) follow in a second commit to the same branch (or
    pull request), under :func:`results_folder`.

    Returns:
        The commit URL, or the pull request's URL with ``create_pr=True``.

    Raises:
        HubError: the Hub refused the token or the repo, or cannot be reached.

    Example::

        >>> push_results(result.to_dict(), "some-org/any-classifier", create_pr=True)
        'https://huggingface.co/some-org/any-classifier/discussions/3'
    """
    metrics = {metric_key("score", name): scores[name] for _, _, name in _METRICS}
    split = scores.get("split") or "test"
    results = eval_results(metrics, scores["dataset"], split, "score", scores.get("cam_method") or DEFAULT_CAM_METHOD)
    for method, other in (scores.get("by_cam_method") or {}).items():  # score --cam-method all
        if method != scores.get("cam_method"):
            value = {metric_key("score", CONSISTENCY): other.get(CONSISTENCY)}
            results += eval_results(value, scores["dataset"], split, "score", method)
    if not results:
        raise HubError("the scores hold no metric to push")
    metadata = ModelCardData(model_name=repo_id.split("/")[-1], eval_results=results).to_dict()
    with _hub_errors(f"push results to {repo_id}"):
        info = metadata_update(
            repo_id,
            {"model-index": metadata["model-index"]},
            overwrite=True,
            create_pr=create_pr,
            revision=revision,
            token=token,
            commit_message=f"Add gaze-consistency results on {scores['dataset']} ({split})",
        )
    if files:
        folder = results_folder(scores["dataset"], split)
        with _hub_errors(f"upload the per-image results to {repo_id} (the card is updated)"):
            HfApi(token=token).create_commit(
                repo_id,
                operations=[CommitOperationAdd(f"{folder}/{Path(p).name}", str(p)) for p in files],
                commit_message=f"Add per-image gaze-consistency results on {scores['dataset']} ({split})",
                revision=getattr(info, "pr_revision", None) if create_pr else revision,
            )
    return info.pr_url if create_pr and getattr(info, "pr_url", None) else str(info)


def results_folder(dataset: str, split: str) -> str:
    """Where ``push_results`` puts the files of one data set and split: ``gazecons/<dataset>-<split>``,
    every character but letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``."""
    return "gazecons/" + re.sub(r"[^A-Za-z0-9._-]", "_", f"{dataset}-{split}")


_PROBE_TIMEOUT_S = 5.0


def check_hub_reachable(action: str, download: bool = True) -> None:
    """Fail at once, with one line, when the Hub cannot be reached: one request without retries,
    instead of huggingface_hub's retries with backoff (about 35 s) for a file that is not cached.
    Nothing is checked offline (``HF_HUB_OFFLINE=1``, which the message of a ``download`` suggests)."""
    if constants.HF_HUB_OFFLINE:
        return
    reason = _unreachable(constants.ENDPOINT)
    if reason is not None:
        hint = "set HF_HUB_OFFLINE=1 to use what is in the local cache" if download else "check the network"
        raise HubError(f"cannot {action}: the Hub ({constants.ENDPOINT}) cannot be reached ({reason}); {hint}")


@functools.cache
def _unreachable(endpoint: str) -> str | None:
    """Why one HEAD request to ``endpoint`` got no answer (None: it got one, whatever its status)."""
    try:
        get_session().head(endpoint, timeout=_PROBE_TIMEOUT_S, follow_redirects=False)
    except Exception as error:  # the HTTP client raises its own transport errors (refused, timeout, DNS, TLS)
        return f"{type(error).__name__}: {first_line(error)}"
    return None


def check_push_access(repo_id: str, token: str | None = None) -> None:
    """Before hours of training: a token exists, the Hub accepts it, it may write, and ``repo_id``'s
    namespace is its user's or one of its organisations'. Changes nothing on the Hub."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubError(f"--hub_model_id must be ORG/NAME, got {repo_id!r}")
    check_hub_reachable(f"push to {repo_id}", download=False)
    token = token or get_token()
    if token is None:
        raise HubError(f"cannot push to {repo_id}: no Hub token; set HF_TOKEN or run `hf auth login`")
    with _hub_errors(f"check the token for {repo_id}"):
        who = HfApi(token=token).whoami(token=token)
    role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubError(f"cannot push to {repo_id}: the token is read-only; use a token with write access")
    namespace = repo_id.split("/")[0]
    names = [who.get("name"), *(org.get("name") for org in who.get("orgs") or [])]
    if namespace not in names:
        raise HubError(
            f"cannot push to {repo_id}: the token belongs to {who.get('name')!r}, who may write to "
            f"{[n for n in names if n]}, not to {namespace!r}"
        )


@contextmanager
def _hub_errors(action: str) -> Iterator[None]:
    """Turn client errors into one-line :class:`HubError` messages (no token, no traceback)."""
    try:
        yield
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        hint = {401: "check your token (HF_TOKEN or `hf auth login`)", 403: "the token may not write to this repo"}
        detail = hint.get(status, first_line(error))
        raise HubError(f"{action} failed: HTTP {status}: {detail}") from None
    except (HTTPError, OSError) as error:
        raise HubError(f"{action} failed: cannot reach the Hub ({type(error).__name__}: {first_line(error)})") from None
