"""``hf-gazecons push``: upload a training output to the Hub in one commit."""

from __future__ import annotations

import argparse

from ..errors import UsageError


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    parser = commands.add_parser(
        name,
        help="upload a training output (weights, configs, scores, pictures, card) to the Hub",
        description="One commit with the safetensors weights, config.json, the EMA state, results.json, the "
        "pictures and the model card. Checkpoints and pickle files stay local. The token comes from HF_TOKEN or "
        "`hf auth login`.",
    )
    parser.add_argument("output_dir", nargs="?", help="a folder written by `hf-gazecons train`")
    parser.add_argument(
        "--output-dir",
        dest="output_dir_option",
        metavar="OUTPUT_DIR",
        help="the same folder, given as an option (default: the positional OUTPUT_DIR)",
    )
    parser.add_argument("--repo-id", required=True, help="ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", default=None, help="branch to commit to, created if needed (default: main)")
    parser.add_argument("--commit-message", default=None, help="(default: Upload <architecture> trained with ...)")


def run(args: argparse.Namespace) -> int:
    from ..hub import push_output

    given = [folder for folder in (args.output_dir, args.output_dir_option) if folder is not None]
    if len(given) != 1:
        raise UsageError("name the training output folder once: `hf-gazecons push OUTPUT_DIR --repo-id ORG/NAME`")
    url = push_output(
        given[0],
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
    )
    print(f"pushed {given[0]} to {args.repo_id}: {url}")
    return 0
