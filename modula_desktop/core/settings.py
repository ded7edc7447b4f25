"""One settings object holding every number of SPEC sections 3.3, 6 and 9, overridable from modula.toml."""
from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import SettingsError


@dataclass(frozen=True)
class PluginSettings:
    max_vms: int = 4
    hook_reserve_vms: int = 1
    timeout_s: float = 5.0
    hook_timeout_ms: int = 2000
    hook_event_timeout_ms: int = 5000
    after_hook_timeout_ms: int = 5000
    max_ops: int = 1000
    hook_max_ops: int = 100
    max_instructions: int = 50_000_000
    memory_limit_mb: int = 32
    rate_limit: float = 100.0
    rate_burst: int = 100
    max_request_body: int = 1024 * 1024
    max_response_body: int = 5 * 1024 * 1024
    max_failures: int = 5
    reset_interval_s: float = 60.0
    hook_max_consecutive_aborts: int = 10
    hot_reload: bool = True
    poll_interval_s: float = 2.0
    debounce_s: float = 1.0
    cooldown_s: float = 10.0
    drain_timeout_s: float = 10.0
    storage_quota_mb: int = 256  # bytes of row data in a plugin's tables; 0: no quota
    db_max_like_chars: int = 100  # a LIKE pattern's length (SQLite's LIKE costs pattern x value)
    db_max_value_bytes: int = 2 * 1024 * 1024  # one value written or compared by db.*
    # outbound HTTP (the request module, SPEC 3.11); allow_localhost lifts only the loopback rule
    allow_localhost: bool = False
    request_timeout_s: float = 10.0
    request_max_response: int = 1024 * 1024
    request_max_body: int = 1024 * 1024
    request_rate_per_min: float = 60.0
    request_rate_burst: int = 8
    request_max_redirects: int = 5
    request_concurrency: int = 8
    request_max_domains: int = 50
    request_deadline_margin_ms: int = 50
    # content access (the core module, SPEC 3.10): entries one core.update/core.delete may change (as
    # ModulaCMS's maxWriteRows), and how deep hooks writing content may nest before the write is refused
    core_max_write_rows: int = 100
    core_max_depth: int = 3
    # Not in the SPEC table but numbers all the same; kept here so none is a scattered literal.
    checkout_wait_ms: int = 100
    max_routes: int = 50
    max_hooks: int = 50
    after_hook_workers: int = 10
    slow_reload_s: float = 10.0
    max_slow_reloads: int = 3
    max_checksum_files: int = 100
    max_checksum_bytes: int = 10 * 1024 * 1024
    # Logs and errors (beyond, SPEC 3.3): one entry's message and context together, entries per second
    # per plugin (0: no limit) with a burst, the size at which plugins.log rotates and how many old files
    # are kept, and the longest error message a response or a log entry carries.
    log_entry_max_bytes: int = 8192
    log_rate: float = 100.0
    log_burst: int = 500
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 3
    error_max_bytes: int = 4096
    # how long an error keeps a plugin marked in the window's plugin list and status bar
    recent_error_window_s: float = 600.0
    # Screens and field interfaces (SPEC 3.12): VMs per plugin kept for them (each open screen holds
    # one), and the wall-clock budget of one resume (an event handled, a layout yielded)
    ui_vms: int = 2
    ui_timeout_s: float = 2.0


# the server's loop uses select(), which cannot watch descriptors numbered 1024 or more; the rest are
# left for the database, logs and the file watcher
MAX_CONNECTION_LIMIT = 900


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8642
    threads: int = 8
    # Connections (issue 13 item 12). waitress stops accepting at connection_limit, so idle and slow
    # connections must go: an idle one after channel_timeout seconds, one whose request has not fully
    # arrived after request_timeout seconds; both are checked every cleanup_interval seconds (whole
    # seconds: waitress's granularity). The limit stays well under select()'s 1024 descriptors.
    connection_limit: int = 500
    channel_timeout: int = 15
    request_timeout: int = 10
    cleanup_interval: int = 1
    recv_bytes: int = 65536
    inbuf_overflow: int = 512 * 1024
    max_request_header_size: int = 64 * 1024


