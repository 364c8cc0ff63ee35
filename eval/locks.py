"""One lock per record id, so that the jobs of a sweep (processes on one machine, or Slurm jobs on
a shared filesystem) never do the same run twice and share one dense baseline.

The lock is a file `runs/<id>.lock` that appears whole: its content (the owner's host, pid and
start time) is written to a temporary file first and then hard-linked to the lock's name, which
fails if the name exists. link(2) is atomic on local filesystems and on NFSv3+/Lustre/GPFS (unlike
flock/fcntl locks, which some cluster filesystems do not carry across nodes), so no reader ever
sees an empty lock of a live owner. A heartbeat thread touches it every `heartbeat_s` while the
run works.

Stale rule: a lock is broken when its heartbeat is older than `stale_after_s`, on every host (a
pid can be reused after a restart, so a live pid proves nothing). Two facts shorten the wait: the
owner is on this host and its process is gone, or the lock is empty or unreadable (left by an
older version, or by a disk that filled up; this version never writes one). Breaking renames the
lock file first, so of two processes that find it stale only one breaks it; the other sees a
fresh lock and waits.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from eval.records import pid_alive, unwritable

log = logging.getLogger("compbench")


class RecordLock:
    def __init__(self, path: Path, heartbeat_s: float = 30.0, stale_after_s: float = 600.0,
                 poll_s: float = 1.0):
        self.path, self.heartbeat_s, self.stale_after_s, self.poll_s = Path(path), heartbeat_s, stale_after_s, poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.waited = False   # whether another process held it when we came

    # ---- the owner's side ----------------------------------------------------------------------
    def _try_create(self) -> bool:
        """Write the owner to a temporary file, then link it to the lock's name: the lock exists
        only with its content, or not at all (a full disk fails here, before the link)."""
        tmp = self.path.with_name(f".{self.path.name}.{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}")
        try:
            tmp.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}))
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        except OSError as err:
            raise unwritable(self.path.parent, f"the lock {self.path.name}", err) from None
        finally:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:   # broken by someone who judged us stale: nothing to keep alive
                return

    def acquire(self) -> "RecordLock":
        announced = False
        while not self._try_create():
            self.waited = True
            if self._break_if_stale():
                continue
            if not announced:
                log.info("%s is held by %s: waiting for it", self.path.name, self.owner() or "another process")
                announced = True
            time.sleep(self.poll_s)
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"lock-{self.path.stem}")
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.path.unlink(missing_ok=True)
        except OSError as err:   # a read-only or vanished folder: never hide the error that got us here
            log.warning("could not remove the lock %s: %s", self.path, err)

    def __enter__(self) -> "RecordLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ---- the waiter's side ---------------------------------------------------------------------
    def owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None   # just removed, or not a lock this version wrote

    def is_stale(self) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        if age > self.stale_after_s:
            return True       # no heartbeat for too long: its owner is gone, whatever its pid says now
        owner = self.owner()
        if not isinstance(owner, dict):
            return True       # empty or unreadable: never written by a live owner (locks appear whole)
        if owner.get("host") == socket.gethostname():
            pid = owner.get("pid")
            return not isinstance(pid, int) or (pid != os.getpid() and not pid_alive(pid))
        return False

    def _break_if_stale(self) -> bool:
        try:
            judged = self.path.stat().st_ino
        except FileNotFoundError:
            return True
        if not self.is_stale():
            return False
        owner = self.owner()
        aside = self.path.with_name(f"{self.path.name}.stale-{socket.gethostname()}-{os.getpid()}")
        try:
            os.rename(self.path, aside)     # only one of several breakers wins this
        except FileNotFoundError:
            return True
        if aside.stat().st_ino != judged:   # another breaker already replaced it with a live lock: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        log.warning("broke the stale lock %s (owner %s)", self.path.name, owner or "unknown")
        aside.unlink(missing_ok=True)
        return True
