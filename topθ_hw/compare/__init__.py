"""The alternatives compared in hardware units: top-p, Quest, StreamingLLM and H2O beside dense,
top-k and Top-θ, on the same traces, text and devices (``toptheta compare``)."""
