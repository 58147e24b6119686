"""Model shapes as data: ``sims/models/<name>.toml`` (or a local Hugging Face ``config.json``),
loaded into one frozen, validated :class:`ModelShape`.

This module is the only door to model numbers. A TOML file has ``name``, ``description``, a
``[references]`` table and a ``[shape]`` table whose every key has a source under
``[shape.sources]`` (same rules as the device files: ``ref:``, ``measured:``, ``derived:``,
``assumed:``). A ``config.json`` is read with its keys as the sources (``ref:config_json <key>``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from topθ_hw.errors import UserError
from topθ_hw.sim.hardware import _check_source

MLP_KINDS = ("gated", "plain")   # gated: gate + up + down (SwiGLU / GeGLU); plain: up + down


def _spec(kind: str, doc: str):
    return field(metadata={"kind": kind, "doc": doc})


@dataclass(frozen=True)
class ModelShape:
    """What a decoder-only transformer asks of a device, per layer and per token."""
    name: str
    description: str
    path: str
    layers: int = _spec("count", "decoder layers")
    hidden_size: int = _spec("count", "residual stream width")
    q_heads: int = _spec("count", "query heads")
    kv_heads: int = _spec("count", "key/value heads (GQA; equal to q_heads for MHA)")
    head_dim: int = _spec("count", "elements per head")
    intermediate_size: int = _spec("count", "MLP inner width")
    mlp: str = _spec("mlp", "'gated' (gate, up, down matrices) or 'plain' (up, down)")
    vocab_size: int = _spec("count", "embedding / LM-head rows")
    tied_embeddings: bool = _spec("bool", "LM head shares the embedding matrix")
    qkv_bias: bool = _spec("bool", "q/k/v projections carry a bias")
    norms_per_layer: int = _spec("count", "RMS/LayerNorms per layer (Gemma 3: 4 + q/k norms)")
    sliding_window_tokens: int = _spec("whole", "keys a sliding-window layer attends to (0: none)")
    full_attention_every: int = _spec("whole", "every n-th layer attends to the full context (1: all; "
                                               "0: none, when every layer slides)")
    max_position_embeddings: int = _spec("count", "longest context the model was trained for")
    sources: dict = field(default_factory=dict)

    @property
    def group(self) -> int:
        return self.q_heads // self.kv_heads

    def is_sliding(self, layer: int) -> bool:
        """HF's rule (Gemma 3 ``sliding_window_pattern``): layer i is full iff (i + 1) % every == 0."""
        if not self.sliding_window_tokens:
            return False
        return self.full_attention_every == 0 or (layer + 1) % self.full_attention_every != 0

    @property
    def sliding_layers(self) -> int:
        return sum(self.is_sliding(i) for i in range(self.layers))

    def layer_parameters(self) -> int:
        """Weights of one decoder layer (projections, MLP, norms, biases)."""
        h, d = self.hidden_size, self.head_dim
        qkv = h * (self.q_heads + 2 * self.kv_heads) * d + (self.q_heads + 2 * self.kv_heads) * d * self.qkv_bias
        mlp = (3 if self.mlp == "gated" else 2) * h * self.intermediate_size
        return qkv + self.q_heads * d * h + mlp + self.norms_per_layer * h

    def parameters(self) -> int:
        embed = self.vocab_size * self.hidden_size
        return self.layers * self.layer_parameters() + embed * (1 if self.tied_embeddings else 2) + self.hidden_size


SHAPE_FIELDS = {f.name: f for f in dataclasses.fields(ModelShape) if "kind" in f.metadata}


def models_dir() -> Path:
    """Shipped model files: ``$TOPTHETA_MODELS_DIR`` or ``sims/models`` of the repository."""
    from topθ_hw.shipped import shipped_dir
    return shipped_dir("TOPTHETA_MODELS_DIR", "sims/models")


def known_models() -> list[str]:
    return sorted(p.stem for p in models_dir().glob("*.toml"))


def load_model(name_or_path: str | os.PathLike) -> ModelShape:
    """A shipped model by name (``"llama-3.1-8b"``), a model TOML, or a HF ``config.json`` (or its folder)."""
    text = str(name_or_path)
    path = Path(text)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"{path}: a folder without config.json (expected a model .toml, a HF config.json or its folder)")
        path = path / "config.json"
    if path.suffix == ".json":
        return model_from_hf_config(path)
    if not (text.endswith(".toml") or os.sep in text or path.exists()):
        path = models_dir() / f"{text}.toml"
        if not path.exists():
            raise UserError(f"unknown model {text!r}; known models: {', '.join(known_models())} "
                            "(or give a path to a model .toml, a config.json or its folder)")
    if not path.exists():
        raise UserError(f"{path}: no such model file")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML ({exc})") from exc
    return _model_from_dict(raw, path)


