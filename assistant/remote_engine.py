"""The remote backend: an OpenAI-compatible server generates, Tailor keeps everything else.

`TAILOR_ENGINE_URL` points Tailor at a server that serves the base model and LoRA adapters under
their own model names: vLLM (`--enable-lora`, adapters loaded at run time through
`POST /v1/load_lora_adapter {"lora_name", "lora_path"}` and removed through
`POST /v1/unload_lora_adapter {"lora_name"}`), or another Tailor, whose /v1 has the same two
routes (serving/api.py). Why: on a team's GPU server the serving engine people already run
batches far better than anything Tailor could grow, and the loop (chat, curate, tune, compare)
stays the same.

What stays here:
- The local tokenizer (the model's own, from TAILOR_MODEL): the context budget, the history
  trimming and the token counts are the same as on the local backends. The remote applies the
  same model's chat template to the messages sent.
- The adapter catalog: publishing an adapter (a folder in `workspace/adapters/`) registers it
  with the remote, deleting it unregisters it. A watcher thread compares the catalog with what
  the remote lists every few seconds, so this holds whichever process published or deleted
  (a training job, the CLI, the web app) and after the remote restarted and forgot its
  run-time adapters. The chat also registers an adapter the moment it is first picked.
- Reference loss (`score`): an OpenAI server does not give the loss of a given answer, so it
  is computed by a local torch model, loaded on first use, as the llama.cpp backend does.

The remote reads adapter folders itself, so their path must mean something there:
`TAILOR_ENGINE_ADAPTER_DIR` is the workspace's adapters folder as the remote sees it (a shared
volume mounted elsewhere); unset, the local path is sent as is (same machine or same mount).

Failures are errors the user sees: an unreachable remote, or one that refuses a request, raises
`EngineUnavailable` naming the URL and what failed, before anything is logged; a stream that
breaks midway ends the reply with finish reason "error" and the partial text kept. A remote that
is down when Tailor starts costs one log line: the chat errors until it is back."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath

import httpx

from .adapters import AdapterCatalog
from .engine import ChatEngine, require_safetensors
from .errors import EngineUnavailable, ModelError, ValidationError
from .generation import MIN_SAMPLING_TEMPERATURE, Generation, GenerationOptions, Message
from .hardware import Hardware

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 5.0  # how often the catalog is compared with the remote's adapters
CONNECT_TIMEOUT_S = 10.0
# A streamed reply may be silent for long: a busy remote queues requests before answering
# (Tailor's own /v1 waits up to TAILOR_QUEUE_TIMEOUT, 120 s by default, before its 503).
READ_TIMEOUT_S = 300.0


def api_root(url: str) -> str:
    """The /v1 root of `url`: both `http://host:8000` and `http://host:8000/v1` are accepted."""
    url = (url or "").strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ModelError(f"TAILOR_ENGINE_URL must start with http:// or https://, not {url!r}")
    return url if url.endswith("/v1") else url + "/v1"


def _error_text(response: httpx.Response) -> str:
    """The remote's own words for an error: OpenAI's {"error": {"message"}}, vLLM's older
    {"message"}, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
        if body.get("message"):
            return str(body["message"])[:300]
        if body.get("detail"):
            return str(body["detail"])[:300]
    return response.text.strip()[:300]


