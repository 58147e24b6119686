"""``toptheta traces info PATH``: what a trace store holds."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    traces = subparsers.add_parser("traces", help="inspect trace stores")
    sub = traces.add_subparsers(dest="traces_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="print model, sequences, lengths, phases and size on disk",
                          description="Print what a trace store holds: the model, each sequence with its "
                          "source text, prefill and decode lengths, and the size on disk.")
    info.add_argument("path", help="trace store directory (e.g. traces/smollm2-135m.zarr)")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.set_defaults(func=run_info)


def trace_summary(path) -> dict:
    from topθ_hw.store import open_trace

    trace = open_trace(path)
    m = trace.meta
    sequences = []
    for name in trace.sequences:
        seq = trace.sequence(name)
        sequences.append({"name": name, "source": seq.source, "prompt_len": seq.prompt_len,
                          "decode_steps": seq.n_decode_steps, "rows": seq.n_tokens,
                          "disk_bytes": seq.disk_bytes()})
    return {"path": str(trace.path), "model_id": m.model_id, "architecture": m.architecture,
            "model_file_sha256": m.model_file_sha256, "dtype": m.dtype, "layers": m.n_layers,
            "captured_layers": m.captured_layers,
            "q_heads": m.n_q_heads, "kv_heads": m.n_kv_heads, "head_dim": m.head_dim,
            "sequences": sequences, "partial_sequences": trace.partial_sequences,
            "disk_bytes": trace.disk_bytes()}


def run_info(args) -> int:
    s = trace_summary(args.path)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"{s['path']}: {s['model_id']} ({s['architecture']}), {s['dtype']}, {s['layers']} layers, "
          f"{s['q_heads']} query heads / {s['kv_heads']} KV heads, head_dim {s['head_dim']}")
    if len(s["captured_layers"]) != s["layers"]:
        print(f"captured layers ({len(s['captured_layers'])} of {s['layers']}): {s['captured_layers']}")
    print(f"{'sequence':<10} {'source':<28} {'prefill':>8} {'decode':>7} {'rows':>6} {'MB':>7}")
    for q in s["sequences"]:
        print(f"{q['name']:<10} {q['source'][:28]:<28} {q['prompt_len']:>8} {q['decode_steps']:>7} "
              f"{q['rows']:>6} {q['disk_bytes'] / 1e6:>7.2f}")
    for name in s["partial_sequences"]:
        print(f"{name:<10} INCOMPLETE (capture interrupted; refused on read)")
    print(f"total on disk: {s['disk_bytes'] / 1e6:.2f} MB")
    return 0
