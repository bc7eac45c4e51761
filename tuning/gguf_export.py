"""Take a tuned assistant to llama.cpp and Ollama: `export_gguf` writes one folder with

    <name>.q8_0.gguf, <name>.q4_k_m.gguf   the adapter merged into the base model, quantized by
                                           llama.cpp (any of QUANT_KINDS; f16 and f32 are not quantized)
    <name>.lora.gguf                       the adapter alone, for llama.cpp's `--lora` on a GGUF of the base
    Modelfile                              for `ollama create NAME -f Modelfile`: the smallest merged
                                           file, the chat template in Ollama's Go-template syntax, the
                                           system prompt, stop tokens and Tailor's sampling defaults
    README.txt                             how to run each file
    tailor-export.json                     what was exported from what (it also marks the folder as an
                                           export that a later `overwrite` may replace)

How: `tuning.export.export_merged` folds the LoRA into a fresh copy of the base weights (the
running chat's are never touched), `assistant.gguf_convert` writes that as an f16 GGUF (f32
when f32 is asked for) and re-encodes it with llama.cpp's quantizer, `assistant.gguf_lora`
writes the LoRA file. All of it is built in a temporary folder beside `dest` and renamed into
place, so an interrupted export leaves nothing half-written where the user looks.

The chat template. Ollama does not run Jinja: a Modelfile's TEMPLATE is a Go text/template over
`.System` (every system message, joined) and `.Messages`. The Hugging Face template is not parsed
but *probed*: rendered for a few conversations and compared with ChatML
(`<|im_start|>role\\ncontent<|im_end|>\\n`, as SmolLM2 and Qwen2.5 use), which also reveals a
default system prompt the template inserts when a conversation has none (SmolLM2's "You are a
helpful AI assistant named SmolLM..."). A ChatML template becomes the Go template below, which
renders the same text. Any other template is not translated: the Modelfile then has no
TEMPLATE (Ollama falls back to the template stored in the GGUF's tokenizer.chat_template when it
recognises it) and the result's `notes` say so; llama.cpp itself reads the chat template from
the GGUF file either way."""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from assistant.adapters import FULL, AdapterCatalog
from assistant.db import utcnow
from assistant.errors import ModelError, TailorError, ValidationError, write_failed
from assistant.generation import GenerationOptions
from assistant.models import ResolvedModel
from assistant.workspace import publish_dir

from .export import ExportResult, _adapter_files, export_merged

Progress = Callable[[str], None]

# quantize_gguf's kinds (assistant.gguf_convert), plus f32: the merged weights exactly, which is
# what a parity check needs on a tiny random model (f16 rounding flips its nearly tied logits).
QUANT_KINDS = ("q8_0", "q4_k_m", "q4_0", "f16", "f32")
DEFAULT_QUANTS = ("q8_0", "q4_k_m")
# The merged file the Modelfile points at: the smallest one exported.
_MODELFILE_PREFERENCE = ("q4_k_m", "q4_0", "q8_0", "f16", "f32")
EXPORT_META = "tailor-export.json"

_QUANT_NOTES = {
    "q8_0": "8-bit: answers closest to Tailor's own",
    "q4_k_m": "4-bit K-quant (medium): smaller and faster, answers may differ a little",
    "q4_0": "4-bit (legacy): smallest, answers differ more",
    "f16": "16-bit floats, not quantized",
    "f32": "32-bit floats: exactly the merged weights, largest",
}

IM_START, IM_END = "<|im_start|>", "<|im_end|>"


@dataclass
class GgufExportResult(ExportResult):
    """ExportResult (path, kind "gguf", files, bytes, seconds) plus what the folder holds."""

    outputs: list[Path] = field(default_factory=list)  # the files written, in the order of README.txt
    template: str = "none"  # the Modelfile's TEMPLATE: "chatml" (translated) or "none" (left to Ollama)
    notes: list[str] = field(default_factory=list)  # what the user should know (a file left out, ...)


# ---- the chat template ----------------------------------------------------------------------------


def _chatml(messages: Sequence[dict], generation_prompt: bool) -> str:
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if generation_prompt else "")


