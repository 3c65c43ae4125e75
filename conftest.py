"""Root conftest: this repository's fixture modules on top of earshot's plugin.

The plugin (``earshot.plugin``) is loaded by its ``pytest11`` entry point, as
in any project with earshot installed; pyproject.toml turns its leak guard on
for every test here (``earshot_leak_guard = true``).
"""

pytest_plugins = [
    "fixtures.suite",
    "fixtures.offers",
    "fixtures.inner_sessions",
    "pytester",
]
