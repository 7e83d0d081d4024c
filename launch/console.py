"""The launcher's console: progress lines on stderr (stdout keeps only results), its commands' parser and one-line errors."""

from __future__ import annotations

import argparse
import sys

from titanic_lightning.errors import UsageError


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes end as one `error: ...` line and exit 2 through `run_command`, not
    argparse's usage dump; `hint` is appended to the message."""

    def __init__(self, *args, hint: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.hint = hint

    def error(self, message: str):
        raise UsageError(f"{message}{self.hint}")


def command_parser(prog: str, doc: str) -> ArgumentParser:
    """The parser of a launcher command: its docstring's first paragraph as the description, the
    rest as the epilog, no abbreviated flags, and mistakes pointing at `--help`."""
    return ArgumentParser(prog=prog, description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog=doc.split("\n\n", 1)[1], allow_abbrev=False, hint=f" (see {prog} --help)")


LAUNCH_PACKAGES = ("sagemaker", "boto3", "botocore", "optuna")  # the `launch` extra


def launcher_errors(main, argv: list[str]) -> None:
    """Run a launcher command's `main(argv)`, turning the mistakes that are the user's to fix into one
    line: a missing `launch` extra, and botocore's own errors (endpoint, credentials, permissions).
    With --debug they are raised as they are."""
    from titanic_lightning.command import debug_requested
    from titanic_lightning.errors import one_line

    try:
        main(argv)
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if package not in LAUNCH_PACKAGES or debug_requested(argv):
            raise
        raise UsageError(f"this launcher command needs the `launch` extra ({package} is not installed): "
                         "run `make dev`, or `.venv/bin/python -m pip install -e '.[launch]'`") from None
    except Exception as exc:
        try:
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError:
            raise exc from None
        if isinstance(exc, (BotoCoreError, ClientError)) and not debug_requested(argv):
            raise UsageError(f"AWS: {one_line(exc)}") from None
        raise
