"""Training tests: shared builders live in ``training_builders.py`` (importable from these tests)."""
