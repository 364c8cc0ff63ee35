"""Run records: one JSON file per run under <results>/runs/, named by the hash of the run's
identity (eval/identity.py: the model, data and numerics by content, the settings that change
the numbers), in a versioned schema checked on every load, written atomically.

A record file is either absent or complete: it is written to a `.partial-<host>-<pid>-*` file in
the same folder, fsynced and renamed. A file that fails the schema check is reported with its
path (`CorruptRecord`) and never read as a result.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger("compbench")
# 2: identity by content (eval/identity.py), numerics in the identity; 3: the method's identity is its
# bound settings and version, and the record carries what tables show (preset, rows, protocol); 4: the
# protocol names its task's table column (protocol.column)
SCHEMA = 4
TMP_PREFIX = ".partial-"
REQUIRED = {"schema": int, "id": str, "identity": dict, "config": dict, "kind": str, "metrics": dict,
            "task": str, "role": str, "created": str, "preset": str, "rows": dict, "protocol": dict}
KINDS = ("dense", "compressed")


class ResultsUnwritable(RuntimeError):
    """The results folder cannot take a file (full disk, read-only folder): one line; what is
    already there is kept."""


class CorruptRecord(ValueError):
    """A record file that cannot be read as a record of this schema."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def unwritable(folder: Path, what: str, err: OSError) -> ResultsUnwritable:
    return ResultsUnwritable(f"cannot write {what} in {folder}: {err.strerror or err}; free space or make the "
                             f"folder writable and run again (the records already there are kept)")


