"""Root conftest: earshot's fixture plugins, loaded from the repository."""

pytest_plugins = [
    "fixtures.audio",
    "fixtures.clients",
    "fixtures.leaks",
    "fixtures.offers",
    "fixtures.proxy",
    "fixtures.server",
    "pytester",
]
