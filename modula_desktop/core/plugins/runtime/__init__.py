"""Running plugin code: the sandbox (one Lua runtime), the plugin VM, VM pools, deadlines (watchdog, the C
bridge) and the hook dispatcher."""
