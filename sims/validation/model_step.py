"""Whole-model decode steps and prefills of real model SHAPES with random bf16 weights, timed on a GPU.

    python3 sims/validation/model_step.py --out DIR            # full run, about 4-5 minutes on one H200
    python3 sims/validation/model_step.py --out DIR --quick    # one small point per kind, about 1 minute
    TRITON_INTERPRET=1 python3 sims/validation/model_step.py --cpu-check   # self-checks on CPU, tiny shapes

Shapes come from sims/models/<name>.toml (the simulator's own files). The decoder is a plain
PyTorch one, op for op what topθ_hw/cost/ops.py charges: RMSNorm, fused QKV (+bias), RoPE,
K/V cache append, attention, O projection, residual add, RMSNorm, fused gate+up, SiLU·mul, down,
residual add; final norm, LM head on the last position, argmax. Decode is timed eager and replayed
from a CUDA graph; attention is torch SDPA (dense) or the Top-θ decode kernel at a fixed kept
fraction (``topθ_attention``: the fused threshold kernel ``threshold_decode`` from kernels.py when
it exists, else the precomputed V-row-mask kernel ``split_kv_decode`` at the same kept fraction;
the CSV's ``attention`` column says which ran). Configurations that do not fit in 90 % of the
GPU's memory are skipped and listed in the provenance JSON.

Self-checks before any timing (raise on failure): the cached decode step's logits equal a full
prefill's last-position logits; every attention kernel matches a float32 reference.
Outputs in --out: model_step.csv, model_step_micro.csv, model_step.provenance.json.
"""
import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent / "models"
sys.path.insert(0, str(HERE))
MODEL_NAMES = ["llama-3.1-8b", "qwen2.5-7b"]
KEPT_FRACTION = 0.1
REL_TOL = 2e-2


def load_shape(name):
    return tomllib.loads((MODELS / f"{name}.toml").read_text())["shape"]


class Decoder:
    """Random bf16 weights of one model shape (``layers`` may be cut for the CPU check)."""

    def __init__(self, shape, device, dtype, layers=None, gen=None):
        s = self.s = dict(shape)
        self.L = layers or s["layers"]
        h, d, qh, kvh, inter = s["hidden_size"], s["head_dim"], s["q_heads"], s["kv_heads"], s["intermediate_size"]
        self.q, self.kv = qh * d, kvh * d
        w = lambda *size: (torch.randn(*size, device=device, generator=gen) / size[0] ** 0.5).to(dtype)  # noqa: E731
        self.embed = w(s["vocab_size"], h)
        self.lm_head = self.embed if s["tied_embeddings"] else w(s["vocab_size"], h)
        self.layers = [{"qkv": w(h, self.q + 2 * self.kv), "bias": w(1, self.q + 2 * self.kv)[0] if s["qkv_bias"] else None,
                        "o": w(self.q, h), "gate_up": w(h, 2 * inter), "down": w(inter, h),
                        "n1": torch.ones(h, device=device, dtype=dtype), "n2": torch.ones(h, device=device, dtype=dtype)}
                       for _ in range(self.L)]
        self.norm = torch.ones(h, device=device, dtype=dtype)
        self.inv_freq = 1.0 / (1e4 ** (torch.arange(0, d, 2, device=device).float() / d))

    def rotations(self, pos):
        """e^(i·pos·inv_freq) [T, d/2], computed once per step and shared by every layer."""
        angles = pos[:, None].float() * self.inv_freq
        return torch.polar(torch.ones_like(angles), angles)

    @staticmethod
    def rope(x, freqs):
        """x [B, T, H, d] rotated (complex form: 3 kernels, cast, multiply, cast back)."""
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs[None, :, None]).flatten(3).type_as(x)

    def forward(self, ids, pos, caches, attend):
        """ids [B, T] at positions ``pos`` [T]; caches[l] = (K, V) [B, H_kv, N, d] written at ``pos``;
        attend(q [B, H_q, T, d], K, V, layer) → [B, H_q, T, d]. Returns argmax and last logits."""
        s, (B, T) = self.s, ids.shape
        x = F.embedding(ids, self.embed)
        freqs = self.rotations(pos)
        for layer, p in enumerate(self.layers):
            y = F.rms_norm(x, (s["hidden_size"],), p["n1"], 1e-6)
            qkv = torch.addmm(p["bias"], y.view(B * T, -1), p["qkv"]) if p["bias"] is not None else y.view(B * T, -1) @ p["qkv"]
            q, k, v = qkv.view(B, T, -1).split([self.q, self.kv, self.kv], dim=-1)
            q = self.rope(q.view(B, T, s["q_heads"], -1), freqs)
            k = self.rope(k.view(B, T, s["kv_heads"], -1), freqs)
            K, V = caches[layer]
            K.index_copy_(2, pos, k.transpose(1, 2))
            V.index_copy_(2, pos, v.view(B, T, s["kv_heads"], -1).transpose(1, 2))
            a = attend(q.transpose(1, 2), K, V, layer).transpose(1, 2).reshape(B * T, -1)
            x = x + (a @ p["o"]).view(B, T, -1)
            y = F.rms_norm(x, (s["hidden_size"],), p["n2"], 1e-6)
            g, u = (y.view(B * T, -1) @ p["gate_up"]).chunk(2, dim=-1)
            x = x + ((F.silu(g) * u) @ p["down"]).view(B, T, -1)
        last = F.rms_norm(x[:, -1], (s["hidden_size"],), self.norm, 1e-6)
        logits = last @ self.lm_head.T
        return logits.argmax(-1), logits


