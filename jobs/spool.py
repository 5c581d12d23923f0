"""The receiver's fallback when the database is down: one fsync'd file per delivery.

A webhook is acknowledged only once its body is on disk; the sweeper loads the spool back
into ``webhook_deliveries`` when the database returns, then removes each file.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any


def write(spool_dir: Path, *, account_id: int | None, body: str, received_at: datetime,
          status: str, reason: str | None) -> Path:
    """Write one delivery durably (temp file, fsync, rename, fsync the folder)."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    record = {"account_id": account_id, "body": body, "received_at": received_at.isoformat(),
              "status": status, "reason": reason}
    name = f"{received_at.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex}.json"
    tmp = spool_dir / f".{name}.tmp"
    # Owner-only: the bodies hold clients' messages and phone numbers.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as fh:
        json.dump(record, fh, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    final = spool_dir / name
    os.replace(tmp, final)
    dir_fd = os.open(spool_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def pending(spool_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Spooled deliveries, oldest first. A file another loader took meanwhile (the web
    process and the sweeper may share the folder) is skipped."""
    if not spool_dir.is_dir():
        return
    for path in sorted(spool_dir.glob("*.json")):
        try:
            with open(path, encoding="utf-8") as fh:
                record = json.load(fh)
        except FileNotFoundError:
            continue
        record["received_at"] = datetime.fromisoformat(record["received_at"])
        yield path, record


def has_pending(spool_dir: Path) -> bool:
    """Is anything spooled? (One directory read.)"""
    try:
        with os.scandir(spool_dir) as entries:
            return any(e.name.endswith(".json") and not e.name.startswith(".") for e in entries)
    except FileNotFoundError:
        return False
