"""The parser every `entry.*` command shares: jsonargparse over a configuration dataclass, with
`--config FILE` and `--print_config` as in LightningCLI, one-line messages naming the flag, and a
YAML dump that reads back exactly as written. The commands' flags themselves are in `config`.
"""

from __future__ import annotations

import re
import typing

from jsonargparse import ActionConfigFile, ArgumentParser, get_loader, set_dumper

from titanic_lightning.errors import UsageError


def _exact_yaml_dump(data) -> str:
    """jsonargparse's YAML dump, but quoting each string its YAML loader would read back as something
    else: PyYAML writes `1e3` plain, and jsonargparse reads it as the float 1000.0."""
    import yaml

    load = get_loader("yaml")

    def represent_str(dumper, value: str):
        try:
            plain = load(value) == value
        except Exception:  # noqa: BLE001 - not loadable as written: quote it
            plain = False
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=None if plain else "'")

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(str, represent_str)
    return yaml.dump(data, Dumper=Dumper, default_flow_style=False, allow_unicode=True, sort_keys=False)


EXACT_YAML = "titanic_exact_yaml"
set_dumper(EXACT_YAML, _exact_yaml_dump)


class _CommandParser(ArgumentParser):
    """jsonargparse's parser, plus the configuration's own checks (`CHECKS`) and a YAML dump that
    reads back as written.

    jsonargparse validates a configuration after parsing it and before `--print_config` prints it,
    so every value a printed configuration holds passes the command's checks.
    """

    def __init__(self, *args, checks=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.checks = checks

    def validate(self, cfg, *args, **kwargs) -> None:
        super().validate(cfg, *args, **kwargs)
        for check in self.checks:
            check(cfg)

    def dump(self, cfg, format: str = "parser_mode", *args, **kwargs) -> str:
        if format == "parser_mode" and not kwargs.get("with_comments"):
            format = EXACT_YAML
        return super().dump(cfg, format, *args, **kwargs)


class _ConfigFile(ActionConfigFile):
    """jsonargparse's `--config`, with whatever is wrong in the file reported naming the file.

    jsonargparse checks each value as it loads the file, but its unknown keys only at the end of
    parsing, where the file is no longer known: they are checked here, as each file is read.
    """

    def __call__(self, parser, cfg, values, option_string=None):
        try:
            _check_config_text(values, getattr(parser, "text_flags", ()))
            super().__call__(parser, cfg, values, option_string)
            parser.validate(cfg, skip_required=True)
        except Exception as exc:  # noqa: BLE001 - jsonargparse raises TypeError, KeyError, ArgumentError, ...
            raise TypeError(f"{option_string} {values}: {_config_message(str(exc))}") from None


def _check_config_text(source: str, text_flags) -> None:
    """Refuse, before loading: YAML aliases (a mapping of flags needs none, and nested ones can
    expand a few lines into gigabytes once the configuration is copied, a "billion laughs"), and a
    text flag whose string jsonargparse would read again as null (`"#exp1"`, `"~"`), as on the
    command line."""
    import os

    import yaml

    text = source
    if os.path.isfile(source):
        with open(source, encoding="utf-8", errors="replace") as file:
            text = file.read()
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise TypeError("YAML aliases (*name) are not accepted; write each value out")
        values = yaml.safe_load(text)
    except yaml.YAMLError:
        return  # jsonargparse reports what is wrong with the YAML
    for flag in text_flags:
        value = values.get(flag[2:]) if isinstance(values, dict) else None
        if isinstance(value, str):
            _check_text_value(flag, value)


def _check_text_value(flag: str, value: str) -> None:
    if not value.strip():
        raise UsageError(f"{flag}: empty; give a path, or leave the flag out for the default")
    try:
        is_null = get_loader("yaml")(value) is None
    except Exception:  # noqa: BLE001 - not YAML: jsonargparse keeps it as text
        is_null = False
    if is_null:
        raise UsageError(f"{flag} {value!r}: YAML reads this as no value; write it as ./{value}, "
                         "or leave the flag out for the default")


def _config_message(text: str) -> str:
    text = re.sub(r'^Parser key "config":\s*', "", text.strip())
    text = re.sub(r'Parser key "([^"]+)":', r"\1:", text)
    text = re.sub(r"^Option '([^']+)' is not accepted$", r"unknown key '\1'", text)
    text = re.sub(r"^Validation failed: Key '([^']+)' is not expected$", r"unknown key '\1'", text)  # jsonargparse 4.43
    return re.sub(r"^Unexpected config:.*", "not a YAML mapping of flag names to values", text, flags=re.S)


def parser(cls: type, prog: str, checks=()) -> ArgumentParser:
    parser = _CommandParser(
        prog=prog, description=cls.__doc__.split("\n\n")[0], exit_on_error=False, allow_abbrev=False,
        checks=checks,
    )
    parser.add_argument("--config", action=_ConfigFile,
                        help="A YAML file of flag values, as --print_config writes it; later flags override it.")
    parser.add_class_arguments(cls, nested_key=None, as_group=False)
    parser.text_flags = _text_flags(cls)
    return parser


def _text_flags(cls: type) -> set[str]:
    """The flags that take free text (paths): the configuration's `Optional[str]` fields."""
    return {f"--{name}" for name, hint in typing.get_type_hints(cls).items() if hint == typing.Optional[str]}


def _check_text_values(cls: type, argv: list[str]) -> None:
    """Refuse a path typed on the command line that YAML would read as no value at all: jsonargparse
    reads values as YAML, where `#exp1` (a comment), `~` and `null` are null, and a null path silently
    means the default folder. (In a --config file, null keeps meaning the default.)"""
    flags = _text_flags(cls)
    for i, token in enumerate(argv):
        flag, eq, value = token.partition("=")
        if flag in flags and (eq or (token in flags and i + 1 < len(argv))):
            _check_text_value(flag, value if eq else argv[i + 1])


def parse(cls: type, prog: str, argv: list[str], checks=()):
    """`cls(**flags)` from `argv`; a mistake is a `UsageError` naming the flag."""
    _check_text_values(cls, argv)
    command = parser(cls, prog, checks)
    # --print_config prints "after applying all other arguments", but jsonargparse 4.53 prints a
    # --config file read after it on its own and exits: it goes last.
    printing = [a for a in argv if a == "--print_config" or a.startswith("--print_config=")]
    argv = [a for a in argv if a not in printing] + printing
    try:
        namespace = command.parse_args(argv)  # with --print_config: prints and exits (SystemExit 0)
    except Exception as exc:  # jsonargparse raises argparse.ArgumentError and friends
        raise UsageError(_flag_message(str(exc))) from None
    namespace.pop("config", None)  # the files read, not a setting
    return cls(**{k: _plain(v) for k, v in namespace.as_dict().items()})


def _plain(value):
    """Restricted types (PositiveInt, ...) back to builtins: checkpoints must load weights-only."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _flag_message(text: str) -> str:
    text = re.sub(r'Parser key "([^"]+)":', r"--\1:", text)
    text = re.sub(r"^Unrecognized arguments", "unrecognized arguments", text)  # argparse's wording, as newer jsonargparse
    return " ".join(text.split())
