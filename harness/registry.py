"""Registries that name plugins: methods (stages), benchmarks, judges and importers of published results.

Plugins register with a decorator (``@methods.register("sft")``) or, from any installed distribution,
through an entry point in the group ``harness.methods`` (``harness.benchmarks``, ``harness.judges``,
``harness.pair_selectors``).
The harness never imports a concrete plugin module itself: it finds them here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any


class UnknownPlugin(KeyError):
    """Lookup of a name no plugin has; ``str()`` lists the available names."""

    def __str__(self) -> str:
        return str(self.args[0])


class PluginLoadError(RuntimeError):
    """An entry point exists but importing it failed."""


class Registry:
    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group
        self._items: dict[str, Any] = {}
        self._entry_points: dict[str, Any] | None = None

    def register(self, name: str | None = None) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            key = name or getattr(obj, "name", None) or obj.__name__
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} '{key}' is already registered by {self._items[key]!r}")
            self._items[key] = obj
            return obj

        return decorator

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._discover()))

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._discover()

    def get(self, name: str) -> Any:
        if name not in self._items:
            entry_point = self._discover().get(name)
            if entry_point is None:
                available = self.names()
                close = difflib.get_close_matches(name, available, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise UnknownPlugin(
                    f"unknown {self.kind} '{name}'{hint}; available: {', '.join(available) or 'none'}"
                )
            try:
                self._items[name] = entry_point.load()
            except Exception as err:  # a broken third-party plugin must not hide the others
                raise PluginLoadError(
                    f"{self.kind} '{name}' from entry point '{entry_point.value}' failed to load: {err}"
                ) from err
        return self._items[name]

    def _discover(self) -> dict[str, Any]:
        if self._entry_points is None:
            self._entry_points = {ep.name: ep for ep in entry_points(group=self.group)}
        return self._entry_points


methods = Registry("method", "harness.methods")
benchmarks = Registry("benchmark", "harness.benchmarks")
judges = Registry("judge", "harness.judges")
# Readers of published judgment files: ``harness eval import-<name> FILE`` calls ``importers.get(name)(FILE)``.
importers = Registry("importer", "harness.importers")
# Rules that turn a prompt's scored samples into preference pairs: ``rsdpo.selection=<name>`` picks one.
# Each is a function ``select(rewards, config) -> PairSelection`` (see methods/pair_selection.py).
pair_selectors = Registry("pair selector", "harness.pair_selectors")
