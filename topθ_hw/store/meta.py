"""What a trace store says about the model and each sequence (plain dataclasses, JSON in zarr attrs)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

FORMAT_NAME = "toptheta-trace"
FORMAT_VERSION = 1
# Stored dtype per logical dtype. numpy has no bfloat16, so bf16 is kept as its raw uint16
# bits (bit-exact); readers widen it to float32 by a 16-bit shift, which is exact.
STORAGE_DTYPES = {"bfloat16": np.dtype("uint16"), "float16": np.dtype("float16"),
                  "float32": np.dtype("float32")}


@dataclass(frozen=True)
class TraceMeta:
    """The captured model, once per store."""

    model_id: str                      # short name or path given to capture
    model_file_sha256: str             # hash of the weights file (GGUF / safetensors)
    architecture: str                  # config.model_type, e.g. "llama"
    n_layers: int
    n_q_heads: int
    n_kv_heads: int
    head_dim: int
    dtype: str                         # compute dtype of the captured values
    scalings: list[float]              # softmax scale per layer (usually head_dim ** -0.5)
    sliding_windows: list[int | None]  # per layer; None = full causal attention
    rope_type: str = "default"
    rope_theta: float | None = None
    rope_scaling: dict | None = None
    max_position_embeddings: int | None = None
    model_revision: str | None = None
    layers: list[int] | None = None    # captured layers; None = all (a subset keeps shipped traces small)
    package_version: str = ""
    extra: dict = field(default_factory=dict)  # torch/transformers versions, model path, ...

    def __post_init__(self):
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(f"TraceMeta.dtype is {self.dtype!r}, expected one of {sorted(STORAGE_DTYPES)}")
        if self.n_q_heads % self.n_kv_heads:
            raise ValueError(f"TraceMeta: n_q_heads={self.n_q_heads} is not a multiple of "
                             f"n_kv_heads={self.n_kv_heads}")
        if self.layers is not None and (not self.layers or sorted(set(self.layers)) != list(self.layers)
                                        or self.layers[0] < 0 or self.layers[-1] >= self.n_layers):
            raise ValueError(f"TraceMeta.layers is {self.layers}, expected sorted distinct layers in "
                             f"0..{self.n_layers - 1}")
        for name in ("scalings", "sliding_windows"):
            if len(getattr(self, name)) != self.n_layers:
                raise ValueError(f"TraceMeta.{name} has {len(getattr(self, name))} entries, "
                                 f"expected n_layers={self.n_layers}")

    @property
    def group_size(self) -> int:
        """Query heads per KV head (GQA group size G)."""
        return self.n_q_heads // self.n_kv_heads

    @property
    def captured_layers(self) -> list[int]:
        """The layers this store holds (all of the model's unless capture was given a subset)."""
        return list(range(self.n_layers)) if self.layers is None else list(self.layers)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict, where: str) -> "TraceMeta":
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = required - data.keys()
        if missing:
            raise ValueError(f"{where}: model metadata lacks field(s) {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class SequenceInfo:
    """One captured sequence: a prompt (prefill rows) followed by decode steps (one row each)."""

    name: str
    source: str           # which text it came from
    prompt_len: int       # rows 0..prompt_len-1 are prefill
    n_rows: int           # rows stored per layer = prompt_len + decode steps
    token_ids: list[int]  # prompt + generated tokens
    capture_time: str
    dtype: str
    decode_every: int = 1  # only every Nth decode step's queries were kept (the others are zeros)

    @property
    def n_decode_steps(self) -> int:
        return self.n_rows - self.prompt_len
