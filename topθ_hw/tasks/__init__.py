"""Tasks scored by outcome, dense vs live sparse attention: HumanEval pass@1 and passkey retrieval.

``sandbox`` runs generated code in a resource-limited subprocess; ``humaneval`` and ``passkey`` build
the prompts and score the answers; ``run`` sweeps settings (``topθ_hw.quality.settings``) over them.
"""