class RemoteEngine(ChatEngine):
    backend = "remote"

    def __init__(
        self,
        tokenizer,
        *,
        name: str,
        url: str,
        hardware: Hardware,
        context_window: int,
        api_key: str | None = None,
        parallel: int = 8,
        catalog: AdapterCatalog | None = None,
        remote_adapter_dir: str | None = None,
        scorer: Callable[[], ChatEngine] | None = None,
        top_k: int | None = None,
        sync_interval: float = SYNC_INTERVAL_S,
    ):
        super().__init__(tokenizer, name=name, hardware=hardware, context_window=context_window)
        self.url = api_root(url)
        self.parallel = max(1, int(parallel))  # requests in flight at once: the remote batches them
        self.top_k = top_k
        self.catalog = catalog
        self.remote_adapter_dir = remote_adapter_dir
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=self.parallel),
        )
        self._base_model: str | None = None
        self._paths: dict[str, Path] = {}  # adapter name -> local folder (for the scorer)
        self._adapter_lock = threading.Lock()
        self._scorer_factory = scorer
        self._scorer: ChatEngine | None = None
        self._scorer_lock = threading.Lock()
        self._scorer_failed: str | None = None  # why the local scorer could not load
        self._closing = threading.Event()
        self._last_sync_error: str | None = None
        self._sync_interval = sync_interval
        self._watcher: threading.Thread | None = None

    def describe(self) -> str:
        return f"remote ({self.url}, model {self._base_model or 'not known yet'})"

    # ---- HTTP ----------------------------------------------------------------------------
    def _request(self, method: str, route: str, body: dict | None = None) -> httpx.Response:
        """One request to the remote; an unreachable remote raises EngineUnavailable."""
        try:
            return self._client.request(method, f"{self.url}{route}", json=body)
        except httpx.HTTPError as exc:
            raise self._unreachable(f"{method} {route}", exc) from None

    def _unreachable(self, what: str, exc: BaseException) -> EngineUnavailable:
        return EngineUnavailable(
            f"The engine at {self.url} could not be reached ({what}: {exc.__class__.__name__}: {exc}). "
            "Is it running, and is TAILOR_ENGINE_URL right?"
        )

    def _refused(self, what: str, response: httpx.Response) -> EngineUnavailable:
        hint = " (check TAILOR_ENGINE_API_KEY)" if response.status_code in (401, 403) else ""
        return EngineUnavailable(
            f"The engine at {self.url} refused {what}: HTTP {response.status_code}: {_error_text(response)}{hint}",
            status=response.status_code,
        )

    def remote_models(self) -> list[dict]:
        """The remote's model cards (GET /v1/models)."""
        response = self._request("GET", "/models")
        if response.status_code != 200:
            raise self._refused("GET /models", response)
        try:
            data = response.json()["data"]
            return [card for card in data if isinstance(card, dict) and isinstance(card.get("id"), str)]
        except (ValueError, KeyError, TypeError):
            raise EngineUnavailable(f"The engine at {self.url} answered GET /models with no model list") from None

    def base_model(self) -> str:
        """The model name the remote serves the base model under: the first card without a
        parent (vLLM lists LoRA adapters with their base as parent; Tailor names its base "base")."""
        if self._base_model is None:
            cards = self.remote_models()
            if not cards:
                raise EngineUnavailable(f"The engine at {self.url} serves no model (GET /models is empty)")
            base = next((c for c in cards if not c.get("parent")), cards[0])
            self._base_model = str(base["id"])
        return self._base_model

    def check(self) -> str | None:
        """None when the remote answers, else why not (for the one log line at start)."""
        try:
            self.base_model()
        except EngineUnavailable as exc:
            return str(exc)
        return None

    # ---- adapters ------------------------------------------------------------------------
    def remote_path(self, path: Path) -> str:
        """The adapter folder as the remote sees it (see the module docstring)."""
        path = Path(path)
        if self.remote_adapter_dir:
            return str(PurePosixPath(self.remote_adapter_dir) / path.name)
        return str(path.resolve())

    def load_adapter(self, name: str, path: Path, version: str | None = None) -> None:
        """Register the adapter with the remote under `name` (re-register it when `version`
        changed: a folder re-published under the same name)."""
        path = Path(path)
        version = version or str(path)
        require_safetensors(path, "adapter")
        with self._adapter_lock:
            if self._adapters.get(name) == version:
                return
            self._register(name, path, replace=name in self._adapters)
            self._adapters[name] = version
            self._paths[name] = path

    def _register(self, name: str, path: Path, replace: bool) -> None:
        body = {"lora_name": name, "lora_path": self.remote_path(path)}
        if replace:
            self._unregister(name)
        response = self._request("POST", "/load_lora_adapter", body)
        if response.status_code == 400 and "already" in _error_text(response).lower():
            # Registered before this process started (or by another Tailor on the same
            # remote): its files may be older, so replace it.
            self._unregister(name)
            response = self._request("POST", "/load_lora_adapter", body)
        if response.status_code != 200:
            raise self._refused(f"to load adapter {name!r} from {body['lora_path']}", response)
        log.info("Registered adapter %s with the engine at %s (%s)", name, self.url, body["lora_path"])

    def _unregister(self, name: str) -> None:
        response = self._request("POST", "/unload_lora_adapter", {"lora_name": name})
        if response.status_code not in (200, 404):  # 404: not there (already gone): fine
            raise self._refused(f"to unload adapter {name!r}", response)

    def unload_adapter(self, name: str) -> None:
        with self._adapter_lock:
            self._unregister(name)
            self._adapters.pop(name, None)
            self._paths.pop(name, None)
        log.info("Unregistered adapter %s from the engine at %s", name, self.url)

    def sync_adapters(self) -> None:
        """Make the remote's adapters follow the catalog: register LoRA adapters it lacks
        (new, re-published, or forgotten by a restarted remote), unregister the ones this
        engine registered that are gone from the catalog. Full checkpoints are not adapters:
        they stay on the local engine (assistant/second_model.py)."""
        if self.catalog is None:
            return
        wanted = {info.name: info for info in self.catalog.list() if info.kind == "lora"}
        with self._adapter_lock:
            before = dict(self._adapters)  # what we had registered when we asked the remote
        served = {str(c["id"]) for c in self.remote_models()}
        ours = [n for n, p in list(self._paths.items()) if p.parent == self.catalog.dir]  # not /v1-registered ones
        problems = []  # one adapter the remote cannot read must not hold up the others
        for name in [n for n in ours if n not in wanted]:
            try:
                self.unload_adapter(name)
            except ModelError as exc:
                problems.append(str(exc))
        for name, info in wanted.items():
            if name not in served:  # forget our record: the remote does not have it
                with self._adapter_lock:
                    # unless a request registered it while the list was on its way: replacing
                    # it now would unload it under that request's reply
                    if self._adapters.get(name) == before.get(name):
                        self._adapters.pop(name, None)
            try:
                self.load_adapter(name, info.path, info.version)
            except ModelError as exc:
                problems.append(str(exc))
        if problems:
            raise EngineUnavailable("; ".join(problems))

    def start_sync(self, known_problem: str | None = None) -> None:
        """Start the watcher that keeps the remote's adapters in sync with the catalog (no-op
        without a catalog). `known_problem`: what was already logged about the remote, so the
        watcher does not log it a second time."""
        if self.catalog is None or self._sync_interval <= 0 or self._watcher is not None:
            return
        self._last_sync_error = known_problem
        self._watcher = threading.Thread(
            target=self._watch, args=(self._sync_interval,), daemon=True, name="tailor-remote-adapters"
        )
        self._watcher.start()

    def _watch(self, interval: float) -> None:
        while True:  # the first pass at once: adapters published while Tailor was down get registered
            try:
                self.sync_adapters()
                if self._last_sync_error is not None:
                    log.info("The engine at %s answers again; adapters are in sync", self.url)
                self._last_sync_error = None
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive a remote outage
                message = str(exc)
                if message != self._last_sync_error:  # one line per new problem, not one per tick
                    log.warning("Adapters not in sync with the remote engine: %s", message)
                self._last_sync_error = message
            if self._closing.wait(interval):
                return

    # ---- generation ----------------------------------------------------------------------
    def _payload(self, messages: list[Message], options: GenerationOptions, adapter: str | None) -> dict:
        """The OpenAI chat request for `options`. Beyond OpenAI's fields: `top_k` and
        `repetition_penalty` (vLLM's sampling extensions; servers that do not know them ignore
        them) and the copy bias as OpenAI's `logit_bias` (token ids of the local tokenizer,
        which are the remote's when it serves the same model)."""
        greedy = options.temperature < MIN_SAMPLING_TEMPERATURE
        body: dict = {
            "model": adapter if adapter is not None else self.base_model(),
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": options.max_new_tokens,
            "temperature": 0.0 if greedy else options.temperature,
            "top_p": 1.0 if greedy else options.top_p,
        }
        if options.seed is not None:
            body["seed"] = options.seed
        if self.top_k and not greedy:
            body["top_k"] = self.top_k
        if options.repetition_penalty != 1.0:
            body["repetition_penalty"] = options.repetition_penalty
        # A remote server takes one bias for the whole reply: a followed span is favoured whole
        bias = self.logit_biases(replace(options, focus_follow=False))
        if bias:  # OpenAI bounds a bias to [-100, 100]; ours is at most 10
            body["logit_bias"] = {str(t): b for t, b in bias.items()}
        return body

    def _open(self, body: dict) -> httpx.Response:
        try:
            response = self._client.send(
                self._client.build_request("POST", f"{self.url}/chat/completions", json=body), stream=True
            )
        except httpx.HTTPError as exc:
            raise self._unreachable("POST /chat/completions", exc) from None
        if response.status_code != 200:
            response.read()
            response.close()
            raise self._refused(f"the chat request for model {body['model']!r}", response)
        return response

    def _start(self, gen: Generation, messages: list[Message], options: GenerationOptions, adapter: str | None) -> None:
        started = time.perf_counter()
        body = self._payload(messages, options, adapter)
        try:
            response = self._open(body)
        except EngineUnavailable as exc:
            if exc.status != 404 or adapter is None or adapter not in self._paths:
                raise
            # The remote may have restarted and forgotten the adapter: register it again, once.
            path = self._paths[adapter]
            with self._adapter_lock:
                self._register(adapter, path, replace=False)
            response = self._open(body)
        threading.Thread(
            target=self._read, args=(gen, response, messages, started), daemon=True, name="tailor-remote-stream"
        ).start()

    def _read(self, gen: Generation, response: httpx.Response, messages: list[Message], started: float) -> None:
        res = gen.result
        text = ""
        usage: dict = {}
        finish = None
        try:
            for data in _sse_data(response.iter_lines()):
                if gen.stopped:
                    break
                if data == "[DONE]":
                    finish = finish or "stop"
                    break
                chunk = json.loads(data)
                if not isinstance(chunk, dict):
                    continue
                if chunk.get("error"):
                    err = chunk["error"]
                    raise RuntimeError(err.get("message") if isinstance(err, dict) else str(err))
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content") or ""
                    if delta:
                        if res.ttft_s is None:
                            res.ttft_s = time.perf_counter() - started
                        text += delta
                        gen._push(text)
                    finish = choice.get("finish_reason") or finish
            if gen.stopped:
                res.finish_reason = "stopped"
            elif finish is None:  # neither a finish reason nor [DONE]: the connection just ended
                raise RuntimeError("the stream ended before the reply was complete")
            else:
                res.finish_reason = "length" if finish == "length" else "stop"
        except Exception as exc:  # noqa: BLE001 - a broken stream is this reply's error, not a crash
            res.finish_reason = "error"
            what = f"{exc.__class__.__name__}: {exc}" if not isinstance(exc, httpx.HTTPError) else str(exc) or repr(exc)
            res.error = f"the engine at {self.url} broke off the reply: {what}"
            log.warning("%s", res.error)
        finally:
            response.close()  # closing the connection early is how a stop reaches the remote
            res.text = text.strip()
            # The server's own counts when it sends them; the local tokenizer's otherwise.
            res.prompt_tokens = int(usage.get("prompt_tokens") or 0) or self.count_tokens(messages)
            res.completion_tokens = int(usage.get("completion_tokens") or 0) or (
                len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
            )
            res.latency_s = time.perf_counter() - started
            gen._finish()

    # ---- scoring (reference loss) stays local ---------------------------------------------
    def _torch_scorer(self, adapter: str | None) -> ChatEngine:
        """The local torch model (loaded once) that scores text, with `adapter` loaded: an
        OpenAI-compatible server returns no logits for given text. Where it cannot load, the
        score is reported as unavailable (a ValidationError: an evaluation records no value for
        the item, an answer choice falls back to the plain reply) rather than estimated; the
        reason is kept, so the load is not retried for every request."""
        self._check_adapter(adapter)
        with self._scorer_lock:
            if self._scorer is None:
                if self._scorer_factory is None:
                    self._scorer_failed = "this engine was built without a local torch model"
                if self._scorer_failed is None:
                    log.info("Loading the local torch model for scoring (once)")
                    try:
                        self._scorer = self._scorer_factory()  # type: ignore[misc]  # checked above
                    except (ModelError, OSError, RuntimeError) as exc:
                        self._scorer_failed = str(exc)
                if self._scorer is None:
                    raise ValidationError(f"scoring is unavailable with the remote engine: {self._scorer_failed}")
            if adapter is not None:
                self._scorer.load_adapter(adapter, self._paths[adapter], self._adapters[adapter])
            return self._scorer

    def score(self, messages: Sequence[Message], completion: str, adapter: str | None = None) -> tuple[float, int]:
        """Reference loss on the local torch model (see `_torch_scorer`)."""
        return self._torch_scorer(adapter).score(messages, completion, adapter)

    def close(self) -> None:
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        self._client.close()