_PROBE = [
    {"role": "system", "content": "SYS-7f3a"},
    {"role": "user", "content": "USER-1 question?"},
    {"role": "assistant", "content": "ASSISTANT-1 answer."},
    {"role": "user", "content": "USER-2 thanks"},
]


@dataclass(frozen=True)
class ChatTemplate:
    kind: str  # "chatml" or "none"
    default_system: str | None = None  # what the template says as system when a conversation has none
    reason: str = ""  # why it is "none"


def probe_chat_template(render: Callable[[list[dict], bool], str]) -> ChatTemplate:
    """Tell whether `render(messages, add_generation_prompt)` (a tokenizer's chat template) is
    ChatML, and which system prompt it inserts when the conversation has none."""
    try:
        with_system = render(_PROBE, True)
        closed = render(_PROBE, False)
        no_system = render(_PROBE[1:], True)
    except Exception as exc:  # noqa: BLE001 - a template may raise anything (jinja errors, its own raise_exception)
        return ChatTemplate("none", reason=f"rendering it failed ({exc})")
    if with_system != _chatml(_PROBE, True) or closed != _chatml(_PROBE, False):
        return ChatTemplate("none", reason="it is not ChatML (<|im_start|>role ... <|im_end|>)")
    rest = _chatml(_PROBE[1:], True)
    if no_system == rest:
        return ChatTemplate("chatml")
    head = f"{IM_START}system\n"
    tail = f"{IM_END}\n" + rest
    if no_system.startswith(head) and no_system.endswith(tail) and len(no_system) >= len(head) + len(tail):
        default = no_system[len(head) : len(no_system) - len(tail)]
        if IM_START not in default and IM_END not in default:
            return ChatTemplate("chatml", default_system=default)
    return ChatTemplate("none", reason="without a system message it renders something other than ChatML")


def _go_text(text: str) -> str:
    """`text` as literal output of a Go template inside a Modelfile's triple quotes: as is when
    it holds no template delimiter or triple quote, else as a Go string constant."""
    if "{{" in text or "}}" in text or '"""' in text:
        return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"  # JSON escapes are valid Go escapes
    return text


def ollama_chatml_template(default_system: str | None = None) -> str:
    """ChatML as an Ollama Go template. Ollama passes every system message as `.System` (the
    Modelfile's SYSTEM when the request has none) and all messages as `.Messages`. The system
    turn comes first (or the template's default), then each user and assistant turn; after a
    final user turn the assistant's is opened, and a final assistant turn is left open so that
    Ollama continues it, as Hugging Face's `continue_final_message` does."""
    system = f"{IM_START}system\n{{{{ .System }}}}{IM_END}\n"
    if default_system is not None:
        system_block = (
            "{{- if .System }}" + system + "{{ else }}" + f"{IM_START}system\n{_go_text(default_system)}{IM_END}\n"
            "{{ end }}"
        )
    else:
        system_block = "{{- if .System }}" + system + "{{ end }}"
    return (
        system_block + "\n"
        "{{- range $i, $_ := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
        '{{- if eq .Role "user" }}' + f"{IM_START}user\n{{{{ .Content }}}}{IM_END}\n"
        "{{ if $last }}" + f"{IM_START}assistant\n" + "{{ end }}\n"
        '{{- else if eq .Role "assistant" }}' + f"{IM_START}assistant\n{{{{ .Content }}}}"
        "{{ if not $last }}" + f"{IM_END}\n" + "{{ end }}\n"
        "{{- end }}\n"
        "{{- end }}"
    )


def _quoted(value: str, what: str) -> str:
    if '"""' in value:
        raise ValidationError(f'the {what} must not contain three double quotes (""") for an Ollama Modelfile')
    return f'"""{value}"""'


