"""The one service object both front ends (HTTP server, GUI) sit on."""
from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

from .metrics import Metrics
from .plugins.lifecycle.approvals import Approvals
from .plugins.api.log import Logbook
from .plugins.lifecycle.manager import PluginManager
from .settings import Settings, save_site_settings
from .site import Site, WELCOME_BODY
from .storage import open_database

log = logging.getLogger(__name__)


class SiteService:
    """Owns the site's database, plugin runtime, content service and metrics.

    Construct, then ``start()``; ``close()`` stops plugins and the watcher. Thread-safe for the uses the
    front ends make of it: every request thread may call it at once.
    """

    def __init__(self, site: Site, settings: Settings | None = None, *, seed: bool = False,
                 welcome: bool | None = None):
        """seed: copy the bundled example plugins into a new site; welcome (default: as seed): give a new
        site its welcome page."""
        self.site = site
        new = site.ensure()
        self.new = new  # the site was created just now (the window shows a first-run message)
        self.settings = settings if settings is not None else site.settings()
        if new and seed:
            site.seed_bundled_plugins()
        self.db = open_database(site.db_path)
        self.metrics = Metrics()
        self.logbook = Logbook(site.logs_dir, self.settings.plugins)
        self.approvals = Approvals(self.db)
        self.plugins = PluginManager(site.plugins_dir, self.settings.plugins, self.db, self.approvals,
                                     self.logbook, self.metrics)
        # an approval changed from any front end refreshes every view of that plugin
        self.approvals.add_listener(self.plugins.notify)
        from .plugins.runtime.screens import ScreenHost

        self.screens = ScreenHost(self.plugins)  # plugin screens and field interfaces (SPEC 3.12)
        self.content = self._make_content_service()
        self.plugins.content = self.content  # the core module writes through it
        if new and (seed if welcome is None else welcome) and self.content is not None:
            self._seed_welcome()
        self.watcher = None
        self._watcher_lock = threading.Lock()
        self._loader: threading.Thread | None = None
        self._retention: threading.Thread | None = None
        self._closed = threading.Event()

    def save_site_settings(self, values: dict):
        """Write [site] values to modula.toml (see settings.save_site_settings) and use them from the next
        build on. Returns the new SiteSettings; raises SettingsError and changes nothing when one is bad."""
        site = save_site_settings(self.site.settings_path, values)
        self.settings = dataclasses.replace(self.settings, site=site)
        return site

    def _make_content_service(self):
        try:
            from .content import ContentService
        except ImportError:  # pragma: no cover - during bring-up
            return None
        return ContentService(self.db, self.plugins, self.settings.plugins, self.logbook, self.metrics,
                              content_settings=self.settings.content)

    def _seed_welcome(self):
        try:
            self.content.create({"type": "page", "title": "Welcome", "slug": "welcome", "body": WELCOME_BODY,
                                 "status": "published"}, run_hooks=False)
        except Exception:  # noqa: BLE001 - a welcome page is a nicety
            log.exception("could not create the welcome page")

    @classmethod
    def open(cls, path: Path | None, *, settings: Settings | None = None) -> "SiteService":
        """Open the site at path; with None, the user's default site (created and seeded on first start).
        A new site at path gets the welcome page but no plugins: the window offers to copy the examples."""
        from .site import default_site_dir

        if path is None:
            return cls(Site(default_site_dir()), settings, seed=True)
        return cls(Site(Path(path)), settings, welcome=True)

    def start(self, hot_reload: bool | None = None, *, background: bool = False):
        """Load the plugins, then watch them (hot reload). background: find the plugins now (they
        show as loading) and load them in a thread, so a server or window started next answers at
        once; ``plugins.wait_loaded()`` waits for them."""
        enabled = self.settings.plugins.hot_reload if hot_reload is None else hot_reload
        if not background:
            self.plugins.load_all()
            self._start_watcher(enabled)
            self._start_retention()
            return self
        self.plugins.discover_all()
        self._loader = threading.Thread(target=self._load_in_background, args=(enabled,),
                                        name="modula-plugin-loader", daemon=True)
        self._loader.start()
        return self

    def _start_retention(self):
        # revisions of entries nobody saves age too: thin them once per start, off the caller's thread,
        # after the plugins loaded (their start-up writes need not wait for it)
        with self._watcher_lock:
            if (self.content is None or not self.settings.content.revision_retention or self._retention is not None
                    or self._closed.is_set()):
                return
            self._retention = threading.Thread(target=self._run_retention, name="modula-revision-retention",
                                               daemon=True)
            self._retention.start()

    def _run_retention(self):
        try:
            removed = self.content.prune_revisions(stop=self._closed)
            if removed:
                log.info("revision retention removed %d old revision(s)", removed)
        except Exception:  # noqa: BLE001 - old revisions staying a while longer harms nothing
            log.exception("the revision retention pass failed")
        finally:
            try:
                self.db.close()  # this thread's connection
            except Exception:  # noqa: BLE001
                pass

    def _load_in_background(self, hot_reload: bool):
        try:
            self.plugins.load_all()
        except Exception:  # noqa: BLE001 - load_all never raises for a plugin; this is our bug
            log.exception("loading the plugins failed")
        self._start_watcher(hot_reload)
        self._start_retention()

    def _start_watcher(self, enabled: bool):
        if not enabled:
            return
        try:
            from .plugins.lifecycle.reload import HotReloader
        except ImportError:  # pragma: no cover - during bring-up
            return
        with self._watcher_lock:
            if self._closed.is_set():  # closed while the plugins loaded
                return
            self.watcher = HotReloader(self.plugins, self.settings.plugins)
            self.watcher.start()

    def close(self):
        if self._closed.is_set():
            return
        with self._watcher_lock:
            self._closed.set()
        self.plugins.stop_loading()
        if self.watcher is not None:
            self.watcher.stop()
        if self._loader is not None:
            # the plugin being loaded finishes (its own budgets bound it); no other one starts
            self._loader.join()
        with self._watcher_lock:
            retention = self._retention
        if retention is not None:
            retention.join()  # it stops after the batch it is in
        # queued after-hooks finish before the plugins they run in stop
        if self.content is not None:
            self.content.close()
        self.screens.close()
        self.plugins.shutdown()
        self.logbook.close()
        try:
            self.db.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
