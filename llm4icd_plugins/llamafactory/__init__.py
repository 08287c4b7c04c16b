"""LlamaFactory glue: the launcher that runs LlamaFactory's CLI in the SFT environment."""
