"""s2o-eval: S2O sparse prefill attention and the harness that measures what it costs and buys."""

__version__ = "0.1.0"
