"""How a command's `--help` reads: its full description, wrapped, then real example commands.

Every leaf command passes `**leaf(description, example, ...)` to `add_parser`; the test suite
walks every leaf parser of `sramsim` and `fusion`, checks that it has examples and parses each
example with the real parser, so an example cannot name a flag that does not exist.
"""
from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from typing import Any

WIDTH = 79
EXAMPLES = "examples:"


def paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring as one line (a description never ends mid-sentence)."""
    first = (doc or "").strip().split("\n\n")[0]
    return " ".join(first.split())


def leaf(description: str, *examples: str) -> dict:
    """`add_parser` keyword arguments: the description wrapped paragraph by paragraph, and an
    epilog listing `examples` (one command per line) exactly as written."""
    if not examples:
        raise ValueError("a leaf command's help needs at least one example")
    paragraphs = [" ".join(p.split()) for p in description.strip().split("\n\n")]
    text = "\n\n".join(textwrap.fill(p, WIDTH) for p in paragraphs if p)
    epilog = "\n".join([EXAMPLES] + [f"  {e}" for e in examples])
    return {"description": text, "epilog": epilog,
            "formatter_class": argparse.RawDescriptionHelpFormatter}


class DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: stores into the new flag's dest and prints a one-line note on
    stderr (hidden from --help), so users' scripts keep working while they learn the new name."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "",
                 **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        import sys
        print(f"note: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def deprecated_alias(group: argparse.ArgumentParser | argparse._ActionsContainer, old: str,
                     new: str, dest: str, **kwargs: Any) -> None:
    """Add `old` to `group` (a parser or argument group) as a hidden alias of the flag `new`."""
    group.add_argument(old, dest=dest, action=DeprecatedAlias, new=new,
                       help=argparse.SUPPRESS, **kwargs)
