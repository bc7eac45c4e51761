"""Settings: the one module that reads TAILOR_* environment variables.

Every setting has a TAILOR_* variable so that an engineer running Tailor for a team can
configure it without touching code; each is listed in `ENV_VARS` and documented in the
README's table (tests/assistant/test_settings_doc.py checks both ways). The server's own
settings are one dataclass, `Settings.from_env()`, overridable from the CLI; the settings of
other packages (retrieval's index, the embedding model, the demo folder) are read one at a time
with `env_str` / `env_number`, so that a bad value of one does not break commands that do not
use it."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, overload

from .accounts import Accounts

LOOPBACK_NAMES = {"localhost"}


def is_loopback_host(host: str) -> bool:
    """True only for addresses that cannot be reached from another machine: 127.0.0.0/8, ::1
    (also written [::1]) and the name localhost. Parsed as an address, so a host name such as
    "127.attacker.example" (which resolves anywhere) is not loopback."""
    host = (host or "").strip().lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# Every variable Tailor reads. The README's configuration table lists the same names.
ENV_VARS = (
    "TAILOR_HOME",
    "TAILOR_MODEL",
    "TAILOR_ALLOW_DOWNLOADS",
    "TAILOR_HOST",
    "TAILOR_PORT",
    "TAILOR_AUTH",
    "TAILOR_ADMINS",
    "TAILOR_MAX_CONTEXT",
    "TAILOR_THREADS",
    "TAILOR_DEVICE",
    "TAILOR_DTYPE",
    "TAILOR_ENGINE",
    "TAILOR_ENGINE_URL",
    "TAILOR_ENGINE_API_KEY",
    "TAILOR_ENGINE_ADAPTER_DIR",
    "TAILOR_PARALLEL",
    "TAILOR_GGUF_WEIGHTS",
    "TAILOR_FLASH_ATTENTION",
    "TAILOR_PREFILL_CHUNK",
    "TAILOR_LLAMACPP_EXTRA_BUFFERS",
    "TAILOR_API_KEYS",
    "TAILOR_MAX_QUEUE",
    "TAILOR_QUEUE_TIMEOUT",
    "TAILOR_MAX_REQUEST_KB",
    "TAILOR_MAX_UPLOAD_MB",
    "TAILOR_MAX_MESSAGES",
    "TAILOR_ALLOWED_ORIGINS",
    "TAILOR_NO_SOURCE",
    "TAILOR_EMBEDDING_MODEL",
    "TAILOR_MAX_DOCUMENT_MB",
    "TAILOR_INDEX_KIND",
    "TAILOR_HNSW_THRESHOLD",
    "TAILOR_RAG_MIN_SCORE",
    "TAILOR_EVIDENCE_SENTENCES",
    "TAILOR_COPY_BIAS",
    "TAILOR_PENALIZE_SOURCES",
    "TAILOR_ANSWER_FOCUS",
    "TAILOR_ANSWER_HINT",
    "TAILOR_ANSWER_RANKING",
    "TAILOR_ANSWER_FOLLOW",
    "TAILOR_DEMO_DIR",
)


def _check_name(name: str) -> None:
    if name not in ENV_VARS:
        raise KeyError(f"{name} is not one of Tailor's settings (assistant.settings.ENV_VARS)")


@overload
def env_str(name: str, default: str) -> str: ...
@overload
def env_str(name: str, default: None = None) -> str | None: ...
def env_str(name: str, default: str | None = None) -> str | None:
    """The variable's value, stripped; `default` when unset or empty."""
    _check_name(name)
    raw = os.environ.get(name, "").strip()
    return raw or default


