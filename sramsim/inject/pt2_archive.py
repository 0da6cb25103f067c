"""Check a `.pt2` archive (written by `torch.export.save`) before torch reads any of it, and hand
torch a copy in which nothing can be unpickled.

Why: `torch.export.load` unpickles with `weights_only=False` (which runs any code the file names)
for a weight or constant marked `use_pickle`, a legacy `data/weights/<model>.pt` or
`data/constants/<model>.pt`, custom or opaque object constants, and, as a fallback, sample inputs
that do not load with `weights_only=True`; an AOTInductor package loads shared libraries. So the
check is an allow-list (fail closed): every member must be one a plain exported program holds,
every weight and constant a raw tensor payload, and the sample inputs a torch.save of tensors
only, which is verified by reading the pickle's opcodes (`pickletools`, never executed). torch then
gets the archive with the sample inputs left empty (sramsim never uses them), so no code path in
`torch.export.load` has anything to unpickle.
"""
from __future__ import annotations

import io
import json
import os
import pickletools
import re
import zipfile

from sramsim.errors import InputError

# members a plain exported program holds, relative to the archive's one top folder
FIXED = {"archive_format", "archive_version", "byteorder", ".data/version",
         ".data/serialization_id"}
MODEL = re.compile(r"^models/([A-Za-z0-9_.-]+)\.json$")
WEIGHTS, CONSTANTS, SAMPLES = "data/weights/", "data/constants/", "data/sample_inputs/"
EXTRA = "extra/"
TENSOR_CONSTANT = "tensor_"     # torch's file-name prefix of a constant stored as raw bytes
# the only callables a torch.save of tensors names (what `torch.save((x,), {})` writes)
SAFE_GLOBALS = {"torch._utils _rebuild_tensor_v2", "torch._utils _rebuild_parameter",
                "collections OrderedDict", "torch Size"}
STORAGE = re.compile(r"^torch [A-Za-z0-9]*Storage$")
UNSAFE_OPS = {"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"}


