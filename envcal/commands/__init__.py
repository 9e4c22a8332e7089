"""Sub-commands of ``envcal``, one module per area; each exposes ``register(app)``."""
