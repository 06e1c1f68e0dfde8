"""``python -m s2o_eval`` is the ``s2o-eval`` command (for machines where it is not installed)."""

from .cli import main

if __name__ == "__main__":
    main()
