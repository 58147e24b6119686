"""The capture loop: text files -> prompt tokens -> prefill + greedy decode, every layer's Q/K/V stored.

Python API: :func:`capture_texts` (what ``toptheta capture`` runs).
"""

from __future__ import annotations

import dataclasses
import json
import queue
import sys
import threading
import warnings
from pathlib import Path

from topθ_hw import __version__
from topθ_hw.capture.chunked import DecodeStride, check_disk, prefill_chunks
from topθ_hw.capture.hook import capture
from topθ_hw.capture.models import DTYPES, LoadedModel, load_model, resolve
from topθ_hw.errors import UserError


def read_text(path) -> str:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such text file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc})") from None
    if not text.strip():
        raise UserError(f"{path}: text is empty; expected some words to use as the prompt")
    return text


def prompt_token_ids(lm: LoadedModel, text: str, where: str, max_prompt_tokens: int,
                     max_new_tokens: int, truncate: bool) -> list[int]:
    """The first ``max_prompt_tokens`` tokens of ``text``, checked against the model's context."""
    ids = list(lm.tokenizer(text).input_ids)[:max_prompt_tokens]
    if not ids:
        raise UserError(f"{where}: text gives no tokens; expected some words to use as the prompt")
    context = getattr(lm.model.config.get_text_config(), "max_position_embeddings", None)
    if context and len(ids) + max_new_tokens > context:
        fits = context - max_new_tokens
        if not truncate or fits < 1:
            raise UserError(f"{where}: prompt of {len(ids)} tokens + {max_new_tokens} new tokens exceeds the "
                            f"model's context of {context} positions; lower --max-prompt-tokens or pass "
                            "--truncate to keep the first tokens that fit")
        warnings.warn(f"{where}: prompt truncated from {len(ids)} to {fits} tokens to fit the model's context "
                      f"of {context} with {max_new_tokens} new tokens", stacklevel=2)
        ids = ids[:fits]
    return ids


def attention_modules(model) -> dict:
    """layer_idx -> attention module (the objects that call the attention function)."""
    found = {m.layer_idx: m for m in model.modules()
             if hasattr(m, "layer_idx") and hasattr(m, "scaling") and hasattr(m, "o_proj")}
    n_layers = model.config.get_text_config().num_hidden_layers
    if sorted(found) != list(range(n_layers)):
        raise UserError(f"model type {model.config.model_type!r}: found attention modules for layers "
                        f"{sorted(found)}, expected 0..{n_layers - 1}; this architecture cannot be captured")
    return found


def rope_fields(config) -> dict:
    params = getattr(config, "rope_parameters", None) or {}
    if params and all(isinstance(v, dict) for v in params.values()):  # per layer type (Gemma 3)
        main = params.get("full_attention") or next(iter(params.values()))
        return {"rope_type": main.get("rope_type", "default"), "rope_theta": main.get("rope_theta"),
                "rope_scaling": params}
    rest = {k: v for k, v in params.items() if k not in ("rope_type", "rope_theta")}
    return {"rope_type": params.get("rope_type", "default"), "rope_theta": params.get("rope_theta"),
            "rope_scaling": rest or None}


def trace_meta(lm: LoadedModel):
    """TraceMeta from the loaded model's config and attention modules."""
    import torch
    import transformers

    from topθ_hw.store import TraceMeta

    config = lm.model.config.get_text_config()
    modules = attention_modules(lm.model)
    for layer, m in modules.items():
        if getattr(m, "attn_logit_softcapping", None):
            raise UserError(f"model type {config.model_type!r} layer {layer} soft-caps attention logits; the "
                            "trace format assumes plain softmax(QK^T * scaling) and cannot represent it")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    full_config = json.loads(json.dumps(lm.model.config.to_dict(), default=str))
    return TraceMeta(
        model_id=lm.model_id, model_file_sha256=lm.sha256, architecture=config.model_type,
        n_layers=config.num_hidden_layers, n_q_heads=config.num_attention_heads,
        n_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        head_dim=head_dim, dtype=lm.dtype,
        scalings=[float(modules[i].scaling) for i in range(len(modules))],
        sliding_windows=[getattr(modules[i], "sliding_window", None) for i in range(len(modules))],
        max_position_embeddings=getattr(config, "max_position_embeddings", None),
        package_version=__version__, **rope_fields(config),
        extra={"weights_path": str(lm.weights_path), "torch": torch.__version__,
               "transformers": transformers.__version__, "attn_implementation": "sdpa",
               "decoding": "greedy, fixed number of steps (EOS not special)", "config": full_config})


