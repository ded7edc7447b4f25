"""The static site build (SPEC 9): collect -> render -> write -> publish. No Qt, no HTTP."""
from .errors import BuildCancelled, BuildError, PublishError, ThemeError
from .media import add_media, list_media, remove_unused_media, unused_media
from .theme import available_themes
from .pipeline import BuildResult, build, build_site, default_output

__all__ = ["BuildCancelled", "BuildError", "BuildResult", "PublishError", "ThemeError", "add_media", "available_themes", "build",
           "build_site", "default_output", "list_media", "remove_unused_media", "unused_media"]
