"""The core: settings, storage, content service and plugin runtime. Imports neither Qt nor Falcon."""