def sdpa_attend(q, K, V, layer):
    return F.scaled_dot_product_attention(q, K, V, is_causal=q.shape[2] > 1, enable_gqa=True)


def reference_attend(q, K, V, kept=None):
    """float32 decode attention, q [B, H_q, 1, d]; kept [B, H_kv, N] bool or None."""
    G = q.shape[1] // K.shape[1]
    s = torch.einsum("bhgd,bhnd->bhgn", q.float().view(q.shape[0], K.shape[1], G, -1), K.float()) * q.shape[-1] ** -0.5
    if kept is not None:
        s = s.masked_fill(~kept[:, :, None], float("-inf"))
    return torch.einsum("bhgn,bhnd->bhgd", s.softmax(-1), V.float()).reshape(q.shape)


class TopThetaAttention:
    """Adapter: the Top-θ decode kernel at a fixed kept V fraction, one call per layer.

    The one line to change when the fused kernel lands with another signature is in ``__call__``:
    ``threshold_decode(q [B, H_q, d], k, v [B, H_kv, N, d], theta [B, H_q])`` from kernels.py, θ in
    logit units (scores already scaled by d^-1/2), a key kept for a head where its score > θ.
    ``calibrate_step`` runs the step once eagerly and sets each layer's θ per (batch, head) on that
    layer's own scores, so that the union over a group's G heads keeps ``fraction`` of the V rows
    (per head 1 - (1 - fraction)^(1/G), independent heads); the union actually kept is measured and
    reported. Without the fused kernel: ``split_kv_decode`` with a V-row mask of ``fraction``."""

    def __init__(self, fraction, K, V, gen):
        import kernels
        self.fraction, self.kernels = fraction, kernels
        self.fused = getattr(kernels, "threshold_decode", None)
        self.name = "toptheta_fused" if self.fused else "toptheta_vrow_mask"
        B, H, N, _ = K.shape
        self.mask = kernels.kept_mask(B, H, N, fraction, gen, K.device, 4, 64)
        self.mask_u8 = self.mask.to(torch.uint8).contiguous()
        self.theta, self.union, self.first, self.calibrating = {}, {}, None, False

    def _scores(self, q, K):
        G = q.shape[1] // K.shape[1]
        return torch.einsum("bhgd,bhnd->bhgn", q.float().view(q.shape[0], K.shape[1], G, -1), K.float()) \
            * q.shape[-1] ** -0.5

    def _calibrate(self, q, K, V, layer):
        s = self._scores(q, K)
        per_head = 1 - (1 - self.fraction) ** (1 / s.shape[2])
        k = min(s.shape[-1], max(1, round((1 - per_head) * s.shape[-1])))
        theta = s.kthvalue(k, dim=-1).values
        self.union[layer] = float((s > theta[..., None]).any(dim=2).float().mean())
        self.theta[layer] = theta.reshape(q.shape[0], -1).contiguous()
        if self.first is None:
            self.first = (q.clone(), layer)
        return sdpa_attend(q, K, V, layer)

    def calibrate_step(self, step):
        if self.fused:
            self.calibrating = True
            step()
            self.calibrating = False

    @property
    def kept_v_fraction(self):
        return sum(self.union.values()) / len(self.union) if self.fused else float(self.mask.float().mean())

    def __call__(self, q, K, V, layer):
        if self.fused:
            if self.calibrating:
                return self._calibrate(q, K, V, layer)
            return self.fused(q[:, :, 0], K, V, self.theta[layer]).unsqueeze(2)
        return self.kernels.split_kv_decode(q[:, :, 0].contiguous(), K, V, mask=self.mask_u8).unsqueeze(2)

    def check(self, q, K, V):
        """Relative L2 error against float32 attention over the same kept keys; raises on mismatch."""
        if self.fused:
            q, layer = self.first
            s = self._scores(q, K)
            keep = s > self.theta[layer].view(s.shape[:3])[..., None]
            s = s.masked_fill(~keep, float("-inf"))
            ref = torch.einsum("bhgn,bhnd->bhgd", s.softmax(-1).nan_to_num(), V.float()).reshape(q.shape)
        else:
            layer, ref = 0, reference_attend(q, K, V, self.mask)
        got = self(q, K, V, layer).float()
        rel = float((got - ref).norm() / ref.norm())
        if not rel < REL_TOL:
            raise AssertionError(f"{self.name}: relative L2 error {rel:.3e} >= {REL_TOL}")
        return rel