def record_id(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def problem(obj: Any, expect_id: str | None = None) -> str | None:
    """Why `obj` is not a valid record (None: it is one)."""
    if not isinstance(obj, dict):
        return f"a record is a JSON object, this is a {type(obj).__name__}"
    if "schema" not in obj:
        return (f"no schema version: written before schema {SCHEMA} "
                f"(upgrade with `python scripts/merge.py upgrade=true inputs=[<folder>] out=<folder>`)")
    if obj["schema"] != SCHEMA:
        return (f"schema {obj['schema']!r}, this compbench reads schema {SCHEMA}"
                + (" (upgrade with `python scripts/merge.py upgrade=true inputs=[<folder>] out=<folder>`)"
                   if isinstance(obj["schema"], int) and obj["schema"] < SCHEMA else ""))
    for key, typ in REQUIRED.items():
        if not isinstance(obj.get(key), typ):
            return f"field '{key}' is missing or not a {typ.__name__}"
    if obj["kind"] not in KINDS:
        return f"kind '{obj['kind']}' is not one of {', '.join(KINDS)}"
    if record_id(obj["identity"]) != obj["id"]:
        return f"id {obj['id']} is not the hash of its identity ({record_id(obj['identity'])})"
    if expect_id is not None and obj["id"] != expect_id:
        return f"holds record {obj['id']}, its file name says {expect_id}"
    if obj["kind"] == "compressed" and not isinstance(obj.get("dense_id"), str):
        return "a compressed record without its dense_id"
    return None


def read_record(path: Path) -> dict[str, Any]:
    """The record in `path`, checked; `CorruptRecord` if it is truncated, empty or off-schema."""
    try:
        text = path.read_text()
    except OSError as err:
        raise CorruptRecord(path, f"unreadable ({err.strerror or err})") from None
    if not text.strip():
        raise CorruptRecord(path, "empty file")
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise CorruptRecord(path, f"not JSON ({err.msg} at line {err.lineno}): truncated?") from None
    except _NonFinite as err:
        raise CorruptRecord(path, f"holds a {err} literal: records store a missing number as null") from None
    why = problem(obj, expect_id=path.stem)
    if why:
        raise CorruptRecord(path, why)
    return obj


class _NonFinite(ValueError):
    pass


def _no_constant(name: str) -> Any:
    """json's hook for NaN, Infinity and -Infinity, which are not JSON: a record never holds them."""
    raise _NonFinite(name)


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: store them as null (the record's flags say why)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def partial_owner(name: str) -> tuple[str, int] | None:
    """(host, pid) of a `.partial-<host>-<pid>-<random>.json` file, or None for another name."""
    if not name.startswith(TMP_PREFIX):
        return None
    parts = name[len(TMP_PREFIX):].rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


@dataclass
class Scanned:
    path: Path
    record: dict[str, Any] | None = None
    error: str | None = None


class RecordStore:
    def __init__(self, results_dir: str | os.PathLike):
        self.root = Path(results_dir)
        self.dir = self.root / "runs"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ResultsUnwritable(f"cannot create the results folder {self.dir}: {err.strerror or err}; "
                                    f"give a writable paths.results") from None

    def path(self, rid: str) -> Path:
        return self.dir / f"{rid}.json"

    def exists(self, rid: str) -> bool:
        return self.path(rid).is_file()

    def resolve(self, prefixes: list[str]) -> list[str]:
        """The full ids of the records that `prefixes` name (a whole id or its leading hex digits,
        as tables print them); ValueError naming any that matches no record, or several."""
        ids = sorted(p.stem for p in self.dir.glob("[!.]*.json"))
        out = []
        for q in prefixes:
            hits = [i for i in ids if i.startswith(str(q).lower())]
            if len(hits) != 1:
                raise ValueError(f"record {q!r} {'matches no record' if not hits else f'is ambiguous ({len(hits)} records)'} "
                                 f"in {self.dir}: give more of its id")
            out.append(hits[0])
        return out

    def load(self, rid: str) -> dict[str, Any]:
        """The record `rid`, checked (`CorruptRecord` otherwise)."""
        return read_record(self.path(rid))

    def valid(self, rid: str) -> dict[str, Any] | None:
        """The record `rid` if present and valid; a corrupt one is set aside (renamed, kept) and
        None returned, so that the run redoes it."""
        if not self.exists(rid):
            return None
        try:
            return self.load(rid)
        except CorruptRecord as err:
            aside = self.set_aside(rid)
            log.warning("record %s is corrupt (%s): kept as %s, redoing it",
                                                   rid, err.reason, aside.name)
            return None

    def set_aside(self, rid: str) -> Path:
        aside = self.dir / f"{rid}.json.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        os.replace(self.path(rid), aside)
        return aside

    def write(self, record: dict[str, Any]) -> Path:
        """Write via a temp file in the same folder + fsync + rename: readers never see half a
        record. The file mode follows the umask, as any file this user creates."""
        record = {"schema": SCHEMA, **record}
        why = problem(record)
        if why:
            raise ValueError(f"refusing to write an invalid record: {why}")
        target = self.path(record["id"])
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-",
                                       suffix=".json", dir=self.dir)
            with os.fdopen(fd, "w") as fh:
                json.dump(_finite(record), fh, indent=2, sort_keys=True, allow_nan=False)
                fh.flush()
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException as err:
            if tmp is not None:
                try:
                    Path(tmp).unlink(missing_ok=True)
                except OSError:
                    pass
            if isinstance(err, OSError):
                raise unwritable(self.dir, f"the record {target.name}", err) from None
            raise
        return target

    def remove_partials(self, max_age_s: float = 3600.0) -> int:
        """Delete temp files of writers that are gone: on this host, those whose process has
        exited; from another host (a shared filesystem), those untouched for `max_age_s` (a
        write takes well under a second). Returns how many."""
        host, now, n = socket.gethostname(), time.time(), 0
        for p in self.dir.glob(f"{TMP_PREFIX}*"):
            owner = partial_owner(p.name)
            try:
                age = now - p.stat().st_mtime
            except FileNotFoundError:
                continue
            if owner is not None and owner[0] == host:
                stale = owner[1] != os.getpid() and not pid_alive(owner[1])
            else:
                stale = age > max_age_s
            if stale:
                p.unlink(missing_ok=True)
                n += 1
        return n

    def scan(self) -> Iterator[Scanned]:
        """Every record file, checked: a valid record or the reason it is not one."""
        for p in sorted(self.dir.glob("*.json")):
            if p.name.startswith(TMP_PREFIX):
                continue
            try:
                yield Scanned(p, record=read_record(p))
            except CorruptRecord as err:
                yield Scanned(p, error=err.reason)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for s in self.scan():
            if s.record is not None:
                yield s.record
