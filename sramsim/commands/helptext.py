"""How a command's `--help` reads: its full description, wrapped, then real example commands.

Every leaf command passes `**leaf(description, example, ...)` to `add_parser`; the test suite
walks every leaf parser of `sramsim` and `fusion`, checks that it has examples and parses each
example with the real parser, so an example cannot name a flag that does not exist.
"""
from __future__ import annotations

import argparse
import textwrap

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
