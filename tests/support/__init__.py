"""Helpers shared by test modules (importable as ``support``: tests/conftest.py puts tests/
on ``sys.path``)."""