def modelfile_text(
    gguf_name: str,
    template: ChatTemplate,
    *,
    system_prompt: str | None,
    stops: Sequence[str],
    options: GenerationOptions | None = None,
) -> str:
    """The Ollama Modelfile for the merged model file `gguf_name` (beside it)."""
    options = options or GenerationOptions()
    lines = [
        "# Ollama Modelfile written by Tailor. Use it from this folder:",
        "#   ollama create NAME -f Modelfile && ollama run NAME",
        f"FROM ./{gguf_name}",
        "",
    ]
    if template.kind == "chatml":
        lines += [
            "# The model's chat template (ChatML), translated from Jinja to Ollama's Go template syntax.",
            f"TEMPLATE {_quoted(ollama_chatml_template(template.default_system), 'chat template')}",
        ]
    else:
        lines += [
            f"# No TEMPLATE: the model's chat template could not be translated ({template.reason}).",
            "# Ollama then uses the template stored in the GGUF file (tokenizer.chat_template) when it knows",
            "# it; check with `ollama show NAME --template`, and write a TEMPLATE here if it shows none.",
        ]
    if system_prompt:
        lines += ["", f"SYSTEM {_quoted(system_prompt, 'system prompt')}"]
    lines += ["", "# Stop at the end of the assistant's turn; sampling as in Tailor's chat."]
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in stops]
    lines += [
        f"PARAMETER temperature {options.temperature:g}",
        f"PARAMETER top_p {options.top_p:g}",
        f"PARAMETER repeat_penalty {options.repetition_penalty:g}",
    ]
    return "\n".join(lines) + "\n"


def _size_text(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:,.1f} MB" if size >= 1e6 else f"{size / 1e3:,.1f} kB"


def readme_text(
    name: str,
    base: ResolvedModel,
    merged: dict[str, Path],
    lora: Path | None,
    modelfile_target: str,
    system_prompt: str | None,
    notes: Sequence[str],
) -> str:
    first = next(iter(merged.values()))
    ollama_name = name.lower()
    sys_flag = f" -sys {json.dumps(system_prompt, ensure_ascii=False)}" if system_prompt else ""
    width = max(len(p.name) for p in [*merged.values(), *([lora] if lora else [])])
    lines = [
        f"{name}: Tailor's adapter {name!r} on the base model {base.name}, exported {utcnow()[:16]}Z.",
        "",
        "Files",
    ]
    for kind, path in merged.items():
        what = f"merged model (base + adapter), {_QUANT_NOTES[kind]}"
        lines.append(f"  {path.name:<{width}}  {_size_text(path):>10}  {what}")
    if lora is not None:
        lines.append(f"  {lora.name:<{width}}  {_size_text(lora):>10}  the adapter alone, for llama.cpp's --lora")
    lines += [
        f"  {'Modelfile':<{width}}  {'':>10}  for Ollama (uses {modelfile_target})",
        "",
        "llama.cpp (the chat template is inside each GGUF file)",
        f"  llama-cli -m {first.name} -cnv{sys_flag}",
        f"  llama-server -m {first.name} --port 8080    # OpenAI-compatible API at http://127.0.0.1:8080/v1",
    ]
    if lora is not None:
        lines += [f"  llama-cli -m BASE.gguf --lora {lora.name} -cnv"]
        if base.gguf:
            lines += [f"    BASE.gguf: a GGUF file of {base.name} (any quantization of it), such as {base.gguf}"]
        else:
            lines += [
                f"    BASE.gguf: a GGUF file of {base.name} (any quantization of it), e.g. the one Tailor's",
                "    llama.cpp engine converted into the workspace's models/ folder",
            ]
    lines += [
        "  Python (llama-cpp-python):",
        "    from llama_cpp import Llama",
        f'    llm = Llama(model_path="{first.name}", n_ctx=2048)',
        '    llm.create_chat_completion(messages=[{"role": "user", "content": "Hello!"}])',
        "",
        "Ollama (run these in this folder)",
        f"  ollama create {ollama_name} -f Modelfile",
        f"  ollama run {ollama_name}",
    ]
    if notes:
        lines += ["", "Notes", *(f"  - {n}" for n in notes)]
    return "\n".join(lines) + "\n"


# ---- the export -----------------------------------------------------------------------------------


def _check_quants(quants: Sequence[str] | str) -> list[str]:
    if isinstance(quants, str):
        quants = quants.split(",")
    kinds: list[str] = []
    for q in quants:
        q = q.strip().lower()
        if not q:
            continue
        if q not in QUANT_KINDS:
            raise ValidationError(f"unknown GGUF quantization {q!r}; choose from {', '.join(QUANT_KINDS)}")
        if q not in kinds:
            kinds.append(q)
    if not kinds:
        raise ValidationError(f"choose at least one GGUF quantization ({', '.join(QUANT_KINDS)})")
    return kinds


