"""Training configuration: one dataclass with defaults chosen for the embedded model
(SmolLM2-135M-Instruct, 135M parameters, 30 layers, hidden 576) on a 2-core laptop CPU,
and the hardware-derived choices (dtype, threads, gradient checkpointing) resolved at run time.

Why each default (measured on the 2-core development machines, fp32, AVX2, no GPU):

- LoRA rank 16, alpha 32 (scale alpha/r = 2), dropout 0.05, on every linear layer of the
  blocks (q, k, v, o, gate, up, down). A tone/voice is spread over attention and MLP, and
  "all linear layers" is what QLoRA found necessary to match full fine-tuning. The adapter is
  ~4.9M parameters (3.6% of the model, ~19 MB in fp32); LoRA's own compute is <5% of a step:
  the cost of a step is the frozen base's forward + backward, whatever the targets.
- Learning rate 5e-4, linear decay, 5% warm-up. LoRA tolerates several times the rates of
  full fine-tuning (TRL's SFT default 2e-5 is for full fine-tuning); one epoch over ~150
  short pairs is only ~37 updates, so the rate has to be on the high side of the usual
  LoRA range (1e-4 to 1e-3) for the voice to be learned in that budget.
- 1 epoch, batch 4. One click on the demo data must publish in under 5 minutes on 2 cores:
  an epoch is ~15k tokens (pairs of ~100 tokens including the template) and TRL trains the
  model at roughly 60-130 tokens/s on 1-2 CPU threads, so one epoch is the budget. Batch 4
  (not 8) doubles the number of optimizer updates for the same compute, which matters more
  than gradient noise on a formulaic voice.
- max_length 512 tokens: the demo pairs are ~100 tokens and curated chat turns with retrieved
  passages ~300-500; longer examples are truncated (the cleaning step flags them first).
- Early stopping on validation loss, evaluated every ~1/5 of the run, patience 3 evaluations;
  the published adapter is the best-validation checkpoint (load_best_model_at_end).
- dtype from the hardware, never TRL's unconditional bf16 default: on a CPU the weights stay
  fp32 and bf16 autocast is used only where the CPU has bf16 matrix instructions
  (AVX512-BF16/AMX). Without them bf16 matmuls ran 10-300x slower and TRL's default trained
  ~12x slower (DESIGN.md's machines); with them (an AMD EPYC with avx512_bf16, measured in
  this session) a bf16 matmul ran ~4x faster than fp32 and a Tailor training step ~1.35x
  faster. On GPUs: bf16 where supported, else fp16 autocast.
- No gradient checkpointing on a CPU (it cost ~24% speed; memory is ~2-4 GB for this model
  without it); on by default on a GPU only for models above 1B parameters (`None` = auto).
- Padding: TRL's `padding_free` needs FlashAttention (installed TRL: "only supported with
  FlashAttention 2 or 3"), and `packing=True` was slower on a CPU (attention over one long
  row), so batches are grouped by length (LengthGroupedSampler) and kept small, which leaves
  little padding.
- Threads: a training process beside a chatting app that both use every core slowed each
  other 5-10x; so inside the app a job gets cores-1 threads (at least 1), and from the CLI all
  cores. Override with `threads`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from assistant.errors import ValidationError

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# The few settings the Tune tab's Advanced panel shows (the rest stay at their defaults).
ADVANCED = ("epochs", "learning_rate", "lora_r", "batch_size", "max_length", "early_stopping_patience", "threads")


# how a job's processes share the work (tuning/launch.py): "ddp" copies the model into each
# process (gloo on CPUs, NCCL on GPUs); "fsdp" (FSDP2) and DeepSpeed ZeRO-2/3 shard optimizer
# state, gradients (and with zero3 / fsdp the weights) over the GPUs
DISTRIBUTED = ("auto", "none", "ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")
SHARDED = ("fsdp", "deepspeed-zero2", "deepspeed-zero3")

METHODS = ("sft", "dpo")
# which weights a run changes: a LoRA adapter on the frozen base (the default), or every weight
# of a copy of the base ("full": small models, tuning/full_model.py)
FINETUNES = ("lora", "full")


@dataclass
class TrainConfig:
    # what is learned: "sft" (the examples' answers) or "dpo" (the preference pairs: chosen over
    # rejected, tuning/preference.py), on a new LoRA or on top of `start_adapter`'s weights
    method: str = "sft"
    start_adapter: str | None = None  # dpo only: a published adapter to continue from (None: the base)
    beta: float = 0.1  # dpo only: how far the model may move from the reference (TRL's default)
    # dpo only: weight of an SFT term (the chosen reply's mean token loss) added to the DPO loss,
    # as in RPO / the Llama 3 recipe; 0 is plain DPO. After plain DPO on the demo pairs every
    # reply looped on the sign-off; with this term 10 of 22 still did (README "Preference tuning").
    sft_weight: float = 1.0
    # "lora": train a LoRA adapter (the lora_* settings below); "full": train every weight and
    # publish a whole checkpoint (sft only; memory-checked before it starts, tuning/full_model.py)
    finetune: str = "lora"
    # LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    # optimisation
    learning_rate: float = 5e-4
    epochs: float = 1.0
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.05
    lr_scheduler: str = "linear"
    weight_decay: float = 0.0
    max_length: int = 512
    max_steps: int | None = None  # caps the run (tests, quick tries); None: epochs decide
    seed: int = 42
    # evaluation, early stopping, checkpoints
    eval_steps: int | None = None  # None: about 5 evaluations per run
    early_stopping_patience: int = 3  # evaluations without improvement; 0 turns early stopping off
    early_stopping_threshold: float = 0.0
    save_total_limit: int = 2
    logging_steps: int = 1  # every step: the loss curve is the progress bar users watch
    # hardware (None: chosen from the machine at run time)
    dtype: str | None = None
    device: str | None = None
    threads: int | None = None
    gradient_checkpointing: bool | None = None
    # several processes, GPUs or machines (tuning/launch.py writes JOB/accelerate.yaml for them):
    # "auto" is ddp when num_processes > 1, else none; fsdp and deepspeed-zero2/3 shard the model
    # over GPUs (one process per GPU), and need GPUs
    distributed: str = "auto"
    num_processes: int = 1  # processes on all machines together (accelerate's meaning); one per GPU
    num_machines: int = 1
    main_process_ip: str | None = None  # several machines: the address of machine 0 (where the job was queued)
    main_process_port: int | None = None  # None: a free port on one machine, 29500 across machines

    # ---- validation / (de)serialisation ---------------------------------------------------
    def validate(self) -> TrainConfig:
        def need(cond: bool, msg: str):
            if not cond:
                raise ValidationError(f"training config: {msg}")

        need(self.method in METHODS, f"method must be one of {', '.join(METHODS)}")
        need(
            self.start_adapter is None or (isinstance(self.start_adapter, str) and bool(self.start_adapter.strip())),
            "start_adapter must be an adapter name or empty",
        )
        need(self.start_adapter is None or self.method == "dpo", "start_adapter applies to method dpo only")
        need(self.finetune in FINETUNES, f"finetune must be one of {', '.join(FINETUNES)}")
        need(
            self.finetune == "lora" or self.method == "sft",
            "full fine-tuning (finetune full) trains on examples (method sft); preference tuning trains LoRA adapters",
        )
        need(isinstance(self.beta, (int, float)) and 0 < self.beta <= 10, "beta must be in (0, 10]")
        need(isinstance(self.sft_weight, (int, float)) and 0 <= self.sft_weight <= 10, "sft_weight must be in [0, 10]")
        need(isinstance(self.lora_r, int) and 1 <= self.lora_r <= 512, "lora_r must be an integer 1-512")
        need(self.lora_alpha > 0, "lora_alpha must be positive")
        need(0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)")
        need(
            bool(self.target_modules) and all(isinstance(t, str) and t for t in self.target_modules),
            "target_modules must be a non-empty list of module names (or ['all-linear'])",
        )
        need(0 < self.learning_rate < 1, "learning_rate must be between 0 and 1")
        need(0 < self.epochs <= 100, "epochs must be between 0 and 100")
        need(isinstance(self.batch_size, int) and 1 <= self.batch_size <= 1024, "batch_size must be 1-1024")
        need(
            isinstance(self.gradient_accumulation_steps, int) and self.gradient_accumulation_steps >= 1,
            "gradient_accumulation_steps must be >= 1",
        )
        need(0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)")
        need(
            self.lr_scheduler in ("linear", "cosine", "constant", "constant_with_warmup"),
            "lr_scheduler must be linear, cosine, constant or constant_with_warmup",
        )
        need(isinstance(self.max_length, int) and 16 <= self.max_length <= 131072, "max_length must be 16-131072")
        need(
            self.max_steps is None or (isinstance(self.max_steps, int) and self.max_steps >= 1),
            "max_steps must be a positive integer or empty",
        )
        need(
            self.eval_steps is None or (isinstance(self.eval_steps, int) and self.eval_steps >= 1),
            "eval_steps must be a positive integer or empty",
        )
        need(
            isinstance(self.early_stopping_patience, int) and self.early_stopping_patience >= 0,
            "early_stopping_patience must be >= 0",
        )
        need(isinstance(self.save_total_limit, int) and self.save_total_limit >= 1, "save_total_limit must be >= 1")
        need(isinstance(self.logging_steps, int) and self.logging_steps >= 1, "logging_steps must be >= 1")
        need(self.dtype in (None, "float32", "bfloat16", "float16"), "dtype must be float32, bfloat16 or float16")
        need(self.device in (None, "cpu", "cuda", "mps"), "device must be cpu, cuda or mps")
        need(self.threads is None or (isinstance(self.threads, int) and self.threads >= 1), "threads must be >= 1")
        self._validate_distributed(need)
        return self

    def _validate_distributed(self, need) -> None:
        need(self.distributed in DISTRIBUTED, f"distributed must be one of {', '.join(DISTRIBUTED)}")
        need(isinstance(self.num_processes, int) and self.num_processes >= 1, "num_processes must be >= 1")
        need(isinstance(self.num_machines, int) and self.num_machines >= 1, "num_machines must be >= 1")
        need(
            self.num_processes % self.num_machines == 0,
            f"num_processes counts the processes of all machines together: {self.num_processes} cannot be split "
            f"evenly over {self.num_machines} machines",
        )
        need(
            self.distributed != "none" or self.num_processes == 1,
            "distributed none runs one process; choose ddp (or fsdp, deepspeed-zero2/3) for several",
        )
        need(
            self.distributed != "ddp" or self.num_processes > 1,
            "distributed ddp needs num_processes of 2 or more (one per GPU)",
        )
        need(
            self.num_machines == 1 or (isinstance(self.main_process_ip, str) and bool(self.main_process_ip.strip())),
            "several machines need main_process_ip: the address of machine 0, which the others connect to",
        )
        need(
            self.main_process_port is None
            or (isinstance(self.main_process_port, int) and 1 <= self.main_process_port <= 65535),
            "main_process_port must be a port number 1-65535 or empty",
        )

    @property
    def strategy(self) -> str:
        """The distributed strategy in effect: `distributed` with "auto" decided ("ddp" for
        several processes, else "none")."""
        if self.distributed == "auto":
            return "ddp" if self.num_processes > 1 else "none"
        return self.distributed

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> TrainConfig:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(
                f"training config: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        try:
            cfg = cls(**data)
        except TypeError as exc:
            raise ValidationError(f"training config: {exc}") from exc
        if isinstance(cfg.target_modules, str):
            cfg.target_modules = [t.strip() for t in cfg.target_modules.split(",") if t.strip()]
        cfg.target_modules = list(cfg.target_modules)
        return cfg.validate()

    @classmethod
    def from_file(cls, path: Path | str) -> TrainConfig:
        """A JSON or TOML file holding any subset of the fields."""
        return cls.from_dict(cls.file_settings(path))

    @staticmethod
    def file_settings(path: Path | str) -> dict:
        """The settings a JSON or TOML config file holds (checked when made into a config)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValidationError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        try:
            if path.suffix.lower() == ".toml":
                import tomllib

                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except ValueError as exc:
            raise ValidationError(
                f"config file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}"
            ) from exc
        if not isinstance(data, dict):
            raise ValidationError(f"config file {path} must hold an object of settings")
        return data

    def with_(self, **changes) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})


