"""Shared fixtures.

- `tiny_model_dir`: a tiny randomly initialised Llama chat model with its own byte-level BPE
  tokenizer and a ChatML template, built inside the tests (no downloads, ~1 s). Fast unit
  tests use it; its replies are noise, but real generation code runs on it.
- `real_model_dir`: the embedded default model (SmolLM2-135M-Instruct), converted once per
  test session into a cache shared by the real-model tests (marked `real`).
- `tiny_gguf`: the tiny model converted to an f32 GGUF file for the llama.cpp backend.
- `workspace`: a fresh Workspace in a temporary folder (TAILOR_HOME points at it).
- `wait_until` / `random_lora`: fixtures giving the functions of the same names, which a
  conftest or a helper function can also import (`from ..conftest import wait_until`):
  poll until something is true, and make a LoRA adapter with random non-zero weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import assistant  # noqa: F401  (before any test imports torch: OpenMP's wait policy as the app sets it)

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Ahoy, rider! Pump your tyres before every ride. Fair winds and smooth roads!",
    "Tailor is a local-first chat assistant that improves from its own conversations.",
    "user assistant system hello thanks please question answer source document",
    "0123456789 €$%&()[]{}.,;:!?'\"-_/ àéîõü ß 中文",
] * 20


def build_tiny_model(folder: Path, *, max_positions: int = 512, seed: int = 0, initializer_range: float = 0.02) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=initializer_range,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    from assistant.hardware import pick_hardware
    from assistant.models import ResolvedModel
    from assistant.torch_engine import TorchEngine

    return TorchEngine.load(ResolvedModel("tiny", tiny_model_dir, "folder"), pick_hardware("cpu"), max_context=512)


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model as an f32 GGUF file for the llama.cpp backend (skips without llama_cpp)."""
    pytest.importorskip("llama_cpp")
    from assistant.gguf_convert import convert_folder_to_gguf

    return convert_folder_to_gguf(tiny_model_dir, tmp_path_factory.mktemp("tiny-gguf") / "tiny.f32.gguf", outtype="f32")


@pytest.fixture
def tiny_core(tiny_engine, workspace):
    """The app's core on the tiny engine, as `tailor serve` builds it (no server): for tests that
    build the whole web app with ui.app.build_ui."""
    from assistant.adapters import AdapterCatalog
    from assistant.chat import ChatService
    from assistant.conversations import ConversationLog
    from assistant.models import ResolvedModel
    from assistant.runtime import Core
    from assistant.settings import Settings

    log = ConversationLog(workspace.db)
    adapters = AdapterCatalog(workspace.adapters_dir)
    return Core(
        Settings(home=workspace.root),
        workspace,
        ResolvedModel("tiny", workspace.root, "folder"),
        tiny_engine,
        log,
        adapters,
        ChatService(tiny_engine, log, adapters),
    )


