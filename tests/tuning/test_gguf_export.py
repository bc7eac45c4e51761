"""`export_gguf` / `tailor export gguf`: merged GGUF files (quantized by llama.cpp), the LoRA-only
GGUF, an Ollama Modelfile and README.txt; the exported files answer like Tailor's own engine.

Parity is checked on f16 files: on the tiny random model, whose logits are nearly tied, 8- and
4-bit quantization changes greedy replies, so those files are checked to load and answer. The
Modelfile's Go template is executed with Go's text/template (as Ollama does) where `go` is
installed, and compared with the Hugging Face template's text."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.adapters import AdapterCatalog
from assistant.engine import GenerationOptions
from assistant.errors import ModelError, NotFoundError, ValidationError
from assistant.hardware import pick_hardware
from assistant.llamacpp_params import open_llama
from assistant.models import ResolvedModel
from assistant.torch_engine import TorchEngine
from tuning.gguf_export import (
    ChatTemplate,
    export_gguf,
    modelfile_text,
    ollama_chatml_template,
    probe_chat_template,
)

llama_cpp = pytest.importorskip("llama_cpp")

REPO_ROOT = Path(__file__).resolve().parents[2]
GREEDY = GenerationOptions(temperature=0, max_new_tokens=16, repetition_penalty=1.0)
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello there"}],
    [
        {"role": "user", "content": "Pump your tyres?"},
        {"role": "assistant", "content": "Ahoy, rider! Before every ride."},
        {"role": "user", "content": "thanks"},
    ],
]
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _base(path, name="tiny", gguf=None) -> ResolvedModel:
    return ResolvedModel(name, Path(path), "folder", gguf)


# ---- greedy decoding with llama-cpp-python itself, fed Tailor's prompt token ids ------------------
def _llama(path: Path, lora: Path | None = None, n_ctx: int = 512):
    return open_llama(
        model_path=str(path), lora_path=str(lora) if lora else None, n_ctx=n_ctx, n_threads=2, verbose=False
    )


def _greedy(llm, prompt_ids: list[int], eos: int, max_new: int) -> list[int]:
    """Argmax decoding, no repetition penalty: llama.cpp's logits of the last evaluated token."""
    import numpy as np

    llm.reset()
    llm.eval(prompt_ids)
    out: list[int] = []
    n_vocab = llm.n_vocab()
    for _ in range(max_new):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        token = int(np.argmax(logits))
        if token == eos:
            break
        out.append(token)
        llm.eval([token])
    return out


def _reply(llm, engine, messages, max_new=16) -> str:
    # On a fresh thread: llama.cpp sets a thread's AMX tiles once, and bf16 training earlier in
    # this test process may have released them on pytest's own (assistant/llamacpp_params.py).
    with concurrent.futures.ThreadPoolExecutor(1) as fresh:
        ids = fresh.submit(_greedy, llm, engine.encode(messages), engine.tokenizer.eos_token_id, max_new).result()
    return engine.tokenizer.decode(ids, skip_special_tokens=True).strip()


@pytest.fixture
def pirate(workspace, tiny_model_dir, random_lora):
    random_lora(tiny_model_dir, workspace.adapters_dir / "pirate", seed=3)
    return AdapterCatalog(workspace.adapters_dir)


@pytest.fixture(scope="module")
def tiny_torch(tiny_model_dir):
    return TorchEngine.load(_base(tiny_model_dir), pick_hardware("cpu"), max_context=512)


