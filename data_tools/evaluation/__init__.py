"""Inference and evaluation: vLLM inference (constrained, voted, verified), baselines, metrics, coders."""
