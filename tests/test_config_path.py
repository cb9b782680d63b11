"""One configuration path: options generated from TrainConfig, --quick resolved once.

No training runs here: these check what each command would train, down to what the Flower
ServerApp decodes from the run config it receives.
"""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from duallora.base.command_line import build_parser
from duallora.base.config import TrainConfig, quick_overrides, resolve, setting
from duallora.commands import COMMAND_MODULES, flower_local, train
from duallora.commands.options import add_settings_options, cli_name, explicit_values
from duallora.errors import KitError
from duallora.federated.strategies import get_strategy
from duallora.flower.localhost.run import run_config_for
from duallora.flower.run_config import (
    SITE_FIELDS,
    flower_settings,
    run_config_defaults,
    train_config_from_run_config,
)
from duallora.flower.settings import FlowerSettings


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser("duallora", "", COMMAND_MODULES).parse_args(argv)


def train_args(*options: str) -> argparse.Namespace:
    return parse(["train", "--data", "cohort", "--strategy", "fedavg_lora", "--out", "run",
                  *options])


def flower_args(*options: str) -> argparse.Namespace:
    return parse(["flower-local", "--clients", "2", "--data", "cohort", "--out", "run",
                  "--strategy", "fedavg_lora", *options])


def option_strings(command: str) -> set[str]:
    parser = build_parser("duallora", "", COMMAND_MODULES)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {flag for action in sub.choices[command]._actions for flag in action.option_strings}


def server_side(args: argparse.Namespace) -> TrainConfig:
    """What the ServerApp trains: the pyproject defaults overridden by what the launcher sends."""
    config = flower_local.config_from_args(args, skip=SITE_FIELDS)
    settings = FlowerSettings(**explicit_values(args, FlowerSettings))
    return train_config_from_run_config({**run_config_defaults(),
                                         **run_config_for(config, settings)})


def test_flower_local_quick_rounds_8_trains_8_rounds_like_train():
    """The bug of issue 14: --quick was applied again on the server, to every value equal to a
    default, so an explicit --rounds 8 became quick's 2."""
    ours = server_side(flower_args("--quick", "--rounds", "8"))
    reference = train.config_from_args(train_args("--quick", "--rounds", "8"))
    assert ours.rounds == 8 == reference.rounds
    assert ours == dataclasses.replace(reference, data="")
    assert ours.local_epochs == quick_overrides()["local_epochs"]  # the rest is quick


def test_explicit_options_win_over_quick_and_quick_over_defaults():
    config = train.config_from_args(train_args("--quick", "--local-epochs", "2", "--lr", "0.01"))
    assert config.local_epochs == 2 and config.lr == 0.01
    assert config.rounds == quick_overrides()["rounds"] and config.quick
    plain = train.config_from_args(train_args())
    assert plain == dataclasses.replace(TrainConfig(), data="cohort", strategy="fedavg_lora")


def test_every_training_setting_is_an_option_of_both_commands():
    train_options, flower_options = option_strings("train"), option_strings("flower-local")
    for field in dataclasses.fields(TrainConfig):
        if not field.metadata["cli"]:
            continue
        assert cli_name(field) in train_options, field.name
        if not field.metadata["site"]:
            assert cli_name(field) in flower_options, field.name
    assert "--cache-dir" not in flower_options  # each site keeps its own cache
    assert {"--dp-noise-multiplier", "--round-timeout"} <= flower_options


def test_a_new_field_becomes_an_option_without_further_code():
    @dataclasses.dataclass
    class Extended(TrainConfig):
        warmup_rounds: int = setting(0, "rounds before the local adapter trains", quick=1)
        sharpen: bool = setting(True, "an example switch")

    parser = argparse.ArgumentParser()
    add_settings_options(parser, Extended)
    given = explicit_values(parser.parse_args(["--warmup-rounds", "3", "--no-sharpen"]),
                            Extended)
    assert given == {"warmup_rounds": 3, "sharpen": False}
    assert explicit_values(parser.parse_args([]), Extended) == {}
    assert "--warmup-rounds" in parser.format_help() and "--quick: 1" in parser.format_help()


def test_list_dict_and_boolean_options_are_typed():
    config = train.config_from_args(train_args(
        "--targets", "attn.q, mlp.fc1", "--model-overrides", '{"depth": 3}',
        "--no-prefix-cache", "--augment", "--fail-clients", "GE@2,Canon"))
    assert config.targets == ["attn.q", "mlp.fc1"] and config.model_overrides == {"depth": 3}
    assert not config.prefix_cache and config.augment
    assert config.fail_clients == ["GE@2", "Canon"]


def test_bad_values_fail_when_the_config_is_made():
    with pytest.raises(KitError, match="unknown strategy"):
        TrainConfig(strategy="fedfoo")
    with pytest.raises(KitError, match="--rounds"):
        resolve({"rounds": 0})
    with pytest.raises(SystemExit):
        train_args("--model-overrides", "{not json")
    with pytest.raises(KitError, match="dp-noise-multiplier"):
        flower_settings({"dp-noise-multiplier": -1.0})


def test_deprecated_local_names_still_work_for_one_release():
    """"local" now means only the paper's local adapter: the single-site strategy and the
    private head were renamed; the old names are accepted (and mapped) for one release."""
    assert TrainConfig(head="local").head == "private"
    assert train.config_from_args(train_args("--head", "local")).head == "private"
    old = parse(["train", "--data", "cohort", "--strategy", "local", "--out", "run"])
    assert train.config_from_args(old).strategy == "single_site"
    assert get_strategy("local") == get_strategy("single_site")
    assert TrainConfig.from_dict({"strategy": "local"}).strategy == "single_site"  # old runs
