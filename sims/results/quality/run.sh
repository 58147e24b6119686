#!/usr/bin/env bash
# Reproduces sims/results/quality/: calibrate Top-θ on one text domain, evaluate live on another,
# both directions, for SmolLM2-135M. Work files (traces, artifacts) go under $WORK.
# Domains: austen = Emma + Pride and Prejudice; other = Hamlet + KJV Genesis (traces/texts/).
set -euo pipefail
cd "$(dirname "$0")/../../.."
WORK=${WORK:-/tmp/toptheta-quality}
MODEL=${MODEL:-smollm2-135m}
KS=${KS:-16,32,64,128,256,512}
LAYER_K=${LAYER_K:-0:512,1:512}          # the paper keeps layers 0 and 1 at k = 512
VARIANTS=${VARIANTS:-pre,pre+sdc=expthr+vmc,post,post+vmc,pre+capk,topk}
T=traces/texts
declare -A TEXTS=([austen]="$T/austen-emma.txt $T/austen-pride-and-prejudice.txt"
                  [other]="$T/shakespeare-hamlet.txt $T/kjv-genesis.txt")
for domain in austen other; do
  # 1. 1024-token windows of the domain's texts, captured in float32 (the live model's dtype)
  if [ ! -d "$WORK/$domain.zarr" ]; then
    .venv/bin/python -m topθ_hw.quality.split_text --model "$MODEL" --tokens 1024 --out "$WORK/$domain-windows" ${TEXTS[$domain]}
    .venv/bin/toptheta capture --model "$MODEL" --dtype float32 --max-prompt-tokens 1024 --max-new-tokens 0 \
      --text "$WORK/$domain-windows"/*.txt --out "$WORK/$domain.zarr" --quiet
  fi
  # 2. thresholds per k and placement, from every window of the domain
  seqs=$(.venv/bin/python -c "from topθ_hw.store import open_trace; print(','.join(open_trace('$WORK/$domain.zarr').sequences))")
  for k in ${KS//,/ }; do
    for placement in pre post; do
      art="$WORK/thresholds-$domain/k$k-$placement.safetensors"
      [ -f "$art" ] || .venv/bin/toptheta calibrate --traces "$WORK/$domain.zarr" --sequences "$seqs" --k "$k" \
        --layer-k "$LAYER_K" --placement "$placement" --sigma 0.1 --out "$art"
    done
  done
done
# 3. live evaluation on the other domain, both directions
.venv/bin/toptheta evaluate --model "$MODEL" --thresholds "$WORK/thresholds-austen" --text ${TEXTS[other]} \
  --k "$KS" --variants "$VARIANTS" --window 1024 --out sims/results/quality/calib-austen_eval-other
.venv/bin/toptheta evaluate --model "$MODEL" --thresholds "$WORK/thresholds-other" --text ${TEXTS[austen]} \
  --k "$KS" --variants "$VARIANTS" --window 1024 --out sims/results/quality/calib-other_eval-austen
