"""Curation settings (the `curation_settings` table): small JSON values by key, such as the
split configuration (tuning/splits.py)."""

from __future__ import annotations

import json

from assistant.db import Database


class CurationSettings:
    def __init__(self, db: Database):
        self.db = db

    def get(self, key: str, default=None):
        with self.db.read() as conn:
            row = conn.execute("SELECT value FROM curation_settings WHERE key=?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    def set(self, key: str, value) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO curation_settings(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE"
                " SET value=excluded.value",
                (key, json.dumps(value)),
            )
