#!/usr/bin/env bash
# Reproduces sims/results/quality/: calibrate Top-θ on one text domain, evaluate live on the other,
# both directions, for SmolLM2-135M. Threshold artifacts go under $WORK.
# Domains: austen = Emma + Pride and Prejudice; other = Hamlet + KJV Genesis (traces/texts/).
set -euo pipefail
cd "$(dirname "$0")/../../.."
WORK=${WORK:-/tmp/toptheta-quality}
MODEL=${MODEL:-smollm2-135m}
KS=${KS:-16,32,64,128,256,512}
LAYER_K=${LAYER_K:-0:512,1:512}          # the paper keeps layers 0 and 1 at k = 512
VARIANTS=${VARIANTS:-pre,pre+sdc=expthr+vmc,post+vmc,topk}
T=traces/texts
declare -A TEXTS=([austen]="$T/austen-emma.txt $T/austen-pride-and-prejudice.txt"
                  [other]="$T/shakespeare-hamlet.txt $T/kjv-genesis.txt")
for domain in austen other; do
  # thresholds for every k and both placements, from one dense pass over 1024-token windows
  [ -f "$WORK/thresholds-$domain/k16-post.safetensors" ] ||
    .venv/bin/toptheta calibrate-live --model "$MODEL" --text ${TEXTS[$domain]} --k "$KS" --layer-k "$LAYER_K" \
      --placement pre,post --sigma 0.1 --window 1024 --out "$WORK/thresholds-$domain" --overwrite
done
# live evaluation on the other domain, both directions (in parallel, one thread each: the 2-core
# machine was shared; MAX_TOKENS=0 evaluates the whole held-out text)
MAX_TOKENS=${MAX_TOKENS:-3072}
.venv/bin/toptheta evaluate --threads 1 --model "$MODEL" --thresholds "$WORK/thresholds-austen" --text ${TEXTS[other]} \
  --k "$KS" --variants "$VARIANTS" --window 1024 --max-tokens "$MAX_TOKENS" \
  --out sims/results/quality/calib-austen_eval-other --overwrite &
.venv/bin/toptheta evaluate --threads 1 --model "$MODEL" --thresholds "$WORK/thresholds-other" --text ${TEXTS[austen]} \
  --k "$KS" --variants "$VARIANTS" --window 1024 --max-tokens "$MAX_TOKENS" \
  --out sims/results/quality/calib-other_eval-austen --overwrite &
wait
