"""`pip install .` (not editable) into a new virtual environment: the installed Tailor loads the
demo (its files ship as package data), trains (the worker starts as `python -m tuning.worker`
from site-packages, no checkout on the path) and serves, all from a folder outside the
checkout (issue #13).

The new environment reuses the project environment's dependencies through a `.pth` file
(installing torch and transformers again would take minutes and gigabytes); Tailor itself is
copied into the new environment's site-packages, and the test checks that the code that runs is
that copy, not the checkout."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # the project environment's packages (torch, transformers, gradio, ...; pip and setuptools
    # to build with), but not its editable install of Tailor: a .pth line adds a folder to
    # sys.path without running the .pth files inside it
    (site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    build = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-cache-dir", str(REPO_ROOT)],
        capture_output=True,
        text=True,
        cwd=venv.parent,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return venv


def _run(venv: Path, *args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TAILOR_HOME", "TAILOR_DEMO_DIR")}
    return subprocess.run(
        [str(venv / "bin" / "tailor"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def test_the_installed_copy_is_the_one_that_runs(installed, tmp_path):
    probe = subprocess.run(
        [installed / "bin" / "python", "-c", "import assistant, demo, tuning.worker; print(demo.demo_dir())"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    data = Path(probe.stdout.strip())
    assert data.is_dir() and REPO_ROOT not in data.parents, data
    assert (data / "pairs.jsonl").is_file() and any((data / "docs").iterdir())


def test_installed_tailor_loads_the_demo_trains_and_serves(installed, tmp_path, tiny_model_dir):
    ws = tmp_path / "ws"
    loaded = _run(installed, "demo", "load", "--json", "--workspace", ws, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    result = json.loads(loaded.stdout)
    assert result["examples_added"] > 100 and result["documents"] and not result["errors"]

    (tmp_path / "cfg.json").write_text(json.dumps({"max_steps": 2, "eval_steps": 1, "threads": 1, "max_length": 96}))
    tuned = _run(
        installed, "tune", "--config", tmp_path / "cfg.json", "--wait", "--json", "--name", "installed",
        "--workspace", ws, "--model", tiny_model_dir, cwd=tmp_path,
    )  # fmt: skip
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    assert json.loads(tuned.stdout)["status"] == "succeeded", tuned.stdout

    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.Popen(
            [installed / "bin" / "tailor", "serve", "--port", str(port), "--workspace", ws, "--model", tiny_model_dir],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env,
        )  # fmt: skip
    try:
        deadline = time.time() + 180
        models = None
        while time.time() < deadline and models is None:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    models = [m["id"] for m in json.loads(r.read())["data"]]
            except OSError:
                time.sleep(0.5)
        assert models is not None, log.read_text()[-3000:]
        assert "base" in models and "installed-v1" in models
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(30)