def _model_from_dict(raw: dict, path: Path) -> ModelShape:
    for key in ("name", "description"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise UserError(f"{path}: field '{key}' missing or not a non-empty string")
    unknown = set(raw) - {"name", "description", "references", "shape"}
    if unknown:
        raise UserError(f"{path}: unknown top-level field(s) {sorted(unknown)}; "
                        "expected name, description, references, shape")
    references, table = raw.get("references", {}), raw.get("shape")
    if not isinstance(references, dict):
        raise UserError(f"{path}: field 'references' must be a table of name = \"citation\"")
    if not isinstance(table, dict):
        raise UserError(f"{path}: section [shape] missing")
    src = table.get("sources", {})
    extra = set(table) - set(SHAPE_FIELDS) - {"sources"}
    if extra or set(src) - set(SHAPE_FIELDS):
        raise UserError(f"{path}: unknown field(s) {sorted(f'shape.{k}' for k in extra | (set(src) - set(SHAPE_FIELDS)))}"
                        f"; expected {sorted(SHAPE_FIELDS)}")
    values, sources = {}, {}
    for name, f in SHAPE_FIELDS.items():
        where = f"{path}: field 'shape.{name}'"
        if name not in table:
            raise UserError(f"{where} missing ({f.metadata['doc']})")
        values[name] = _check_value(table[name], f.metadata["kind"], where)
        sources[name] = _check_source(src.get(name), references, path, where)
    return _checked(ModelShape(name=raw["name"], description=raw["description"], path=str(path),
                               sources=sources, **values), path)


def _check_value(value, kind: str, where: str):
    if kind == "bool":
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if kind == "mlp":
        if value not in MLP_KINDS:
            raise UserError(f"{where} must be one of {list(MLP_KINDS)}, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < (1 if kind == "count" else 0):
        raise UserError(f"{where} must be a whole number ≥ {1 if kind == 'count' else 0}, got {value!r}")
    return value


def _checked(m: ModelShape, path) -> ModelShape:
    checks = [
        (m.q_heads % m.kv_heads == 0, "kv_heads", f"a divisor of q_heads {m.q_heads} (GQA)"),
        (m.full_attention_every <= m.layers, "full_attention_every", f"≤ layers {m.layers}"),
        (m.sliding_window_tokens > 0 or m.full_attention_every == 1, "full_attention_every",
         "1 when sliding_window_tokens is 0 (no sliding layers)"),
    ]
    for ok, name, expected in checks:
        if not ok:
            raise UserError(f"{path}: field 'shape.{name}' inconsistent: must be {expected}")
    return m


def model_from_hf_config(path: Path) -> ModelShape:
    """A shape from a local Hugging Face ``config.json`` (``text_config`` of multimodal ones)."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such config.json") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON ({exc})") from None
    cfg = {**raw, **raw.get("text_config", {})}
    values, sources = _hf_values(cfg, path)
    references = {"config_json": str(path)}
    sources = {k: _check_source(v, references, Path(path), f"{path}: key for '{k}'") for k, v in sources.items()}
    name = str(raw.get("_name_or_path") or Path(path).parent.name)
    return _checked(ModelShape(name=name, description=f"from {path}", path=str(path), sources=sources, **values),
                    path)


def _hf_values(cfg: dict, path) -> tuple[dict, dict]:
    def need(key):
        if not isinstance(cfg.get(key), int) or isinstance(cfg.get(key), bool) or cfg[key] < 1:
            raise UserError(f"{path}: key '{key}' missing or not a whole number ≥ 1")
        return cfg[key]

    heads = need("num_attention_heads")
    v = {"layers": need("num_hidden_layers"), "hidden_size": need("hidden_size"), "q_heads": heads,
         "kv_heads": cfg.get("num_key_value_heads") or heads,
         "head_dim": cfg.get("head_dim") or need("hidden_size") // heads,
         "intermediate_size": need("intermediate_size"), "mlp": "gated", "vocab_size": need("vocab_size"),
         "tied_embeddings": bool(cfg.get("tie_word_embeddings", False)),
         "qkv_bias": bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2")),
         "norms_per_layer": 6 if str(cfg.get("model_type", "")).startswith("gemma3") else 2,
         "max_position_embeddings": need("max_position_embeddings")}
    v.update(_hf_sliding(cfg))
    keys = {"layers": "num_hidden_layers", "hidden_size": "hidden_size", "q_heads": "num_attention_heads",
            "kv_heads": "num_key_value_heads", "head_dim": "head_dim", "intermediate_size": "intermediate_size",
            "vocab_size": "vocab_size", "tied_embeddings": "tie_word_embeddings",
            "max_position_embeddings": "max_position_embeddings", "sliding_window_tokens": "sliding_window"}
    sources = {k: (f"ref:config_json {keys[k]}" if keys.get(k) in cfg else
                   f"derived: default for a config.json without '{keys.get(k, k)}' (model_type "
                   f"{cfg.get('model_type')!r})") for k in SHAPE_FIELDS}
    return v, sources


def _hf_sliding(cfg: dict) -> dict:
    window = cfg.get("sliding_window") or 0
    if not window or cfg.get("use_sliding_window") is False:
        return {"sliding_window_tokens": 0, "full_attention_every": 1}
    types = cfg.get("layer_types")
    if types:
        full = [i for i, t in enumerate(types) if t == "full_attention"]
        every = full[0] + 1 if full else 0
        return {"sliding_window_tokens": int(window), "full_attention_every": every}
    return {"sliding_window_tokens": int(window), "full_attention_every": int(cfg.get("sliding_window_pattern") or 0)}


def kv_bytes_per_token(model: ModelShape, element_bytes: int = 2) -> int:
    """K and V bytes one token adds to the cache, summed over every layer (GQA: KV heads only)."""
    return 2 * model.layers * model.kv_heads * model.head_dim * element_bytes


def cached_tokens(model: ModelShape, layer: int, context: int) -> int:
    """Keys layer ``layer`` keeps for a ``context``-token sequence (a sliding layer: its window)."""
    return min(context, model.sliding_window_tokens) if model.is_sliding(layer) else context


def check_context(model: ModelShape, context: int, flag: str = "--context") -> None:
    if context < 1 or context > model.max_position_embeddings:
        raise UserError(f"{flag} {context} outside 1..{model.max_position_embeddings} "
                        f"(model {model.name}: max_position_embeddings)")


__all__ = ["ModelShape", "known_models", "load_model", "model_from_hf_config", "kv_bytes_per_token",
           "cached_tokens", "check_context"]
