"""The command line every `exp/NN-name.py` script shares: --config, --set, --debug.

An expected failure (a config or input error, a busy or foreign output folder, a
missing model, a read-only or full disk) ends the script with one line naming the
file or key and the fix, and exit status 2; `--debug` shows the traceback instead.
Ctrl-C ends it with one line (exit 130): rerunning the command resumes.
"""

from __future__ import annotations

import argparse
import errno
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
        config = load_config(args.configs or None, args.overrides, section)
        run(config)
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