def dpo_defaults(**changes) -> TrainConfig:
    """The preference-tuning defaults: a lower rate than SFT's 5e-4 (the usual LoRA-DPO range is
    5e-6 to 1e-4: DPO pushes the policy away from a reference, and large steps drive both
    replies' likelihoods down together), and several epochs, as preference sets are small
    (tens of pairs: one epoch at batch 4 is a dozen updates). README "Preference tuning" has
    what they gave on the demo."""
    base = {"method": "dpo", "learning_rate": 5e-5, "epochs": 2.0, "beta": 0.1, "sft_weight": 1.0}
    return TrainConfig.from_dict({**base, **{k: v for k, v in changes.items() if v is not None}})


def full_defaults(**changes) -> TrainConfig:
    """The full fine-tuning defaults: every weight moves, so the rate is ten times below LoRA's
    5e-4 (full fine-tuning's usual range is 1e-5 to 1e-4; TRL's SFT default is 2e-5), and
    two epochs, as a small model's voice needs more updates at that rate than one epoch of the
    demo gives. README "Full fine-tuning" has what they gave on the demo."""
    base = {"finetune": "full", "learning_rate": 5e-5, "epochs": 2.0}
    return TrainConfig.from_dict({**base, **{k: v for k, v in changes.items() if v is not None}})


