"""envcal: traceable, continuous verification of environmental monitoring analyzers.

The data flow is one-directional: ingest -> archive -> verify -> store/alert -> UI.
See ``../shared/DESIGN.md`` (kept in the steering repo) and ``README.md``.
"""

__version__ = "0.1.0"
