"""The command line every `exp/NN-name.py` script shares: --config, --set, --sweep, --debug.

An expected failure (a config or input error, a busy or foreign output folder, a
missing model, a read-only or full disk) ends the script with one line naming the
file or key and the fix, and exit status 2; `--debug` shows the traceback instead.
Ctrl-C ends it with one line (exit 130): rerunning the command resumes. With --sweep
(rl_onoff.sweep) the stage runs once per combination of the swept values; a combination's
expected error ends that combination only, and the script exits 2 if any failed.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from typing import Callable

from rl_onoff.config import CONFIG_NAME, ConfigError, load_config


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", dest="configs", action="append", default=[], metavar="PATH",
                   help=f"a YAML file (default: {CONFIG_NAME} in the working directory); "
                        "repeatable: later files override earlier ones")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set 00_sample.sampling.temperature=0.6 "
                        "(repeatable; values are read as YAML: numbers, true/false, null, [lists])")
    p.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="run once per value, e.g. --sweep 00_sample.sampling.temperature=0.6,1.0 "
                        "(repeatable: every combination; each in <output_dir>-sweep/<values>, all "
                        "in one tracking group; a rerun skips the finished ones)")
    p.add_argument("--group", metavar="NAME", help="with --sweep: the tracking group (default: "
                   "an earlier attempt's, else the swept keys and a timestamp)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of expected errors")
    return p


def expected_errors() -> tuple[type, ...]:
    from rl_onoff.models import ModelLoadError
    from rl_onoff.stage import StageError

    return (ConfigError, ModelLoadError, StageError, FileNotFoundError, PermissionError)


def describe_os_error(err: OSError) -> str | None:
    """One line for the disk problems a user can fix; None for other OS errors."""
    where = f" writing {err.filename}" if err.filename else ""
    if err.errno == errno.ENOSPC:
        return f"the disk is full{where}; free space or choose another output_dir, then rerun"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"no permission{where} ({err.strerror}); choose a writable output_dir or tracking.root"
    return None


def main(description: str, run: Callable, argv: list[str] | None = None,
         section: str | None = None) -> None:
    """Parse arguments, load the config (defaults and `section`), call `run(config)`."""
    args = parser(description).parse_args(argv)
    try:
        if args.sweeps or args.group:
            sweep(args, run, section)
        else:
            run(load_config(args.configs or None, args.overrides, section))
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except OSError as err:
        line = describe_os_error(err)
        if args.debug or (line is None and not isinstance(err, expected_errors())):
            raise
        print(f"error: {line or err}", file=sys.stderr)
        sys.exit(2)
    except expected_errors() as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def sweep(args, run: Callable, section: str | None) -> None:
    """Run every combination of --sweep; exit 2 when one failed."""
    from rl_onoff.sweep import run_sweep

    if not args.sweeps:
        raise ConfigError("--group names a sweep's tracking group; give --sweep KEY=V1,V2,... "
                          "too (or set tracking.group with --set for a single run)")
    if section is None:
        raise ConfigError("--sweep needs a stage script (exp/NN-name.py or rl-onoff STAGE)")
    outcomes = run_sweep(run, section, args.configs, args.overrides, args.sweeps, args.group,
                         () if args.debug else expected_errors())
    failed = [o.combination.name for o in outcomes if o.status == "failed"]
    if failed:
        print(f"error: {len(failed)} of {len(outcomes)} combinations failed ({', '.join(failed)}); "
              "fix the cause and rerun the same command", file=sys.stderr)
        sys.exit(2)


# Script name -> (YAML section, its run function, an optional argv adapter). A new stage adds
# its line here (and a thin exp/NN-name.py). 02-visualize, a Streamlit app, starts from its
# own script.
STAGES = {
    "00-sample": ("00_sample", "rl_onoff.sample.run:run_sample", None),
    "01-dist": ("01_dist", "rl_onoff.distributions:run_dist", None),
    "03-tree-search": ("03_tree_search", "rl_onoff.search.run:run_tree_search", None),
    "04-proto": ("04_proto", "rl_onoff.proto.pipeline:run_proto", None),
    "05-entropy": ("05_entropy", "rl_onoff.entropy:run_entropy", "rl_onoff.entropy:mode_argv"),
}


def _load(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def entry(argv: list[str] | None = None) -> None:
    """`rl-onoff STAGE [--config ...] [--set ...]`: any stage from an installed package."""
    argv = sys.argv[1:] if argv is None else argv
    names = list(STAGES)
    if not argv or argv[0] not in names:
        print(f"usage: rl-onoff STAGE [--config PATH] [--set KEY=VALUE ...] "
              f"[--sweep KEY=V1,V2,...]\n"
              f"STAGE: {', '.join(names)}", file=sys.stderr)
        sys.exit(2)
    stage, rest = argv[0], argv[1:]
    section, run, adapter = STAGES[stage]
    main(f"{stage}: see rl_onoff.{section}", _load(run), _load(adapter)(rest) if adapter else rest,
         section=section)