def check_decode_matches_prefill(model, device, n=24, batch=2):
    """The cached decode step at position n must give the full prefill's last-position logits."""
    d, kvh = model.s["head_dim"], model.s["kv_heads"]
    ids = torch.randint(0, model.s["vocab_size"], (batch, n + 1), device=device)
    caches = lambda: [(torch.zeros(batch, kvh, n + 1, d, device=device, dtype=model.embed.dtype),  # noqa: E731
                       torch.zeros(batch, kvh, n + 1, d, device=device, dtype=model.embed.dtype)) for _ in range(model.L)]
    full = model.forward(ids, torch.arange(n + 1, device=device), caches(), sdpa_attend)[1].float()
    c = caches()
    model.forward(ids[:, :n], torch.arange(n, device=device), c, sdpa_attend)
    step = model.forward(ids[:, n:], torch.tensor([n], device=device), c, sdpa_attend)[1].float()
    rel = float((step - full).norm() / full.norm())
    if not rel < REL_TOL:
        raise AssertionError(f"decode step vs prefill logits: relative L2 error {rel:.3e} >= {REL_TOL}")
    return rel


def fits(need_bytes):
    free, total = torch.cuda.mem_get_info()
    return need_bytes < 0.9 * total, need_bytes, total


def kv_bytes(s, batch, n):
    return 2 * s["layers"] * batch * s["kv_heads"] * n * s["head_dim"] * 2


