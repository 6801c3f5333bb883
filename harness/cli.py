"""The ``harness`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import textwrap
from pathlib import Path

from harness import __version__
from harness.config import DEFAULT_PROFILE, ConfigError, describe_fields, profile_names, read_profile
from harness.data.records import DataError
from harness.method import StageError
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
    run.add_argument("--engine", choices=["auto", "hf", "vllm"],
                     help="generation engine (sets engine=...): auto is vllm when importable and on CUDA, else hf")
    run.add_argument("--launcher", choices=["none", "accelerate"], default="none",
                     help="accelerate: run training stages under `accelerate launch` with DeepSpeed "
                          "(the other stages run once, here)")
    run.add_argument("--num-gpus", type=int, metavar="N",
                     help="processes (GPUs) per launched training stage (default: every visible GPU)")
    run.add_argument("--zero", type=int, choices=[0, 2, 3], default=2,
                     help="DeepSpeed ZeRO stage of launched stages (configs in harness/launch_configs/); "
                          "0: plain DDP, which also runs on CPU")
    run.add_argument("--dry-run", action="store_true",
                     help="print how each stage would run (the exact accelerate commands) and run nothing")
    run.add_argument("--judge-repeats", type=int, metavar="N",
                     help="judge every MT-Bench / AlpacaEval / unsafe-share item N times and keep the median "
                          "(sets <benchmark>.judge.repeats of every judged benchmark)")

    evaluation = commands.add_parser("eval", help="summarize published judgment files (FastChat, alpaca_eval)")
    formats = evaluation.add_subparsers(dest="importer", required=True, metavar="IMPORTER")
    for name in importers.names():
        importer = formats.add_parser(f"import-{name}", help=f"summarize a published {name} judgments file")
        importer.add_argument("file", type=Path, help="the judgments file (.json/.jsonl, optionally .gz)")
        importer.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    report = commands.add_parser(
        "report", help="tables, plots and index.html of a finished run (no model is loaded)",
        description="Build RUN_DIR/report/ from results.json and the stage files: tables (md, csv, tex, html), "
        "figures (png, svg) and a self-contained index.html. `harness run` builds it at the end.",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder holding results.json")
    report.add_argument("--format", default="md,csv,tex,html", help="table formats, comma-separated "
                        "(default: md,csv,tex,html; html also writes index.html)")
    report.add_argument("--published", nargs="?", const=True, default=None, metavar="FILE",
                        help="add the RS-DPO paper's published numbers as marked reference rows (the packaged "
                             "file, or FILE); they enter no statistic")

    profiling = commands.add_parser(
        "profile", help="peak memory and time per method and phase, measured and estimated",
        description="Measured: each method's phases (generation, scoring, training) with a fixed, small amount "
        "of work, each in a fresh process, repeated; writes a table (md, csv, json) and a bar chart beside the "
        "analytic estimate. --estimate: the estimate alone from a shipped model config (no GPU, no download).",
    )
    profiling.add_argument("--methods", default="rs,ppo,dpo,rsdpo", help="comma-separated (default: rs,ppo,dpo,rsdpo)")
    profiling.add_argument("--profile", help=f"run profile (default: {DEFAULT_PROFILE}; with --estimate: paper-hh)")
    profiling.add_argument("--steps", type=int, default=2, help="training steps (and PPO rollouts) per stage (default: 2)")
    profiling.add_argument("--repeats", type=int, default=3, help="runs of each phase, for median and spread (default: 3)")
    profiling.add_argument("--out", type=Path, help="output folder (default: runs/profile-<profile>)")
    profiling.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override a config value (repeatable)")
    profiling.add_argument("--estimate", action="store_true", help="print the analytic estimate only")
    profiling.add_argument("--model", default="llama-2-7b", help="--estimate: shipped model config "
                           "(llama-2-7b, smollm2-135m, tiny-random-llama; default: llama-2-7b)")
    profiling.add_argument("--precision", choices=["fp32", "bf16-mixed", "bf16"],
                           help="--estimate: default bf16-mixed (fp32 when the profile's dtype is float32)")
    profiling.add_argument("--gpus", type=int, default=1, help="--estimate: data-parallel GPUs (default: 1)")
    profiling.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], default=0,
                           help="--estimate: DeepSpeed ZeRO stage (default: 0)")
    profiling.add_argument("--prompt-tokens", type=int, default=256,
                           help="--estimate: prompt length in tokens (default: 256)")
    profiling.add_argument("--json", action="store_true", help="--estimate: print one JSON object")
    profiling.add_argument("--re-estimate", type=Path, metavar="DIR",
                           help="recompute the estimate beside the measurements stored in DIR/profile.json "
                           "(measures nothing) and rewrite DIR's profile.md, .csv, .json and .png")

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
        if args.command == "profile":
            return command_profile(args)
        if args.command == "report":
            return command_report(args)
        return command_list(args)
    except (ConfigError, PipelineError, UnknownPlugin, PluginLoadError, DataError, StageError, ValueError) as err:
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
    overrides = list(args.overrides)
    if args.judge_repeats is not None:
        overrides += [f"{section}.judge.repeats={args.judge_repeats}" for section in judged_sections()]
    if args.engine:
        overrides.append(f"engine={args.engine}")
    if args.dry_run:
        from harness.launch import dry_run

        for line in dry_run(requested, args.profile, args.run_dir, overrides, args.launcher, args.num_gpus, args.zero):
            print(line)
        return 0
    outcome = execute(requested, args.profile, args.run_dir, overrides, launcher=args.launcher,
                      num_gpus=args.num_gpus, zero=args.zero)
    print()
    for name, record in outcome.stages.items():
        print(f"  {name:<24} {record['status']:<8} {record['dir']}  ({_seconds(record.get('wall_s'))})")
    print(f"results: {outcome.store.results_path}")
    print(f"manifest: {outcome.store.manifest_path}   config: {outcome.store.config_path}")
    from reports.build import build_report

    build_report(outcome.store.root)
    main_table = outcome.store.root / "report" / "tables" / "main.md"
    if main_table.is_file():  # the paper's table, as the report wrote it
        print()
        print(main_table.read_text(encoding="utf-8").rstrip())
        print()
    print(f"report: {outcome.store.root / 'report' / 'index.html'}")
    return 0


def command_report(args: argparse.Namespace) -> int:
    from reports.build import build_report, parse_formats

    files = build_report(args.run_dir, parse_formats(args.format), published=args.published)
    print(f"report: {len(files)} files in {args.run_dir / 'report'}")
    index = args.run_dir / "report" / "index.html"
    if index.is_file():
        print(f"  {index}")
    return 0


def judged_sections() -> list[str]:
    """Config sections of the installed plugins that have a ``judge`` (mt_bench, alpaca_eval...)."""
    sections = []
    for name in methods.names():
        try:
            config_class = methods.get(name).config_class
        except PluginLoadError:
            continue
        if any(f.name == "judge" for f in dataclasses.fields(config_class)):
            sections.append(name)
    return sections


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


def command_profile(args: argparse.Namespace) -> int:
    from harness import profile_command as pc

    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    if args.re_estimate:
        paths = pc.write_outputs(pc.re_estimate(args.re_estimate), args.re_estimate)
        print(paths["md"].read_text())
        print("written: " + ", ".join(str(p) for p in paths.values()))
        return 0
    if args.estimate:
        result = pc.estimate_table(methods, args.profile or "paper-hh", args.model, list(args.overrides),
                                   args.precision, args.gpus, args.zero_stage, args.prompt_tokens)
        print(json.dumps(result)) if args.json else pc.print_estimate(result)
        return 0
    profile = args.profile or DEFAULT_PROFILE
    options = pc.ProfileOptions(methods, profile, args.steps, args.repeats,
                                args.out or Path("runs") / f"profile-{profile}", list(args.overrides))
    summary = pc.run_measured(options, Path.cwd())
    paths = pc.write_outputs(summary, options.out)
    print(paths["md"].read_text())
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


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
