"""`gateway store check|backup|set-aside|restore`: look after the store's SQLite file.

`check` runs SQLite's integrity check on the file (read-only; safe beside a running gateway) and says
whether it is sound. `backup DEST` copies it with SQLite's online backup (safe while the gateway runs).
`set-aside` moves a damaged file (with its `-wal` and `-shm`) to `<file>.damaged-<UTC time>` so that the
next start makes a fresh store; `restore BACKUP` checks a backup, sets the current file aside the same way
and puts the backup in its place. Stop the gateway before `set-aside` and `restore`. The store is named by
`--db PATH` or by the `[store] path` of `--config FILE`. Exit 0 done (or sound), 1 a damaged file or a
failed copy, 2 bad input (a missing file, a backup that is not a gateway store), with one line each.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

NAME = "store"
HELP = "check, back up, set aside or restore the gateway's SQLite store"
SIDE_FILES = ("-wal", "-shm", "-journal")


class StoreCommandError(Exception):
    """One line for the user; `code` is the exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions = {
        "check": "check the file's integrity (read-only, safe while the gateway runs)",
        "backup": "copy the store with SQLite's online backup (safe while the gateway runs)",
        "set-aside": "move a damaged store aside so that the next start makes a fresh one (gateway stopped)",
        "restore": "check a backup and put it in the store's place, the current file set aside (gateway stopped)",
    }
    for action, text in actions.items():
        p = sub.add_parser(action, help=text, description=text)
        if action == "backup":
            p.add_argument("file", metavar="DEST", help="where to write the copy (a new file)")
        elif action == "restore":
            p.add_argument("file", metavar="BACKUP", help="the backup to put in place")
        if action == "check":
            p.add_argument("--full", action="store_true", help="the full integrity check (slower)")
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--config", metavar="FILE", help="the site config, TOML: its [store] path")
        where.add_argument("--db", metavar="PATH", help="the store's SQLite file")


def run(args: argparse.Namespace) -> int:
    try:
        path = _store_path(args.config, args.db)
        if args.action == "check":
            print(check(path, full=args.full))
        elif args.action == "backup":
            print(backup(path, Path(args.file)))
        elif args.action == "set-aside":
            print(set_aside(path))
        else:
            print(restore(path, Path(args.file)))
    except StoreCommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    return 0


def _store_path(config: str | None, db: str | None) -> Path:
    """The store's file: `--db`, else the config's `store.path` (the same rule as `gateway export`)."""
    from gateway.commands.export import ExportError, store_path

    try:
        return store_path(config, db)
    except ExportError as exc:
        raise StoreCommandError(str(exc).splitlines()[0]) from None


def _problems(path: Path, *, full: bool = False) -> list[str]:
    from gateway.store.db import StoreError, check_file

    try:
        return check_file(path, full=full)
    except StoreError as exc:
        raise StoreCommandError(str(exc), code=1) from None


def _version(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def check(path: Path, *, full: bool = False) -> str:
    if not path.exists():
        raise StoreCommandError(f"{path}: no such file (the gateway makes it at its first start)")
    problems = _problems(path, full=full)
    if problems:
        raise StoreCommandError(
            f"{path} is damaged: {'; '.join(problems[:3])}. Stop the gateway, then `gateway store restore --db "
            f"{path} BACKUP`, or `gateway store set-aside --db {path}` to start afresh (docs/store.md)", code=1)
    return f"{path}: sound (schema version {_version(path)}, {path.stat().st_size / 1e6:.1f} MB)"


def backup(path: Path, dest: Path) -> str:
    if not path.exists():
        raise StoreCommandError(f"{path}: no such file")
    if dest.exists():
        raise StoreCommandError(f"{dest}: already there; name a new file")
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        target = sqlite3.connect(dest)
        try:
            source.backup(target)
        finally:
            target.close()
    except sqlite3.DatabaseError as exc:
        dest.unlink(missing_ok=True)
        raise StoreCommandError(f"cannot back up {path}: {exc}", code=1) from None
    finally:
        source.close()
    return f"{path}: copied to {dest}"


def _aside(path: Path, now: datetime) -> list[Path]:
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    moved = []
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", *SIDE_FILES):
        src = Path(f"{path}{suffix}")
        if src.exists():
            dst = Path(f"{target}{suffix}")
            src.rename(dst)
            moved.append(dst)
    return moved


def set_aside(path: Path, now: datetime | None = None) -> str:
    if not path.exists():
        raise StoreCommandError(f"{path}: no such file: nothing to set aside")
    moved = _aside(path, now or datetime.now(UTC))
    return (f"{path}: moved aside to {moved[0]}; the next start makes a fresh store (the VTN sends its events "
            "again; the session ledger and telemetry start empty: keep the old file for the records)")


def restore(path: Path, backup_file: Path, now: datetime | None = None) -> str:
    from gateway.store.db import MIGRATIONS

    if not backup_file.exists():
        raise StoreCommandError(f"{backup_file}: no such file")
    problems = _problems(backup_file)
    if problems:
        raise StoreCommandError(f"{backup_file} is damaged too ({problems[0]}): choose another backup", code=1)
    try:
        version = _version(backup_file)
    except sqlite3.DatabaseError as exc:
        raise StoreCommandError(f"{backup_file}: not a gateway store ({exc})") from None
    if not 1 <= version <= len(MIGRATIONS):
        raise StoreCommandError(f"{backup_file}: not a store of this gateway (schema version {version})")
    moved = _aside(path, now or datetime.now(UTC)) if path.exists() else []
    source = sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(path)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    kept = f" (the damaged one is at {moved[0]})" if moved else ""
    return f"{path}: restored from {backup_file}, schema version {version}{kept}; start the gateway"