def time_it(fn, repeats, warmup=2):
    """Median, p10, p90 seconds of fn() between CUDA events (host delays included: eager pays them)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    t = torch.tensor(times)
    return float(t.median()), float(t.quantile(0.1)), float(t.quantile(0.9))


KERNEL_NAMES = {}  # "model attention N=…" → {kernel name: launches} of one B=1 eager step (provenance)


def count_kernels(fn):
    """{kernel name: launches} of one call (torch profiler; copies and memsets left out)."""
    from collections import Counter
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return Counter(e.name for e in prof.events() if e.device_type.name == "CUDA" and "Memcpy" not in e.name
                   and "Memset" not in e.name)


def micro_benches(device):
    """GEMM efficiency, eager dispatch per op, graph gap per kernel: the [step] figures of the device file."""
    rows = []
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    t = time_it(lambda: a @ a, 10)[0]
    rows.append(("gemm_8192_bf16_tflops", 2 * 8192 ** 3 / t / 1e12, "TFLOP/s"))
    x = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    for m in (1, 16, 64):  # decode-shaped GEMMs: weight streaming bandwidth
        w = torch.randn(4096, 14336 * 2, device=device, dtype=torch.bfloat16)
        y = x[:m]
        t = time_it(lambda: y @ w, 20)[0]
        rows.append((f"gemm_m{m}_4096x28672_GBps", w.numel() * 2 / t / 1e9, "GB/s"))
    small = torch.zeros(16, device=device)
    n = 2000
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        small.add_(1)
    host = (time.perf_counter() - t0) / n
    torch.cuda.synchronize()
    rows.append(("eager_dispatch_us", host * 1e6, "us per op (host)"))
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            small.add_(1)
    rows.append(("graph_kernel_us", time_it(g.replay, 10)[0] / n * 1e6, "us per tiny kernel in a graph"))
    return rows


def board_power_W(replay, step_s, seconds=1.5):
    """nvidia-smi's board power while CUDA-graph steps run back to back (queued for ``seconds``)."""
    for _ in range(max(1, int(seconds / step_s))):
        replay()
    time.sleep(0.6 * seconds)
    watts = shell("nvidia-smi -i 0 --query-gpu=power.draw --format=csv,noheader,nounits")
    torch.cuda.synchronize()
    try:
        return float(watts.split()[0])
    except (ValueError, IndexError):
        return ""


def decode_points(model, name, batch, context, args, gen, log):
    """Eager and graph-replayed decode steps at ``context`` keys, SDPA and Top-θ attention."""
    s, dev = model.s, model.embed.device
    caches = [(torch.randn(batch, s["kv_heads"], context + 1, s["head_dim"], device=dev, dtype=torch.bfloat16, generator=gen),
               torch.randn(batch, s["kv_heads"], context + 1, s["head_dim"], device=dev, dtype=torch.bfloat16, generator=gen))
              for _ in range(model.L)]
    ids = torch.randint(0, s["vocab_size"], (batch, 1), device=dev, generator=gen)
    pos = torch.tensor([context], device=dev)
    top = TopThetaAttention(KEPT_FRACTION, *caches[0], gen)
    top.calibrate_step(lambda: model.forward(ids, pos, caches, top))
    q = torch.randn(batch, s["q_heads"], 1, s["head_dim"], device=dev, dtype=torch.bfloat16, generator=gen)
    rel = top.check(q, *caches[0])
    dense_rel = float((sdpa_attend(q, *caches[0], 0).float() - reference_attend(q, *caches[0])).norm()
                      / reference_attend(q, *caches[0]).norm())
    if not dense_rel < REL_TOL:
        raise AssertionError(f"sdpa decode: relative L2 error {dense_rel:.3e}")
    rows = []
    for attention, attend in (("sdpa", sdpa_attend), (top.name, top)):
        step = lambda: model.forward(ids, pos, caches, attend)  # noqa: E731
        step()
        eager = time_it(step, args.repeats)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        replay = time_it(graph.replay, args.repeats)
        kernels = ""
        if batch == 1:  # the names say which ops the cost model's op list misses, if any
            names = KERNEL_NAMES[f"{name} {attention} N={context}"] = dict(count_kernels(step))
            kernels = sum(names.values())
        power = board_power_W(graph.replay, replay[0]) if batch >= 16 else ""
        for graphs, t in ((False, eager), (True, replay)):
            rows.append({"model": name, "phase": "decode", "batch": batch, "context": context, "prompt_tokens": "",
                         "attention": attention, "kept_v_fraction": 1.0 if attention == "sdpa" else top.kept_v_fraction,
                         "graphs": graphs, "time_s": t[0], "time_s_p10": t[1], "time_s_p90": t[2],
                         "repeats": args.repeats, "kernels": kernels, "power_W": power if graphs else "",
                         "check_rel_l2": dense_rel if attention == "sdpa" else rel})
        print(f"{name} decode B={batch} N={context} {attention}: eager {eager[0] * 1e3:.3f} ms, "
              f"graph {replay[0] * 1e3:.3f} ms", file=log, flush=True)
        del graph
    return rows


