"""The torch.save files sramsim writes (model checkpoints, training states, generators, EOPM
checkpoints): written atomically with a SHA-256 of their contents, read without unpickling
anything but tensors and plain values, and verified against that SHA-256.

File layout: a dict tagged {"format": ..., "version": ...} plus the saver's own keys, and
"sha256": `content_sha256` of everything else in the dict. A file whose contents no longer match
(flipped bytes, an edit) is refused; a file written before sramsim recorded the digest loads with
a one-line note on stderr (logger "sramsim.files").
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from pathlib import Path

import torch

from sramsim.errors import InputError

DIGEST_KEY = "sha256"
log = logging.getLogger("sramsim.files")


def content_sha256(obj: object) -> str:
    """SHA-256 of a torch.save'd value: every tensor's dtype, shape and bytes, every other leaf's
    repr, dict keys in order: identical before saving and after loading, changed by any
    flipped byte of a tensor or value."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: hashlib._Hash, obj: object) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().resolve_conj().resolve_neg().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        h.update(f"{{{len(obj)}:".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'[' if isinstance(obj, list) else '('}{len(obj)}:".encode())
        for value in obj:
            _feed(h, value)
        h.update(b"]")
    else:
        text = repr(obj)
        h.update(f"{type(obj).__name__}{len(text)}:{text}".encode())


def atomic_torch_save(obj: dict, path: str | os.PathLike) -> None:
    """torch.save `obj` plus its `content_sha256` to a temporary file beside `path`, then
    rename it over `path` (a crash never leaves half a file)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in obj.items() if k != DIGEST_KEY}
    body[DIGEST_KEY] = content_sha256(body)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        torch.save(body, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_torch_file(path: str | os.PathLike, fmt: str, version: int, what: str) -> dict:
    """A torch.save'd dict tagged with `format`/`version`, loaded safely (weights_only=True) and
    checked against the SHA-256 it was saved with; the digest key is removed from the result."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such {what} file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a {what} file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails on junk with many exception types
        reason = " ".join(str(exc).split())[:160]
        raise InputError(f"{path}: not a readable {what} ({reason})") from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise InputError(f"{path}: not a {what} (format tag is not {fmt!r})")
    if obj.get("version") != version:
        raise InputError(f"{path}: {what} version {obj.get('version')!r} is not supported "
                         f"(expected {version})")
    stored = obj.pop(DIGEST_KEY, None)
    if stored is None:
        _note_unverified(path, what)
    elif stored != content_sha256(obj):
        raise InputError(f"{path}: {what} is corrupt: its contents do not match the SHA-256 "
                         f"recorded when it was saved")
    return obj


def _note_unverified(path: Path, what: str) -> None:
    """One line on stderr for a file saved before digests were recorded (spawned workers that
    read the same file stay quiet: the main process has said it)."""
    if multiprocessing.parent_process() is None:
        log.warning("note: %s: %s saved without a SHA-256 (an older sramsim); its contents "
                    "cannot be verified", path, what)
