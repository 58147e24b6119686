#!/usr/bin/env bash
# Reproduces sims/results/alternatives/: top-p, Quest, StreamingLLM and H2O against dense, top-k and
# Top-θ (pre-softmax, without and with exact SDC + VMC) at budgets k = 32, 64, 128 (top-p: p = 0.7..0.95).
# Hardware: replayed on the shipped trace and on a generated 2048-token trace, simulated on H100 and TPU v5e.
# Quality: live in SmolLM2-135M on held-out text (Hamlet + Genesis, first 4096 tokens), Top-θ calibrated
# live on the Austen texts. The generated trace goes under $WORK (180 MB, not committed).
set -euo pipefail
cd "$(dirname "$0")/../../.."
WORK=${WORK:-/tmp/toptheta-alternatives}
mkdir -p "$WORK"
[ -d "$WORK/gen2k.zarr" ] ||
  .venv/bin/toptheta capture --text traces/texts/kjv-genesis.txt traces/texts/austen-pride-and-prejudice.txt \
    --max-prompt-tokens 2048 --max-new-tokens 32 --out "$WORK/gen2k.zarr" --quiet --overwrite
.venv/bin/toptheta compare --traces traces/smollm2-135m.zarr "$WORK/gen2k.zarr" --max-tokens 4096 \
  --compensation sdc=exact+vmc --out "$WORK/compare" --overwrite
cp "$WORK"/compare/alternatives.{csv,md,png} "$WORK"/compare/command.txt sims/results/alternatives/
.venv/bin/toptheta report "$WORK/compare/alternatives.parquet" --out "$WORK/report" --overwrite
