"""An output folder of results written as they finish: its configuration, the per-point results
file, and the summaries. Sweeps, tolerance searches, vulnerability analyses and `fusion eval` all
keep their results this way (each with its own record key), so each of them resumes.

Layout of DIR:
    config.json   what was swept (model and data fingerprints, quantization, chips, offsets);
                  a re-run must match it, or it is refused (results are never mixed)
    points.jsonl  one JSON object per finished point, appended and flushed as each finishes;
                  a killed sweep leaves at most a torn last line, which the next run drops;
                  strict JSON (a NaN/inf result is refused, naming the point, never written)
    summary.json, summary.csv, summary.png   written at the end of every run
    .lock         held (flock, exclusive) by the run writing DIR, holding its pid: a second run
                  on the same DIR is refused, naming that pid; the kernel releases the lock
                  when the run exits, however it ends (kill -9 included)
"""
from __future__ import annotations

import csv
import fcntl
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from sramsim.errors import InputError

LOCK_FILE = ".lock"
CONFIG_FORMAT = "sramsim.sweep"
CONFIG_VERSION = 1
CSV_COLUMNS = ("voltage", "ber", "accuracy_mean", "accuracy_std", "ci95", "n", "n_points",
               "accuracy_min", "accuracy_max", "rerr_mean", "loss_mean", "energy_per_read",
               "saving")


def point_key(record: dict) -> tuple:
    """Identity of a point in the grid: (voltage, chip index, offset index); clean: ("clean",)."""
    if record.get("clean"):
        return ("clean",)
    return (round(float(record["voltage"]), 6), int(record["chip_index"]),
            int(record["offset_index"]))


# How a store names a result: point_key (sweep points) or map_key (one fault map each).
KeyFn = Callable[[dict], tuple]


def map_key(record: dict) -> tuple:
    """Identity of one fault map's record in an analysis over maps 0..M-1: (map,); clean:
    ("clean",)."""
    if record.get("clean"):
        return ("clean",)
    return (int(record["map"]),)


class ResultStore:
    """Owns DIR: checks/creates config.json, reads finished points back, appends new ones."""

    def __init__(self, out_dir: str | os.PathLike, config: dict, key: KeyFn = point_key):
        self.key = key
        self.dir = Path(out_dir)
        if self.dir.exists() and not self.dir.is_dir():
            raise InputError(f"{self.dir}: exists and is not a directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_folder(self.dir)
        self.config = {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, **config}
        self.config_path = self.dir / "config.json"
        self.points_path = self.dir / "points.jsonl"
        self._check_or_write_config()
        self.records: dict[tuple, dict] = self._read_points()
        self._file: TextIO | None = None

    # --- configuration ---------------------------------------------------------------------
    def _check_or_write_config(self) -> None:
        if self.config_path.exists():
            try:
                old = json.loads(self.config_path.read_text())
            except (OSError, ValueError) as exc:
                raise InputError(f"{self.config_path}: unreadable sweep configuration ({exc}); "
                                 "use another output folder") from None
            new = json.loads(json.dumps(self.config))   # same JSON normalisation as on disk
            if old != new:
                keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise InputError(f"{self.dir}: holds a sweep with a different configuration "
                                 f"({', '.join(keys)} differ); use another output "
                                 "folder or the same settings")
            return
        if self.points_path.exists():
            raise InputError(f"{self.dir}: has {self.points_path.name} but no config.json; "
                             "use another output folder")
        tmp = self.config_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.config, indent=1, allow_nan=False) + "\n")
        os.replace(tmp, self.config_path)

    # --- per-point results -----------------------------------------------------------------
    def _read_points(self) -> dict[tuple, dict]:
        if not self.points_path.exists():
            return {}
        data = self.points_path.read_bytes()
        keep = data
        if data and not data.endswith(b"\n"):
            keep = data[:data.rfind(b"\n") + 1]        # a torn last line from a killed run
        records = {}
        for number, line in enumerate(keep.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                records[self.key(rec)] = rec
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{self.points_path}: line {number} is not a sweep point; "
                                 "use another output folder") from None
        if keep != data:
            with open(self.points_path, "r+b") as f:
                f.truncate(len(keep))
        return records

    def done(self, key: tuple) -> bool:
        """Whether the point `key` (see `point_key`) is already in points.jsonl."""
        return key in self.records

    def append(self, records: list[dict]) -> None:
        """Write finished points and flush them to the OS before returning.

        Every line is strict JSON: a record with a NaN or infinite value is refused (InputError
        naming the point and the fields) before any record of the batch is written.
        """
        lines = [_point_line(rec, self.key) for rec in records]
        if self._file is None:
            self._file = open(self.points_path, "a", encoding="utf-8")
        for rec, line in zip(records, lines, strict=True):
            self._file.write(line)
            self.records[self.key(rec)] = rec
        self._file.flush()

    def close(self) -> None:
        """Close points.jsonl (a later `append` reopens it)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    # --- summaries -------------------------------------------------------------------------
    def write_summary(self, summary: dict) -> None:
        """summary.json and summary.csv (each replaced atomically)."""
        json_path, csv_path = self.dir / "summary.json", self.dir / "summary.csv"
        tmp = json_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")
        os.replace(tmp, json_path)
        tmp = csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for p in summary["points"]:
                writer.writerow({k: _fmt(p.get(k)) for k in CSV_COLUMNS})
        os.replace(tmp, csv_path)


def _lock_folder(folder: Path) -> TextIO:
    """An exclusive flock on folder/.lock, holding this process's pid, kept as long as the
    returned file is open; InputError naming the holder's pid when another run has it."""
    f = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise InputError(f"{folder}: in use by another run (pid {holder}); wait for it to "
                         f"finish or use another output folder") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _point_line(rec: dict, key: KeyFn = point_key) -> str:
    """One points.jsonl line; strict JSON, so a non-finite result is an error naming the point."""
    try:
        return json.dumps(rec, separators=(",", ":"), allow_nan=False) + "\n"
    except ValueError:
        bad = sorted(k for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v))
        k = key(rec)
        where = ("the fault-free point" if k == ("clean",) else
                 f"point voltage {k[0]:g}, chip {k[1]}, offset {k[2]}" if key is point_key else
                 f"result {k}")
        detail = ", ".join(f"{k}={rec[k]}" for k in bad) or "a value"
        raise InputError(f"{where}: {detail} is not finite (a model with NaN/inf weights or "
                         "outputs?); nothing of it was written") from None


def _fmt(value: object) -> object:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


class MemoryStore:
    """ResultStore's interface without a folder: results kept in memory only (no resume)."""

    def __init__(self, key: KeyFn = point_key):
        self.key = key
        self.dir = None
        self.records: dict[tuple, dict] = {}

    def done(self, key: tuple) -> bool:
        """Whether result `key` is finished."""
        return key in self.records

    def append(self, records: list[dict]) -> None:
        """Keep finished results (strict JSON checked as a folder would)."""
        for rec in records:
            _point_line(rec, self.key)
            self.records[self.key(rec)] = rec

    def close(self) -> None:
        """Nothing to close."""


def open_store(out_dir: str | os.PathLike | None, config: dict,
               key: KeyFn = point_key) -> ResultStore | MemoryStore:
    """A ResultStore in `out_dir`, or a MemoryStore when `out_dir` is None."""
    return MemoryStore(key) if out_dir is None else ResultStore(out_dir, config, key)


def write_json(path: Path, obj: object) -> None:
    """`obj` as strict JSON at `path`, replaced atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
