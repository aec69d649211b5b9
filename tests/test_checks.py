"""One rule per option (hf_gazecons/checks.py): every option of every command, walked through its
rule's invalid values, ends with one ``error:`` line naming the option and writes nothing; the
sweep's planner and the dataclasses refuse the same values; each rule accepts its boundary."""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import fields
from pathlib import Path

import pytest

from hf_gazecons.checks import (
    BOOLEAN,
    FALSE_WORDS,
    FINITE_FLOAT,
    NON_NEGATIVE_INT,
    OPTION_RULES,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    TRUE_WORDS,
    UNIT_INTERVAL,
    Rule,
    check_curriculum,
    check_fields,
    option_rule,
    parse_bool,
)
from hf_gazecons.cli.main import build_parser, main
from hf_gazecons.errors import DataError, UsageError
from hf_gazecons.sweep import SweepConfig, resolve_config

# the fewest arguments each command needs, so that only the option under test is wrong
MINIMAL = {
    "score": ["--model", "test_resnet", "--dataset", "builtin:shapes", "--output-dir", "{out}"],
    "cam": ["--model", "test_resnet", "--image", "a.png", "--output-dir", "{out}"],
    "demo": ["--output-dir", "{out}"],
    "sweep": ["--output-dir", "{out}"],
    "train": ["--model", "test_resnet", "--dataset", "builtin:shapes", "--output_dir", "{out}"],
    "app": ["--model", "test_resnet", "--reference", "{out}"],
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    from hf_gazecons.cli.train import build_parser as train_parser

    return {**{name: sub for name, sub in action.choices.items() if name != "train"}, "train": train_parser()}


def _walk() -> list[tuple[str, list[str], str]]:
    """(command, the option and its invalid value as argv, what the error line must say) for every
    invalid value of every option that has a rule or a set of choices. ``train``'s rules are checked
    on its dataclasses; the other commands' are argparse types."""
    cases = []
    for command, parser in _commands().items():
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or isinstance(action, argparse._HelpAction):
                continue
            option = action.option_strings[0]
            rule = option_rule(option) if command == "train" else action.type
            if isinstance(rule, Rule):
                cases += [(command, _given(option, action.nargs, value), re.escape(option)) for value in rule.invalid]
            elif action.choices:
                cases.append((command, _given(option, action.nargs, "not-a-choice"), "invalid choice: 'not-a-choice'"))
    return cases


def _given(option: str, nargs, value: str) -> list[str]:
    """``value`` as argv for ``option`` (``--x=-3``, so that a negative number is not taken for an option)."""
    if isinstance(nargs, int):
        return [option, *[value] * nargs]
    return [f"{option}={value}"] if nargs in (None, "?") else [option, value]


CASES = _walk()


def _cli(capsys, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as stop:
        rc = stop.code
    return rc, capsys.readouterr().err


def test_the_walk_covers_every_command_and_rule():
    commands = {command for command, _, _ in CASES}
    # push and report have no option with a rule or choices
    assert commands == {"score", "cam", "demo", "sweep", "train", "app"}
    walked = {(command, argv[0].partition("=")[0]) for command, argv, _ in CASES}
    for option in ("--image_size", "--seed", "--learning_rate", "--ema_alpha", "--t0", "--t1", "--lambda_max",
                   "--grayscale", "--max_eval_samples", "--dataloader_num_workers", "--num_train_epochs"):  # fmt: skip
        assert ("train", option) in walked, option
    for option in ("--lambdas", "--seeds", "--learning-rate", "--grayscale", "--pretrained", "--parallel"):
        assert ("sweep", option) in walked, option
    assert ("score", "--seed") in walked and ("score", "--variant") in walked and ("demo", "--lambda-max") in walked


@pytest.fixture(scope="module", autouse=True)
def _help_cache(tmp_path_factory):
    """train fills its help cache on every run: keep it out of the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture
def no_work(monkeypatch):
    """Where each command's work starts: reaching it means the command accepted the invalid value."""
    import hf_gazecons.cli.sweep
    import hf_gazecons.data
    import hf_gazecons.demo
    import hf_gazecons.finetune
    import hf_gazecons.models

    def refuse(*args, **kwargs):
        raise AssertionError("the command accepted the value and started its work")

    for module, name in ((hf_gazecons.data, "load_image_dataset"), (hf_gazecons.data, "load_streaming_dataset"),
                         (hf_gazecons.models, "load_model"), (hf_gazecons.demo, "run_demo"),
                         (hf_gazecons.finetune, "train"), (hf_gazecons.cli.sweep, "run_sweep")):  # fmt: skip
        monkeypatch.setattr(module, name, refuse)


@pytest.mark.parametrize(("command", "given", "says"), CASES, ids=[f"{c} {' '.join(g)}" for c, g, _ in CASES])
def test_every_invalid_value_is_one_error_line_and_writes_nothing(command, given, says, tmp_path, capsys, no_work):
    out = tmp_path / "out"
    rc, err = _cli(capsys, [command, *(part.format(out=out) for part in MINIMAL[command]), *given])
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(says, lines[0]), lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(set(OPTION_RULES) & {f.name for f in fields(SweepConfig)}))
def test_the_sweep_planner_refuses_what_the_command_line_refuses(name):
    """A preset, a recorded sweep.json or the Python API reach resolve_config without argparse."""
    rule = OPTION_RULES[name]
    for text in rule.invalid:
        value = _typed(text)
        value = [value] if name in ("lambdas", "seeds") else value
        with pytest.raises(UsageError, match=rf"^--{name.replace('_', '-')} must be {re.escape(rule.requirement)}"):
            resolve_config({"preset": "smoke", "output_dir": "o", name: value})


def _typed(text: str):
    """The value a parser would have made of ``text``, or ``text`` itself where nothing fits."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def test_the_dataclasses_refuse_what_the_command_line_refuses():
    from hf_gazecons.demo import DemoSettings
    from hf_gazecons.finetune import ModelDataArguments
    from hf_gazecons.trainer import GazeConsistencyTrainingArguments

    with pytest.raises(UsageError, match=r"^--image_size must be a positive integer, got 0$"):
        ModelDataArguments(image_size=0)
    with pytest.raises(UsageError, match=r"^--learning_rate must be a finite number > 0, got 0$"):
        GazeConsistencyTrainingArguments("unused", learning_rate=0)  # the sweep's rule, no longer >= 0
    with pytest.raises(UsageError, match=r"^--seed must be an integer in \[0, 2\*\*32\), got -1$"):
        DemoSettings(seed=-1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: check_curriculum(5, 5),
        lambda: resolve_config({"preset": "smoke", "output_dir": "o", "t0": 3, "t1": 2}),
        lambda: __import__("hf_gazecons.demo", fromlist=["DemoSettings"]).DemoSettings(t0=5, t1=2),
        lambda: __import__("hf_gazecons.regularizer", fromlist=["x"]).LambdaCurriculum(1.0, t0=4, t1=4),
    ],
    ids=["rule", "sweep-planner", "demo", "curriculum"],
)
def test_t1_after_t0_everywhere(make):
    with pytest.raises(UsageError, match=r"t1 \(\d\) must be greater than (--)?t0 \(\d\)"):
        make()


def test_each_rule_accepts_its_boundary_and_refuses_just_beyond():
    accepted = {
        POSITIVE_INT: ["1", "7"], NON_NEGATIVE_INT: ["0", "3"], FINITE_FLOAT: ["-1e300", "0", "2.5"],
        POSITIVE_FLOAT: ["1e-12", "3"], UNIT_INTERVAL: ["0", "0.999"], SEED: ["0", str(2**32 - 1)],
        BOOLEAN: [*TRUE_WORDS, *FALSE_WORDS, "TRUE", "No"],
    }  # fmt: skip
    for rule, texts in accepted.items():
        for text in texts:
            rule.check("--x", rule(text))
    refused = {POSITIVE_INT: 0, NON_NEGATIVE_INT: -1, FINITE_FLOAT: math.nan, POSITIVE_FLOAT: 0.0,
               UNIT_INTERVAL: 1.0, SEED: 2**32, BOOLEAN: "yes"}  # fmt: skip
    for rule, value in refused.items():
        with pytest.raises(UsageError, match=rf"^--x must be {re.escape(rule.requirement)}, got "):
            rule.check("--x", value)
    assert POSITIVE_INT("7") == 7 and FINITE_FLOAT("2.5") == 2.5 and SEED(str(2**32 - 1)) == 2**32 - 1
    with pytest.raises(argparse.ArgumentTypeError, match="must be a positive integer, got '0'"):
        POSITIVE_INT("0")


def test_one_boolean_parser():
    assert [parse_bool(word) for word in TRUE_WORDS] == [True] * len(TRUE_WORDS)
    assert [parse_bool(word) for word in FALSE_WORDS] == [False] * len(FALSE_WORDS)
    with pytest.raises(ValueError):
        parse_bool("maybe")
    from hf_gazecons.data import load_image_dataset
    from hf_gazecons.training_checks import resolve_checkpoint

    assert resolve_checkpoint("no", Path("unused")) is None and resolve_checkpoint("", Path("unused")) is None
    with pytest.raises(UsageError, match="--resume_from_checkpoint true: no complete checkpoint"):
        resolve_checkpoint("on", Path("/nonexistent"))  # the same words as everywhere
    with pytest.raises(DataError, match=r"option 'grayscale' of builtin:shapes must be bool, got 'maybe'"):
        load_image_dataset("builtin:shapes?grayscale=maybe")
    small = "builtin:shapes?size=32&n_train=1&n_val=1&n_test=1&grayscale="
    assert load_image_dataset(small + "Y", "test")[0]["image"].mode == "L"
    assert load_image_dataset(small + "off", "test")[0]["image"].mode == "RGB"


def test_check_fields_spells_the_option_as_its_command_does():
    with pytest.raises(UsageError, match=r"^--max-eval-samples must be a positive integer, got 0$"):
        check_fields({"max_eval_samples": 0, "model": "unchecked"})
    with pytest.raises(UsageError, match=r"^--max_eval_samples must be"):
        check_fields({"max_eval_samples": 0}, dash="_")
    with pytest.raises(UsageError, match=r"^--seeds must be an integer in \[0, 2\*\*32\), got -1$"):
        check_fields({"seeds": [0, 1, -1]})
    check_fields({"image_size": None, "seeds": [0, 1]})  # None: not given


def test_an_option_with_a_rule_takes_no_other_type():
    from hf_gazecons.cli.common import Parser

    with pytest.raises(TypeError, match="--image-size has a rule"):
        Parser().add_argument("--image-size", type=int)


# What each option means, written out here and not taken from the rules, so that a rule given to
# the wrong option (ema_alpha allowed to reach 1, t1 or epochs allowed to be 0) or a rule dropped
# fails: (texts it must refuse, texts it must accept).
COUNT = (["0", "-3", "1.5"], ["1", "64"])
WORKERS = (["-1", "0.5"], ["0", "4"])
SEED_VALUES = (["-1", str(2**32), "1.5"], ["0", "42", str(2**32 - 1)])
SWITCH = (["maybe", "2"], ["true", "no", "1", "off"])
WHAT_EACH_OPTION_TAKES = {
    **{name: COUNT for name in (
        "image_size", "grid", "batch_size", "per_device_train_batch_size", "per_device_eval_batch_size",
        "gradient_accumulation_steps", "max_samples", "max_train_samples", "max_eval_samples",
        "sanity_samples", "epochs", "parallel", "threads", "t1")},  # fmt: skip
    "num_workers": WORKERS,
    "dataloader_num_workers": WORKERS,
    "t0": WORKERS,  # epochs without the penalty: none is allowed
    "max_bad_image_share": (["1", "1.5", "-0.01", "nan"], ["0", "0.01", "0.5"]),  # all broken is never a result
    "ema_alpha": (["1", "1.5", "-0.1", "nan"], ["0", "0.9", "0.99"]),  # alpha 1 never updates the class maps
    "lambda_max": (["nan", "inf"], ["0", "50", "2.5"]),
    "pearson_lambda_max": (["nan", "inf"], ["0", "5"]),
    "pointing_tolerance": (["-1", "nan", "inf", "x"], ["0", "15", "7.5"]),  # pixels around the mask
    "pearson_lambda_max": (["nan", "inf"], ["0", "5", "2.5"]),
    "lambdas": (["nan", "-inf"], ["0", "5", "500"]),
    "learning_rate": (["0", "-0.001", "nan", "inf"], ["3e-3", "1e-5"]),
    "num_train_epochs": (["nan", "inf"], ["0.5", "10"]),
    "seed": SEED_VALUES,
    "seeds": SEED_VALUES,
    "grayscale": SWITCH,
    "pretrained": SWITCH,
    "port": (["0", "65536", "-1", "8.5", "x"], ["1", "7860", "65535"]),  # the app's TCP port
}


def test_every_rule_is_the_one_its_option_needs():
    assert set(OPTION_RULES) == set(WHAT_EACH_OPTION_TAKES), "an option gained or lost its rule: say here what it takes"
    for name, (refused, accepted) in WHAT_EACH_OPTION_TAKES.items():
        rule = OPTION_RULES[name]
        for text in refused:
            with pytest.raises(argparse.ArgumentTypeError):
                rule(text)
        for text in accepted:
            rule(text)
