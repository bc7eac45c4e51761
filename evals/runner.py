"""Evaluation runs: every item of a set answered by every arm (base or an adapter, retrieval
off or on), scored, and stored as it goes.

Prompts are built exactly as the chat builds them (`assistant.prompting.build_messages`), the
retriever is the chat's, and when it finds no good source the arm does what the chat's
no-source policy says (answer without sources, or the no-source reply): what is measured is
what a user of the chat would get. Decoding is greedy (temperature 0),
so a run is reproducible and differences between arms come from the models, not from luck.

The "prompted" arm is the base model (no adapter) with a style system prompt instead of each
item's own: by default a few of the user's train pairs as examples (evals/style_prompt.py), so
the table shows when prompting is enough and when tuning pays.

A run goes in a background thread; its progress and each result are written to SQLite as
they happen, so the UI polls the database, and a crash loses only the item in flight."""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace

from assistant.adapters import BASE, AdapterInfo
from assistant.answer_choice import answer_focus
from assistant.chat import NO_SOURCE_REPLY, ChatService, Route, check_no_source
from assistant.engine import Generation, GenerationOptions, GenerationResult
from assistant.errors import TailorError, ValidationError
from assistant.progress import Progress, no_progress
from assistant.prompting import build_messages, reading_options, reading_settings

from . import metrics as M
from .reports import aggregate_run
from .sets import EvalItem, EvalSet
from .store import Arm, EvalStore, ItemResult, RunInfo
from .style_prompt import ExampleSource, style_prompt_from_store

log = logging.getLogger(__name__)

TUNED = "tuned"  # alias for the active adapter, or the newest one when none is active
PROMPTED = "prompted"  # the base weights with the style system prompt (RunOptions.style_prompt)
# Items per block of the answering order, in windows of the engine's `parallel` (_answer_many):
# more keeps the replies in flight on one adapter for longer; fewer stores results sooner.
CHUNK_WINDOWS = 4
NO_STYLE_PROMPT = "the prompted arm needs a style prompt: write one, or add training pairs to build one from"


@dataclass(frozen=True)
class RunOptions:
    max_new_tokens: int = 128
    k: int = 4  # passages per question for retrieval arms, as in the chat
    # None keeps each item's own system prompt (test-split items carry the one they were saved with)
    system_prompt: str | None = None
    repetition_penalty: float = 1.05  # the chat's default; small models loop without it
    score_references: bool = True  # reference loss/perplexity under each arm's model
    semantic: bool = True  # embedding similarity between reply and reference
    # Retrieval arms when no passage supports an answer: "answer" without sources or
    # "decline" (assistant.chat.NO_SOURCE_POLICIES); None: the chat service's setting.
    no_source: str | None = None
    # The prompted arm's system prompt, for every item (over system_prompt and the item's own).
    # None: built from the workspace's train pairs when a prompted arm runs; a started run
    # stores the text it used (None when no prompted arm ran).
    style_prompt: str | None = None


def _newest(adapters: list[AdapterInfo]) -> AdapterInfo:
    def when(a: AdapterInfo):
        return (str(a.meta.get("created_at") or ""), int(a.version) if a.version.isdigit() else 0)

    return max(adapters, key=when)


def _uses_adapter(arm: Arm) -> bool:
    """Whether the arm answers with an adapter: the base and prompted arms use the base weights."""
    return arm.model not in (BASE, PROMPTED)


def parse_rag(values: list[str] | str | None) -> list[bool]:
    if values is None or values == "":
        return [False, True]
    if isinstance(values, str):
        values = [v for v in values.split(",")]
    out = []
    for v in values:
        v = str(v).strip().lower()
        if v in ("off", "false", "0", "no"):
            out.append(False)
        elif v in ("on", "true", "1", "yes"):
            out.append(True)
        elif v:
            raise ValidationError(f"retrieval setting {v!r} is not 'off' or 'on'")
    if not out:
        raise ValidationError("choose retrieval off, on, or both")
    return list(dict.fromkeys(out))