def checked_archive(path: str | os.PathLike) -> io.BytesIO:
    """The archive at `path` with empty sample inputs, read once into memory, after checking
    that none of it would be unpickled; an InputError naming the file and the member otherwise."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = {info.filename: z.read(info) for info in z.infolist()
                       if not info.is_dir()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
            ValueError, OSError) as exc:
        raise InputError(f"{path}: not a torch.export program (not a zip archive: "
                         f"{' '.join(str(exc).split())[:120]})") from None
    members = _relative(path, members)
    _check_members(path, members)
    return _rebuilt(members)


def _relative(path: str, members: dict[str, bytes]) -> dict[str, bytes]:
    """Members by name inside the archive's one top folder (as torch's reader sees them)."""
    tops = {name.split("/", 1)[0] for name in members}
    if len(tops) != 1 or any("/" not in n for n in members):
        raise InputError(f"{path}: not a torch.export program (its members are not in one "
                         f"top folder)")
    top = tops.pop() + "/"
    out = {name[len(top):]: body for name, body in members.items()}
    for name in out:
        if name.startswith("/") or ".." in name.split("/") or "\\" in name:
            raise InputError(f"{path}: refused: member {name!r} has an unsafe name")
    return out


def _check_members(path: str, members: dict[str, bytes]) -> None:
    models = [m.group(1) for m in map(MODEL.match, members) if m]
    if not models:
        raise InputError(f"{path}: not a torch.export program (no models/<name>.json; files "
                         f"saved by torch before 2.8 are not read: re-save with torch.export.save)")
    allowed = set(FIXED)
    for model in models:
        allowed |= {f"models/{model}.json", f"{SAMPLES}{model}.pt"}
        allowed |= _payloads(path, members, WEIGHTS, f"{model}_weights_config.json", model)
        allowed |= _payloads(path, members, CONSTANTS, f"{model}_constants_config.json", model)
        _check_sample_inputs(path, f"{SAMPLES}{model}.pt", members.get(f"{SAMPLES}{model}.pt"))
    for name, body in members.items():
        if name.startswith(EXTRA) and _is_text(body):
            continue
        if name not in allowed:
            why = ("a legacy pickled state file" if name.endswith(".pt") else
                   "a pickle" if name.endswith(".pkl") or body[:1] == b"\x80" else
                   "not part of a plain exported program")
            raise InputError(f"{path}: refused: member {name!r} is {why}, which torch would "
                             f"unpickle or run; only plain exported programs are read")


def _payloads(path: str, members: dict[str, bytes], folder: str, config_name: str,
              model: str) -> set[str]:
    """The config file and the raw tensor payloads it names, refusing any pickled entry."""
    config_path = folder + config_name
    if config_path not in members:
        raise InputError(f"{path}: not a torch.export program (no {config_path})")
    try:
        config = json.loads(members[config_path])["config"]
        entries = [(str(k), v["path_name"], v.get("use_pickle", False)) for k, v in config.items()]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: {config_path} is not a payload config "
                         f"({type(exc).__name__})") from None
    names = {config_path}
    for fqn, name, use_pickle in entries:
        if not isinstance(name, str) or "/" in name or folder + name not in members:
            raise InputError(f"{path}: {config_path} names a missing payload {name!r}")
        if use_pickle is not False:
            raise InputError(f"{path}: refused: {fqn!r} of model {model!r} is stored as a "
                             f"pickle ({folder}{name}), which torch would unpickle and could "
                             f"run code")
        if folder == CONSTANTS and not name.startswith(TENSOR_CONSTANT):
            raise InputError(f"{path}: refused: constant {fqn!r} of model {model!r} is a "
                             f"pickled object ({folder}{name}), not a tensor")
        names.add(folder + name)
    return names


def _check_sample_inputs(path: str, name: str, body: bytes | None) -> None:
    """The sample inputs must be a torch.save of tensors: a zip holding one pickle whose only
    callables are the tensor-rebuilding ones (read opcode by opcode, never executed)."""
    if body is None:
        raise InputError(f"{path}: not a torch.export program (no {name})")
    if not body:
        return
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as z:
            pickles = [n for n in z.namelist() if n.endswith(".pkl")]
            streams = [z.read(n) for n in pickles]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
            ValueError, OSError):
        raise InputError(f"{path}: refused: {name} is a bare pickle, not torch.save's tensor "
                         f"archive; torch would unpickle it and could run code") from None
    if [n.rsplit("/", 1)[-1] for n in pickles] != ["data.pkl"]:
        raise InputError(f"{path}: refused: {name} holds pickles {pickles}, not one data.pkl")
    bad = _unsafe_callable(streams[0])
    if bad:
        raise InputError(f"{path}: refused: {name} names {bad} (not a tensor), which torch "
                         f"would unpickle and could run code")


def _unsafe_callable(stream: bytes) -> str | None:
    """The first callable a pickle would look up that is not a tensor-rebuilding one, or the
    unreadable opcode; None when the pickle names only tensor callables."""
    try:
        for op, arg, _ in pickletools.genops(stream):
            if op.name in UNSAFE_OPS:
                return f"opcode {op.name}"
            if op.name == "GLOBAL" and arg not in SAFE_GLOBALS and not STORAGE.match(str(arg)):
                return repr(str(arg).replace(" ", "."))
    except (ValueError, EOFError, TypeError, UnicodeDecodeError) as exc:
        return f"an unreadable pickle ({' '.join(str(exc).split())[:80]})"
    return None


def _is_text(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _rebuilt(members: dict[str, bytes]) -> io.BytesIO:
    """The checked members written back with torch's archive writer, the sample inputs empty
    (torch reads an empty file as "no sample inputs": nothing left to unpickle)."""
    from torch.export.pt2_archive import PT2ArchiveWriter
    buffer = io.BytesIO()
    with PT2ArchiveWriter(buffer) as writer:
        for name, body in members.items():
            if name in (".data/version", ".data/serialization_id", "byteorder"):
                continue                    # the writer writes these itself
            writer.write_bytes(name, b"" if name.startswith(SAMPLES) else body)
    buffer.seek(0)
    return buffer
