"""The accelerators' DMA model against the published figures it is anchored to (sims/kernels/ACCELERATORS.md).

No TPU or NPU can be measured here, so these are consistency checks, not validation:

1. the issue's case: batch-1, 32k-context dense decode (32 q / 8 KV heads, d = 128, bf16) on
   tpu-v5e and npu against the datasheet bandwidth bound (bytes / HBM GB/s);
2. RPA (arXiv 2604.15464): up to 86 % memory-bandwidth utilisation in decode on TPU7x; the model's
   dense-decode utilisation on tpu-v5e over batch 1-64 and context 4k-128k;
3. JetStream-pytorch's published TPU v5e-8 serving throughput (benchmarks/summary.md): tokens/s at a
   fixed batch → time per decode step; the model's per-chip decode step (every layer's attention at
   the full cache length, tensor-parallel over 8 chips, plus streaming the chip's weight shard) must
   not exceed it, since the measured step also holds prefill, sampling and the other kernels.

    PYTHONPATH=. .venv/bin/python benchmarks/accelerator_anchors.py
"""

from __future__ import annotations

from topθ_hw.sim import load_device, simulate_call
from topθ_hw.sim.workload import DecodeStream, Shape, decode_call

# (model, layers, q heads, KV heads, parameters, batch, cache length, measured tokens/s on v5e-8 bf16)
JETSTREAM = [("Llama-3-8B", 32, 32, 8, 8.03e9, 128, 2048, 8249.0),
             ("Llama-2-7B", 32, 32, 32, 6.74e9, 96, 2048, 3663.0)]
CHIPS = 8


def dense(batch: int, context: int, q_heads: int = 32, kv_heads: int = 8) -> object:
    streams = [DecodeStream(context)] * (batch * kv_heads)
    return decode_call(Shape(q_heads, kv_heads, 128, "bf16"), streams, "dense", "row")


def issue_case() -> None:
    for name in ("tpu-v5e", "npu"):
        r = simulate_call(dense(1, 32768), load_device(name))
        print(f"{name:8s} batch 1, 32k dense decode: {r['time_s'] * 1e6:7.1f} us, bandwidth bound "
              f"{r['bandwidth_bound_s'] * 1e6:6.1f} us ({r['bytes_total'] / 1e6:.1f} MB), "
              f"x{r['time_s'] / r['bandwidth_bound_s']:.2f}; {r['kernel']}; {r['validation']}")


def rpa_utilisation() -> None:
    tpu = load_device("tpu-v5e")
    utils = [simulate_call(dense(b, n), tpu)["utilisation"] for b in (1, 8, 64) for n in (4096, 32768, 131072)
             if 2 * b * 8 * n * 256 / 1e9 <= tpu.memory.hbm_capacity_GB]
    print(f"tpu-v5e dense decode bandwidth utilisation {min(utils):.0%}-{max(utils):.0%} (median "
          f"{sorted(utils)[len(utils) // 2]:.0%}); RPA reports up to 86 % on TPU7x")


def jetstream_steps() -> None:
    tpu = load_device("tpu-v5e")
    for model, layers, hq, hkv, params, batch, cache, tokens_s in JETSTREAM:
        attention = simulate_call(dense(batch, cache, hq // CHIPS, max(1, hkv // CHIPS)), tpu)["time_s"] * layers
        weights = params * 2 / CHIPS / tpu.stream_bandwidth_Bps
        measured = batch / tokens_s
        verdict = "consistent" if attention + weights <= measured else "TOO SLOW"
        print(f"{model} v5e-8 bf16 batch {batch}, cache {cache}: model step {1e3 * (attention + weights):.2f} ms "
              f"(attention {1e3 * attention:.2f} + weights {1e3 * weights:.2f}) vs measured serving step "
              f"{1e3 * measured:.2f} ms ({tokens_s:g} tok/s): {verdict}")


if __name__ == "__main__":
    issue_case()
    rpa_utilisation()
    jetstream_steps()