def _check_dest(dest: Path, overwrite: bool) -> Path:
    dest = Path(dest).expanduser().resolve()
    if not dest.exists():
        return dest
    if not overwrite:
        raise ValidationError(f"{dest} already exists; choose another destination or pass overwrite")
    if not dest.is_dir():
        raise ValidationError(f"{dest} is a file, not an earlier GGUF export; refusing to replace it")
    try:
        earlier = json.loads((dest / EXPORT_META).read_text()).get("kind") == "gguf"
    except (OSError, ValueError, AttributeError):
        earlier = False
    if any(dest.iterdir()) and not earlier:
        # Replacing a folder deletes it: only ever replace an earlier export, not any folder.
        raise ValidationError(f"{dest} is a folder that is not an earlier GGUF export; refusing to replace it")
    return dest


def require_llama_cpp() -> None:
    """Quantizing runs llama.cpp's own quantizer: fail at once, not after the merge."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise ModelError(
            "GGUF export needs llama-cpp-python (llama.cpp's quantizer), which is not installed. "
            "Run `make setup` (it builds it), then try again."
        )


def _system_prompt(given: str | None, meta: dict) -> str | None:
    """The system prompt for the Modelfile: the one given, else one the adapter's tailor.json
    carries (`system_prompt`; Tailor's publish does not write one today), else none."""
    if given is None:
        given = meta.get("system_prompt") if isinstance(meta.get("system_prompt"), str) else None
    given = (given or "").strip()  # Tailor's prompt building strips it too
    return given or None


def _tokenizer_facts(folder: Path) -> tuple[ChatTemplate, list[str]]:
    """The chat template probe and the stop strings, from the merged folder's tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if not tok.chat_template:
        template = ChatTemplate("none", reason="the model has no chat template")
    else:

        def render(messages: list[dict], generation_prompt: bool) -> str:
            return str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt))

        template = probe_chat_template(render)
    stops = [IM_END, IM_START] if template.kind == "chatml" else []
    eos = tok.eos_token
    if isinstance(eos, str) and eos and eos not in stops:
        stops.append(eos)
    return template, stops


def export_gguf(
    base: ResolvedModel,
    catalog: AdapterCatalog,
    name: str,
    dest: Path | str,
    *,
    quants: Sequence[str] | str = DEFAULT_QUANTS,
    system_prompt: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> GgufExportResult:
    """Export the adapter `name` on the base model `base` for llama.cpp and Ollama into the
    folder `dest` (see the module notes): `<name>.<kind>.gguf` for each of `quants` (QUANT_KINDS;
    a list or "q8_0,q4_k_m"), `<name>.lora.gguf`, `Modelfile`, `README.txt`.

    `system_prompt` goes into the Modelfile's SYSTEM (default: the adapter's tailor.json
    `system_prompt`, if any). `overwrite` replaces an earlier GGUF export at `dest`, never
    another folder. `progress` gets one line per stage, numbered "[i/n] ...", plus the
    converters' own lines. Raises NotFoundError (no such adapter), ValidationError (bad
    quantization, destination), ModelError (llama-cpp-python missing, the adapter does not fit
    the base, an architecture GGUF cannot hold), StorageError (disk full, read-only)."""
    from assistant.gguf_convert import convert_folder_to_gguf, quantize_gguf
    from assistant.gguf_lora import convert_lora_to_gguf

    started = time.perf_counter()
    say = progress or (lambda _m: None)
    kinds = _check_quants(quants)
    info = catalog.get(name)
    _adapter_files(info)  # an incomplete adapter fails now, with the merged export's message
    system = _system_prompt(system_prompt, info.meta)
    if system is not None:
        _quoted(system, "system prompt")  # refuse it now, not after minutes of work
    # the first conversion: f32 when asked for (every other kind is then made from it), else f16
    first = "f32" if "f32" in kinds else "f16"
    to_quantize = [k for k in kinds if k != first]
    if to_quantize:  # f16 from f32 goes through llama.cpp's quantizer too
        require_llama_cpp()
    dest = _check_dest(Path(dest), overwrite)
    total = 4 + len(to_quantize)  # merge, LoRA, first conversion, each quantization, Modelfile + README
    step = 0

    def stage(message: str) -> None:
        nonlocal step
        step += 1
        say(f"[{step}/{total}] {message}")

    notes: list[str] = []
    try:
        with publish_dir(dest) as tmp:
            work = tmp / ".work"  # removed before the folder is published
            full = info.kind == FULL  # a full checkpoint: already merged, and no LoRA to write
            stage(
                f"Copying the full checkpoint {name!r}..." if full else f"Merging adapter {name!r} into {base.name}..."
            )
            merged_dir = work / name  # the folder name becomes the GGUF's general.name
            export_merged(base.path, catalog, name, merged_dir, base_name=base.name, progress=say)
            template, stops = _tokenizer_facts(merged_dir)
            stage(f"Writing the LoRA-only GGUF of {name!r}...")
            lora: Path | None = tmp / f"{name}.lora.gguf"
            if full:
                lora = None
                notes.append("No LoRA-only file: this is a full fine-tuned checkpoint, not an adapter.")
                say("  skipped: a full checkpoint has no LoRA")
            else:
                try:
                    convert_lora_to_gguf(info.path, Path(base.path), tmp / f"{name}.lora.gguf")
                except ModelError as exc:  # e.g. DoRA, which merges but has no GGUF LoRA form
                    lora = None
                    notes.append(f"No LoRA-only file: {exc}")
                    say(f"  skipped: {exc}")
            stage(f"Converting the merged model to GGUF ({first})...")
            source = convert_folder_to_gguf(merged_dir, work / f"{name}.{first}.gguf", outtype=first, progress=say)
            shutil.rmtree(merged_dir)  # the largest intermediate (fp32 on a CPU): free it early
            merged: dict[str, Path] = {}
            for kind in kinds:
                target = tmp / f"{name}.{kind}.gguf"
                if kind == first:
                    merged[kind] = target  # moved into place below, once the others are made from it
                    continue
                stage(f"Quantizing to {kind}...")
                merged[kind] = quantize_gguf(source, target, kind)
                say(f"  {target.name}: {_size_text(target)}")
            if first in merged:
                source.replace(merged[first])
            stage("Writing the Ollama Modelfile and README.txt...")
            target_kind = next(k for k in _MODELFILE_PREFERENCE if k in merged)
            if template.kind != "chatml":
                notes.append(
                    f"The Modelfile has no TEMPLATE: the chat template could not be translated ({template.reason})."
                )
            (tmp / "Modelfile").write_text(
                modelfile_text(merged[target_kind].name, template, system_prompt=system, stops=stops),
                encoding="utf-8",
            )
            (tmp / "README.txt").write_text(
                readme_text(name, base, merged, lora, merged[target_kind].name, system, notes), encoding="utf-8"
            )
            outputs = [*merged.values(), *([lora] if lora else []), tmp / "Modelfile", tmp / "README.txt"]
            (tmp / EXPORT_META).write_text(
                json.dumps(
                    {
                        "kind": "gguf",
                        "base_model": base.name,
                        "adapter": name,
                        "adapter_version": info.version,
                        "quants": kinds,
                        "files": [p.name for p in outputs],
                        "chat_template": template.kind,
                        "system_prompt": system,
                        "exported_at": utcnow(),
                    },
                    indent=2,
                    ensure_ascii=False,
                ),
                encoding="utf-8",
            )
            shutil.rmtree(work, ignore_errors=True)
    except TailorError:
        raise
    except OSError as exc:  # full or read-only destination; publish_dir removed the temporary folder
        raise write_failed(dest, exc) from exc
    outputs = [dest / p.name for p in outputs]
    files = [p for p in dest.iterdir() if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    say(f"GGUF export done: {len(outputs)} files, {size / 1e6:.0f} MB in {dest}.")
    seconds = time.perf_counter() - started
    return GgufExportResult(
        dest, "gguf", len(files), size, seconds, outputs=outputs, template=template.kind, notes=notes
    )
