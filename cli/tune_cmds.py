"""`tailor tune`, `tailor adapters list|activate|delete|rename`, `tailor jobs list|cancel|resume`."""

from __future__ import annotations

import json
import sys

from tuning.grounding_mix import DEFAULT_RATIO, MAX_RATIO

from .chat_cmds import settings_from


def register(sub, common) -> None:
    p = sub.add_parser(
        "tune",
        parents=[common],
        help="train a LoRA adapter (or with --full the whole model) on the current dataset",
        description="Queue a training job (TRL SFT + LoRA, or with --method dpo TRL's DPO on the "
        "preference pairs) on a dataset version (default: a snapshot of the current examples). It runs "
        "in its own process; --wait follows it to the end.",
    )
    p.add_argument(
        "--method",
        choices=["sft", "dpo"],
        default=None,
        help="sft (default): learn the examples' answers; dpo: learn to prefer each pair's chosen reply over "
        "its rejected one",
    )
    p.add_argument(
        "--from",
        dest="start_adapter",
        metavar="ADAPTER",
        help="dpo: continue this adapter's weights (its frozen copy is the reference), 'base' for a new adapter, "
        "or 'active' (default: the chat's active adapter, else the base)",
    )
    p.add_argument("--beta", type=float, help="dpo: how far the tuned model may move from the reference (0.1)")
    p.add_argument(
        "--full",
        action="store_true",
        help="full fine-tuning: train every weight of the model (sft only; small models) and publish a whole "
        "checkpoint instead of a LoRA adapter; refused when this machine's memory cannot hold it",
    )
    p.add_argument("--dataset-version", type=int, metavar="V", help="train on this dataset version")
    p.add_argument("--config", metavar="FILE", help="JSON or TOML file with TrainConfig settings")
    p.add_argument(
        "--name",
        metavar="FAMILY",
        help="adapter name; versions are FAMILY-v1, -v2, ... (default: tailor, tailor-dpo for --method dpo, "
        "tailor-full for --full)",
    )
    p.add_argument("--no-activate", action="store_true", help="do not make the new adapter the chat's default")
    p.add_argument(
        "--no-grounding",
        action="store_true",
        help="do not mix in grounding examples made from your documents (default: mixed in when there are documents)",
    )
    p.add_argument(
        "--grounding-ratio",
        type=float,
        metavar="R",
        help=f"share of the training set the grounding examples make up, 0-{MAX_RATIO} (default {DEFAULT_RATIO})",
    )
    p.add_argument(
        "--grounding-seed", type=int, metavar="N", help="seed for the grounding examples (default: the config's seed)"
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="FILE",
        help="evaluation set (JSONL with question/answer/aliases) whose questions and answers no grounding "
        "example may contain; repeatable (the demo's sets are excluded automatically when its documents are loaded)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="measure a short probe of this run (a few steps) and print the expected duration and peak memory; "
        "nothing is queued",
    )
    p.add_argument(
        "--estimate",
        action="store_true",
        help="measure the estimate first, then queue the job; the adapter card compares it with the real run",
    )
    add_distributed_arguments(p)
    p.add_argument("--wait", action="store_true", help="follow the job until it ends (progress on stderr)")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("adapters", help="list, activate, rename or delete tuned adapters")
    asub = p.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)
    a = asub.add_parser("list", parents=[common], help="list adapters with their lineage and metrics")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_adapters_list)
    a = asub.add_parser("activate", parents=[common], help="make an adapter (or 'base') the chat's default")
    a.add_argument("name")
    a.set_defaults(func=cmd_adapters_activate)
    a = asub.add_parser("delete", parents=[common], help="delete an adapter (the chat falls back to base)")
    a.add_argument("name")
    a.set_defaults(func=cmd_adapters_delete)
    a = asub.add_parser("rename", parents=[common], help="rename an adapter")
    a.add_argument("old")
    a.add_argument("new")
    a.set_defaults(func=cmd_adapters_rename)

    p = sub.add_parser("jobs", help="list, cancel or resume training jobs")
    jsub = p.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    j = jsub.add_parser("list", parents=[common], help="list training jobs")
    j.add_argument("--json", action="store_true")
    j.set_defaults(func=cmd_jobs_list)
    j = jsub.add_parser("cancel", parents=[common], help="stop a job (graceful, then killed after --timeout)")
    j.add_argument("job_id", type=int)
    j.add_argument("--timeout", type=float, default=30.0, help="seconds before the worker is killed (30)")
    j.set_defaults(func=cmd_jobs_cancel)
    j = jsub.add_parser("resume", parents=[common], help="resume an interrupted, failed or cancelled job")
    j.add_argument("job_id", type=int)
    j.add_argument("--wait", action="store_true")
    j.set_defaults(func=cmd_jobs_resume)