def env_number(name: str, default: float) -> float:
    """A numeric setting; a value that is not a number raises ValueError naming the variable."""
    raw = env_str(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def env_switch(name: str, default: bool) -> bool:
    """An on/off setting (on/off, 1/0, true/false, yes/no); anything else raises ValueError
    naming the variable, rather than meaning off."""
    raw = (env_str(name) or "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "on", "true", "yes"}:
        return True
    if raw in {"0", "off", "false", "no"}:
        return False
    raise ValueError(f"{name} must be on or off, got {raw!r}")


@overload
def _env_int(name: str, default: int) -> int: ...
@overload
def _env_int(name: str, default: None) -> int | None: ...
def _env_int(name: str, default: int | None) -> int | None:
    raw = env_str(name) or ""
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path("workspace"))
    # None means the embedded SmolLM2-135M-Instruct; otherwise a Hugging Face id or a folder.
    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    # "user:password" pairs separated by commas; required when binding off loopback. With it,
    # each user's conversations are their own (assistant/accounts.py).
    auth: str | None = None
    # Users of `auth` who may delete and restore shared things and anyone's conversation;
    # comma-separated; None: the first user of `auth`.
    admins: str | None = None
    # Upper bound on prompt + reply tokens. Small by default: prefill on a CPU runs at
    # roughly 600 tokens/s, so a long history would make every reply slow to start.
    max_context: int = 2048
    # Threads for torch in this process; None lets torch decide (all cores).
    threads: int | None = None
    device: str | None = None  # "cpu", "cuda", "mps"; None picks from the hardware
    dtype: str | None = None  # "float32", "bfloat16", "float16"; None picks from the hardware
    # The generation backend (assistant/backends.py): "auto" is llama.cpp on a CPU where it is
    # installed and works, torch on a GPU and everywhere else.
    engine: str = "auto"
    # An OpenAI-compatible server that generates instead (vLLM, another Tailor), its API key, and
    # the workspace's adapters folder as that server sees it (None: the local path); see
    # assistant/remote_engine.py.
    engine_url: str | None = None
    engine_api_key: str | None = None
    engine_adapter_dir: str | None = None
    # Requests the llama.cpp backend decodes together; each holds max_context tokens of KV cache.
    parallel: int = 8
    # Weights llama.cpp runs: "auto" (q8_0 for the embedded default model, a GGUF model's own file
    # otherwise), "embedded" (a GGUF model's own file; the default model's Q4_1) or f32 / f16 /
    # q8_0, made once (README: Engine, for what each costs in speed and quality).
    gguf_weights: str = "auto"
    # llama.cpp's flash attention: faster on long cold prompts, but a reply then depends on how
    # its prompt was cut into batches; off (plain attention), it does not (README: Engine).
    flash_attention: bool = False
    # Prompt tokens the llama.cpp backend reads per step while a watched reply is generating
    # (0: whole batches), so a long prompt holds the running replies for one short chunk at a
    # time (README: Engine).
    prefill_chunk: int = 128
    allow_downloads: bool = False  # never fetch weights from a hub unless asked to
    # Keys for the OpenAI-compatible /v1 API ("Authorization: Bearer <key>"), comma-separated.
    # Without keys /v1 is open on loopback and closed (401) anywhere else. `user:key` binds a
    # key to one of `auth`'s users: its conversations are that user's.
    api_keys: str | None = None
    # Load limits. The engine answers `parallel` requests at a time (one on torch), so the rest
    # wait in a bounded queue; beyond it the API answers 429, after queue_timeout 503.
    max_queue: int = 16
    queue_timeout: float = 120.0  # seconds a request may wait for its turn
    max_request_kb: int = 1024  # body size of one /v1 request
    max_upload_mb: int = 50  # one file uploaded through the web UI
    max_messages: int = 1000  # messages in one /v1 request (more never fit a context anyway)
    # Web pages (scheme://host:port, comma-separated) allowed to call /v1 from a browser
    # besides the web app itself.
    allowed_origins: str | None = None
    # What a retrieval chat does when no document supports an answer: "answer" without
    # sources (marked as such) or "decline" (see assistant.chat.NO_SOURCE_POLICIES).
    no_source: str = "answer"

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        values: dict[str, Any] = dict(
            home=Path(env_str("TAILOR_HOME", "workspace")),
            model=env_str("TAILOR_MODEL"),
            host=env_str("TAILOR_HOST", "127.0.0.1"),
            port=_env_int("TAILOR_PORT", 7860),
            auth=env_str("TAILOR_AUTH"),
            admins=env_str("TAILOR_ADMINS"),
            max_context=_env_int("TAILOR_MAX_CONTEXT", 2048),
            threads=_env_int("TAILOR_THREADS", None),
            device=env_str("TAILOR_DEVICE"),
            dtype=env_str("TAILOR_DTYPE"),
            engine=env_str("TAILOR_ENGINE", "auto"),
            engine_url=env_str("TAILOR_ENGINE_URL"),
            engine_api_key=env_str("TAILOR_ENGINE_API_KEY"),
            engine_adapter_dir=env_str("TAILOR_ENGINE_ADAPTER_DIR"),
            parallel=_env_int("TAILOR_PARALLEL", 8),
            gguf_weights=env_str("TAILOR_GGUF_WEIGHTS", "auto"),
            flash_attention=env_switch("TAILOR_FLASH_ATTENTION", False),
            prefill_chunk=_env_int("TAILOR_PREFILL_CHUNK", 128),
            allow_downloads=(env_str("TAILOR_ALLOW_DOWNLOADS") or "").lower() in {"1", "true", "yes"},
            api_keys=env_str("TAILOR_API_KEYS"),
            max_queue=_env_int("TAILOR_MAX_QUEUE", 16),
            queue_timeout=float(_env_int("TAILOR_QUEUE_TIMEOUT", 120)),
            max_request_kb=_env_int("TAILOR_MAX_REQUEST_KB", 1024),
            max_upload_mb=_env_int("TAILOR_MAX_UPLOAD_MB", 50),
            max_messages=_env_int("TAILOR_MAX_MESSAGES", 1000),
            allowed_origins=env_str("TAILOR_ALLOWED_ORIGINS"),
            no_source=env_str("TAILOR_NO_SOURCE", "answer"),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["home"] = Path(values["home"]).expanduser()
        return cls(**values)

    def with_(self, **changes) -> Settings:
        return replace(self, **changes)

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    def allowed_origin_list(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in (self.allowed_origins or "").split(",") if o.strip())

    def auth_pairs(self) -> list[tuple[str, str]]:
        """Parse `user:password[,user2:password2]`; raise ValueError on a malformed entry."""
        if not self.auth:
            return []
        pairs = []
        for item in self.auth.split(","):
            user, sep, password = item.strip().partition(":")
            if not sep or not user or not password:
                raise ValueError("credentials must look like user:password (several separated by commas)")
            pairs.append((user, password))
        return pairs

    def accounts(self) -> Accounts:
        """The users and admins of `auth` (no users: no accounts); ValueError when malformed."""
        admins = [a.strip() for a in (self.admins or "").split(",") if a.strip()]
        return Accounts([user for user, _ in self.auth_pairs()], admins or None)

    def api_key_users(self) -> dict[str, str | None]:
        """Each /v1 key with the user it is bound to (`user:key`, user one of `auth`'s), or
        None; ValueError on a key too short to be a secret. A key whose text merely contains
        a colon stays a plain key unless the part before it names a user."""
        users = {user for user, _ in self.auth_pairs()}
        bound: dict[str, str | None] = {}
        for item in (k.strip() for k in (self.api_keys or "").split(",")):
            if not item:
                continue
            user, sep, key = item.partition(":")
            if sep and user in users:
                bound[key.strip()] = user
            else:
                bound[item] = None
        short = [k for k in bound if len(k) < 8]
        if short:
            raise ValueError("each API key must be at least 8 characters long")
        return bound

    def api_key_list(self) -> list[str]:
        """The /v1 API keys; raise ValueError on a key too short to be a secret."""
        keys = list(self.api_key_users())
        short = [k for k in keys if len(k) < 8]
        if short:
            raise ValueError("each API key must be at least 8 characters long")
        return keys
