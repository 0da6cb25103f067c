"""Run the code blocks of one docs page, in order, in one process, at small size.

What runs (the conventions the docs are written to):

- a ```python block: executed in a fresh namespace;
- a ```sh block: every command in it (a trailing backslash continues a line; # starts a comment);
- a ```console block: every line that starts with "$ " (and its continuation lines) is a command,
  the other lines are output as it was recorded, not compared;
- anything else (```text, ```toml, ...) is not code;
- a block whose fence is preceded by the line `<!-- no-run: why -->` is only checked: Python is
  compiled, every `sramsim` / `fusion` command is parsed with the real parser (so a renamed flag
  fails), nothing runs. A block that includes a file (a `--8<--` snippet line) is run where that
  file is tested (examples/: tests/test_examples.py).

`sramsim` and `fusion` commands run in this process (their console scripts' `main(argv)`), with
the sizes in `SMALL` capped: `--limit 10000` runs as `--limit 200`. Other shell commands run in
bash. Every block runs in the working directory given (`--cwd`); a `sramsim train-base` command
already run with the same arguments on another page is not run again: its checkpoint is copied
from `--cache` (training is deterministic in its seed).

    python tests/docs_runner.py PAGE.md --cwd DIR [--cache DIR] [--check-only]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# flag -> the largest value a docs test runs it with.
SMALL = {"--limit": 200, "--eval-limit": 200, "--epochs": 1, "--fat-epochs": 1,
         "--randbet-start": 0, "--maps": 2, "--val-maps": 1, "--val-split": 50, "--models": 2,
         "--chips": 2, "--dram-rows": 512, "--offsets": 2, "--val-images": 200,
         "--check-images": 200, "--test-maps": 2}
SHELL_SYNTAX = re.compile(r"[|&;<>()$`*]|^\w+=")
NO_RUN = re.compile(r"^\s*<!-- no-run: .+-->\s*$")
FENCE = re.compile(r"^(\s*)(```+)\s*([\w+-]*)\s*$")


@dataclass
class Block:
    """One fenced code block of a page: its language, text and first line (1-based)."""

    lang: str
    code: str
    line: int
    run: bool

    @property
    def where(self) -> str:
        return f"line {self.line} ({self.lang})"


def blocks(markdown: str) -> list[Block]:
    """The code blocks of a page (see the module docstring for what `run` means)."""
    lines = markdown.splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(3):
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3)
        body, j = [], i + 1
        while j < len(lines) and lines[j].strip() != fence:
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"line {i + 1}: code block never closed")
        previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        code = "\n".join(body) + "\n"
        run = not NO_RUN.match(previous) and "--8<--" not in code
        found.append(Block(lang, code, i + 1, run))
        i = j + 1
    return found


def commands(block: Block) -> list[str]:
    """The shell commands of a sh or console block, continuation lines joined."""
    lines = block.code.splitlines()
    if block.lang == "console":
        picked, continuing = [], False
        for line in lines:
            if line.startswith("$ ") or continuing:
                picked.append(line[2:] if line.startswith("$ ") else line)
                continuing = line.rstrip().endswith("\\")
        lines = picked
    out, current = [], ""
    for line in lines:
        current += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            if current.strip() and not current.strip().startswith("#"):
                out.append(current.strip())
            current = ""
    return out


def in_process(command: str) -> list[str] | None:
    """The argv of a plain `sramsim` / `fusion` command, else None (run it in bash)."""
    words = shlex.split(command, comments=True)
    if not words or words[0] not in ("sramsim", "fusion"):
        return None
    if any(SHELL_SYNTAX.search(w) for w in command.split("#")[0].split()):
        return None
    return words


def small(argv: list[str]) -> list[str]:
    """argv with every size flag of `SMALL` capped."""
    out = list(argv)
    for i, word in enumerate(out):
        flag, eq, value = word.partition("=")
        if flag not in SMALL:
            continue
        if eq:
            out[i] = f"{flag}={_cap(value, SMALL[flag])}"
        elif i + 1 < len(out):
            out[i + 1] = _cap(out[i + 1], SMALL[flag])
    return out


def _cap(value: str, cap: int) -> str:
    return str(min(int(value.replace(",", "").replace("_", "")), cap))


def parser_of(program: str):
    if program == "sramsim":
        from sramsim.commands.main import build_parser
        return build_parser()
    from fusion.cli import parser
    return parser()


def leaf_parser(argv: list[str]):
    """The parser of the (sub)command `argv` names."""
    import argparse
    parser = parser_of(argv[0])
    for word in argv[1:]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser = subs[0].choices[word]
    return parser


def check_sized(argv: list[str], where: str) -> None:
    """A command that reads a data set must say how much of it (`--limit`), so that the docs
    test can run it small; one that is meant to run on everything is marked no-run."""
    options = {o for a in leaf_parser(argv)._actions for o in a.option_strings}
    if "--limit" in options and not any(w.split("=")[0] == "--limit" for w in argv):
        raise AssertionError(f"{where}: `{' '.join(argv)}` has no --limit (give one, or mark the "
                             "block <!-- no-run: why -->)")


def run_cli(argv: list[str]) -> int:
    """One `sramsim` / `fusion` command, as its console script runs it."""
    from sramsim.commands.main import run_main
    try:
        return run_main(parser_of(argv[0]), argv[1:])
    except SystemExit as exc:           # argparse: bad flags, --help, --version
        return int(exc.code or 0)


@contextmanager
def announced(what: str):
    print(f"\n>>> {what}", flush=True)
    t = time.perf_counter()
    yield
    print(f"<<< {time.perf_counter() - t:.1f} s", flush=True)


def train_cached(argv: list[str], cache: Path | None) -> int:
    """`sramsim train-base`, its checkpoint reused from `cache` when the same command ran before."""
    out = argv[argv.index("--out") + 1]
    key = hashlib.sha256("\0".join(argv).encode()).hexdigest()[:16]
    stored = None if cache is None else cache / f"train-{key}.pt"
    if stored is not None and stored.exists():
        print(f"(the same training ran on another page: {out} copied from it)")
        shutil.copyfile(stored, out)
        return 0
    rc = run_cli(argv)
    if rc == 0 and stored is not None:
        shutil.copyfile(out, stored)
    return rc


def run_block(block: Block, page: str, cache: Path | None, check_only: bool) -> None:
    """Run (or, for a no-run block, check) one block; AssertionError on any failure."""
    if block.lang == "python":
        code = compile(block.code, f"{page}:{block.line}", "exec")
        if block.run and not check_only:
            with announced(f"{page} {block.where}"):
                exec(code, {"__name__": "__main__"})
        return
    for command in commands(block):
        argv = in_process(command)
        if not block.run or check_only:
            if argv is not None:
                parser_of(argv[0]).parse_args(argv[1:])     # SystemExit(2) on a wrong flag
            continue
        if argv is not None:
            check_sized(argv, f"{page} {block.where}")
        with announced(f"{page} {block.where}: {command}"):
            if argv is None:
                rc = subprocess.run(["bash", "-ec", command]).returncode
            elif argv[1:2] == ["train-base"]:
                rc = train_cached(small(argv), cache)
            else:
                rc = run_cli(small(argv))
        assert rc == 0, f"{page} {block.where}: `{command}` exited {rc}"


def run_page(page: Path, cwd: Path, cache: Path | None = None, check_only: bool = False) -> int:
    """Run every block of `page` in `cwd`; the number of blocks run."""
    found = [b for b in blocks(page.read_text()) if b.lang in ("python", "sh", "console")]
    os.chdir(cwd)
    for block in found:
        run_block(block, page.name, cache, check_only)
    return sum(b.run for b in found)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("page", type=Path)
    p.add_argument("--cwd", type=Path, required=True)
    p.add_argument("--cache", type=Path)
    p.add_argument("--check-only", action="store_true")
    args = p.parse_args(argv)
    n = run_page(args.page.resolve(), args.cwd, args.cache and args.cache.resolve(),
                 args.check_only)
    print(f"\n{args.page}: {n} block(s) {'checked' if args.check_only else 'run'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
