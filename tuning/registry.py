"""The adapter registry: a table that records, for every published LoRA adapter (and every full
fine-tuned checkpoint, kind "full": tuning/full_model.py), which base model, dataset version and
config made it, with its metrics, size and status.

The folder is the contract with the chat (assistant.adapters.AdapterCatalog reads
`adapters/<name>/` and the `ACTIVE` file; ChatService hot-loads an adapter the first time it
is picked), so every operation here changes the folder first, atomically, and then the row:

- publish: the adapter is written into a temporary folder beside its final place and renamed
  into place (`publish_dir`), so the chat never sees half an adapter;
- rename: one `os.rename` of the folder + the row (+ ACTIVE if it named the adapter);
- delete: the folder is renamed to a hidden name, then removed; the row is kept with status
  `deleted` so a job's lineage still says what it produced;
- activate: the `ACTIVE` file (what the chat answers with by default).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from assistant.adapters import BASE, FULL, AdapterCatalog, check_adapter_name
from assistant.db import execute_script, utcnow
from assistant.errors import NotFoundError, ValidationError
from assistant.workspace import Workspace, publish_dir, write_atomic

META_FILE = "tailor.json"


def _m001_adapters(conn: sqlite3.Connection) -> None:
    execute_script(
        conn,
        """
        CREATE TABLE adapters (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            family TEXT NOT NULL,
            version INTEGER NOT NULL,
            base_model TEXT NOT NULL DEFAULT '',
            dataset_version TEXT,
            dataset_hash TEXT,
            job_id INTEGER,
            config_json TEXT NOT NULL DEFAULT '{}',
            metrics_json TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            size_bytes INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'ready' CHECK (status IN ('ready', 'deleted'))
        );
        CREATE UNIQUE INDEX adapters_live_name ON adapters(name) WHERE status = 'ready';
        CREATE INDEX adapters_family ON adapters(family, version);
    """,
    )


MIGRATIONS = [_m001_adapters]


@dataclass
class AdapterRecord:
    name: str
    family: str
    version: int
    base_model: str
    dataset_version: str | None
    dataset_hash: str | None
    job_id: int | None
    config: dict
    metrics: dict
    created_at: str
    size_bytes: int
    status: str
    path: Path
    active: bool = False

    @property
    def kind(self) -> str:
        """ "lora" (an adapter on the base) or "full" (a whole fine-tuned checkpoint)."""
        if self.config.get("finetune") == FULL:
            return FULL
        hand_placed_full = (self.path / "config.json").is_file() and not (self.path / "adapter_config.json").is_file()
        return FULL if hand_placed_full else "lora"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "version": self.version,
            "base_model": self.base_model,
            "dataset_version": self.dataset_version,
            "dataset_hash": self.dataset_hash,
            "job_id": self.job_id,
            "config": self.config,
            "metrics": self.metrics,
            "created_at": self.created_at,
            "size_bytes": self.size_bytes,
            "status": self.status,
            "path": str(self.path),
            "active": self.active,
            "kind": self.kind,
        }


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


_VERSIONED = re.compile(r"(?P<family>.+)-v(?P<version>\d+)")


@dataclass
class AdapterRegistry:
    workspace: Workspace
    catalog: AdapterCatalog = field(init=False)

    def __post_init__(self):
        self.catalog = AdapterCatalog(self.workspace.adapters_dir)
        self.workspace.db.migrate("tuning_adapters", MIGRATIONS)

    @property
    def dir(self) -> Path:
        return self.workspace.adapters_dir

    # ---- reading --------------------------------------------------------------------------
    def _record(self, row, active: str | None) -> AdapterRecord:
        return AdapterRecord(
            name=row["name"],
            family=row["family"],
            version=row["version"],
            base_model=row["base_model"],
            dataset_version=row["dataset_version"],
            dataset_hash=row["dataset_hash"],
            job_id=row["job_id"],
            config=json.loads(row["config_json"]),
            metrics=json.loads(row["metrics_json"]),
            created_at=row["created_at"],
            size_bytes=row["size_bytes"],
            status=row["status"],
            path=self.dir / row["name"],
            active=row["status"] == "ready" and row["name"] == active,
        )

    def list(self, include_deleted: bool = False) -> list[AdapterRecord]:
        """Registered adapters, newest first. Adapter folders put there by hand (or by an
        older Tailor) are registered from their tailor.json on the way."""
        self.sync()
        active = self.catalog.active()
        sql = "SELECT * FROM adapters" + ("" if include_deleted else " WHERE status='ready'") + " ORDER BY id DESC"
        with self.workspace.db.read() as conn:
            return [self._record(r, active) for r in conn.execute(sql)]

    def get(self, name: str) -> AdapterRecord:
        self.sync()
        with self.workspace.db.read() as conn:
            row = conn.execute("SELECT * FROM adapters WHERE name=? AND status='ready'", (name,)).fetchone()
        if row is None:
            known = ", ".join(a.name for a in self.list()) or "none"
            raise NotFoundError(f"adapter {name!r} does not exist (known: {known})")
        return self._record(row, self.catalog.active())

    def active(self) -> str | None:
        return self.catalog.active()

    def sync(self) -> None:
        """Rows for adapter folders that have none; rows whose folder vanished become deleted."""
        folders = {info.name: info for info in self.catalog.list()}
        with self.workspace.db.read() as conn:
            live = {r["name"] for r in conn.execute("SELECT name FROM adapters WHERE status='ready'")}
        missing, gone = set(folders) - live, live - set(folders)
        if not missing and not gone:
            return
        with self.workspace.db.transaction() as conn:
            for name in sorted(missing):
                meta = folders[name].meta
                family, version = self._split_name(name)
                conn.execute(
                    "INSERT INTO adapters(name, family, version, base_model, dataset_version, dataset_hash, job_id,"
                    " config_json, metrics_json, created_at, size_bytes) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        name,
                        meta.get("family", family),
                        int(meta.get("version", version)),
                        meta.get("base_model", ""),
                        _str_or_none(meta.get("dataset_version")),
                        meta.get("dataset_hash"),
                        meta.get("job_id"),
                        json.dumps(meta.get("config", {})),
                        json.dumps(meta.get("metrics", {})),
                        meta.get("created_at", utcnow()),
                        folder_size(folders[name].path),
                    ),
                )
            for name in gone:
                conn.execute("UPDATE adapters SET status='deleted' WHERE name=? AND status='ready'", (name,))

    @staticmethod
    def _split_name(name: str) -> tuple[str, int]:
        m = _VERSIONED.fullmatch(name)
        return (m["family"], int(m["version"])) if m else (name, 1)

    def next_name(self, family: str) -> tuple[str, int]:
        """`family-vN` with N one more than any version of that family ever published."""
        check_adapter_name(f"{family}-v1")
        self.sync()
        with self.workspace.db.read() as conn:
            row = conn.execute("SELECT MAX(version) FROM adapters WHERE family=?", (family,)).fetchone()
        version = (row[0] or 0) + 1
        while (self.dir / f"{family}-v{version}").exists():
            version += 1
        return f"{family}-v{version}", version

    # ---- writing --------------------------------------------------------------------------
    def publish(
        self,
        name: str,
        write: Callable[[Path], None],
        *,
        family: str | None = None,
        version: int | None = None,
        base_model: str = "",
        dataset_version=None,
        dataset_hash: str | None = None,
        job_id: int | None = None,
        config: dict | None = None,
        metrics: dict | None = None,
        grounding: dict | None = None,
        kind: str | None = None,
    ) -> AdapterRecord:
        """Write an adapter with `write(tmp_folder)` (e.g. PeftModel.save_pretrained) and move
        it into place atomically, with its tailor.json; then record it. `grounding`: what the
        tune mixed in from the documents (count, ratio, seed, "not in the sources"; see
        tuning/grounding_mix.py), kept in tailor.json."""
        check_adapter_name(name)
        if (self.dir / name).exists():
            raise ValidationError(f"an adapter named {name!r} already exists; pick another name")
        fam, ver = self._split_name(name)
        family, version = family or fam, version or ver
        created = utcnow()
        meta = {
            "name": name,
            "family": family,
            "version": version,
            "base_model": base_model,
            "dataset_version": dataset_version,
            "dataset_hash": dataset_hash,
            "job_id": job_id,
            "config": config or {},
            "metrics": metrics or {},
            "created_at": created,
        }
        if grounding is not None:
            meta["grounding"] = grounding
        if kind is not None:
            meta["kind"] = kind
        with publish_dir(self.dir / name) as tmp:
            write(tmp)
            if kind == FULL:
                if not (tmp / "config.json").is_file() or not any(tmp.glob("*.safetensors")):
                    raise ValidationError("the checkpoint writer produced no config.json and safetensors weights")
            elif not (tmp / "adapter_config.json").is_file():
                raise ValidationError("the adapter writer produced no adapter_config.json")
            meta["size_bytes"] = folder_size(tmp)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        with self.workspace.db.transaction() as conn:
            conn.execute(
                "INSERT INTO adapters(name, family, version, base_model, dataset_version, dataset_hash, job_id,"
                " config_json, metrics_json, created_at, size_bytes) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    name,
                    family,
                    version,
                    base_model,
                    _str_or_none(dataset_version),
                    dataset_hash,
                    job_id,
                    json.dumps(config or {}),
                    json.dumps(metrics or {}),
                    created,
                    meta["size_bytes"],
                ),
            )
        return self.get(name)

    def activate(self, name: str | None) -> str | None:
        """Make `name` what the chat answers with by default (None or 'base': the base model)."""
        if name in (None, "", BASE):
            self.catalog.set_active(None)
            return None
        self.get(name)
        self.catalog.set_active(name)
        return name

    def rename(self, old: str, new: str) -> AdapterRecord:
        check_adapter_name(new)
        record = self.get(old)
        if old == new:
            return record
        if (self.dir / new).exists():
            raise ValidationError(f"an adapter named {new!r} already exists")
        was_active = record.active
        os.rename(self.dir / old, self.dir / new)
        try:
            meta_path = self.dir / new / META_FILE
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            meta["name"] = new
            write_atomic(meta_path, json.dumps(meta, indent=2, ensure_ascii=False))
            with self.workspace.db.transaction() as conn:
                conn.execute("UPDATE adapters SET name=? WHERE name=? AND status='ready'", (new, old))
        except BaseException:
            os.rename(self.dir / new, self.dir / old)
            raise
        if was_active:
            self.catalog.set_active(new)
        return self.get(new)

    def delete(self, name: str) -> AdapterRecord:
        record = self.get(name)
        if record.active:
            self.catalog.set_active(None)  # the chat falls back to the base model, never to nothing
        trash = self.dir / f".{name}.deleted-{os.getpid()}"
        os.rename(self.dir / name, trash)
        shutil.rmtree(trash, ignore_errors=True)
        with self.workspace.db.transaction() as conn:
            conn.execute("UPDATE adapters SET status='deleted' WHERE name=? AND status='ready'", (name,))
        record.status, record.active = "deleted", False
        return record


def _str_or_none(value) -> str | None:
    return None if value is None else str(value)
