"""The ``harness`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

from harness import __version__
from harness.config import DEFAULT_PROFILE, ConfigError, describe_fields, profile_names, read_profile
from harness.data.records import DataError
from harness.pipeline import PipelineError
from harness.registry import PluginLoadError, UnknownPlugin, benchmarks, importers, judges, methods

EPILOG = """examples:
  harness run --methods sft --profile smoke
  harness run --methods rs,ppo,dpo,rsdpo                  # the default profile: quick
  harness run --methods sft --set sft.learning_rate=1e-4 --set seed=1
  harness list
  harness eval import-mtbench model_judgment/gpt-4_single.jsonl --json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Train LLM alignment methods through one interface and compare them as the RS-DPO paper does.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rsdpo-harness {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="train the methods and everything they need; re-running skips finished stages",
        description="Run the stages the methods need. Finished stages (DONE in their folder) are reused; "
        "a killed run resumes where it stopped; a changed setting re-runs only what depends on it.",
    )
    run.add_argument("--methods", required=True, help="comma-separated method names (see `harness list`)")
    run.add_argument("--profile", default=DEFAULT_PROFILE, help=f"one of {', '.join(profile_names())} "
                     f"(default: {DEFAULT_PROFILE})")
    run.add_argument("--run-dir", type=Path, help="run folder (default: runs/<profile>)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set sft.max_steps=5 (repeatable)")

    evaluation = commands.add_parser("eval", help="summarize published judgment files (FastChat, alpaca_eval)")
    formats = evaluation.add_subparsers(dest="importer", required=True, metavar="IMPORTER")
    for name in importers.names():
        importer = formats.add_parser(f"import-{name}", help=f"summarize a published {name} judgments file")
        importer.add_argument("file", type=Path, help="the judgments file (.json/.jsonl, optionally .gz)")
        importer.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    listing = commands.add_parser("list", help="methods, benchmarks, judges and profiles, with their settings")
    listing.add_argument("--settings", action="store_true", help="also print every setting with its default and help")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return command_run(args)
        if args.command == "eval":
            return command_eval(args)
        return command_list(args)
    except (ConfigError, PipelineError, UnknownPlugin, PluginLoadError, DataError, ValueError) as err:
        if os.environ.get("HARNESS_DEBUG"):
            raise
        print(f"harness: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, (ConfigError, UnknownPlugin)) else 1
    except KeyboardInterrupt:
        print("harness: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def command_run(args: argparse.Namespace) -> int:
    from harness.runner import execute

    requested = [name.strip() for name in args.methods.split(",") if name.strip()]
    if not requested:
        raise ConfigError("--methods is empty; name at least one method (see `harness list`)")
    outcome = execute(requested, args.profile, args.run_dir, args.overrides)
    print()
    for name, record in outcome.stages.items():
        print(f"  {name:<24} {record['status']:<8} {record['dir']}  ({_seconds(record.get('wall_s'))})")
    print(f"results: {outcome.store.results_path}")
    print(f"manifest: {outcome.store.manifest_path}   config: {outcome.store.config_path}")
    return 0


def command_eval(args: argparse.Namespace) -> int:
    summary = importers.get(args.importer.removeprefix("import-"))(args.file)
    if args.json:
        print(json.dumps(summary))
    else:
        _print_nested(summary)
    return 0


def _print_nested(value, indent: str = "") -> None:
    for key, item in value.items():
        if isinstance(item, dict):
            print(f"{indent}{key}:")
            _print_nested(item, indent + "  ")
        else:
            print(f"{indent}{key}: {item:.6f}" if isinstance(item, float) else f"{indent}{key}: {item}")


def command_list(args: argparse.Namespace) -> int:
    print("methods and stages (harness run --methods ...):")
    for name in methods.names():
        try:
            cls = methods.get(name)
        except PluginLoadError as err:
            print(f"  {name:<16} (failed to load: {err})")
            continue
        needs = f"  [needs: {', '.join(cls.needs)}]" if cls.needs else ""
        print(f"  {name:<16} {cls.description}{needs}")
        if args.settings:
            for key, default, help_text in describe_fields(cls.config_class, name):
                print(f"      {key} = {default!r}    {help_text}")
    for title, registry in (("benchmarks", benchmarks), ("judges", judges)):
        names = registry.names()
        print(f"{title}: {', '.join(names) if names else 'none installed yet'}")
    print("profiles (harness run --profile ...):")
    for name in profile_names():
        model = read_profile(name).get("model", {}).get("source", "")
        default = " (default)" if name == DEFAULT_PROFILE else ""
        print(f"  {name:<16} model: {model}{default}")
    if args.settings:
        from harness.config import CoreConfig

        print("core settings:")
        for key, default, help_text in describe_fields(CoreConfig):
            print(textwrap.shorten(f"  {key} = {default!r}    {help_text}", 160))
    return 0


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    sys.exit(main())
