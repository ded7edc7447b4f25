"""Modula Desktop: a desktop CMS for one website with a sandboxed Lua plugin system."""

__version__ = "0.1.0"
