"""Pages that are generated at build time, so they cannot drift from the code and the results.

A page asks for generated text with a marker line ``<!-- generated: NAME -->``; the mkdocs hook
`on_page_markdown` replaces it with `GENERATORS[NAME]()`. An unknown name fails the build. The
generators are plain functions (the tests call them too):

- ``cli``: every `sramsim` and `fusion` command's ``--help``, walked from the real parsers;
- the reproduction tables (`reproductions`), read from the result JSONs in benchmarks/results/.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the hook is loaded by file path: make the packages importable
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
HOOKS = Path(__file__).resolve().parent
if str(HOOKS) not in sys.path:
    sys.path.insert(0, str(HOOKS))

import reproductions  # noqa: E402  (beside this file)

MARKER = re.compile(r"^<!-- generated: ([a-z0-9-]+) -->$", re.MULTILINE)
HELP_WIDTH = "100"


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(parser: argparse.ArgumentParser, level: int):
    """(heading level, parser) for `parser` and every subcommand under it, depth first."""
    yield level, parser
    for child in _subcommands(parser).values():
        yield from _walk(child, level + 1)


def command_parsers() -> list[tuple[int, argparse.ArgumentParser]]:
    """Every parser of both command-line programs, `sramsim` first."""
    from fusion.cli import parser as fusion_parser
    from sramsim.commands.main import build_parser
    return [*_walk(build_parser(), 2), *_walk(fusion_parser(), 2)]


def cli_reference() -> str:
    """Markdown: one section per command with its --help, exactly as argparse prints it."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH          # argparse wraps to the terminal width
    try:
        parts = []
        for level, parser in command_parsers():
            parts.append(f"{'#' * level} `{parser.prog}`\n\n```text\n"
                         f"{parser.format_help().rstrip()}\n```\n")
        return "\n".join(parts)
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


GENERATORS = {"cli": cli_reference, **reproductions.TABLES}


def expand(markdown: str, where: str = "page") -> str:
    """`markdown` with every generated-text marker replaced (ValueError on an unknown name)."""
    def one(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{where}: unknown generated text {name!r}; known: "
                             f"{', '.join(sorted(GENERATORS))}")
        return GENERATORS[name]().rstrip() + "\n"
    return MARKER.sub(one, markdown)


def on_page_markdown(markdown, page, config, files):   # mkdocs hook
    return expand(markdown, page.file.src_path)
