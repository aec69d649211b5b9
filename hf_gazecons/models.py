"""Models in and out: timm names, ``hf-hub:`` ids, transformers Hub ids and local folders.

``load_model`` returns the model with its preprocessing, label names and, for checkpoints written
by hf_gazecons, the regulariser's EMA state. ``save_model`` writes a folder that loads both with
``timm.create_model("local-dir:DIR", pretrained=True)`` and with
``transformers.AutoModelForImageClassification.from_pretrained(DIR)``.

Example::

    >>> loaded = load_model("resnet18", num_labels=4)
    >>> loaded.model, loaded.preprocessing.image_size
    (ResNet(...), (224, 224))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    HTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import GazeConsError, ModelLoadError, first_line
from .filenames import GAZE_STATE_FILE
from .hub import check_hub_reachable
from .preprocessing import (
    STUDY_MEAN_STD,
    Preprocessing,
    plain_preprocessing,
    processor_preprocessing,
    timm_preprocessing,
)
from .specs import ModelSpec, parse_model_spec

__all__ = ["LoadedModel", "load_model", "save_model", "GAZE_STATE_FILE"]


Library = Literal["timm", "transformers"]


@dataclass
class LoadedModel:
    """A classifier ready for Grad-CAM: the module, how to feed it, and what its classes mean."""

    model: nn.Module
    preprocessing: Preprocessing
    label_names: list[str]
    library: Library
    spec: str
    gaze_state: dict[str, torch.Tensor] | None = None
    random_weights: bool = False
    """True for a bare timm architecture built without pretrained weights (nothing was loaded)."""

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def load_model(
    spec: str | ModelSpec,
    num_labels: int | None = None,
    label_names: list[str] | None = None,
    *,
    pretrained: bool = False,
    image_size: int | None = None,
    grayscale: bool = False,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load an image classifier with its preprocessing, label names and (if saved) EMA state.

    Args:
        spec: a timm architecture (``resnet18``), ``hf-hub:org/name[@revision]``, a Hub id
            ``org/name`` (timm or transformers) or a local folder, or such a spec already parsed
            (:func:`~hf_gazecons.specs.parse_model_spec`).
        num_labels, label_names: the classes; a head of another size is replaced.
        pretrained: with a timm architecture, timm's pretrained weights (they must be reachable).
        image_size: a square input size instead of the model's own.
        grayscale: a 1-channel timm model normalised with mean/std 0.5 (the study's input).
        revision: the Hub revision of a Hub id (of a parsed spec: its own).
        trust_remote_code: let a Hub model's own code run (off unless asked for).

    Returns:
        A :class:`LoadedModel`; its ``random_weights`` says whether the weights are untrained.

    Raises:
        ModelLoadError: the spec names nothing loadable, a file is missing, or the weights do not fit.
        HubError: the Hub cannot be reached for a file that is not cached.

    Example::

        >>> loaded = load_model("hf-hub:my-org/resnet18-gazecons")
        >>> loaded.label_names, loaded.preprocessing.image_size
        (['glioma', 'meningioma', 'no_tumor', 'pituitary'], (224, 224))
    """
    if label_names is not None:
        if num_labels is not None and num_labels != len(label_names):
            raise ModelLoadError(f"num_labels={num_labels} but {len(label_names)} label names were given")
        num_labels = len(label_names)
    options = _Options(num_labels, label_names, image_size, grayscale)
    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec, revision)
    spec, revision = parsed.text or parsed.name, parsed.revision
    try:
        if parsed.kind == "folder":
            path = Path(parsed.name)
            config = _read_config(path / "config.json", spec)
            state = _local_state(path)
            if _is_timm_config(config):
                return _load_timm(spec, f"local-dir:{path}", True, config, state, options)
            return _load_transformers(spec, str(path), None, trust_remote_code, state, options)
        if parsed.kind == "hf-hub":
            config = _read_config(_hub_file(parsed.name, "config.json", parsed.revision, required=True), spec)
            state = _hub_state(parsed.name, parsed.revision)
            return _load_timm(spec, spec, True, config, state, options)
        if parsed.kind == "timm":
            if not pretrained:
                return _load_timm(spec, spec, False, None, None, options)
            repo_id = _check_pretrained_reachable(spec)
            try:
                return _load_timm(spec, spec, True, None, None, options)
            except (RepositoryNotFoundError, EntryNotFoundError):
                raise ModelLoadError(
                    f"cannot load timm's pretrained weights of {spec!r}: the Hub has no {repo_id} (or no weights in it)"
                ) from None
        config = _read_config(_hub_file(parsed.name, "config.json", revision, required=True), spec)
        state = _hub_state(parsed.name, revision)
        if _is_timm_config(config):
            at = f"@{revision}" if revision else ""
            return _load_timm(spec, f"hf-hub:{parsed.name}{at}", True, config, state, options)
        return _load_transformers(spec, parsed.name, revision, trust_remote_code, state, options)
    except GazeConsError:
        raise
    except (OSError, HTTPError, ValueError, RuntimeError, KeyError) as error:
        raise ModelLoadError(f"cannot load model {spec!r}: {first_line(error)}") from error


@dataclass(frozen=True)
class _Options:
    """What the caller asks of the head and input, whatever the source."""

    num_labels: int | None
    label_names: list[str] | None
    image_size: int | None
    grayscale: bool


