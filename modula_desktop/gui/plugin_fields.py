"""Custom fields edited by plugin field interfaces (SPEC 3.12), in the entry editor.

A field is declared in modula.toml (``[fields.<name>]`` with ``type = "plugin"``, ``plugin`` and
``interface``); its value lives in the entry's ``fields`` under ``<name>``. The interface is a coroutine
like a screen (``interfaces/<name>.lua``, ``function interface(ctx)``, ``ctx.value`` the field's value):
an ``overlay`` one opens in a dialog from the field's Edit button, an ``inline`` one yields single
primitives drawn in the form itself. ``{action = "commit", value = ...}`` writes the value through the
content service (so the content hooks run, as for any save; the text being edited stays as it is);
``{action = "cancel"}`` leaves it.
"""
from __future__ import annotations

import re

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.plugins.api import tui as protocol
from ..core.plugins.runtime.screens import Act, Ended, Failed
from .plugin_screens import FAILURE_TITLES, SessionHost, char_size

COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class InterfaceDialog(SessionHost):
    """The body of an overlay interface's dialog; ``finished(committed, value)`` ends it."""

    finished = Signal(bool, str)

    def __init__(self, host, plugin: str, name: str, value: str, config: dict | None = None, parent=None):
        super().__init__(host, parent)
        self.plugin, self.name = plugin, name
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        self.error = QLabel(self)
        self.error.setObjectName("ScreenMessage")
        self.error.setWordWrap(True)
        self.error.hide()
        box.addWidget(self.error)
        box.addWidget(self.view, 1)
        self.value, self.config = value, config or {}

    def start(self):
        w, h = char_size(self)
        self.open_session(self.plugin, "interface", self.name, protocol.field_init_event(w, h, self.value, self.config))

    def act(self, out: Act):
        super().act(out)
        if out.name == "commit":
            v = out.params.get("value")
            self.close_session()
            self.finished.emit(True, v if isinstance(v, str) else protocol._lua_text(v))
        elif out.name == "cancel":
            self.close_session()
            self.finished.emit(False, "")

    def failed(self, out: Failed):
        self.error.setText(f"{FAILURE_TITLES.get(out.kind, 'The interface failed')}: {out.message}")
        self.error.show()
        self.view.hide()

    def ended(self, out: Ended):
        self.finished.emit(False, "")


def open_overlay(host, plugin: str, name: str, label: str, value: str, parent=None) -> QDialog:
    """The dialog of an overlay interface, shown (not run: it never blocks the event loop)."""
    dialog = QDialog(parent)
    dialog.setObjectName("InterfaceDialog")
    dialog.setWindowTitle(f"{label} — {plugin}")
    dialog.resize(680, 420)
    box = QVBoxLayout(dialog)
    body = InterfaceDialog(host, plugin, name, value, parent=dialog)
    box.addWidget(body, 1)
    dialog.body = body
    dialog.result_value = None

    def finished(committed, v):
        dialog.result_value = v if committed else None
        if committed:
            dialog.accept()
        else:
            dialog.reject()
    body.finished.connect(finished)
    dialog.finished.connect(lambda _r: body.close_session())
    dialog.open()
    body.start()
    return dialog


class InlineInterface(SessionHost):
    """An inline interface in the form: it yields single primitives; commit sets the field."""

    committed = Signal(str)

    def __init__(self, host, plugin: str, name: str, parent=None):
        super().__init__(host, parent)
        self.plugin, self.name = plugin, name
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        self.error = QLabel(self)
        self.error.setWordWrap(True)
        self.error.hide()
        box.addWidget(self.error)
        box.addWidget(self.view)
        self.setMinimumHeight(60)

    def start(self, value: str):
        self.error.hide()
        self.view.show()
        self.open_session(self.plugin, "interface", self.name, protocol.field_init_event(60, 3, value))

    def act(self, out: Act):
        super().act(out)
        if out.name == "commit":
            v = out.params.get("value")
            self.committed.emit(v if isinstance(v, str) else protocol._lua_text(v))

    def failed(self, out: Failed):
        self.error.setText(f"{FAILURE_TITLES.get(out.kind, 'The interface failed')}: {out.message}")
        self.error.show()
        self.view.hide()


