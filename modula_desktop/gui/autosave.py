"""Autosave of unsaved editor text: ``<site>/.modula/autosave/<entry id or "new">.json``.

The window writes the file every few seconds while the editor has unsaved changes and removes it when
they are saved or discarded, so a file that is there at start-up is text a crash (or a kill) would
have lost: the editor offers to restore it.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton

from ..core.storage import utc_now

log = logging.getLogger(__name__)

NEW = "new"
_KEY = re.compile(r"^[0-9A-Za-z]{1,64}$")  # entry ids are ULIDs; anything else is not ours


class DraftStore:
    """The autosave files of one site."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @staticmethod
    def key(entry_id: str | None) -> str:
        return entry_id if entry_id else NEW

    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"not an autosave key: {key!r}")
        return self.folder / f"{key}.json"

    def write(self, entry_id: str | None, values: dict, *, title: str = "", updated_at: str | None = None):
        """Atomically (a crash mid-write keeps the previous file) store the editor's values."""
        key = self.key(entry_id)
        data = {"entry_id": entry_id, "values": values, "title": title, "entry_updated_at": updated_at,
                "saved_at": utc_now()}
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False)
            os.replace(tmp, self.path(key))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def remove(self, entry_id: str | None):
        try:
            self.path(self.key(entry_id)).unlink()
        except FileNotFoundError:
            pass
        except OSError:
            log.exception("could not remove the autosave of %s", entry_id)

    def drafts(self) -> list[dict]:
        """The readable autosave files, newest first (an unreadable one is logged and skipped)."""
        out = []
        if not self.folder.is_dir():
            return out
        for path in self.folder.glob("*.json"):
            if not _KEY.match(path.stem):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                values = data["values"]
                if not isinstance(values, dict) or not all(isinstance(values.get(k, ""), str)
                                                           for k in ("title", "slug", "type", "body")):
                    raise ValueError("values are not texts")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring the unreadable autosave %s: %s", path, exc)
                continue
            entry_id = data.get("entry_id") if path.stem != NEW else None
            out.append({"key": path.stem, "entry_id": entry_id, "values": values,
                        "entry_updated_at": data.get("entry_updated_at"),
                        "title": str(data.get("title") or values.get("title") or ""),
                        "saved_at": str(data.get("saved_at") or "")})
        out.sort(key=lambda d: d["saved_at"], reverse=True)
        return out


class RestoreBar(QFrame):
    """"Unsaved text of … was recovered: Restore / Discard" above the editor."""

    restore_clicked = Signal()
    discard_clicked = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("RestoreBar")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.label = QLabel(self)
        self.label.setObjectName("RestoreBarText")
        self.label.setWordWrap(True)
        self.restore_button = QPushButton("Restore", self)
        self.discard_button = QPushButton("Discard", self)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.restore_button)
        layout.addWidget(self.discard_button)
        self.restore_button.clicked.connect(self.restore_clicked)
        self.discard_button.clicked.connect(self.discard_clicked)
        self.hide()


class AutosaveController(QObject):
    """Writes the editor's unsaved text every interval, removes it once saved or discarded, and offers
    the drafts found at start-up in the editor's restore bar. Lives on the GUI thread."""

    def __init__(self, window, store: DraftStore, interval_ms: int):
        super().__init__(window)
        self.window = window
        self.editor = window.editor
        self.store = store
        self._written: str | None = None  # the key of the file written for the current edits
        self._written_values: dict | None = None  # what it holds: no rewrite while nothing changed
        self._pending: list[dict] = []
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.flush)
        self.editor.dirty_changed.connect(self._dirty_changed)
        bar = self.editor.restore_bar
        bar.restore_clicked.connect(self.restore_offered)
        bar.discard_clicked.connect(self.discard_offered)

    def start(self):
        self._pending = self.store.drafts()
        self._offer_next()
        self.timer.start()

    def stop(self):
        self.timer.stop()

    # ---- writing -------------------------------------------------------------------------
    def flush(self):
        """Write the editor's text now if it has unsaved changes (not once stopped)."""
        if not self.editor.is_dirty() or not self.timer.isActive():
            return
        entry = self.editor.entry
        key = self.store.key(entry["id"] if entry else None)
        values = self.editor.values()
        if self._written == key and self._written_values == values:
            return
        if self._written is not None and self._written != key:
            self.store.remove(None if self._written == NEW else self._written)
        try:
            self.store.write(entry["id"] if entry else None, values, title=values.get("title", ""),
                             updated_at=entry.get("updated_at") if entry else None)
        except OSError:
            log.exception("could not write the autosave")
            return
        self._written, self._written_values = key, values

    def discard_current(self):
        """The author chose to throw the unsaved text away."""
        if self._written is not None:
            self.store.remove(None if self._written == NEW else self._written)
            self._written = self._written_values = None

    def _dirty_changed(self, dirty: bool):
        if not dirty:
            self.discard_current()  # saved, reverted or replaced: nothing left to recover

    # ---- the offer at start-up ---------------------------------------------------------------
    def current_offer(self) -> dict | None:
        return self._pending[0] if self._pending else None

    def _offer_next(self):
        bar = self.editor.restore_bar
        draft = self.current_offer()
        if draft is None:
            bar.hide()
            return
        from .revision_diff import revision_time

        what = f"“{draft['title']}”" if draft["title"] else "an untitled entry"
        more = f" ({len(self._pending) - 1} more after this one)" if len(self._pending) > 1 else ""
        bar.label.setText(f"Unsaved changes to {what} from {revision_time(draft['saved_at'])} were kept when "
                          f"the window closed without saving them{more}. Restore them into the editor?")
        bar.show()

    def restore_offered(self):
        draft = self.current_offer()
        if draft is None:
            return
        if self.window.editor.is_dirty():
            self.window.statusBar().showMessage("Save or discard the current changes first", 4000)
            return
        self._pending.pop(0)
        gone = False
        newer = False
        if draft["entry_id"]:
            from ..core.errors import NotFound

            try:
                stored = self.window.content.get(draft["entry_id"])
                newer = bool(draft["entry_updated_at"]) and stored["updated_at"] != draft["entry_updated_at"]
                self.window.open_entry(draft["entry_id"])
            except NotFound:
                gone = True
        if not draft["entry_id"] or gone:
            self.window.editor.load(None, draft["values"].get("type") or "page")
            self.window.list.select_id(None)
        self.store.remove(draft["entry_id"] if draft["key"] != NEW else None)
        self.editor.apply_values(draft["values"])
        self.flush()  # under the key it has now, so a second crash keeps it too
        if gone:
            self.editor.show_info("The entry these changes belonged to no longer exists; Save creates it "
                                  "again as a new entry.")
        elif newer:
            self.editor.message_bar.show_message(
                "The entry was saved again after these changes were made. Saving now replaces that text; "
                "its Revisions tab shows what would change.", "warning")
        self.window._update_actions()
        self._offer_next()

    def discard_offered(self):
        draft = self.current_offer()
        if draft is None:
            return
        self._pending.pop(0)
        self.store.remove(draft["entry_id"] if draft["key"] != NEW else None)
        self._offer_next()