class BackgroundAppender:
    """Runs ``sink.append`` in a worker thread, so compressing and writing rows overlaps the
    model's next layers (codecs release the GIL). Rows keep their order; a bounded queue
    stops a slow disk from piling up memory; a write error is raised in the caller."""

    def __init__(self, sink, max_pending: int = 256):
        self.sink, self.error = sink, None
        self.pending = queue.Queue(max_pending)
        self.worker = threading.Thread(target=self._work, name="toptheta-trace-writer", daemon=True)
        self.worker.start()

    def _work(self) -> None:
        while (item := self.pending.get()) is not None:
            if self.error is None:
                try:
                    self.sink.append(*item)
                except BaseException as exc:  # handed to the capturing thread
                    self.error = exc

    def append(self, layer, q, k, v) -> None:
        if self.error is not None:
            raise self.error
        self.pending.put((layer, q, k, v))

    def close(self) -> None:
        """Wait until every row is written; re-raise a write error."""
        self.pending.put(None)
        self.worker.join()
        if self.error is not None:
            raise self.error


def generate_with_capture(lm: LoadedModel, ids: list[int], max_new_tokens: int, sink, meta,
                          progress=None, chunk_tokens: int | None = None, decode_every: int = 1) -> list[int]:
    """Prefill ``ids`` (in passes of ``chunk_tokens`` through the cache) then ``max_new_tokens``
    greedy decode steps, all recorded into ``sink`` (every ``decode_every``-th step's queries).

    Returns the tokens that own the stored rows: the prompt followed by the token fed at
    each decode step (row t of every layer belongs to token t).
    """
    tokens = list(ids)
    appender = BackgroundAppender(DecodeStride(sink, len(ids), decode_every))
    try:
        with capture(lm.model, appender) as recorder:
            greedy_generate(lm.model, ids, max_new_tokens, tokens, progress, chunk_tokens)
    finally:
        appender.close()  # all rows on disk (or the write error) before the sequence is finalised
    recorder.check_all_layers_seen(len(prefill_chunks(len(ids), chunk_tokens)) + max_new_tokens)
    for layer, s in recorder.scalings.items():
        if s != meta.scalings[layer]:
            raise UserError(f"layer {layer}: attention was called with scaling {s}, but the module says "
                            f"{meta.scalings[layer]}; the stored scaling would be wrong")
    return tokens


def greedy_generate(model, ids: list[int], max_new_tokens: int, tokens: list[int] | None = None,
                    progress=None, chunk_tokens: int | None = None):
    """Prefill ``ids`` (one pass, or passes of ``chunk_tokens`` appending to the cache), then
    ``max_new_tokens`` greedy decode steps (EOS not special).

    Appends the token fed to each decode step to ``tokens``; returns the last logits.
    """
    import torch
    from transformers import DynamicCache

    tokens = [] if tokens is None else tokens
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        for start, stop in prefill_chunks(len(ids), chunk_tokens):
            # Only the last position's logits are needed: the LM head over a long chunk would be
            # chunk × vocab floats (150k vocab: 1.2 GB at 2048 tokens).
            logits = model(input_ids=torch.tensor([ids[start:stop]]), cache=cache, use_cache=True,
                           logits_to_keep=1).logits
            if progress:
                progress.update(1)
        for _ in range(max_new_tokens):
            next_token = int(logits[0, -1].argmax())
            tokens.append(next_token)
            logits = model(input_ids=torch.tensor([[next_token]]), cache=cache, use_cache=True).logits
            if progress:
                progress.update(1)
    return logits


