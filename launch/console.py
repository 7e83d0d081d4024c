"""The launcher's console: progress lines on stderr (stdout keeps only results), its commands' parser and one-line errors."""

from __future__ import annotations

import argparse
import sys

from titanic_lightning.errors import UsageError, one_line


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes end as one `error: ...` line (and `hint`), exit 2, through `run_command`."""

    def __init__(self, *args, hint: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.hint = hint

    def error(self, message: str):
        raise UsageError(f"{message}{self.hint}")


def path(value: str) -> str:
    """The `type` of a launcher flag that names a file or folder: an empty value is refused (argparse
    names the flag), never read as the current folder."""
    if not value:
        raise argparse.ArgumentTypeError("empty; give a path, or leave the flag out for the default")
    return value


def command_parser(prog: str, doc: str) -> ArgumentParser:
    """A launcher command's parser: `doc`'s first paragraph the description, the rest the epilog; no abbreviations."""
    return ArgumentParser(prog=prog, description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog=doc.split("\n\n", 1)[1], allow_abbrev=False, hint=f" (see {prog} --help)")


LAUNCH_PACKAGES = ("sagemaker", "boto3", "botocore", "optuna")  # the `launch` extra


def launcher_errors(main, argv: list[str]) -> None:
    """Run a launcher command's `main(argv)`; a missing `launch` extra and botocore's errors (endpoint,
    credentials, permissions) end as one line, except with --debug."""
    from titanic_lightning.command import debug_requested

    try:
        main(argv)
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if package not in LAUNCH_PACKAGES or debug_requested(argv):
            raise
        raise UsageError(f"this launcher command needs the `launch` extra ({package} is not installed): "
                         "run `make dev`, or `.venv/bin/python -m pip install -e '.[launch]'`") from None
    except Exception as exc:
        botocore = sys.modules.get("botocore.exceptions")  # loaded wherever botocore raised the error
        if botocore and isinstance(exc, (botocore.BotoCoreError, botocore.ClientError)) and not debug_requested(argv):
            raise UsageError(f"AWS: {one_line(exc)}") from None
        raise