@dataclass(frozen=True)
class WindowSettings:
    # how often the editor writes unsaved text to .modula/autosave/ (survives a crash)
    autosave_interval_s: float = 5.0
    # the reading time shown under the editor: words / words_per_minute
    words_per_minute: int = 200


@dataclass(frozen=True)
class SiteSettings:
    """[site]: what the static build says about the site (SPEC 9)."""
    title: str = "My site"
    description: str = ""
    base_url: str = "https://example.com/"
    language: str = "en"
    author: str = ""
    theme: str = "default"
    posts_per_page: int = 10
    permalink: str = "/<slug>/"


@dataclass(frozen=True)
class BuildSettings:
    continue_on_plugin_error: bool = False
    feed_items: int = 20
    image_widths: tuple = (480, 960, 1600)
    image_quality: int = 85
    menu_pages: int = 8  # pages in the header menu when none says menu = true


@dataclass(frozen=True)
class ContentSettings:
    """[content]: which revisions an entry keeps. Every revision younger than revisions_all_days; then the
    last of each day (UTC) up to revisions_daily_days; then the last of each month (none with
    revisions_monthly = false). The newest revision of an entry is always kept. revision_retention =
    false keeps every revision forever."""
    revision_retention: bool = True
    revisions_all_days: int = 7
    revisions_daily_days: int = 90
    revisions_monthly: bool = True
    # entries whose revisions one transaction of the maintenance pass thins (it yields the write lock
    # between batches, so a save waits at most one batch)
    retention_batch: int = 200


PUBLISH_TYPES = ("folder", "git")


@dataclass(frozen=True)
class PublishTarget:
    """[publish.<name>]: a folder to copy the build into, or a git remote to push a branch of it to."""
    name: str = ""
    type: str = "folder"
    path: str = ""          # folder: where the site goes
    remote: str = ""        # git: the URL or path pushed to
    branch: str = "gh-pages"
    repo: str = ""          # git: the local repository the commits are made in (default under .modula/)
    message: str = "Publish the site"


@dataclass(frozen=True)
class FieldDef:
    """[fields.<name>]: a custom field of the entries that a plugin's field interface edits (SPEC 3.12);
    its value is kept in the entry's fields under <name>."""
    name: str = ""
    type: str = "plugin"
    plugin: str = ""
    interface: str = ""
    label: str = ""