def capture_texts(texts, out, model: str = "smollm2-135m", max_prompt_tokens: int = 512,
                  max_new_tokens: int = 64, dtype: str = "bfloat16", truncate: bool = False,
                  overwrite: bool = False, progress: bool = True, loaded: LoadedModel | None = None,
                  layers: list[int] | None = None, chunk_tokens: int | None = None,
                  decode_every: int = 1) -> Path:
    """Capture one sequence per text file into a new trace store at ``out``; returns ``out``.

    Each sequence is the first ``max_prompt_tokens`` tokens of its text as the prompt, then
    ``max_new_tokens`` greedy decode steps. ``loaded`` reuses an already loaded model.
    ``layers`` stores only those layers (all by default); the model still runs every layer.
    ``chunk_tokens`` runs the prompt in passes of that many tokens through the KV cache (memory
    bounded by one chunk); ``decode_every`` keeps every Nth decode step's queries (see
    :mod:`topθ_hw.capture.chunked`). The disk must hold the uncompressed size before anything is written.
    """
    from tqdm import tqdm

    from topθ_hw.store import TraceWriter

    out = Path(out)
    if not texts:
        raise UserError("no text files given; pass at least one --text FILE")
    if decode_every < 1 or (chunk_tokens is not None and chunk_tokens < 1):
        raise UserError(f"--decode-every is {decode_every} and --chunk-tokens {chunk_tokens}; expected at least 1")
    if max_prompt_tokens < 1 or max_new_tokens < 0:
        raise UserError(f"--max-prompt-tokens is {max_prompt_tokens} and --max-new-tokens {max_new_tokens}; "
                        "expected at least 1 and at least 0")
    if dtype not in DTYPES:
        raise UserError(f"--dtype is {dtype!r}, expected one of {', '.join(DTYPES)}")
    if out.exists() and not overwrite:
        raise UserError(f"{out}: output exists; pass --overwrite to replace it")
    if loaded is None:
        resolve(model)  # unknown or missing model: say so before anything slow
    contents = {Path(t): read_text(t) for t in texts}  # every bad input before the slow model load
    lm = loaded or load_model(model, dtype)
    if lm.dtype != dtype:
        raise UserError(f"the loaded model computes in {lm.dtype}, but dtype={dtype!r} was asked for")
    prompts = {p: prompt_token_ids(lm, text, str(p), max_prompt_tokens, max_new_tokens, truncate)
               for p, text in contents.items()}
    meta = trace_meta(lm)
    if layers is not None:
        try:
            meta = dataclasses.replace(meta, layers=sorted(set(int(x) for x in layers)))
        except ValueError as exc:
            raise UserError(f"--layers: {exc}") from exc
    check_disk(out, meta, sum(len(ids) + max_new_tokens for ids in prompts.values()))
    passes = sum(len(prefill_chunks(len(ids), chunk_tokens)) + max_new_tokens for ids in prompts.values())
    bar = tqdm(total=passes, unit="pass", desc="capture", disable=not progress, file=sys.stderr)
    with bar, TraceWriter(out, meta, overwrite=overwrite) as writer:
        for path, ids in prompts.items():
            bar.set_postfix_str(f"{path.stem} ({len(ids)} prompt tokens)")
            with writer.sequence(source=path.stem, prompt_token_ids=ids, max_rows=len(ids) + max_new_tokens,
                                 decode_every=decode_every) as seq:
                seq.set_token_ids(generate_with_capture(lm, ids, max_new_tokens, seq, meta, bar, chunk_tokens,
                                                        decode_every))
    return out
