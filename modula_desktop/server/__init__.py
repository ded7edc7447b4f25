"""The local HTTP server: a Falcon app over the site service, served by waitress on 127.0.0.1."""
from .app import create_app
from .runner import ServerHandle, start_background

__all__ = ["create_app", "start_background", "ServerHandle"]