def _sse_data(lines: Iterable[str]) -> Iterable[str]:
    """The `data:` payloads of a server-sent event stream (one event per data line, as OpenAI
    servers send them; comments and other fields are skipped)."""
    for line in lines:
        if line.startswith("data:"):
            yield line[5:].strip()


def load_remote_engine(
    resolved,
    hardware: Hardware,
    *,
    url: str,
    api_key: str | None = None,
    remote_adapter_dir: str | None = None,
    catalog: AdapterCatalog | None = None,
    max_context: int = 2048,
    parallel: int = 8,
    progress: Callable[[str], None] = log.info,
) -> RemoteEngine:
    """A RemoteEngine for `resolved` (the local model folder gives the tokenizer and the context
    length; its weights are loaded only if reference loss is asked for)."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    limit = getattr(AutoConfig.from_pretrained(resolved.path), "max_position_embeddings", None) or max_context
    top_k = 50  # transformers' default, which the local backends sample with too
    try:
        generation = GenerationConfig.from_pretrained(resolved.path)
        top_k = generation.top_k if generation.top_k is not None else top_k
    except OSError:
        pass

    def scorer() -> ChatEngine:
        from .torch_engine import TorchEngine

        return TorchEngine.load(resolved, hardware, max_context=max_context)

    engine = RemoteEngine(
        tokenizer,
        name=resolved.name,
        url=url,
        hardware=hardware,
        context_window=min(max_context, limit),
        api_key=api_key,
        parallel=parallel,
        catalog=catalog,
        remote_adapter_dir=remote_adapter_dir,
        scorer=scorer,
        top_k=top_k,
    )
    problem = engine.check()
    if problem:
        progress(f"Engine: {problem} Tailor runs on; the chat answers with this error until the engine is back.")
    else:
        progress(f"Engine: {engine.describe()}")
    engine.start_sync(known_problem=problem)
    return engine
