"""What can stop a build. Each message is one sentence for the author."""
from ..errors import ModulaError


class BuildError(ModulaError):
    """The build stopped; the published output is as it was before it started."""


class ThemeError(BuildError):
    """A template failed: names the template, the line and the entry being rendered."""

    def __init__(self, message: str, template: str | None = None, line: int | None = None,
                 entry: str | None = None):
        super().__init__(message)
        self.template = template
        self.line = line
        self.entry = entry


class BuildCancelled(BuildError):
    def __init__(self):
        super().__init__("The build was cancelled; the last good output is unchanged.")


class PublishError(ModulaError):
    pass
