"""Capture post-RoPE Q, K, V from Hugging Face causal LMs into a trace store."""
