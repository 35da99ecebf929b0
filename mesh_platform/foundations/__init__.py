"""Foundations: what every layer above may use, and nothing of the platform below it.

``problems`` (an error that names its file and field), ``launch_env`` (the environment the process
was started with, before domain code can change it), ``safe_yaml`` (the hardened YAML reader),
``settings`` (``MeshSettings``, read once per entry point), ``metadata`` (every ``mesh/*`` key written
into Dagster), ``sql`` (identifier quoting) and ``text`` (free-text redaction).
"""