def prefill_point(model, name, batch, prompt, args, gen, log):
    s, dev = model.s, model.embed.device
    caches = [(torch.empty(batch, s["kv_heads"], prompt, s["head_dim"], device=dev, dtype=torch.bfloat16),
               torch.empty(batch, s["kv_heads"], prompt, s["head_dim"], device=dev, dtype=torch.bfloat16))
              for _ in range(model.L)]
    ids = torch.randint(0, s["vocab_size"], (batch, prompt), device=dev, generator=gen)
    pos = torch.arange(prompt, device=dev)
    t = time_it(lambda: model.forward(ids, pos, caches, sdpa_attend), args.prefill_repeats, warmup=1)
    print(f"{name} prefill B={batch} T={prompt}: {t[0] * 1e3:.2f} ms", file=log, flush=True)
    return {"model": name, "phase": "prefill", "batch": batch, "context": prompt, "prompt_tokens": prompt,
            "attention": "sdpa", "kept_v_fraction": 1.0, "graphs": False, "time_s": t[0], "time_s_p10": t[1],
            "time_s_p90": t[2], "repeats": args.prefill_repeats, "kernels": "", "power_W": "", "check_rel_l2": ""}


def shell(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"


def provenance(args, skipped, micro, started):
    import triton
    props = torch.cuda.get_device_properties(0)
    return {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python3 " + " ".join(sys.argv), "wall_s": round(time.time() - started, 1),
            "gpu": shell("nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit "
                         "--format=csv"),
            "torch_device_name": props.name, "sm_count": props.multi_processor_count,
            "total_memory_bytes": props.total_memory, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "triton": triton.__version__, "python": sys.version.split()[0], "seed": args.seed,
            "models": {n: load_shape(n) for n in MODEL_NAMES}, "kept_v_fraction_toptheta": KEPT_FRACTION,
            "skipped": skipped, "micro": micro, "kernel_names_b1": KERNEL_NAMES,
            "timing": "CUDA events around each whole step (eager: host launch delays included); median of "
                      "--repeats after 2 warm-ups; random bf16 weights and K/V (shapes only)"}


def write_csv(path, rows):
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def sweep(args, log, rows, skipped):
    """Appends to ``rows`` and ``skipped`` as it goes (the caller writes what finished, even on failure)."""
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    for name in MODEL_NAMES[:1] if args.quick else MODEL_NAMES:
        s = load_shape(name)
        # the caching logic, checked in float32 on 2 layers (32 bf16 layers drift apart by rounding alone)
        check_decode_matches_prefill(Decoder(s, dev, torch.float32, layers=2, gen=gen), dev)
        model = Decoder(s, dev, torch.bfloat16, gen=gen)
        weights = sum(t.numel() * 2 for p in model.layers for t in p.values() if t is not None) + model.embed.numel() * 4
        for batch in ([16] if args.quick else [1, 16, 64]):
            for context in ([4096] if args.quick else [4096, 32768]):
                ok, need, total = fits(weights + kv_bytes(s, batch, context + 1))
                if not ok:
                    skipped.append(f"{name} decode B={batch} N={context}: needs {need / 1e9:.1f} GB, "
                                   f"90 % of {total / 1e9:.1f} GB available")
                    print("skip: " + skipped[-1], file=log)
                    continue
                rows += decode_points(model, name, batch, context, args, gen, log)
                torch.cuda.empty_cache()
        for batch in ([1] if args.quick else [1, 4]):
            for prompt in ([4096] if args.quick else [4096, 16384]):
                rows.append(prefill_point(model, name, batch, prompt, args, gen, log))
                torch.cuda.empty_cache()
        del model
        torch.cuda.empty_cache()


def cpu_check():
    """The self-checks on CPU at tiny shapes: decode vs prefill, SDPA vs the float32 reference."""
    torch.manual_seed(0)
    for name in MODEL_NAMES:
        s = {**load_shape(name), "hidden_size": 256, "q_heads": 4, "kv_heads": 2 if name.startswith("qwen") else 1,
             "head_dim": 64, "intermediate_size": 512, "vocab_size": 1000}
        model = Decoder(s, torch.device("cpu"), torch.float32, layers=2)
        rel = check_decode_matches_prefill(model, torch.device("cpu"))
        q, K, V = torch.randn(2, 4, 1, 64), torch.randn(2, s["kv_heads"], 100, 64), torch.randn(2, s["kv_heads"], 100, 64)
        err = float((sdpa_attend(q, K, V, 0) - reference_attend(q, K, V)).norm())
        assert err < 1e-4, err
        print(f"{name}: decode step vs prefill relative L2 {rel:.2e}; sdpa vs reference {err:.1e}")
    check_fused_adapter()
    if os.environ.get("TRITON_INTERPRET") == "1":  # the Top-θ adapter's kernel, interpreted (float16: see
        gen = torch.Generator().manual_seed(0)     # decode_kernels.py's cpu_check)
        q = torch.randn(2, 8, 1, 64, generator=gen).half()
        K, V = (torch.randn(2, 2, 320, 64, generator=gen).half() for _ in range(2))
        top = TopThetaAttention(KEPT_FRACTION, K, V, gen)
        print(f"{top.name}: relative L2 vs float32 reference {top.check(q, K, V):.2e}")
    print("cpu check passed")


def check_fused_adapter():
    """The adapter's fused path (calibration through a real step, per-layer θ, the check), run with a
    torch stand-in for ``threshold_decode`` with the same contract (CPU only; never timed)."""
    import kernels

    def stand_in(q, K, V, theta):
        G = q.shape[1] // K.shape[1]
        s = torch.einsum("bhgd,bhnd->bhgn", q.view(q.shape[0], K.shape[1], G, -1), K) * q.shape[-1] ** -0.5
        s = s.masked_fill(s <= theta.view(s.shape[:3])[..., None], float("-inf"))
        return torch.einsum("bhgn,bhnd->bhgd", s.softmax(-1).nan_to_num(), V).reshape(q.shape)

    s = {**load_shape(MODEL_NAMES[0]), "hidden_size": 256, "q_heads": 8, "kv_heads": 2, "head_dim": 32,
         "intermediate_size": 512, "vocab_size": 1000}
    model, gen = Decoder(s, torch.device("cpu"), torch.float32, layers=2), torch.Generator().manual_seed(1)
    n, batch = 600, 2
    caches = [tuple(torch.randn(batch, 2, n + 1, 32, generator=gen) for _ in range(2)) for _ in range(2)]
    ids, pos = torch.randint(0, 1000, (batch, 1), generator=gen), torch.tensor([n])
    kernels.threshold_decode = stand_in
    try:
        top = TopThetaAttention(KEPT_FRACTION, *caches[0], gen)
        top.calibrate_step(lambda: model.forward(ids, pos, caches, top))
        rel = top.check(None, *caches[0])
        model.forward(ids, pos, caches, top)
    finally:
        del kernels.threshold_decode
    assert abs(top.kept_v_fraction - KEPT_FRACTION) < 0.03, top.kept_v_fraction
    print(f"{top.name} adapter (torch stand-in kernel): union of V rows kept {top.kept_v_fraction:.3f}, "
          f"check {rel:.1e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="output folder")
    ap.add_argument("--quick", action="store_true", help="one model, one decode and one prefill point")
    ap.add_argument("--cpu-check", action="store_true", help="run the self-checks on CPU and exit")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--prefill-repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    if args.cpu_check:
        return cpu_check()
    if not args.out or not torch.cuda.is_available():
        ap.error("--out DIR and a CUDA GPU are needed (or --cpu-check)")
    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    micro = micro_benches(torch.device("cuda"))
    print("micro: " + ", ".join(f"{n} {v:.3g}" for n, v, _ in micro), flush=True)
    rows, skipped, failure = [], [], None
    try:
        sweep(args, sys.stdout, rows, skipped)
    except Exception as exc:  # keep what finished; the provenance names the failure
        failure = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        for r in rows:
            r.update(device=torch.cuda.get_device_name(0), date=datetime.date.today().isoformat())
        if rows:
            write_csv(out / "model_step.csv", rows)
        write_csv(out / "model_step_micro.csv", [{"bench": n, "value": v, "unit": u} for n, v, u in micro])
        prov = {**provenance(args, skipped, {n: v for n, v, _ in micro}, started), "failure": failure}
        (out / "model_step.provenance.json").write_text(json.dumps(prov, indent=1, sort_keys=True))
        print(f"wrote {len(rows)} points to {out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
