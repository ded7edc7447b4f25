"""A plugin's life: the manifest, discovery and loading (manager), hot reload, approvals, circuit breakers."""