def _load_timm(
    spec: str,
    source: str,
    pretrained: bool,
    config: dict[str, Any] | None,
    gaze_state: dict[str, torch.Tensor] | None,
    options: _Options,
) -> LoadedModel:
    kwargs: dict[str, Any] = {}
    if options.num_labels is not None:
        kwargs["num_classes"] = options.num_labels
    if options.grayscale:
        kwargs["in_chans"] = 1
    model = timm.create_model(source, pretrained=pretrained, **kwargs)
    label_names = options.label_names
    if label_names is None:
        saved = _names_list((config or {}).get("label_names"))
        label_names = saved if len(saved) == model.num_classes else [str(i) for i in range(model.num_classes)]
    preprocessing = timm_preprocessing(model, options.image_size, STUDY_MEAN_STD if options.grayscale else None)
    return LoadedModel(model, preprocessing, list(label_names), "timm", spec, gaze_state, random_weights=not pretrained)


def _load_transformers(
    spec: str,
    source: str,
    revision: str | None,
    trust_remote_code: bool,
    gaze_state: dict[str, torch.Tensor] | None,
    options: _Options,
) -> LoadedModel:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    if options.grayscale:
        raise ModelLoadError("grayscale=True is available for timm models only")
    num_labels = options.num_labels
    kwargs: dict[str, Any] = dict(revision=revision, trust_remote_code=trust_remote_code)
    if num_labels is not None:
        names = options.label_names or [str(i) for i in range(num_labels)]
        kwargs.update(
            num_labels=num_labels,
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
            ignore_mismatched_sizes=True,
        )
    model = AutoModelForImageClassification.from_pretrained(source, **kwargs)
    if hasattr(model.config, "label_names") and num_labels is not None:
        model.config.label_names = list(kwargs["id2label"].values())
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    try:
        processor = AutoImageProcessor.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
        preprocessing = processor_preprocessing(processor)
    except (OSError, ValueError):
        size = options.image_size or getattr(model.config, "image_size", 224)
        preprocessing = plain_preprocessing(size if isinstance(size, int) else size[0])
    return LoadedModel(model, preprocessing, names, "transformers", spec, gaze_state)


def save_model(loaded: LoadedModel, directory: str | Path, gaze_state: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``loaded`` to ``directory``: safetensors weights, config, preprocessing and, if given,
    the regulariser's EMA state (``gazecons_state.safetensors``).

    timm models are written with ``timm.models.save_for_hf`` (minus the ``model_args.num_classes``
    key that TimmWrapper would receive twice), so both timm and transformers load them.

    Example::

        >>> save_model(load_model("resnet18", num_labels=4), "out/resnet18")
        >>> timm.create_model("local-dir:out/resnet18", pretrained=True)
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = loaded.model
    if loaded.library == "timm":
        timm.models.save_for_hf(
            model,
            str(directory),
            model_config={"label_names": list(loaded.label_names)},
            safe_serialization=True,
            data_config=dict(loaded.preprocessing.data_config),
        )
        config_path = directory / "config.json"
        config = json.loads(config_path.read_text())
        config.get("model_args", {}).pop("num_classes", None)
        if not config.get("model_args"):
            config.pop("model_args", None)
        config_path.write_text(json.dumps(config, indent=2))
    else:
        model.save_pretrained(directory)
        if loaded.preprocessing.processor is not None:
            loaded.preprocessing.processor.save_pretrained(directory)
    if gaze_state is not None:
        save_file({k: v.contiguous() for k, v in gaze_state.items()}, str(directory / GAZE_STATE_FILE))


def _is_timm_config(config: dict[str, Any]) -> bool:
    return "architecture" in config and "pretrained_cfg" in config


def _names_list(names: Any) -> list[str]:
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    return [str(n) for n in names or []]


def _read_config(path: Path | None, spec: str) -> dict[str, Any]:
    if path is None or not Path(path).is_file():
        raise ModelLoadError(
            f"cannot load model {spec!r}: no config.json there (timm save_for_hf or save_pretrained writes one)"
        )
    return json.loads(Path(path).read_text())


def _local_state(path: Path) -> dict[str, torch.Tensor] | None:
    state = path / GAZE_STATE_FILE
    return load_file(str(state)) if state.is_file() else None


def _hub_file(repo_id: str, filename: str, revision: str | None, required: bool) -> Path | None:
    if not isinstance(try_to_load_from_cache(repo_id, filename, revision=revision), str):
        check_hub_reachable(f"load model {repo_id!r}")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"cannot load model {repo_id!r}: the Hub cannot be reached and the file {filename} is not cached"
        ) from None
    except EntryNotFoundError:
        if required:
            raise ModelLoadError(f"cannot load model {repo_id!r}: the repo has no {filename}") from None
        return None
    except RevisionNotFoundError:
        raise ModelLoadError(f"cannot load model {repo_id!r}: no revision {revision!r} in the repo") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"cannot load model {repo_id!r}: no such repo on the Hub "
            "(or it is private or gated: set HF_TOKEN or run `hf auth login`)"
        ) from None


def _check_pretrained_reachable(name: str) -> str | None:
    """timm downloads pretrained weights from the Hub: fail fast if they are not cached and it is
    unreachable. Returns the Hub repo of the weights (None: timm has them elsewhere)."""
    config = timm.models.get_pretrained_cfg(name)
    repo_id = getattr(config, "hf_hub_id", None)
    if repo_id and not isinstance(try_to_load_from_cache(repo_id, "model.safetensors"), str):
        check_hub_reachable(f"load timm's pretrained weights of {name!r}")
    return repo_id


def _hub_state(repo_id: str, revision: str | None) -> dict[str, torch.Tensor] | None:
    path = _hub_file(repo_id, GAZE_STATE_FILE, revision, required=False)
    return load_file(str(path)) if path else None
