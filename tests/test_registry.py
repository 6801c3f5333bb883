from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from harness import registry as registry_module
from harness.registry import PluginLoadError, Registry, UnknownPlugin, methods


def test_lookup_of_an_unknown_name_lists_the_available_ones():
    with pytest.raises(UnknownPlugin) as err:
        methods.get("rsdpoo")
    message = str(err.value)
    assert message.startswith("unknown method 'rsdpoo'")
    assert "available: " in message and "sft" in message


def test_our_own_stages_are_found_through_entry_points():
    assert {"demonstrations", "preferences", "prompts", "sft"} <= set(methods.names())
    assert methods.get("sft").name == "sft"


def test_a_third_party_plugin_is_found_by_its_entry_point():
    # tests/plugin_example is a separate distribution, pip-installed by `make test`.
    assert "prompt-lengths" in methods.names(), "run `make test` (it installs tests/plugin_example)"
    plugin = methods.get("prompt-lengths")
    assert plugin.__module__ == "harness_plugin_example"
    assert plugin.needs == ("prompts",)


def test_decorator_registration_and_duplicates():
    local = Registry("judge", "harness.tests.none")

    @local.register("echo")
    class Echo:
        pass

    assert local.get("echo") is Echo and local.names() == ["echo"]
    with pytest.raises(ValueError, match="already registered"):
        local.register("echo")(type("Other", (), {}))


def test_a_broken_plugin_fails_with_its_entry_point_named(monkeypatch):
    broken = EntryPoint(name="broken", value="no_such_module_xyz:Method", group="harness.tests.broken")
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [broken])
    local = Registry("method", "harness.tests.broken")
    assert local.names() == ["broken"]
    with pytest.raises(PluginLoadError, match="'no_such_module_xyz:Method' failed to load"):
        local.get("broken")
