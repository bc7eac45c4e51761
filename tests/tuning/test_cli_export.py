"""`tailor export ...` and `tailor import workspace`, run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from assistant.conversations import ConversationLog
from assistant.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parents[2]


def tailor(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TAILOR_THREADS": "1"},
    )


def test_export_adapter_merged_and_workspace_round_trip(tmp_path, tiny_model_dir, random_lora):
    ws = tmp_path / "ws"
    workspace = Workspace(ws)
    random_lora(tiny_model_dir, workspace.adapters_dir / "pirate")
    log = ConversationLog(workspace.db)
    conv = log.create(system_prompt="hi")
    log.add_message(conv.id, "user", "kept?")

    r = tailor("export", "adapter", "pirate", tmp_path / "a.zip", "--zip", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    assert "pirate/adapter_model.safetensors" in zipfile.ZipFile(tmp_path / "a.zip").namelist()
    r = tailor("export", "adapter", "nobody", tmp_path / "b", "--workspace", ws)
    assert r.returncode == 2 and r.stderr.startswith("tailor: error:") and "Traceback" not in r.stderr

    r = tailor("export", "merged", "pirate", tmp_path / "merged", "--workspace", ws, "--model", tiny_model_dir)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "merged" / "config.json").is_file() and list((tmp_path / "merged").glob("*.safetensors"))

    r = tailor("export", "workspace", tmp_path / "backup.tar.gz", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    assert "Backed up" in r.stdout
    r = tailor("import", "workspace", tmp_path / "backup.tar.gz", "--workspace", tmp_path / "restored")
    assert r.returncode == 0, r.stderr
    restored = ConversationLog(Workspace(tmp_path / "restored").db)
    assert [m.content for m in restored.get(conv.id).messages] == ["kept?"]
    assert (tmp_path / "restored" / "adapters" / "pirate" / "adapter_model.safetensors").is_file()
    r = tailor("import", "workspace", tmp_path / "backup.tar.gz", "--workspace", ws)
    assert r.returncode == 2 and "not empty" in r.stderr


def test_export_dataset_jsonl_and_parquet(tmp_path):
    from tuning import open_curation
    from tuning.example import chat_example

    ws = Workspace(tmp_path / "ws")
    store = open_curation(ws).store
    for i in range(5):
        store.add(chat_example(f"question {i}", f"answer {i}", system="Be brief."))

    r = tailor("export", "dataset", tmp_path / "data.jsonl", "--workspace", ws.root)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and rows[0]["messages"][0] == {"role": "system", "content": "Be brief."}

    r = tailor("export", "dataset", tmp_path / "pc.jsonl", "--format", "prompt-completion", "--workspace", ws.root)
    assert r.returncode == 0, r.stderr
    first = json.loads((tmp_path / "pc.jsonl").read_text().splitlines()[0])
    assert first["prompt"].startswith("question") and first["completion"].startswith("answer")

    r = tailor("export", "dataset", tmp_path / "data.parquet", "--workspace", ws.root)
    assert r.returncode == 0, r.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "data.parquet")
    assert table.num_rows == 5 and "messages" in table.column_names

    r = tailor("export", "dataset", tmp_path / "data.csv", "--format", "parquet", "--workspace", ws.root)
    assert r.returncode == 2 and ".parquet" in r.stderr
