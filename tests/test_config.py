from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import yaml

from harness.config import ConfigError, RunConfig, build_run_config, profile_names, read_profile
from harness.registry import methods
from harness.runner import resolve_run_config


def sft_config(profile: str = "smoke", *overrides: str) -> RunConfig:
    return resolve_run_config(["sft"], profile, list(overrides))


def test_every_shipped_profile_resolves():
    assert {"smoke", "quick", "paper-hh", "paper-webgpt"} <= set(profile_names())
    for name in profile_names():
        config = sft_config(name)
        assert config.profile == name


def test_profile_extends_its_parent():
    child, parent = read_profile("paper-webgpt"), read_profile("paper-hh")
    assert child["model"] == parent["model"]
    assert child["data"]["preferences"]["format"] == "webgpt"
    assert child["data"]["demonstrations"] == parent["data"]["demonstrations"]


def test_overrides_are_parsed_to_the_field_type():
    config = sft_config(
        "smoke", "sft.learning_rate=1e-4", "sft.max_steps=7", "sft.lora=true", "data.prompts.limit=null",
        "model.source=123", "seed=3",
    )
    assert config.sections["sft"].learning_rate == pytest.approx(1e-4)
    assert config.sections["sft"].max_steps == 7
    assert config.sections["sft"].lora is True
    assert config.core.data.prompts.limit is None
    assert config.core.model.source == "123"  # a string field keeps the text as typed
    assert config.core.seed == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sft.max_steps=abc", "'sft.max_steps' must be an integer, found 'abc'"),
        ("sft.max_steps=1.5", "'sft.max_steps' must be an integer, found 1.5"),
        ("sft.lora=maybe", "'sft.lora' must be true or false, found 'maybe'"),
        ("device=tpu", "'device' must be one of auto, cpu, cuda; found 'tpu'"),
        ("sft.learnig_rate=1", "unknown config key 'sft.learnig_rate' (did you mean 'sft.learning_rate'?)"),
        ("modle.source=x", "unknown config key 'modle.source' (did you mean 'model.source'?)"),
        ("sft.max_steps", "--set expects key=value, found 'sft.max_steps'"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        sft_config("smoke", override)
    assert str(err.value) == message


def test_unknown_profile_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown profile 'quik' \(did you mean 'quick'\?\); available: "):
        sft_config("quik")


def test_config_is_saved_without_secrets():
    @dataclass
    class JudgeLike:
        model: str = "gpt-4"
        api_key: str = field(default="", metadata={"secret": True, "help": "read from the environment"})

    config = build_run_config("test", {}, ["judge-like.api_key=sk-123"], {"judge-like": JudgeLike})
    assert config.sections["judge-like"].api_key == "sk-123"
    saved = yaml.safe_dump(config.to_dict())
    assert "sk-123" not in saved and "api_key" not in saved
    assert config.to_dict()["judge-like"] == {"model": "gpt-4"}


def test_plugin_sections_come_from_the_registry():
    config = resolve_run_config(["prompt-lengths"], "smoke", ["prompt-lengths.unit=chars"])
    assert config.sections["prompt-lengths"].unit == "chars"
    assert "prompt-lengths" in methods.names()
