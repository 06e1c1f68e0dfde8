"""Our methods inside Hugging Face transformers: ``patching`` swaps one into a model's prefill attention,
``selector`` registers them all as ``attn_implementation`` names, ``sliding`` runs sliding-window layers."""
