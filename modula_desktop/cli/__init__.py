"""The command line: offline plugin commands work on files, online ones on the running instance."""
