"""Every `python -m entry.*` command in scripts/gpu_check.sh is accepted by that entry's parser, so the
GPU script cannot rot on a machine without a GPU."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from titanic_lightning import config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
PARSERS = {"train": config.parse_train_args, "prepare": config.parse_prepare_args,
           "predict": config.parse_predict_args, "export": config.parse_export_args}


def _words(text: str) -> list[str]:
    """A shell command's words up to its first redirection or list operator."""
    words = []
    for word in shlex.split(text, comments=True):
        if re.match(r"^(\d?>|<|\|\||&&|\||;)", word):
            break
        words.append(word)
    return words


def entry_commands(script: str) -> list[tuple[str, list[str]]]:
    """(entry, arguments) for each entry command the script runs, `run NAME ...` lines expanded into
    the entry.train command of its `run` function."""
    text = script.replace("\\\n", " ")
    commands, run_base = [], None
    for line in text.splitlines():
        match = re.search(r"-m entry\.(\w+)(.*)", line)
        if match:
            words = _words(match[2])
            if '"$@"' in match[2]:
                run_base = (match[1], [w for w in words if w != "$@"])
            else:
                commands.append((match[1], words))
    for line in text.splitlines():
        match = re.match(r"^run (\S+)(.*)$", line)
        if match:
            assert run_base is not None, "a `run` line, but no entry command with \"$@\" in the script"
            commands.append((run_base[0], run_base[1] + _words(match[2])))
    return commands


COMMANDS = entry_commands(SCRIPT.read_text())


def test_the_script_runs_the_entries_it_is_meant_to():
    assert [entry for entry, _ in COMMANDS].count("train") >= 4 and ("prepare", ["--out", "$work/data"]) in COMMANDS
    assert any("--batch_size" in args for _, args in COMMANDS)


@pytest.mark.parametrize("entry, args", COMMANDS, ids=[" ".join(a[-6:]) for _, a in COMMANDS])
def test_every_entry_command_parses(entry, args):
    PARSERS[entry](args)
