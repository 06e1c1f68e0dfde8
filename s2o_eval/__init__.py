"""s2o-eval: S2O sparse prefill attention and the harness that measures what it costs and buys.

In your own code, ``s2o_eval.register()`` makes every method a transformers attention implementation:
``AutoModelForCausalLM.from_pretrained(..., attn_implementation="s2o")`` (see ``s2o_eval.integration.selector``).
"""

__version__ = "0.1.0"


def register(method: str | None = None, /, **params):
    """Make our methods selectable with ``attn_implementation=...``: ``register()`` for all of them with
    their defaults, ``register("s2o", tau=0.001)`` for one, configured. ``s2o_eval.integration.selector.register``
    tells the rest; it loads on the first call, so ``import s2o_eval`` stays light (no torch)."""
    from .integration.selector import register as register_methods

    return register_methods(method, **params)
