"""Live sparse attention inside Hugging Face models and the quality side of the trade-off.

``methods`` holds the torch semantics of dense, top-k and Top-θ (one module each, mirroring
``topθ_hw.engine``); ``live`` installs one of them as the model's attention function;
``evaluate`` measures perplexity, next-token agreement and KL against dense together with the
kept-element (prefill) and V-row (decode) fractions of the same run.
"""