def add_distributed_arguments(p) -> None:
    from tuning.config import DISTRIBUTED

    g = p.add_argument_group("several GPUs or machines (accelerate launch; the config is written to the job folder)")
    g.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="training processes on all machines together, one per GPU (on a CPU: processes sharing its cores)",
    )
    g.add_argument(
        "--distributed",
        choices=DISTRIBUTED,
        help="auto (default): ddp for several processes; fsdp, deepspeed-zero2/3 shard the model over GPUs "
        "(DeepSpeed: pip install 'tailor[deepspeed]')",
    )
    g.add_argument("--machines", type=int, metavar="M", help="machines in the job (default 1)")
    g.add_argument("--main-process-ip", metavar="ADDR", help="several machines: the address of this machine (0)")
    g.add_argument("--main-process-port", type=int, metavar="PORT", help="several machines: its port (29500)")


def distributed_settings(args) -> dict:
    """The TrainConfig settings the distributed flags give (those not given are left out, so a
    --config file's own settings stand)."""
    given = {
        "num_processes": args.processes,
        "distributed": args.distributed,
        "num_machines": args.machines,
        "main_process_ip": args.main_process_ip,
        "main_process_port": args.main_process_port,
    }
    return {k: v for k, v in given.items() if v is not None}


def _print_join_commands(job, config) -> None:
    """A multi-node job: what each other machine runs to join it."""
    import shlex

    from tuning.launch import join_command

    print(
        f"job {job.id} waits for {config.num_machines - 1} more machine(s); on each, with this workspace at the "
        "same path, run:",
        file=sys.stderr,
    )
    for rank in range(1, config.num_machines):
        print(f"  machine {rank}: {shlex.join(join_command(job.job_dir, config, rank))}", file=sys.stderr)


def _workspace(args):
    from assistant.workspace import Workspace

    return Workspace(settings_from(args).home)


