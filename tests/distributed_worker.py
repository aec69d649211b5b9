"""One process of the 2-process CPU run of ``tests/test_distributed.py`` (launched by ``accelerate launch``).

    accelerate launch --multi_gpu --num_processes 2 tests/distributed_worker.py JOB.json

``JOB.json`` (written by the test) holds ``out`` (a folder for this script's reports), ``metric_model``
(a folder written by ``save_model``), ``metric_data`` (a ``builtin:`` spec), ``metric_variants``
(``[name, variant, grid]`` triples) and ``train_argv`` (the command line of ``scripts/train.py``).

Every rank writes, into ``out``:

* ``info_rank{R}.json``: the rank and world size it saw (process group, accelerate state, Trainer);
* ``metric_rank{R}.json``: ``gaze_consistency(model, dataset).to_dict()`` (+ class means and the
  per-image table's rows) per variant, each rank scoring its shard of the ``datasets.Dataset`` and merging;
* after ``scripts/train.py`` ran in this process (under the same launch): ``ema_rank{R}.safetensors``
  (``trainer.gaze_state()``), ``weights_rank{R}.safetensors`` (the unwrapped model's state dict),
  ``trainer_rank{R}.json`` (log history, final metrics) and ``writes_rank{R}.json`` only if this rank
  wrote the output folder.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = Path(job["out"])

    from accelerate import PartialState

    state = PartialState(cpu=True)
    import torch.distributed as dist

    rank = state.process_index
    info = {
        "rank": rank,
        "accelerate_num_processes": state.num_processes,
        "distributed_type": str(state.distributed_type),
        "dist_initialized": dist.is_available() and dist.is_initialized(),
        "dist_world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "dist_rank": dist.get_rank() if dist.is_initialized() else 0,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    write_json(out / f"info_rank{rank}.json", info)

    metric(job, out, rank)
    training(job, out, rank, info)


def metric(job: dict, out: Path, rank: int) -> None:
    from hf_gazecons import gaze_consistency, load_model
    from hf_gazecons.data import load_image_dataset
    from hf_gazecons.samples import SampleRecorder

    loaded = load_model(job["metric_model"])
    dataset = load_image_dataset(job["metric_data"], "validation")
    results = {}
    for name, variant, grid in job["metric_variants"]:
        recorder = SampleRecorder()
        result = gaze_consistency(
            loaded,
            dataset,
            variant=variant,
            grid=tuple(grid) if grid else None,
            batch_size=4,
            progress=False,
            samples=recorder,
        )
        results[name] = {
            "dict": result.to_dict(),
            "value": result.value,
            "class_means": result.class_means.tolist(),
            "samples": recorder.table.to_pylist(),
        }
    write_json(out / f"metric_rank{rank}.json", results)


def training(job: dict, out: Path, rank: int, info: dict) -> None:
    from safetensors.torch import save_file

    import hf_gazecons.finetune as training_module

    captured = {}

    class CapturingTrainer(training_module.GazeConsistencyTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            captured["trainer"] = self

    original_write = training_module._write_outputs

    def recording_write(run, *args, **kwargs):
        calls = out / f"writes_rank{rank}.json"
        previous = json.loads(calls.read_text()) if calls.exists() else []
        write_json(calls, previous + [str(run.output_dir)])
        return original_write(run, *args, **kwargs)

    training_module.GazeConsistencyTrainer = CapturingTrainer
    training_module._write_outputs = recording_write
    sys.argv = [str(REPO / "scripts" / "train.py"), *job["train_argv"]]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise

    trainer = captured["trainer"]
    save_file({k: v.clone() for k, v in trainer.gaze_state().items()}, str(out / f"ema_rank{rank}.safetensors"))
    model = trainer.accelerator.unwrap_model(trainer.model)
    weights = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(out / f"weights_rank{rank}.safetensors"))
    write_json(
        out / f"trainer_rank{rank}.json",
        {
            "args_world_size": trainer.args.world_size,
            "args_process_index": trainer.args.process_index,
            "model_wrapped": type(trainer.model_wrapped).__name__,
            "global_step": trainer.state.global_step,
            "log_history": trainer.state.log_history,
            "last_eval_metrics": trainer.last_eval_metrics,
        },
    )


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
