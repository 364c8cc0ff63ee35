"""Run records: one JSON file per run under <results>/runs/, named by the hash of the run's
identity (its resolved config minus paths and switches), written atomically."""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

TMP_PREFIX = ".partial-"


def record_id(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: store them as null (the record's flags say why)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class RecordStore:
    def __init__(self, results_dir: str | os.PathLike):
        self.root = Path(results_dir)
        self.dir = self.root / "runs"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, rid: str) -> Path:
        return self.dir / f"{rid}.json"

    def exists(self, rid: str) -> bool:
        return self.path(rid).is_file()

    def load(self, rid: str) -> dict[str, Any]:
        return json.loads(self.path(rid).read_text())

    def write(self, record: dict[str, Any]) -> Path:
        """Write via a temp file in the same folder + fsync + rename: readers never see half a record."""
        target = self.path(record["id"])
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".json", dir=self.dir)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(_finite(record), fh, indent=2, sort_keys=True, allow_nan=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def remove_partials(self, min_age_s: float = 60.0) -> int:
        """Delete temp files left by killed runs (older than `min_age_s`, so a concurrent
        writer's file is spared); returns how many."""
        now = time.time()
        stale = [p for p in self.dir.glob(f"{TMP_PREFIX}*") if now - p.stat().st_mtime > min_age_s]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for p in sorted(self.dir.glob("*.json")):
            if not p.name.startswith(TMP_PREFIX):
                yield json.loads(p.read_text())
