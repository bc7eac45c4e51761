"""The example store: the curated dataset that tuning trains on, stored in SQLite.

It reads and searches examples (tuning/example_table.py maps them to rows), adds them, and
changes them undoably: every edit, delete, bulk tag or cleaning fix records the rows'
previous state in the undo log (tuning/undo.py) under one batch id, and `undo(batch)` puts
them back. Imports are recorded operations of their own (tuning/import_log.py); `undo_batches`
and `undo` treat both kinds of change alike. New examples get their split from the policy in
tuning/splits.py.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Iterable, Sequence

from assistant.conversations import ConversationLog
from assistant.db import Database, utcnow
from assistant.errors import NotFoundError, ValidationError

from . import splits
from .curation_settings import CurationSettings
from .example import SPLITS, STATUSES, Example, clean_tags, content_hash, dedup_hash, make_example, validate_messages
from .example_table import COLUMNS, MIGRATIONS, ExampleFilter, from_row, insert_examples, row_values
from .from_chat import example_from_message, pair_from_edit, pairs_from_rating
from .import_log import ImportLog, import_description
from .undo import UndoLog, new_batch_id


class ExampleStore:
    def __init__(self, db: Database):
        self.db = db
        db.migrate("tuning", MIGRATIONS)
        self.import_log = ImportLog(db)
        self.undo_log = UndoLog(db)
        self.settings = CurationSettings(db)
        self.recover_imports()  # an import killed last time is shown as partial from now on

    # ---- reading ------------------------------------------------------------------------
    def get(self, example_id: int) -> Example:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM examples WHERE id=?", (int(example_id),)).fetchone()
        if row is None:
            raise NotFoundError(f"example {example_id} does not exist")
        return from_row(row)

    def list(self, flt: ExampleFilter | None = None, limit: int | None = None, offset: int = 0) -> list[Example]:
        where, args = (flt or ExampleFilter()).where()
        sql = f"SELECT * FROM examples{where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [int(limit), int(offset)]
        with self.db.read() as conn:
            return [from_row(r) for r in conn.execute(sql, args)]

    def iter_all(self, flt: ExampleFilter | None = None, batch: int = 2000) -> Iterable[Example]:
        last = 0
        where, args = (flt or ExampleFilter()).where()
        where = where + (" AND" if where else " WHERE") + " id > ?"
        while True:
            with self.db.read() as conn:
                rows = conn.execute(
                    f"SELECT * FROM examples{where} ORDER BY id LIMIT ?", [*args, last, batch]
                ).fetchall()
            if not rows:
                return
            for r in rows:
                yield from_row(r)
            last = rows[-1]["id"]

    def count(self, flt: ExampleFilter | None = None) -> int:
        where, args = (flt or ExampleFilter()).where()
        with self.db.read() as conn:
            return conn.execute(f"SELECT COUNT(*) FROM examples{where}", args).fetchone()[0]

    def counts_by_split(self, status: str | None = "active") -> dict[str, int]:
        sql = "SELECT COALESCE(split, 'unassigned') AS s, COUNT(*) AS n FROM examples"
        args = []
        if status:
            sql += " WHERE status=?"
            args.append(status)
        with self.db.read() as conn:
            found = {r["s"]: r["n"] for r in conn.execute(sql + " GROUP BY s", args)}
        out = {s: found.pop(s, 0) for s in SPLITS}
        out.update(found)
        return out

    def facets(self) -> dict[str, builtins.list[str]]:
        """Distinct tags, sources, labels and statuses, for filter pickers."""
        with self.db.read() as conn:
            tags = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT j.value FROM examples, json_each(examples.tags_json) j ORDER BY 1"
                )
            ]
            out = {"tag": tags}
            for col in ("source", "label", "status", "split"):
                out[col] = [
                    r[0]
                    for r in conn.execute(f"SELECT DISTINCT {col} FROM examples WHERE {col} IS NOT NULL ORDER BY 1")
                ]
        return out

    def find_by_message(self, message_id: int) -> builtins.list[Example]:
        with self.db.read() as conn:
            return [
                from_row(r)
                for r in conn.execute("SELECT * FROM examples WHERE message_id=? ORDER BY id", (int(message_id),))
            ]

    # ---- writing ------------------------------------------------------------------------
    def add(self, example: Example) -> Example:
        [ex_id] = self.add_many([example])
        return self.get(ex_id)

    def add_many(
        self,
        examples: Sequence[Example],
        conn: sqlite3.Connection | None = None,
        assign_splits: bool = True,
        validated: bool = False,
    ) -> builtins.list[int]:
        """Insert examples in one transaction (or in `conn`'s); returns their ids.
        `validated`: the examples come from make_example (the importer), skip re-checking."""
        now = utcnow()
        if not validated:
            for ex in examples:
                ex.messages = validate_messages(ex.messages)  # examples built by hand are checked too
                ex.content_hash = content_hash(ex.messages, ex.passages, ex.rejected)
        if conn is not None:
            return insert_examples(conn, examples, now)
        with self.db.transaction() as c:
            ids = insert_examples(c, examples, now)
        if assign_splits:
            self.assign_splits()
        return ids

    # ---- imports: one recorded operation each (tuning/import_log.py) -------------------
    def recover_imports(self) -> builtins.list[int]:
        """Mark imports that were killed mid-way as partial; returns their ids."""
        return self.import_log.recover()

    def imports(
        self, limit: int | None = 20, *, status: str | None = None, file_hash: str | None = None, undoable: bool = False
    ) -> builtins.list[dict]:
        """Recorded imports, newest first, with `examples`: how many of their rows are still
        in the store (what undoing the import removes)."""
        return self.import_log.recent(limit, status=status, file_hash=file_hash, undoable=undoable)

    def get_import(self, import_id_or_batch) -> dict:
        return self.import_log.get(import_id_or_batch)

    def undo_import(self, import_id_or_batch) -> int:
        """Delete exactly the rows an import added; returns how many were removed."""
        return self.import_log.undo(import_id_or_batch)

    def assign_splits(self) -> dict:
        """Give new examples their split (the policy lives in tuning/splits.py)."""
        return splits.assign_splits(self)

    # ---- changes (undoable) ---------------------------------------------------------------

    def update(
        self,
        example_id: int,
        *,
        messages=None,
        passages=...,
        label=...,
        tags=None,
        status=None,
        split=...,
        rejected=...,
        description: str = "edit",
    ) -> Example:
        """Change fields of one example (undoable). `...` means leave as is. `rejected`: a
        pair's rejected reply (None turns a pair into an ordinary example)."""
        old = self.get(example_id)
        new = make_example(
            messages if messages is not None else old.messages,
            passages=old.passages if passages is ... else passages,
            label=old.label if label is ... else label,
            tags=old.tags if tags is None else tags,
            status=status or old.status,
            split=old.split if split is ... else split,
            source=old.source,
            provenance=old.provenance,
            rejected=old.rejected if rejected is ... else rejected,
        )
        if messages is not None and [m["content"] for m in new.messages] != [m["content"] for m in old.messages]:
            new.provenance = {**new.provenance, "edited": True} if new.provenance else new.provenance
        new.id, new.created_at = old.id, old.created_at
        self.replace_many([new], description=description)
        return self.get(example_id)

    def replace_many(self, examples: Sequence[Example], description: str, batch: str | None = None) -> str:
        """Overwrite whole rows (same ids) in one undoable batch; returns the batch id."""
        batch = batch or new_batch_id()
        now = utcnow()
        sets = ", ".join(f"{c}=?" for c in COLUMNS[1:])
        with self.db.transaction() as conn:
            for ex in examples:
                self.undo_log.remember(conn, batch, description, ex.id)
                ex.content_hash = content_hash(ex.messages, ex.passages, ex.rejected)
                conn.execute(f"UPDATE examples SET {sets} WHERE id=?", (*row_values(ex, now), ex.id))
        return batch

    def delete(self, example_ids: Sequence[int], description: str = "delete", batch: str | None = None) -> str:
        """Delete examples (undoable); returns the undo batch id."""
        return self._each(example_ids, description, batch, "DELETE FROM examples WHERE id=?", lambda i: [i])

    def set_status(
        self, example_ids: Sequence[int], status: str, description: str = "", batch: str | None = None
    ) -> str:
        if status not in STATUSES:
            raise ValidationError(f"status must be one of {', '.join(STATUSES)}")
        return self._bulk(example_ids, "status=?", [status], description or f"mark {status}", batch)

    def bulk_tag(self, example_ids: Sequence[int], add: Sequence[str] = (), remove: Sequence[str] = ()) -> str:
        add, remove = clean_tags(add), clean_tags(remove)
        if not add and not remove:
            raise ValidationError("give a tag to add or remove")
        exs = [self.get(i) for i in example_ids]
        for ex in exs:
            ex.tags = [t for t in ex.tags if t not in remove] + [t for t in add if t not in ex.tags]
        return self.replace_many(exs, description=f"tag +{','.join(add)} -{','.join(remove)}")

    def _bulk(self, example_ids, set_sql: str, args: builtins.list, description: str, batch: str | None = None) -> str:
        return self._each(
            example_ids,
            description,
            batch,
            f"UPDATE examples SET {set_sql}, updated_at=? WHERE id=?",
            lambda i: [*args, utcnow(), i],
        )

    def _each(self, example_ids, description: str, batch: str | None, statement: str, args_for) -> str:
        """Run `statement` for each example in one transaction, remembering every row first so
        the whole change can be undone; returns the undo batch id."""
        ids = [int(i) for i in example_ids]
        if not ids:
            raise ValidationError("no examples selected")
        batch = batch or new_batch_id()
        with self.db.transaction() as conn:
            for i in ids:
                if not self.undo_log.remember(conn, batch, description, i):
                    raise NotFoundError(f"example {i} does not exist")
                conn.execute(statement, args_for(i))
        return batch

    # ---- undo -------------------------------------------------------------------------------
    def undo_batches(self, limit: int = 20) -> builtins.list[dict]:
        """Recent changes that can be undone, newest first: edits (`kind` "edit") and imports
        (`kind` "import", with their `status`: done, or partial when it was interrupted)."""
        out = self.undo_log.batches(limit)
        for op in self.imports(limit, undoable=True):
            out.append(
                {
                    "batch": op["batch"],
                    "description": import_description(op),
                    "at": op["started_at"],
                    "examples": op["examples"],
                    "kind": "import",
                    "status": op["status"],
                    "last": op["updated_at"],
                }
            )
        out.sort(key=lambda b: b["last"], reverse=True)
        for b in out:
            del b["last"]
        return out[:limit]

    def undo(self, batch: str | None = None) -> int:
        """Put back the rows a change touched (the latest change if `batch` is None); for an
        import, delete the rows it added. Returns how many examples were restored (removed)."""
        if batch is None:
            recent = self.undo_batches(1)
            if not recent:
                raise ValidationError("there is nothing to undo")
            batch = recent[0]["batch"]
        if self.import_log.is_import(batch):
            return self.undo_import(batch)
        return self.undo_log.undo(batch)

    # ---- from the chat ------------------------------------------------------------------
    def from_message(
        self,
        conversation_log: ConversationLog,
        message_id: int,
        edited_text: str | None = None,
        *,
        label: str | None = None,
        tags=None,
        save: bool = True,
    ) -> Example:
        """An example from an assistant message (tuning/from_chat.py), saved unless `save` is False."""
        ex = example_from_message(conversation_log, message_id, edited_text, label=label, tags=tags)
        return self.add(ex) if save else ex

    def pair_from_edit(
        self, conversation_log: ConversationLog, message_id: int, edited_text: str, *, label=None, tags=None
    ) -> Example | None:
        """Save the preference pair an edit makes (chosen = edit, rejected = the original);
        None when the edit changed nothing. A pair already in the store is returned as is."""
        pair = pair_from_edit(conversation_log, message_id, edited_text, label=label, tags=tags)
        return None if pair is None else self.add_new([pair], keep_present=True)[0]

    def pairs_from_rating(self, conversation_log: ConversationLog, message_id: int) -> builtins.list[Example]:
        """Save the preference pairs a rating makes with oppositely rated replies to the same
        prompt; returns the pairs that were new."""
        return self.add_new(pairs_from_rating(conversation_log, message_id))

    def add_new(self, examples: Sequence[Example], keep_present: bool = False) -> builtins.list[Example]:
        """Add the examples that are not in the store yet (by `dedup_hash`, what imports skip);
        returns those added, and with `keep_present` the stored copies of the others too."""
        out, fresh = [], []
        for ex in examples:
            with self.db.read() as conn:
                row = conn.execute(
                    "SELECT * FROM examples WHERE dedup_hash=? ORDER BY id LIMIT 1",
                    (dedup_hash(ex.messages, ex.passages, ex.rejected),),
                ).fetchone()
            if row is None:
                fresh.append(ex)
            elif keep_present:
                out.append(from_row(row))
        if fresh:
            out += [self.get(i) for i in self.add_many(fresh)]
        return out