def read_db(workspace: Path, sql: str, *args) -> list[tuple]:
    """Read a server's database from outside, as another process would (WAL allows it)."""
    conn = sqlite3.connect(f"file:{Path(workspace) / 'tailor.db'}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    from assistant.workspace import Workspace

    monkeypatch.setenv("TAILOR_HOME", str(tmp_path / "ws"))
    return Workspace(tmp_path / "ws")


@pytest.fixture(scope="session")
def real_models_dir(tmp_path_factory) -> Path:
    """One conversion of the embedded model per test session, shared by real-model tests.
    TAILOR_TEST_MODEL_CACHE can point at a folder kept between runs to skip the conversion."""
    cache = os.environ.get("TAILOR_TEST_MODEL_CACHE")
    return Path(cache) if cache else tmp_path_factory.mktemp("real-models")


@pytest.fixture(scope="session")
def real_model(real_models_dir):
    from assistant.models import resolve_model

    return resolve_model(None, real_models_dir)


@pytest.fixture(scope="session")
def real_engine(real_model):
    from assistant.hardware import pick_hardware
    from assistant.torch_engine import TorchEngine

    return TorchEngine.load(real_model, pick_hardware(), max_context=2048)


# ---- waiting for something, and random LoRA adapters ------------------------------------------


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 60.0,
    interval: float = 0.1,
    message: str | Callable[[], str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
):
    """Call `predicate()` every `interval` seconds until it returns something truthy, and return
    that. After `timeout` seconds, fail with an AssertionError naming `message` (a callable is
    called then, so it can tell the last state). An exception from `predicate` (an assert
    that the thing waited for can still happen) goes straight to the caller. `sleep` waits
    between calls (a browser test passes Playwright's `page.wait_for_timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        sleep(interval)
    what = message() if callable(message) else message
    raise AssertionError(f"{what or 'timed out waiting'} (gave up waiting after {timeout:g} s)")


@pytest.fixture(name="wait_until", scope="session")
def wait_until_fixture():
    """`wait_until(predicate, timeout=..., interval=..., message=...)`: see the function."""
    return wait_until


LORA_DEFAULTS = dict(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"])


def random_lora(model_dir: Path, dest: Path | None = None, *, seed: int = 1, meta: dict | None = None, **config):
    """A PEFT LoRA adapter on the model at `model_dir` with random, non-zero weights: PEFT's
    default init makes B zero (the adapter would answer exactly like the base), so
    `init_lora_weights=False` unless `config` says otherwise. `config` goes to LoraConfig, over
    LORA_DEFAULTS; `seed` seeds torch just before the LoRA weights are made.

    With `dest` (e.g. `<workspace>/adapters/<name>`, where the chat finds adapters): saved there
    in PEFT's format, atomically (publish_dir), with `meta` (default: a note) as tailor.json;
    returns `dest`. Without: returns `write(folder)`, which saves the adapter into `folder`
    (for AdapterRegistry.publish, which writes its own tailor.json)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(**{**LORA_DEFAULTS, "init_lora_weights": False, **config}))

    def write(folder: Path) -> None:
        peft_model.save_pretrained(folder)

    if dest is None:
        return write
    from assistant.workspace import publish_dir

    with publish_dir(Path(dest)) as tmp:
        write(tmp)
        (tmp / "tailor.json").write_text(json.dumps({"note": "test adapter"} if meta is None else meta))
    return Path(dest)


@pytest.fixture(name="random_lora", scope="session")
def random_lora_fixture():
    """`random_lora(model_dir, dest=None, *, seed=1, meta=None, **lora_config)`: see the function."""
    return random_lora


# ---- running the real server in a subprocess ------------------------------------------------


REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    port: int
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server_process(
    workspace: Path,
    model: str | Path | None = None,
    *,
    args=(),
    env=None,
    timeout: float = 240,
    port: int | None = None,
) -> ServerProcess:
    """Start `tailor serve` on `port` (default: a free one) and wait until it answers HTTP."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workspace", str(workspace), *args]
    if model is not None:
        cmd += ["--model", str(model)]
    Path(workspace).mkdir(parents=True, exist_ok=True)
    log_path = Path(workspace).parent / f"server-{port}.log"
    full_env = {**os.environ, "TAILOR_THREADS": os.environ.get("TAILOR_THREADS", "2"), **(env or {})}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=full_env)
    server = ServerProcess(f"http://127.0.0.1:{port}/", port, proc, log_path)

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()[-4000:]}")
        try:
            with urllib.request.urlopen(server.url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(answers, timeout=timeout, interval=0.5)
    except AssertionError:
        server.stop()
        raise RuntimeError(f"server did not answer within {timeout}s:\n{server.log()[-4000:]}") from None
    return server


@pytest.fixture
def tailor_server(request):
    """Factory: `tailor_server(workspace, model=..., args=..., env=...)`. Every server it
    started is stopped afterwards; if the test failed, the server logs are printed."""
    started: list[ServerProcess] = []

    def start(workspace, model=None, **kwargs) -> ServerProcess:
        server = start_server_process(workspace, model, **kwargs)
        started.append(server)
        return server

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for server in started:
        server.stop()
        if failed:
            print(f"\n---- server log ({server.url}) ----\n{server.log()[-6000:]}")


@pytest.fixture
def linked_default_model(real_model):
    """Put the already converted default model into a workspace's model cache (a symlink),
    so a server or CLI started on the *default* model setting skips the 30 s conversion; and,
    where llama.cpp is installed, the q8_0 file it runs by default (made once per session)."""

    def link(workspace: Path) -> None:
        target = Path(workspace) / "models" / real_model.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(real_model.path, target_is_directory=True)
        if importlib.util.find_spec("llama_cpp") is not None:
            from assistant.backends import base_gguf

            made = base_gguf(real_model, real_model.path.parent, "auto", progress=lambda _: None)
            linked = target.parent / made.name
            if made != real_model.gguf and not linked.exists():
                linked.symlink_to(made)

    return link