class FieldsPanel(QWidget):
    """The [fields] of modula.toml for the entry in the editor: each shows its value and its editor."""

    def __init__(self, service, tasks, editor, parent=None):
        super().__init__(parent or editor)
        self.service, self.tasks, self.editor = service, tasks, editor
        self.host = service.screens
        self.defs = dict(service.settings.fields)
        self.rows: dict[str, dict] = {}
        self.dialog: QDialog | None = None
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setHorizontalSpacing(10)
        for name, d in self.defs.items():
            row = QWidget(self)
            line = QHBoxLayout(row)
            line.setContentsMargins(0, 0, 0, 0)
            swatch = QLabel(row)
            swatch.setFixedSize(18, 18)
            swatch.hide()
            value = QLabel(row)
            value.setObjectName("FieldValue")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            edit = QPushButton("Edit…", row)
            edit.setObjectName("FieldEdit")
            edit.clicked.connect(lambda _=False, n=name: self.edit(n))
            note = QLabel(row)
            note.setObjectName("MutedLabel")
            line.addWidget(swatch)
            line.addWidget(value, 1)
            line.addWidget(note)
            line.addWidget(edit)
            inline = None
            form.addRow(f"{d.label or name}", row)
            self.rows[name] = {"swatch": swatch, "value": value, "edit": edit, "note": note, "inline": inline,
                               "row": row, "form": form}
        self.setVisible(bool(self.defs))
        editor.loaded.connect(self.show_entry)
        self.show_entry(editor.entry)

    def _interface(self, name):
        d = self.defs[name]
        return self.host.entry(d.plugin, "interface", d.interface)

    def show_entry(self, entry: dict | None):
        fields = (entry or {}).get("fields") or {}
        if not isinstance(fields, dict):
            fields = {}
        for name, r in self.rows.items():
            v = fields.get(name)
            text = "" if v is None else str(v)
            r["value"].setText(text or "(not set)")
            r["swatch"].setVisible(bool(COLOR.match(text)))
            if COLOR.match(text):
                r["swatch"].setStyleSheet(f"background:{text}; border:1px solid palette(mid); border-radius:3px;")
            iface = self._interface(name)
            why = ""
            if entry is None:
                why = "save the entry first"
            elif iface is None:
                why = f"plugin {self.defs[name].plugin} has no running interface '{self.defs[name].interface}'"
            elif not iface.approved:
                why = "the interface is not approved (Plugins window)"
            r["note"].setText(why)
            r["edit"].setEnabled(not why)
            if iface is not None and iface.mode == "inline" and not why:
                shown = (entry.get("id"), text, iface.version)
                alive = r["inline"] is not None and r["inline"].session is not None
                if not alive or r.get("shown") != shown:  # a save of other fields does not restart it
                    r["shown"] = shown
                    self._inline(name, text)
            elif r["inline"] is not None:
                r["inline"].close_session()
                r["inline"].hide()
                r["shown"] = None

    def _inline(self, name, value):
        r = self.rows[name]
        d = self.defs[name]
        if r["inline"] is None:
            w = InlineInterface(self.host, d.plugin, d.interface, r["row"])
            w.committed.connect(lambda v, n=name: self.commit(n, v))
            r["row"].layout().insertWidget(2, w, 2)
            r["inline"] = w
        r["edit"].hide()
        r["inline"].show()
        r["inline"].start(value)

    def edit(self, name: str) -> QDialog | None:
        """Open the field's overlay interface (a dialog); its commit writes the field."""
        d = self.defs[name]
        iface = self._interface(name)
        if iface is None or self.editor.entry is None:
            return None
        value = ((self.editor.entry or {}).get("fields") or {}).get(name)
        if self.dialog is not None:  # the last one is done with: let it go
            self.dialog.body.close_session()
            self.dialog.deleteLater()
        dialog = open_overlay(self.host, d.plugin, d.interface, iface.label, "" if value is None else str(value),
                              self.window())
        dialog.accepted.connect(lambda n=name, dl=dialog: self.commit(n, dl.result_value))
        self.dialog = dialog
        return dialog

    def commit(self, name: str, value: str):
        """Write one field through the content service (off the GUI thread; hooks run as for any save)."""
        entry = self.editor.entry
        if entry is None or value is None:
            return
        entry_id = entry["id"]
        content = self.service.content

        def write():
            current = content.get(entry_id)
            fields = dict(current.get("fields") or {})
            fields[name] = value
            return content.update(entry_id, {"fields": fields}, source="editor")

        def done(saved):
            if self.editor.entry is not None and self.editor.entry.get("id") == saved["id"]:
                self.editor.entry["fields"] = saved["fields"]
                self.editor.entry["updated_at"] = saved["updated_at"]
                self.show_entry(self.editor.entry)

        def failed(exc):
            self.editor.show_error(str(exc), f"{self.defs[name].label or name} was not saved")

        self.tasks.run(write, done, failed)