def default_threads(serving: bool) -> int:
    """Threads for a training process: all cores from the CLI; cores-1 (at least 1) beside the
    app, so a chat reply and a training step do not fight over every core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1) if serving else max(1, cores)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16). Without them
    bf16 matmuls ran 10-300x slower than fp32; with them (e.g. a recent AMD EPYC) a bf16
    matmul ran ~4x faster than fp32."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


@dataclass(frozen=True)
class ResolvedHardware:
    device: str
    dtype: str  # compute dtype: "float32", "bfloat16" or "float16" (mixed precision: autocast)
    threads: int
    gradient_checkpointing: bool
    weights_dtype: str = "float32"  # the frozen base weights as loaded

    @property
    def bf16(self) -> bool:
        return self.dtype == "bfloat16"

    @property
    def fp16(self) -> bool:
        return self.dtype == "float16"


def resolve_hardware(
    config: TrainConfig, *, num_parameters: int | None = None, default_thread_count: int | None = None
) -> ResolvedHardware:
    """The device/dtype/threads/checkpointing a job will use on this machine.

    CPU: fp32 weights; bf16 autocast only where the CPU has bf16 matrix instructions (never
    TRL's unconditional default bf16, which on a CPU without them trained ~12x slower).
    GPU: bf16 weights and compute where supported, else fp32 weights with fp16 autocast."""
    from assistant.hardware import pick_hardware

    hw = pick_hardware(config.device, config.dtype)
    dtype = hw.dtype_name
    weights = "float32"
    if hw.device == "cpu" and config.dtype is None:
        dtype = "bfloat16" if cpu_has_fast_bf16() else "float32"
    elif hw.device != "cpu" and dtype == "bfloat16":
        weights = "bfloat16"
    threads = config.threads or default_thread_count or default_threads(serving=False)
    checkpointing = config.gradient_checkpointing
    if checkpointing is None:
        # Only worth its ~24% slowdown when memory is the limit: big models on a GPU.
        checkpointing = hw.device != "cpu" and (num_parameters or 0) > 1_000_000_000
    return ResolvedHardware(hw.device, dtype, threads, bool(checkpointing), weights)
