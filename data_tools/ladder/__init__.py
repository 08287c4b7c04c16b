"""The ladder on the embedded default (zero-shot -> SFT -> GRPO -> PHI) and the GPU preflight."""
