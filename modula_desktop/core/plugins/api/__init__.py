"""The Lua API modules a plugin sees, one Python module each: db, http, hooks, log, json, core, request, test
(the Lua halves of some live in ../lua/)."""
