"""Integration tests use the real-server fixtures of tests/servers/pytest_plugin.py.

The plugin is loaded once for the whole suite by ``pytest_plugins`` in tests/conftest.py.
It must not be declared here as well: pytest refuses ``pytest_plugins`` in a non-top-level
conftest ("no longer supported") as soon as a run collects from above this directory
(``pytest`` or ``pytest tests``), and importing the fixtures here too would register every
hook and session fixture twice (two session ZooKeepers, a doubled summary).
"""