def _service(args):
    from assistant.models import resolve_model
    from demo import demo_exclusions
    from retrieval.store import KnowledgeStore
    from tuning.service import open_tuning

    settings = settings_from(args)
    workspace = _workspace(args)
    resolved = resolve_model(
        settings.model,
        workspace.models_dir,
        allow_downloads=settings.allow_downloads,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    return open_tuning(
        workspace,
        resolved.name,
        resolved.path,
        serving=False,
        chunks=KnowledgeStore(workspace.db).all_chunks,  # the documents' chunks, for grounding examples
        exclusions=lambda: demo_exclusions(workspace),  # the demo's evaluation questions, when loaded
    )


def _manager(args):
    from tuning.jobs import JobManager

    return JobManager(_workspace(args))


def format_job(job) -> str:
    parts = [f"job {job.id}", job.status]
    if job.total_steps:
        parts.append(f"step {job.step}/{job.total_steps}")
    if job.epoch is not None:
        parts.append(f"epoch {job.epoch:.2f}")
    if job.loss is not None:
        parts.append(f"loss {job.loss:.3f}")
    if job.eval_loss is not None:
        parts.append(f"val {job.eval_loss:.3f}")
    if job.tokens_per_s:
        parts.append(f"{job.tokens_per_s:.0f} tok/s")
    if job.eta_s and job.status == "running":
        parts.append(f"ETA {job.eta_s:.0f} s")
    if job.adapter_name:
        parts.append(f"-> {job.adapter_name}")
    if job.error:
        parts.append(f"error: {job.error}")
    return " · ".join(parts)


def _follow(manager, job_id: int):
    last = [None]

    def show(job):
        line = format_job(job)
        if line != last[0]:
            print(line, file=sys.stderr, flush=True)
            last[0] = line

    return manager.wait(job_id, on_update=show)


def grounding_options(args):
    from tuning.grounding_mix import GroundingOptions

    ratio = DEFAULT_RATIO if args.grounding_ratio is None else args.grounding_ratio
    return GroundingOptions(enabled=not args.no_grounding, ratio=ratio, seed=args.grounding_seed).validate()


def cmd_tune(args) -> int:
    from tuning.config import TrainConfig, full_defaults
    from tuning.grounding_mix import Exclusions

    options = grounding_options(args)  # a bad ratio fails before the model is resolved
    exclude = Exclusions.from_files(args.exclude) if args.exclude else None
    from assistant.errors import ValidationError

    dpo = args.method == "dpo" or (args.method is None and args.start_adapter is not None)
    if not dpo and (args.start_adapter is not None or args.beta is not None):
        raise ValidationError("--from and --beta apply to --method dpo")
    if dpo and args.full:
        raise ValidationError("--full trains on examples (sft); preference tuning (--method dpo) trains LoRA adapters")
    service = _service(args)
    if dpo:  # the DPO defaults, then the file's settings, then --beta
        settings = TrainConfig.file_settings(args.config) if args.config else {}
        config = service.preference_config(args.start_adapter, **{**settings, "beta": args.beta})
    elif args.full:  # the full fine-tuning defaults, then the file's settings
        config = full_defaults(**(TrainConfig.file_settings(args.config) if args.config else {}))
    else:
        config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    if distributed_settings(args):  # the flags over the file's settings and the defaults
        config = config.with_(**distributed_settings(args))
    estimate = None
    if args.dry_run or args.estimate:
        print("measuring a short probe of this run...", file=sys.stderr, flush=True)
        estimate = service.estimate(
            dataset_version=args.dataset_version, config=config, grounding=options, exclude=exclude
        )
        if args.dry_run:
            print(json.dumps(estimate.as_dict(), indent=2) if args.json else estimate.summary())
            return 0
        print(estimate.summary(), file=sys.stderr, flush=True)
    job = service.start(
        dataset_version=args.dataset_version,
        config=config,
        family=args.name,
        activate=not args.no_activate,
        grounding=options,
        exclude=exclude,
        estimate=estimate,
    )
    if config.num_machines > 1:
        _print_join_commands(job, config)
    grounding = job.grounding()
    if grounding and not args.json:
        print(f"grounding: {grounding.get('message', '')}", file=sys.stderr, flush=True)
    if args.wait:
        job = _follow(service.jobs, job.id)
    if args.json:
        print(json.dumps(job.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(format_job(job))
    return 0 if job.status in ("succeeded", "queued", "starting", "running") else 1


def cmd_adapters_list(args) -> int:
    from tuning.registry import AdapterRegistry

    records = AdapterRegistry(_workspace(args)).list()
    if args.json:
        print(json.dumps([r.as_dict() for r in records], indent=2, ensure_ascii=False))
        return 0
    if not records:
        print("no adapters yet: run `tailor tune`")
    for r in records:
        m = r.metrics
        val = m.get("validation_loss")
        val_text = f"{val:.3f}" if isinstance(val, (int, float)) else "-"
        print(
            f"{'*' if r.active else ' '} {r.name:<20} {r.kind:<4} data v{r.dataset_version or '-':<4} "
            f"val loss {val_text:<6} "
            f"best step {m.get('best_step', '-')}  {r.size_bytes / 1e6:.1f} MB  {r.created_at[:16]}"
        )
    return 0


def cmd_adapters_activate(args) -> int:
    from tuning.registry import AdapterRegistry

    name = AdapterRegistry(_workspace(args)).activate(args.name)
    print(f"active: {name or 'base'}")
    return 0


def cmd_adapters_delete(args) -> int:
    from tuning.registry import AdapterRegistry

    AdapterRegistry(_workspace(args)).delete(args.name)
    print(f"deleted {args.name}")
    return 0


def cmd_adapters_rename(args) -> int:
    from tuning.registry import AdapterRegistry

    AdapterRegistry(_workspace(args)).rename(args.old, args.new)
    print(f"renamed {args.old} -> {args.new}")
    return 0


def cmd_jobs_list(args) -> int:
    manager = _manager(args)
    manager.reconcile()
    jobs = manager.list()
    if args.json:
        print(json.dumps([j.as_dict() for j in jobs], indent=2, ensure_ascii=False))
    else:
        for job in jobs:
            print(format_job(job))
        if not jobs:
            print("no training jobs yet")
    return 0


def cmd_jobs_cancel(args) -> int:
    job = _manager(args).cancel(args.job_id, wait=True, timeout=args.timeout)
    print(format_job(job))
    if job.message and job.message != job.status:
        print(f"  {job.message}")  # e.g. that the worker belonged to another copy and was left alone
    return 0


def cmd_jobs_resume(args) -> int:
    manager = _manager(args)
    job = manager.resume(args.job_id)
    if args.wait:
        job = _follow(manager, job.id)
    print(format_job(job))
    return 0