@dataclass
class _Plan:
    """One arm's question for one item, before it is answered."""

    arm: Arm
    route: Route  # the engine that answers and the adapter it uses (a full checkpoint: its own engine)
    messages: list[dict]
    passages: list | None
    abstained: bool
    declined: bool  # no source good enough and the policy says decline: no generation


def answering_order(arm_keys: Sequence[Hashable], n_items: int, block: int) -> list[tuple[int, int]]:
    """(arm index, item index) in the order an evaluation asks for replies: items in blocks of
    `block`; within a block, the arms whose keys (engine and adapter) are equal one after
    another, each over every item of the block; groups in order of their first arm."""
    groups: dict[Hashable, list[int]] = {}
    for a, key in enumerate(arm_keys):
        groups.setdefault(key, []).append(a)
    return [
        (a, i)
        for start in range(0, n_items, max(1, block))
        for same in groups.values()
        for a in same
        for i in range(start, min(start + max(1, block), n_items))
    ]


class EvalService:
    """Runs evaluations against the chat's engine, adapters and retriever."""

    def __init__(
        self,
        store: EvalStore,
        chat: ChatService,
        embedder_factory: Callable | None = None,
        examples: ExampleSource | None = None,
    ):
        """`examples`: the workspace's example store (tuning's, handed in by the caller), the
        source of the prompted arm's default style prompt."""
        self.store = store
        self.chat = chat
        self.examples = examples
        if embedder_factory is None:
            from assistant.embeddings import get_embedder

            embedder_factory = get_embedder
        self._embedder_factory = embedder_factory
        self._threads: dict[str, threading.Thread] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        store.fail_interrupted()

    @property
    def retriever(self):
        # Looked up per run: the knowledge package may attach it to the chat after startup.
        return self.chat.retriever

    # ---- arms ---------------------------------------------------------------------------
    def resolve_arms(self, models: list[str] | str | None = None, rag: list[str] | str | None = None) -> list[Arm]:
        """Arms from model names ("base", "prompted", "tuned" or adapter names) × retrieval settings.
        With no models given: base and tuned, dropping tuned when no adapter exists yet and
        retrieval arms when no retriever is attached (asked-for ones give an error instead)."""
        explicit_models = models not in (None, "", [])
        explicit_rag = rag not in (None, "", [])
        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        models = list(models) if explicit_models and models is not None else [BASE, TUNED]
        rags = parse_rag(rag)
        adapters = self.chat.adapters.list()
        if not explicit_rag and not self._has_knowledge():
            rags = [False]
        if any(rags) and self.retriever is None:
            raise ValidationError(
                "retrieval arms need a knowledge index: add documents in the Knowledge tab "
                "first, or evaluate with retrieval off"
            )
        arms: list[Arm] = []
        for name in models:
            if name == TUNED:
                if not adapters:
                    if explicit_models:
                        raise ValidationError(
                            "there is no tuned adapter yet: train one in the Tune tab, or evaluate the base model only"
                        )
                    continue
                active = self.chat.adapters.active()
                info = next((a for a in adapters if a.name == active), None) or _newest(adapters)
            elif name in (BASE, PROMPTED):
                info = None
            else:
                info = self.chat.adapters.get(name)  # NotFoundError names the known ones
            for r in rags:
                plain = PROMPTED if name == PROMPTED else BASE  # the base weights, with or without the style prompt
                arm = Arm(plain, r) if info is None else Arm(info.name, r, info.version, dict(info.meta))
                if arm.key not in {a.key for a in arms}:
                    arms.append(arm)
        if not arms:
            raise ValidationError("choose at least one arm")
        return arms

    def _has_knowledge(self) -> bool:
        """A retriever is attached and, when it can say so, holds documents (the app attaches
        the knowledge service even while it is empty; its retrieval arms would only abstain)."""
        retriever = self.retriever
        if retriever is None:
            return False
        documents = getattr(retriever, "documents", None)
        if callable(documents):
            try:
                return bool(documents())
            except Exception:  # noqa: BLE001 - unknown retriever: assume it can answer
                return True
        return True

    # ---- the prompted arm's style prompt ----------------------------------------------------
    def default_style_prompt(self) -> str:
        """A style prompt built from a few of the workspace's train pairs ("" without any)."""
        return style_prompt_from_store(self.examples)

    def _style_prompt(self, arms: list[Arm], options: RunOptions) -> str | None:
        """The style prompt the run uses: the given one or the default, checked; None when no
        arm is prompted (so a stored run never claims a prompt nobody saw)."""
        if not any(a.model == PROMPTED for a in arms):
            return None
        text = options.style_prompt if options.style_prompt is not None else self.default_style_prompt()
        text = text.strip()
        if not text:
            raise ValidationError(NO_STYLE_PROMPT)
        # fail now rather than on every item: the prompt must leave room for a question and the reply
        engine = self.chat.engine
        needed = engine.count_tokens([{"role": "system", "content": text}, {"role": "user", "content": "?"}])
        if needed + options.max_new_tokens > engine.context_window:
            raise ValidationError(
                f"the style prompt needs {needed} tokens; with {options.max_new_tokens} for the reply that is "
                f"more than the model's context ({engine.context_window} tokens): shorten it"
            )
        return text

    # ---- running ------------------------------------------------------------------------
    def start(
        self,
        evalset: EvalSet,
        arms: list[Arm],
        options: RunOptions = RunOptions(),
        background: bool = True,
        progress: Progress = no_progress,
    ) -> RunInfo:
        """Create a run and answer every item with every arm. In the background (default) it
        returns at once; watch `store.get_run(id)` for progress. Otherwise it returns when done.
        `progress(done, total)` counts replies, after each one is stored (called from the run's thread)."""
        if not arms:
            raise ValidationError("choose at least one arm")
        if not evalset.items:
            raise ValidationError("the evaluation set is empty")
        GenerationOptions(max_new_tokens=options.max_new_tokens).validate(self.chat.engine.context_window)
        if options.k < 1:
            raise ValidationError("k must be at least 1")
        # Resolved now, so the stored run says which policy its retrieval arms used.
        options = replace(options, no_source=check_no_source(options.no_source or self.chat.no_source))
        options = replace(options, style_prompt=self._style_prompt(arms, options))
        if any(a.rag for a in arms) and self.retriever is None:
            raise ValidationError("retrieval arms need a knowledge index: add documents first")
        for arm in arms:  # load adapters now, so a missing one fails before the run exists
            if _uses_adapter(arm):
                self.chat.route(arm.model)
        with self._lock:
            busy = [rid for rid, t in self._threads.items() if t.is_alive()]
            if busy:
                raise ValidationError(f"evaluation {busy[0]} is still running; wait for it or cancel it")
            run = self.store.create_run(
                set_kind=evalset.kind,
                set_name=evalset.name,
                set_fingerprint=evalset.fingerprint,
                dataset_version=evalset.dataset_version,
                base_model=self.chat.engine.name,
                arms=arms,
                # the reading settings are read when each reply is made; recorded so a row can be re-run,
                # with the engine (backend, weights, attention: what greedy replies depend on)
                options={**asdict(options), "reading": reading_settings(), "engine": self.chat.engine.describe()},
                items=evalset.items,
            )
            cancel = threading.Event()
            self._cancel[run.id] = cancel
            if background:
                thread = threading.Thread(
                    target=self._run,
                    args=(run, evalset.items, options, cancel, progress),
                    daemon=True,
                    name=f"tailor-eval-{run.id}",
                )
                self._threads[run.id] = thread
                thread.start()
                return run
        self._run(run, evalset.items, options, cancel, progress)
        return self.store.get_run(run.id)

    def cancel(self, run_id: str) -> bool:
        event = self._cancel.get(run_id)
        if event is None or self.store.get_run(run_id).status not in ("queued", "running"):
            return False
        event.set()
        return True

    def wait(self, run_id: str, timeout: float | None = None) -> RunInfo:
        thread = self._threads.get(run_id)
        if thread is not None:
            thread.join(timeout)
        return self.store.get_run(run_id)

    def _run(
        self,
        run: RunInfo,
        items: list[EvalItem],
        options: RunOptions,
        cancel: threading.Event,
        progress: Progress,
    ) -> None:
        self.store.set_status(run.id, "running")
        total, done = len(items) * len(run.arms), 0
        try:
            embedder = self._embedder_factory() if options.semantic else None
            routes = {arm.key: self.chat.route(arm.model if _uses_adapter(arm) else BASE) for arm in run.arms}
            references: dict[int, object] = {}  # item index -> its reference's embedding
            for i, result in self._answer_many(items, run.arms, routes, options, cancel):
                if embedder is not None:
                    if i not in references:
                        references[i] = embedder.encode([items[i].reference])[0]
                    result.metrics["semantic"] = M.cosine(references[i], embedder.encode([result.reply])[0])
                self.store.add_result(run.id, result)
                done += 1
                progress(done, total)
            if cancel.is_set() and done < total:
                self.store.set_status(run.id, "cancelled")
                return
            self._finalise(run.id)
            self.store.set_status(run.id, "done")
        except TailorError as exc:
            log.warning("evaluation %s failed: %s", run.id, exc)
            self.store.set_status(run.id, "failed", str(exc))
        except Exception as exc:
            log.exception("evaluation %s failed", run.id)
            self.store.set_status(run.id, "failed", f"{exc.__class__.__name__}: {exc}")

    def _finalise(self, run_id: str) -> None:
        summary = aggregate_run(self.store, run_id)
        rows = [
            (arm, metric, est.mean, est.lo, est.hi, est.n)
            for arm, per in summary.metrics.items()
            for metric, est in per.items()
        ]
        self.store.save_arm_metrics(run_id, [r for r in rows if not math.isnan(r[2])])

    def _answer_many(
        self,
        items: list[EvalItem],
        arms: list[Arm],
        routes: dict[str, Route],
        options: RunOptions,
        cancel: threading.Event,
    ) -> Iterator[tuple[int, ItemResult]]:
        """Every arm's reply to every item, up to the engine's `parallel` in flight at once (a
        batching backend decodes them together), each measured and yielded (with its item's
        index) as soon as it is written. After `cancel` it asks for no more replies, stops
        those in flight and yields nothing more.

        The order is for llama.cpp (assistant/llamacpp_engine.py). Items go in blocks of
        CHUNK_WINDOWS x `parallel`; within a block, arms that share an engine and adapter go one
        after another, each over every item of the block, so the replies in flight mostly share
        one adapter: llama.cpp applies one adapter set per decode, and a step with replies for
        two adapters decodes twice, reading every weight twice for half the tokens each. The
        window slides on across blocks (nothing waits for a block to drain). Within an arm, a reply is asked for right
        after its answer choice scored the same sources, and its reference loss as soon as the
        reply is written, so each starts from the stream that holds their common start instead
        of reading the sources again (a cache made under one adapter is never read under
        another, so an item-major order shared nothing more)."""
        gen_options = GenerationOptions(  # the same replies however the items happen to be batched
            temperature=0,
            max_new_tokens=options.max_new_tokens,
            repetition_penalty=options.repetition_penalty,
            batch_invariant=True,
            background=True,  # nobody watches these replies stream: prompts may fill whole batches
        )
        window = max(1, self.chat.engine.parallel)
        keys = [(id(routes[arm.key].engine), routes[arm.key].adapter) for arm in arms]
        order = answering_order(keys, len(items), CHUNK_WINDOWS * window)
        plans: dict[int, list[_Plan]] = {}  # planned (retrieved) when the item's first arm goes in
        in_flight: collections.deque[tuple[int, int, Generation]] = collections.deque()

        def finish_one() -> tuple[int, ItemResult]:
            """Measure a finished reply, the first to finish (its stream is then still fresh)."""
            while not any(gen.done for _, _, gen in in_flight):
                with contextlib.suppress(TimeoutError):
                    in_flight[0][2].wait(0.05)
            k = next(k for k, (_, _, gen) in enumerate(in_flight) if gen.done)
            i, a, gen = in_flight[k]
            del in_flight[k]
            return i, self._measure(items[i], plans[i][a], gen.wait(), options)

        try:
            for a, i in order:
                if cancel.is_set():
                    return
                if i not in plans:
                    plans[i] = self._plan(items[i], arms, routes, options)
                p = plans[i][a]
                if p.declined:
                    yield i, self._measure(items[i], p, None, options)
                    continue
                reading = reading_options(gen_options, items[i].question, p.passages)
                messages, reading = answer_focus(
                    reading, p.route.engine, p.messages, items[i].question, p.passages, p.route.adapter
                )
                if len(in_flight) >= window:
                    yield finish_one()
                in_flight.append((i, a, p.route.engine.stream(messages, reading, p.route.adapter)))
            while in_flight:
                yield finish_one()
        finally:  # cancelled, failed or abandoned: whatever is still decoding stops
            for _, _, gen in in_flight:
                gen.stop()

    def _plan(self, item: EvalItem, arms: list[Arm], routes: dict[str, Route], options: RunOptions) -> list[_Plan]:
        system = item.system_prompt if options.system_prompt is None else options.system_prompt
        retrieval = None
        if any(a.rag for a in arms):  # one retrieval per item, shared by every retrieval arm
            retrieval = self.retriever.retrieve(item.question, k=options.k)
        plans = []
        for arm in arms:
            if arm.rag:
                assert retrieval is not None  # retrieved above: this arm uses retrieval
                passages = retrieval.passages if not retrieval.abstain else None
                abstained = bool(retrieval.abstain)  # no source good enough: none in the prompt
            else:
                passages, abstained = None, False
            # the prompted arm's style prompt stands in for every other system prompt
            arm_system = (options.style_prompt or "") if arm.model == PROMPTED else system
            messages = build_messages(item.history, item.question, arm_system, passages)
            declined = abstained and options.no_source == "decline"
            plans.append(_Plan(arm, routes[arm.key], messages, passages, abstained, declined))
        return plans

    def _measure(self, item: EvalItem, plan: _Plan, res: GenerationResult | None, options: RunOptions) -> ItemResult:
        arm, declined, abstained = plan.arm, plan.declined, plan.abstained
        if res is None:
            reply, latency, n_tokens, finish = NO_SOURCE_REPLY, 0.0, 0, "no_source"
            tps = None
        else:
            if res.error:
                log.warning("arm %s on item %s: %s", arm.key, item.id, res.error)
            reply, latency, n_tokens, finish = res.text, res.latency_s, res.completion_tokens, res.finish_reason
            tps = n_tokens / latency if latency > 0 and n_tokens else None
        m = {
            "rouge_l": M.rouge_l(reply, item.reference),
            "f1": M.token_f1(reply, item.reference),
            "exact_match": M.exact_match(reply, item.reference),
            "fact": M.fact_found(reply, item.answers) if item.answers else None,
            "semantic": None,
            "ref_loss": None,
            "latency_s": None if declined else latency,
            "tokens_per_s": tps,
            "abstained": float(abstained) if arm.rag else None,
            "words": None if declined else float(len(reply.split())),
            "repeats": None if declined else M.repeats(reply),
        }
        if options.score_references and not declined:
            try:
                m["ref_loss"], _ = plan.route.engine.score(plan.messages, item.reference, adapter=plan.route.adapter)
            except ValidationError as exc:  # e.g. a reference longer than the context
                log.info("no reference loss for %s: %s", item.id, exc)
        passages = plan.passages
        return ItemResult(
            arm.key,
            item.id,
            reply,
            abstained,
            latency,
            n_tokens,
            tps,
            finish,
            m,
            [p.as_dict() for p in passages] if passages else None,
        )
