"""``hf-gazecons push``: upload a training output to the Hub in one commit."""

from __future__ import annotations

import argparse

from .common import add_existing_output_dir, existing_output_dir


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    parser = commands.add_parser(
        name,
        help="upload a training output (weights, configs, scores, pictures, card) to the Hub",
        description="One commit with the safetensors weights, config.json, the EMA state, results.json, "
        "class_maps.safetensors, the per-image table, the pictures and the model card. Checkpoints and pickle "
        "files stay local. The token comes from HF_TOKEN or `hf auth login`.",
    )
    add_existing_output_dir(parser, "a folder written by `hf-gazecons train`")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", default=None, help="branch to commit to, created if needed (default: main)")
    parser.add_argument("--commit-message", default=None, help="(default: Upload <architecture> trained with ...)")


def run(args: argparse.Namespace) -> int:
    from ..hub import push_output

    folder = existing_output_dir(
        args, "name the training output folder once: `hf-gazecons push OUTPUT_DIR --repo-id ORG/NAME`"
    )
    url = push_output(
        folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
    )
    print(f"pushed {folder} to {args.repo_id}: {url}")
    return 0
