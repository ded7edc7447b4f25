"""The Lua plugin runtime: sandbox, VMs, pools, approvals, hooks, routes and reloads."""