# ---- files, Modelfile, README -------------------------------------------------------------------------
def test_export_writes_quantized_lora_modelfile_and_readme(pirate, tiny_model_dir, tmp_path):
    import gguf

    seen: list[str] = []
    result = export_gguf(
        _base(tiny_model_dir),
        pirate,
        "pirate",
        tmp_path / "out",
        system_prompt="  You are Lantern Bay's assistant.  ",
        progress=seen.append,
    )
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert names == {
        "pirate.q8_0.gguf",
        "pirate.q4_k_m.gguf",
        "pirate.lora.gguf",
        "Modelfile",
        "README.txt",
        "tailor-export.json",
    }
    assert [p.name for p in result.outputs] == [
        "pirate.q8_0.gguf",
        "pirate.q4_k_m.gguf",
        "pirate.lora.gguf",
        "Modelfile",
        "README.txt",
    ]
    assert result.kind == "gguf" and result.template == "chatml" and result.notes == []
    assert result.bytes == sum(p.stat().st_size for p in out.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary folder was left behind"
    stages = [m for m in seen if m.startswith("[")]
    assert stages[0].startswith("[1/6] Merging") and any("Quantizing to q4_k_m" in m for m in stages)
    assert stages[-1].startswith("[6/6]")

    # the files are what they say: quantized merged models with the chat template, a LoRA adapter
    q8 = gguf.GGUFReader(out / "pirate.q8_0.gguf")
    types = {t.tensor_type.name for t in q8.tensors}
    assert "Q8_0" in types and "F16" not in types
    template_field = q8.fields["tokenizer.chat_template"]
    assert "<|im_start|>" in template_field.contents()
    assert q8.fields["general.name"].contents() == "pirate"
    q4_types = {t.tensor_type.name for t in gguf.GGUFReader(out / "pirate.q4_k_m.gguf").tensors}
    assert q4_types & {"Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q4_0", "Q8_0"}, q4_types
    lora = gguf.GGUFReader(out / "pirate.lora.gguf")
    assert lora.fields["general.type"].contents() == "adapter"

    modelfile = (out / "Modelfile").read_text()
    assert "\nFROM ./pirate.q4_k_m.gguf\n" in modelfile
    assert 'SYSTEM """You are Lantern Bay\'s assistant."""' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and 'PARAMETER stop "<|im_start|>"' in modelfile
    assert 'TEMPLATE """' in modelfile and "{{ .Content }}" in modelfile and "{{ .System }}" in modelfile
    assert "PARAMETER temperature 0.3" in modelfile
    readme = (out / "README.txt").read_text()
    for text in (
        "llama-cli -m pirate.q8_0.gguf",
        "--lora pirate.lora.gguf",
        "ollama create pirate -f Modelfile",
        "ollama run pirate",
    ):
        assert text in readme
    meta = json.loads((out / "tailor-export.json").read_text())
    assert meta["kind"] == "gguf" and meta["adapter"] == "pirate" and meta["quants"] == ["q8_0", "q4_k_m"]

    # every merged file loads in llama.cpp and answers something
    for name in ("pirate.q8_0.gguf", "pirate.q4_k_m.gguf"):
        llm = _llama(out / name)
        ids = _greedy(llm, [1, 5, 6, 7], eos=-1, max_new=4)
        assert len(ids) == 4
        llm.close()

    # overwrite: refused by default, replaces an earlier GGUF export, never another folder
    with pytest.raises(ValidationError, match="already exists"):
        export_gguf(_base(tiny_model_dir), pirate, "pirate", out)
    again = export_gguf(_base(tiny_model_dir), pirate, "pirate", out, quants="q8_0", overwrite=True)
    assert {p.name for p in out.iterdir()} == {
        "pirate.q8_0.gguf",
        "pirate.lora.gguf",
        "Modelfile",
        "README.txt",
        "tailor-export.json",
    }
    assert again.files == 5
    assert "FROM ./pirate.q8_0.gguf" in (out / "Modelfile").read_text()  # the smallest one exported
    assert "SYSTEM" not in (out / "Modelfile").read_text()  # none given, none in tailor.json
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("years of work")
    with pytest.raises(ValidationError, match="not an earlier GGUF export"):
        export_gguf(_base(tiny_model_dir), pirate, "pirate", tmp_path / "precious", overwrite=True)
    assert (tmp_path / "precious" / "thesis.txt").read_text() == "years of work"


def _last_logits(llm, prompt_ids: list[int]):
    import numpy as np

    llm.reset()
    llm.eval(prompt_ids)
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()


def test_exported_files_answer_like_tailor(pirate, tiny_model_dir, tiny_torch, tiny_gguf, tmp_path):
    """The merged f32 GGUF (llama-cpp-python, greedy, Tailor's prompt ids) and the LoRA-only GGUF on
    the base GGUF give the greedy replies of Tailor's torch engine with the adapter loaded, and of
    Tailor's llama.cpp engine with it. f16 and q8_0 give the same logits within their rounding
    (on this tiny random model, whose top logits are ~0.01 apart, that rounding can flip a greedy
    token a few tokens in, so their replies are not compared)."""
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from assistant.backends import load_engine

    adapter = pirate.get("pirate").path
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
    tiny_torch.load_adapter("pirate", adapter)
    result = export_gguf(_base(tiny_model_dir), pirate, "pirate", tmp_path / "out", quants=("f32", "f16", "q8_0"))
    out = tmp_path / "out"
    assert [p.name for p in result.outputs][:3] == ["pirate.f32.gguf", "pirate.f16.gguf", "pirate.q8_0.gguf"]
    assert "FROM ./pirate.q8_0.gguf" in (out / "Modelfile").read_text()
    llms = {k: _llama(out / f"pirate.{k}.gguf") for k in ("f32", "f16", "q8_0")}
    llms["lora"] = _llama(tiny_gguf, lora=out / "pirate.lora.gguf")
    llms["base"] = _llama(tiny_gguf)
    engine = load_engine(
        _base(tiny_model_dir, gguf=tiny_gguf), pick_hardware("cpu"), backend="llamacpp", max_context=512, parallel=1
    )
    try:
        engine.load_adapter("pirate", adapter)
        differs = False
        for messages in PROMPTS:
            tailor = tiny_torch.generate(messages, GREEDY, adapter="pirate").text
            assert tailor, messages
            assert _reply(llms["f32"], tiny_torch, messages) == tailor, messages
            assert _reply(llms["lora"], tiny_torch, messages) == tailor, messages
            if engine.backend == "llamacpp":
                assert engine.generate(messages, GREEDY, adapter="pirate").text == tailor, messages
            differs |= _reply(llms["base"], tiny_torch, messages) != tailor

            ids = tiny_torch.encode(messages)
            with torch.no_grad():
                reference = peft_model(torch.tensor([ids])).logits[0, -1].float().numpy()
            for kind, atol in (("f32", 1e-3), ("f16", 2e-3), ("q8_0", 2e-2)):
                got = _last_logits(llms[kind], ids)
                assert np.abs(got - reference).max() < atol, (kind, np.abs(got - reference).max())
        assert differs, "the adapter must change the replies, or this test could not fail"
    finally:
        getattr(engine, "close", lambda: None)()
        for llm in llms.values():
            llm.close()


# ---- errors ---------------------------------------------------------------------------------------------
def test_errors_are_clear_and_leave_nothing(pirate, tiny_model_dir, tmp_path, monkeypatch):
    base = _base(tiny_model_dir)
    outs = tmp_path / "outs"
    outs.mkdir()
    with pytest.raises(NotFoundError, match="'nobody' does not exist"):
        export_gguf(base, pirate, "nobody", outs / "a")
    with pytest.raises(ValidationError, match="unknown GGUF quantization 'q3_xl'.*q8_0, q4_k_m, q4_0, f16"):
        export_gguf(base, pirate, "pirate", outs / "b", quants=("q8_0", "q3_xl"))
    with pytest.raises(ValidationError, match="at least one"):
        export_gguf(base, pirate, "pirate", outs / "c", quants="")
    with pytest.raises(ValidationError, match="three double quotes"):
        export_gguf(base, pirate, "pirate", outs / "d", system_prompt='say """hi"""')
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were not installed
    with pytest.raises(ModelError, match="make setup"):
        export_gguf(base, pirate, "pirate", outs / "e")
    assert list(outs.iterdir()) == []


def test_adapter_that_does_not_fit_the_base(workspace, tiny_model_dir, random_lora, tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    wider = tmp_path / "wider"
    shutil.copytree(tiny_model_dir, wider)  # the same tokenizer, other shapes
    config = LlamaConfig.from_pretrained(wider)
    config.hidden_size, config.intermediate_size = 48, 96
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(wider)
    random_lora(tiny_model_dir, workspace.adapters_dir / "pirate")
    catalog = AdapterCatalog(workspace.adapters_dir)
    with pytest.raises(ModelError, match="does not fit the base model"):
        export_gguf(_base(wider, "wider"), catalog, "pirate", tmp_path / "out", quants="f16")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary folder was left behind"


# ---- the chat template ------------------------------------------------------------------------------------
def _hf_render(template: str, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = template

    def render(messages, generation_prompt):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    return render


def test_probe_recognises_chatml_and_its_default_system_prompt(tiny_model_dir):
    from tests.conftest import CHATML_TEMPLATE

    assert probe_chat_template(_hf_render(CHATML_TEMPLATE, tiny_model_dir)) == ChatTemplate("chatml")
    smollm = probe_chat_template(_hf_render(SMOLLM2_TEMPLATE, tiny_model_dir))
    assert smollm == ChatTemplate(
        "chatml", default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    )
    llama3 = (
        "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n'"
        " + m['content'] + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    )
    other = probe_chat_template(_hf_render(llama3, tiny_model_dir))
    assert other.kind == "none" and "not ChatML" in other.reason
    failing = probe_chat_template(_hf_render("{{ raise_exception('roles must alternate') }}", tiny_model_dir))
    assert failing.kind == "none" and "roles must alternate" in failing.reason


def test_untranslatable_template_gives_a_modelfile_without_template(tiny_model_dir, random_lora, tmp_path):
    from assistant.workspace import Workspace

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}### assistant: {% endif %}"
    )
    ws = Workspace(tmp_path / "ws")
    random_lora(folder, ws.adapters_dir / "plain")
    result = export_gguf(_base(folder, "odd"), AdapterCatalog(ws.adapters_dir), "plain", tmp_path / "out", quants="f16")
    modelfile = (tmp_path / "out" / "Modelfile").read_text()
    assert result.template == "none" and "TEMPLATE" in result.notes[0]
    assert 'TEMPLATE """' not in modelfile and "No TEMPLATE" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile  # the end token still stops generation
    assert "Notes" in (tmp_path / "out" / "README.txt").read_text()


def test_modelfile_escapes_template_delimiters_in_a_default_system_prompt():
    text = ollama_chatml_template('Use {{ braces }} and """quotes"""')
    assert '{{ "Use {{ braces }} and \\"\\"\\"quotes\\"\\"\\"" }}' in text
    modelfile = modelfile_text("m.gguf", ChatTemplate("chatml", 'Say """hi"""'), system_prompt=None, stops=[])
    assert modelfile.count('"""') == 2  # only the TEMPLATE's own quotes


_GO_RENDER = """package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role    string
	Content string
}

func main() {
	var in struct {
		Template string
		System   string
		Messages []Message
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	t := template.Must(template.New("").Option("missingkey=zero").Parse(in.Template))
	values := map[string]any{"System": in.System, "Messages": in.Messages, "Response": "", "Tools": nil}
	if err := t.Execute(os.Stdout, values); err != nil {
		panic(err)
	}
}
"""


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    """Run a Modelfile TEMPLATE with Go's text/template as Ollama does: the Modelfile's SYSTEM is
    prepended when the request has no system message, `.System` joins the system messages with a
    blank line, and consecutive messages of one role are merged (Ollama's template.collate)."""
    if shutil.which("go") is None:
        pytest.skip("Go is not installed (apt-get install golang-go): the Ollama template is not executed")
    folder = tmp_path_factory.mktemp("go-render")
    (folder / "main.go").write_text(_GO_RENDER)
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GO111MODULE": "off"}
    subprocess.run(["go", "build", "-o", "render", "main.go"], cwd=folder, check=True, env=env, timeout=300)

    def render(template: str, messages: list[dict], modelfile_system: str | None = None) -> str:
        if modelfile_system and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": modelfile_system}, *messages]
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        collated: list[dict] = []
        for m in messages:
            if collated and collated[-1]["Role"] == m["role"]:
                collated[-1]["Content"] += "\n\n" + m["content"]
            else:
                collated.append({"Role": m["role"], "Content": m["content"]})
        payload = json.dumps({"Template": template, "System": system, "Messages": collated})
        done = subprocess.run(
            [str(folder / "render")], input=payload, capture_output=True, text=True, check=True, timeout=60
        )
        return done.stdout

    return render


def _modelfile_template(modelfile: str) -> str:
    found = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M)
    assert found, modelfile
    return found.group(1)


@pytest.mark.parametrize("template", ["chatml", "smollm2"])
def test_ollama_template_renders_like_the_hf_template(template, tiny_model_dir, go_render):
    from tests.conftest import CHATML_TEMPLATE

    hf = _hf_render(CHATML_TEMPLATE if template == "chatml" else SMOLLM2_TEMPLATE, tiny_model_dir)
    probed = probe_chat_template(hf)
    modelfile = modelfile_text("m.gguf", probed, system_prompt=None, stops=[])
    go_template = _modelfile_template(modelfile)
    for messages in PROMPTS:
        assert go_render(go_template, messages) == hf(messages, True), messages
    # the Modelfile's SYSTEM stands in for a missing system message, as Tailor's system prompt does
    sys_prompt = "You are Lantern Bay's assistant."
    for messages in PROMPTS:
        expected = (
            messages if messages[0]["role"] == "system" else [{"role": "system", "content": sys_prompt}, *messages]
        )
        assert go_render(go_template, messages, sys_prompt) == hf(expected, True), messages
    # a final assistant message is left open, for Ollama to continue it
    partial = [*PROMPTS[0], {"role": "assistant", "content": "The capital"}]
    assert go_render(go_template, partial).endswith("<|im_start|>assistant\nThe capital")


# ---- the CLI ---------------------------------------------------------------------------------------------
def _tailor(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TAILOR_THREADS": "1", **(env or {})},
    )


def test_cli_export_gguf(tmp_path, tiny_model_dir, random_lora):
    from assistant.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    random_lora(tiny_model_dir, ws.adapters_dir / "pirate")
    r = _tailor(
        "export", "gguf", "pirate", "--quant", "q8_0", "--system-prompt", "Be brief.", "--workspace", ws.root,
        env={"TAILOR_MODEL": str(tiny_model_dir)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    dest = ws.exports_dir / "pirate-gguf"  # the default destination
    assert (dest / "pirate.q8_0.gguf").is_file() and (dest / "pirate.lora.gguf").is_file()
    assert 'SYSTEM """Be brief."""' in (dest / "Modelfile").read_text()
    for name in ("pirate.q8_0.gguf", "pirate.lora.gguf", "Modelfile", "README.txt"):
        assert re.search(rf"{re.escape(str(dest / name))}\s+[\d.,]+ [kM]B", r.stdout), r.stdout
    assert "ollama create pirate -f Modelfile" in r.stdout
    assert "[1/5] Merging" in r.stderr

    r = _tailor("export", "gguf", "pirate", "--workspace", ws.root, "--model", tiny_model_dir)
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr
    r = _tailor("export", "gguf", "pirate", tmp_path / "x", "--quant", "q8_0,q2", "--workspace", ws.root)
    assert r.returncode == 2 and "unknown GGUF quantization 'q2'" in r.stderr
    r = _tailor("export", "gguf", "nobody", tmp_path / "y", "--workspace", ws.root, "--model", tiny_model_dir)
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ---- the real default model --------------------------------------------------------------------------------
@pytest.mark.real
def test_real_model_q8_0_answers_like_tailor(real_model, random_lora, tmp_path):
    """A small random LoRA on SmolLM2-135M-Instruct, exported as q8_0 (and f16): llama.cpp loads the
    file and its greedy reply to "What is the capital of France?" is Tailor's."""
    from safetensors.torch import load_file, save_file

    from assistant.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    adapter = random_lora(real_model.path, ws.adapters_dir / "tone", seed=3)
    # a nudge, not noise, so that the replies stay readable
    weights = {k: v * 0.3 for k, v in load_file(adapter / "adapter_model.safetensors").items()}
    save_file(weights, adapter / "adapter_model.safetensors")
    catalog = AdapterCatalog(ws.adapters_dir)
    result = export_gguf(real_model, catalog, "tone", tmp_path / "out", quants=("q8_0", "f16"))
    sizes = {p.name: p.stat().st_size for p in result.outputs}
    assert 100e6 < sizes["tone.q8_0.gguf"] < 200e6 and sizes["tone.lora.gguf"] < 10e6, sizes
    modelfile = (tmp_path / "out" / "Modelfile").read_text()
    assert "FROM ./tone.q8_0.gguf" in modelfile and "named SmolLM" in modelfile  # SmolLM2's default system

    engine = TorchEngine.load(real_model, pick_hardware("cpu"), max_context=2048)
    engine.load_adapter("tone", adapter)
    options = GenerationOptions(temperature=0, max_new_tokens=24, repetition_penalty=1.0)
    q8 = _llama(result.path / "tone.q8_0.gguf", n_ctx=1024)
    f16 = _llama(result.path / "tone.f16.gguf", n_ctx=1024)
    differs = False
    try:
        for prompt in ("What is the capital of France?", "Give me one tip for cycling in the rain."):
            messages = [{"role": "user", "content": prompt}]
            tailor = engine.generate(messages, options, adapter="tone").text
            differs |= tailor != engine.generate(messages, options).text
            # f16 is the merge without quantization: it must match on every prompt.
            assert _reply(f16, engine, messages, max_new=24) == tailor, prompt
            if prompt.startswith("What is the capital"):
                assert "Paris" in tailor
                assert _reply(q8, engine, messages, max_new=24) == tailor
            # On the cycling prompt q8_0 starts "One tip for cycling..." where fp32 and f16 start
            # "1. Always carry...": the two first tokens are nearly tied and 8-bit rounding flips
            # them (measured when this test was written); only the f16 file is compared there.
    finally:
        q8.close()
        f16.close()
    assert differs, "the adapter must change a reply, or this test could not fail"


# ---- the Tune tab ----------------------------------------------------------------------------------------
def test_tune_tab_gguf_download(workspace, tiny_model_dir, random_lora, tmp_path, monkeypatch):
    """The "Download GGUF" button's handler, called as the web event calls it: the files land in
    <workspace>/exports/NAME-gguf and are offered from Gradio's folder as links (no second copy)."""
    import gradio as gr

    from tuning.service import open_tuning
    from ui.gguf_panel import stage_progress

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    random_lora(tiny_model_dir, workspace.adapters_dir / "pirate")
    service = open_tuning(workspace, "tiny", tiny_model_dir)
    from ui.tune_tab import build_tune_tab

    with gr.Blocks() as demo:
        build_tune_tab(service)
    fns = {f.api_name: f.fn for f in (demo.fns.values() if isinstance(demo.fns, dict) else demo.fns)}
    bar: list[tuple[float, str]] = []
    files, text = fns["tune_export_gguf"](
        "pirate", ["q8_0"], "Be brief.", progress=lambda value, desc="": bar.append((value, desc))
    )
    dest = workspace.exports_dir / "pirate-gguf"
    assert [Path(f).name for f in files] == ["pirate.q8_0.gguf", "pirate.lora.gguf", "Modelfile", "README.txt"]
    for f in files:
        assert Path(f).is_relative_to(tmp_path / "gradio") and os.path.samefile(f, dest / Path(f).name)
    assert 'SYSTEM """Be brief."""' in (dest / "Modelfile").read_text()
    assert "`pirate.q8_0.gguf`" in text and "ollama create pirate -f Modelfile" in text
    fractions = [v for v, _ in bar]
    assert fractions == sorted(fractions) and fractions[0] == 0 and any("Quantizing to q8_0" in d for _, d in bar)
    # pressed again, it replaces its own earlier export
    files, _ = fns["tune_export_gguf"]("pirate", ["q8_0", "f16"], "", progress=lambda *a, **k: None)
    assert "pirate.f16.gguf" in {Path(f).name for f in files}
    assert "SYSTEM" not in (dest / "Modelfile").read_text()
    with pytest.raises(gr.Error, match="Pick an adapter"):
        fns["tune_export_gguf"](None, ["q8_0"], "", progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="at least one"):
        fns["tune_export_gguf"]("pirate", [], "", progress=lambda *a, **k: None)

    seen: list[tuple[float, str]] = []
    report = stage_progress(lambda value, desc="": seen.append((value, desc)))
    for line in ("[1/4] Merging...", "  a converter's line", "[3/4] Quantizing to q8_0..."):
        report(line)
    assert seen == [(0.0, "Merging..."), (0.0, "a converter's line"), (0.5, "Quantizing to q8_0...")]
