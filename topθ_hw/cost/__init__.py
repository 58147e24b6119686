"""Whole-model cost per generated token: model shapes as data, one decode step (or prefill) of a
whole model on a device, KV-cache capacity per method, tokens/s, J/token and $/million tokens.

``models`` (``load_model``: sims/models/*.toml or a HF config.json) → ``ops`` (GEMMs, norms,
all-reduces per layer) + ``attention`` (the attention model, cached) → ``step`` (launches, the
Amdahl split) → ``outputs`` / ``capacity`` → ``run.cost_of`` (the ``toptheta cost`` answer).
Nothing is imported here, so ``toptheta --help`` stays fast; import the modules.
"""