@dataclass(frozen=True)
class Settings:
    plugins: PluginSettings = field(default_factory=PluginSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    window: WindowSettings = field(default_factory=WindowSettings)
    site: SiteSettings = field(default_factory=SiteSettings)
    build: BuildSettings = field(default_factory=BuildSettings)
    content: ContentSettings = field(default_factory=ContentSettings)
    publish: dict = field(default_factory=dict)  # name -> PublishTarget
    fields: dict = field(default_factory=dict)  # name -> FieldDef

    def replace(self, **sections) -> "Settings":
        """Return a copy with keys of sections changed, e.g. replace(plugins={"max_vms": 2})."""
        return Settings(**{
            name: _apply(getattr(self, name), values, name) if name in sections else getattr(self, name)
            for name, values in [(f.name, sections.get(f.name, {})) for f in dataclasses.fields(self)]
        })


def _check_type(section: str, key: str, default, value):
    where = f"modula.toml: [{section}] {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"{where} must be true or false, not {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where} must be an integer, not {value!r}")
        if value < 0:
            raise SettingsError(f"{where} must not be negative")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where} must be a number, not {value!r}")
        if value < 0:
            raise SettingsError(f"{where} must not be negative")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise SettingsError(f"{where} must be a string, not {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                    for v in value):
            raise SettingsError(f"{where} must be a list of positive integers, not {value!r}")
        return tuple(value)
    raise SettingsError(f"{where} cannot be set")  # pragma: no cover


def _apply_publish(current: dict, values: dict, section: str) -> dict:
    targets = dict(current)
    for name, table in values.items():
        if not isinstance(table, dict):
            raise SettingsError(f"modula.toml: [{section}.{name}] must be a table")
        if "name" in table:  # the table's own name is the target's name
            raise SettingsError(f"modula.toml: unknown key [{section}.{name}] name")
        targets[name] = _apply(PublishTarget(name=name), table, f"{section}.{name}")
    return targets


PERMALINK_PARTS = ("<slug>", "<year>", "<month>", "<day>")
PERMALINK_STYLES = ("/<slug>/", "/<year>/<slug>/", "/<year>/<month>/<slug>/", "/<year>/<month>/<day>/<slug>/",
                    "/<slug>.html")
MAX_POSTS_PER_PAGE = 100
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")


def site_problems(new: SiteSettings) -> dict[str, str]:
    """What is wrong with [site] values, key -> one sentence starting with the key's meaning. The
    settings dialog shows them beside their fields; loading modula.toml raises the first."""
    problems = {}
    if not new.title.strip():
        problems["title"] = "title must not be empty"
    if not 1 <= new.posts_per_page <= MAX_POSTS_PER_PAGE:
        problems["posts_per_page"] = f"posts_per_page must be at least 1 and at most {MAX_POSTS_PER_PAGE}"
    link = new.permalink
    rest = link
    for part in PERMALINK_PARTS:
        rest = rest.replace(part, "x")
    if (not link.startswith("/") or "<slug>" not in link or not (link.endswith("/") or link.endswith(".html"))
            or "<" in rest or ">" in rest or "//" in link or "/../" in link + "/" or "/./" in link + "/"
            or any(c.isspace() or c in "?#\\" for c in link)):
        problems["permalink"] = ("permalink must start with '/', contain <slug>, end with '/' or '.html', and "
                                 "use only <slug>, <year>, <month> and <day>, such as '/<year>/<slug>/'")
    url = urlsplit(new.base_url) if new.base_url.isprintable() and " " not in new.base_url else None
    if url is None or url.scheme not in ("http", "https") or not new.base_url.lower().startswith(url.scheme + "://"):
        problems["base_url"] = "base_url must start with http:// or https://, such as 'https://example.com/'"
    elif not url.hostname:
        problems["base_url"] = "base_url must name a host after http:// or https://, such as 'https://example.com/'"
    elif url.query or url.fragment:
        problems["base_url"] = "base_url must not have a ?query or #fragment"
    if not _LANGUAGE.match(new.language):
        problems["language"] = "language must be a language tag such as 'en' or 'pt-BR'"
    if not new.theme or "/" in new.theme or "\\" in new.theme or new.theme.startswith("."):
        problems["theme"] = f"theme must be a folder name, not {new.theme!r}"
    return problems


def _check_site(new: SiteSettings):
    problems = site_problems(new)
    if problems:
        raise SettingsError(f"modula.toml: [site] {next(iter(problems.values()))}")


def _check_target(section: str, new: PublishTarget):
    if new.type not in PUBLISH_TYPES:
        raise SettingsError(f"modula.toml: [{section}] type must be \"folder\" or \"git\", not {new.type!r}")
    if new.type == "folder" and not new.path:
        raise SettingsError(f"modula.toml: [{section}] needs a path (the folder to publish into)")
    if new.type == "git" and not new.remote:
        raise SettingsError(f"modula.toml: [{section}] needs a remote (the repository to push to)")
    if new.type == "git" and not new.branch:
        raise SettingsError(f"modula.toml: [{section}] branch must not be empty")


def _apply_fields(current: dict, values: dict, section: str) -> dict:
    fields = dict(current)
    for name, table in values.items():
        if not isinstance(table, dict):
            raise SettingsError(f"modula.toml: [{section}.{name}] must be a table")
        if "name" in table:
            raise SettingsError(f"modula.toml: unknown key [{section}.{name}] name")
        new = _apply(FieldDef(name=name, label=name), table, f"{section}.{name}")
        if new.type != "plugin":
            raise SettingsError(f"modula.toml: [{section}.{name}] type must be \"plugin\", not {new.type!r}")
        if not new.plugin or not new.interface:
            raise SettingsError(f"modula.toml: [{section}.{name}] needs a plugin and an interface")
        fields[name] = new
    return fields


def _apply(obj, values: dict, section: str):
    if section == "publish":
        return _apply_publish(obj, values, section)
    if section == "fields":
        return _apply_fields(obj, values, section)
    known = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise SettingsError(f"modula.toml: unknown key [{section}] {key}")
        changes[key] = _check_type(section, key, getattr(obj, key), value)
    new = dataclasses.replace(obj, **changes)
    if section == "plugins":
        if new.max_vms < 1:
            raise SettingsError("modula.toml: [plugins] max_vms must be at least 1")
        if new.hook_reserve_vms >= new.max_vms and new.max_vms > 1:
            raise SettingsError("modula.toml: [plugins] hook_reserve_vms must be smaller than max_vms")
    if section == "server":
        if not (0 <= new.port <= 65535):
            raise SettingsError("modula.toml: [server] port must be between 0 and 65535")
        if not (1 <= new.connection_limit <= MAX_CONNECTION_LIMIT):
            raise SettingsError(f"modula.toml: [server] connection_limit must be between 1 and {MAX_CONNECTION_LIMIT}")
        for key in ("channel_timeout", "request_timeout", "cleanup_interval", "recv_bytes", "inbuf_overflow",
                    "max_request_header_size"):
            if getattr(new, key) < 1:
                raise SettingsError(f"modula.toml: [server] {key} must be at least 1")
    if section == "window" and (new.words_per_minute < 1 or new.autosave_interval_s < 0.5):
        raise SettingsError("modula.toml: [window] words_per_minute must be at least 1 and autosave_interval_s "
                            "at least 0.5")
    if section == "site":
        _check_site(new)
    if section == "build" and (not new.image_widths or not 1 <= new.image_quality <= 100):
        raise SettingsError("modula.toml: [build] image_widths must not be empty and image_quality must be "
                            "from 1 to 100")
    if section == "content" and (new.revisions_daily_days < new.revisions_all_days or new.retention_batch < 1):
        raise SettingsError("modula.toml: [content] revisions_daily_days must be at least revisions_all_days, "
                            "and retention_batch at least 1")
    if section.startswith("publish."):
        _check_target(section, new)
    return new


def load_settings(path: Path | None) -> Settings:
    """Read modula.toml (missing file: defaults). Any bad key or value raises SettingsError naming it."""
    if path is None or not path.exists():
        return Settings()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"modula.toml is not valid TOML: {exc}") from None
    return parse_settings(text)


