"""Tools for plugin authors: `modula plugin init` (scaffold) and `modula plugin test` (the test runner)."""
