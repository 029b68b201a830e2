"""The ``redraft`` command.

Exit codes: 0 done; 1 the job failed or its error rows exceeded ``job.max_error_fraction``; 2 the config or the
command line is invalid (nothing was run); 130 interrupted by Ctrl-C (SIGINT), 143 stopped by SIGTERM (finished
rows are kept: run the same command again to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from .config import ConfigError, describe_fields, load_config

EXIT_OK, EXIT_JOB_FAILED, EXIT_CONFIG = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM

RUN_EPILOG = """\
config keys (YAML sections; any can be overridden with --set key.path=value):
{fields}

examples:
  redraft run configs/demo.yaml
  redraft run configs/nightly_rewrite.yaml --set sampling.seed=7 --set workers.batch_size=64
  redraft run configs/demo.yaml --set output.path=/tmp/out2 --set job.resume=false
  redraft run configs/demo.yaml --check        # validate, plan the input, probe the output; generate nothing

Output: one Parquet row per input row (id, status, error, output, num_output_tokens, num_passes,
tokens_per_pass, seconds, model, sampling_hash) in OUTPUT/part-*.parquet, and OUTPUT/summary.json.
Running the same command again after an interruption finishes the remaining rows only.
Ray: connects to the cluster named by RAY_ADDRESS, else starts a local one.
Exit codes: 0 done, 1 job failed or too many error rows, 2 invalid config, 130 interrupted (Ctrl-C),
143 stopped by SIGTERM; after 130 or 143, run the same command again to resume."""


def _fields_help() -> str:
    lines = []
    for key, default, desc in describe_fields():
        if default == "(required)":
            head = f"  {key} (required)"
        else:
            head = f"  {key}" + (f" (default {default})" if default not in ("", None) else "")
        lines.append(head)
        lines.extend(textwrap.wrap(desc, width=96, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


VERBOSE_HELP = ("show more: redraft's INFO lines (every staged batch, every output file written), Ray Data's "
                "own progress and logs, and Ray's lines unfiltered (by default redraft shows one progress display "
                "counting rows, and drops the one error-level line Ray prints for every job that is not an error)")


def _with_verbose(add_parser):
    """Every subcommand takes -v too (redraft run -v ...), as well as before it (redraft -v run ...)."""
    def add(*args, **kwargs):
        p = add_parser(*args, **kwargs)
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        return p
    return add


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 as well; keep the message short and helpful
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="redraft",
        description="Rewrite or generate text in bulk with a diffusion language model (DiffusionGemma) on Ray. "
                    "A job reads a corpus (Parquet or JSON Lines, local or S3), runs one engine per Ray actor, "
                    "and writes exactly one output row per input row.",
        epilog="Run 'redraft run --help' for every job config key. Quick start: 'redraft demo' (the demo jobs "
               "on the model shipped in configs/models/code-tiny).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser = _with_verbose(sub.add_parser)
    run = sub.add_parser(
        "run", help="run (or resume) a bulk job from a YAML config",
        description="Run a bulk job described by a YAML config. Rerunning the same config resumes: rows already "
                    "written are kept and not generated again.",
        epilog=RUN_EPILOG.format(fields=_fields_help()), formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("config", metavar="CONFIG.yaml", help="the job config (see the keys below)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override one config value; VALUE is read as YAML (numbers, true/false, null, [a, b]); "
                          "repeatable, e.g. --set sampling.max_new_tokens=64")
    run.add_argument("--check", action="store_true",
                     help="validate the config, check the checkpoint, plan the input and check that output.path can be "
                          "written (a probe file, removed again), then stop")
    run.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    demo = sub.add_parser(
        "demo-checkpoint", help="write a tiny random DiffusionGemma checkpoint for the demo",
        description="Write a tiny DiffusionGemma checkpoint with random weights in the real Hugging Face layout "
                    "(config.json, model.safetensors, tokenizer.json). Its text is gibberish, but it runs every "
                    "part of redraft, e.g. 'redraft run configs/demo.yaml'.")
    demo.add_argument("path", metavar="PATH", help="directory to write (created; must be empty or absent)")
    demo.add_argument("--shape", default="base", help="model shape: base (hidden 64, 4 layers) or bench (hidden 128, 6 layers); default: base")
    demo.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    srv = sub.add_parser(
        "serve", help="serve the model over OpenAI-compatible HTTP on Ray Serve",
        description="Start a Ray Serve app (127.0.0.1:8000 by default) with /v1/completions, /v1/chat/completions, "
                    "/v1/models and /v1/edits. Ray: RAY_ADDRESS, else a local cluster. See README.md, section 'Interactive editing: redraft serve'.")
    srv.add_argument("config", metavar="CONFIG.yaml", help="the Serve config, e.g. configs/serve.yaml")
    srv.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override one config value, e.g. --set http.port=8001")
    from . import demo, evaluate, train

    demo.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    return parser


def cmd_demo_checkpoint(args) -> int:
    from pathlib import Path

    from .demo_checkpoint import SHAPES, write_demo_checkpoint

    path = Path(args.path)
    if args.shape not in SHAPES:
        print(f"redraft: error: --shape: unknown shape {args.shape!r}; choose from {', '.join(SHAPES)}",
              file=sys.stderr)
        return EXIT_CONFIG
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        print(f"redraft: error: {path} exists and is not an empty directory", file=sys.stderr)
        return EXIT_JOB_FAILED
    write_demo_checkpoint(path, args.shape, seed=args.seed)
    print(f"wrote a tiny random '{args.shape}' DiffusionGemma checkpoint to {path}")
    return EXIT_OK


def _check(cfg) -> int:
    from .inputs import InputPlanError, make_shards, plan_inputs
    from .run import JobError, check_checkpoint
    from .storage import Location, StorageError

    try:
        check_checkpoint(cfg)
        skipped: list[str] = []
        files = plan_inputs(Location.of(cfg.input.path, cfg.input.storage), cfg.input, cfg.output.rows_per_file,
                            skipped=skipped)
    except (JobError, InputPlanError) as err:
        print(f"redraft: error: {err}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except StorageError as err:
        print(f"redraft: error: input.path: {err}", file=sys.stderr)
        return EXIT_JOB_FAILED
    try:
        Location.of(cfg.output.path, cfg.output_storage()).check_writable()
    except StorageError as err:
        print(f"redraft: error: output.path: {err}", file=sys.stderr)
        return EXIT_JOB_FAILED
    shards = make_shards(files, cfg.output.rows_per_file)
    if skipped:
        print(f"not read ({len(skipped)} files): {', '.join(skipped)}")
    print(f"config ok: {sum(f.num_rows for f in files):,} rows in {len(files)} input files -> "
          f"{len(shards)} output files under {cfg.output.path}")
    return EXIT_OK


def cmd_run(args) -> int:
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print("job config error: " + "\njob config error: ".join(err.problems), file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        return _check(cfg)

    from .run import JobError, Terminated, format_summary, handle_sigterm, run_job

    handle_sigterm()
    try:
        result = run_job(cfg)
    except JobError as err:
        print(f"redraft: error: {err}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except KeyboardInterrupt as err:
        what = "stopped by SIGTERM" if isinstance(err, Terminated) else "interrupted"
        print(f"redraft: {what}; rows finished so far are kept; run the same command again to resume",
              file=sys.stderr)
        return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(result.summary, indent=2))
    else:
        print(format_summary(result.summary))
    if result.exit_code:
        print(f"redraft: error: {result.message}", file=sys.stderr)
    return result.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    from . import console

    console.configure(args.verbose, filter_stderr=argv is None)  # argv None: run as the program
    if args.command == "demo-checkpoint":
        return cmd_demo_checkpoint(args)
    if args.command == "demo":
        from .demo import cmd_demo

        return cmd_demo(args)
    if args.command == "train":
        from .train import cmd_train

        return cmd_train(args)
    if args.command == "eval":
        from .evaluate import cmd_eval

        return cmd_eval(args)
    if args.command == "serve":
        from .serve_app import serve_command

        return serve_command(args.config, args.overrides)
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