def parse_settings(text: str) -> Settings:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"modula.toml is not valid TOML: {exc}") from None
    settings = Settings()
    sections = {f.name for f in dataclasses.fields(settings)}
    for name, values in data.items():
        if name not in sections:
            raise SettingsError(f"modula.toml: unknown section [{name}]")
        if not isinstance(values, dict):
            raise SettingsError(f"modula.toml: [{name}] must be a table")
    return settings.replace(**data)


def save_site_settings(path: Path, values: dict) -> SiteSettings:
    """Write values (keys of [site]) into the [site] table of the modula.toml at path and return the
    [site] settings the file now holds. The rest of the file (other sections, comments, key order) is
    kept: the file is edited with tomlkit, not rewritten. A key left at its default and absent from the
    file stays absent. Invalid values, or a file that no longer loads, raise SettingsError and leave the
    file as it was. The write is atomic (a temporary file renamed over it)."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    path = Path(path)
    current = SiteSettings()
    text = ""
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
            doc = tomlkit.parse(text)
        except (TOMLKitError, UnicodeDecodeError) as exc:
            raise SettingsError(f"modula.toml is not valid TOML: {exc}") from None
        current = load_settings(path).site
    else:
        doc = tomlkit.document()
    new = _apply(current, values, "site")  # the type and value checks, one sentence naming the key
    table = doc.get("site")
    if table is None:
        if len(doc) and not text.endswith("\n\n"):
            doc.add(tomlkit.nl())
        table = tomlkit.table()
        doc["site"] = table
    elif not isinstance(table, dict):
        raise SettingsError("modula.toml: [site] must be a table")
    defaults = SiteSettings()
    for f in dataclasses.fields(SiteSettings):
        value = getattr(new, f.name)
        if f.name in table:
            if table[f.name] != value:
                table[f.name] = value
        elif value != getattr(defaults, f.name):
            table[f.name] = value
    out = tomlkit.dumps(doc)
    written = parse_settings(out)  # what the next start reads back
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".modula.toml.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(out)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise SettingsError(f"Cannot write {path}: {exc.strerror or exc}.") from None
    return written.site
