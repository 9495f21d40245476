"""Every option and positional of ``ivr`` says what it is for in ``--help`` (issue #18, item 11)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from ivr.cli import parser


def actions(p: argparse.ArgumentParser, path: str = "ivr") -> Iterator[tuple[str, argparse.Action]]:
    """Every action of every (sub-)command, with the command's path."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_and_positional_has_help() -> None:
    missing = [f"{path} {'/'.join(a.option_strings) or a.dest}" for path, a in actions(parser())
               if not a.help or a.help == argparse.SUPPRESS]
    assert missing == []


def test_every_subcommand_has_help() -> None:
    def walk(p: argparse.ArgumentParser, path: str) -> Iterator[str]:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {c.dest for c in action._choices_actions if c.help}
                for name, sub in action.choices.items():
                    if name not in helped:
                        yield f"{path} {name}"
                    yield from walk(sub, f"{path} {name}")

    assert list(walk(parser(), "ivr")) == []
