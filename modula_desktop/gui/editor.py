"""The entry editor: title, slug, type, status, Markdown body with a live preview, and revisions.

A view only: the main window owns the service calls. ``changes()`` says what differs from the entry
as last saved, so a refused save leaves every unsaved keystroke in place. The body has Markdown
highlighting, Ctrl+B / Ctrl+I / Ctrl+K, and a word count; the revisions tab shows what restoring a
revision would change before it is restored. An image pasted or dropped into the body goes to the
site's media folder (through ``body.store_media``, which the window sets) and its Markdown in at the cursor.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QEvent, QIODevice, Qt, QTimer, Signal
from PySide6.QtGui import QFontDatabase, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import ValidationError
from .autosave import RestoreBar
from .content_list import short_time
from .markdown_syntax import MarkdownHighlighter, count_text, insert_link, toggle_wrap
from .message_bar import MessageBar
from .preview import MarkdownPreview
from .revision_diff import diff_html, revision_source, revision_source_short, revision_time
from .theme import is_dark, style_preview

TYPES = (("Page", "page"), ("Post", "post"))
EDITED = ("title", "slug", "type", "body")
NUMBER_ROLE = Qt.ItemDataRole.UserRole
WORDS_PER_MINUTE = 200  # the window sets the site's [window] words_per_minute


def _fields_of(entry: dict | None) -> dict:
    fields = entry.get("fields") if entry else None
    return dict(fields) if isinstance(fields, dict) else {}


def field_texts(fields: dict) -> tuple[str, str]:
    """The tags (comma-separated) and excerpt of an entry's fields, as the editor shows them."""
    tags = fields.get("tags")
    if isinstance(tags, list):
        tags = ", ".join(str(t) for t in tags if isinstance(t, (str, int, float)) and str(t).strip())
    excerpt = fields.get("excerpt")
    return (tags if isinstance(tags, str) else "", excerpt if isinstance(excerpt, str) else "")


def revision_label(rev: dict, full: bool = False) -> str:
    """"#3 · 2026-12-02 04:41:07 · editor · Title · published" (full: the source said in words)."""
    source = revision_source(rev) if full else revision_source_short(rev)
    parts = [f"#{int(rev.get('number', 0))}", revision_time(rev.get("created_at")), source,
             rev.get("title") or "(untitled)"]
    if rev.get("status"):
        parts.append(rev["status"])
    return "  ·  ".join(p for p in parts if p)


class RevisionsPanel(QWidget):
    restore_requested = Signal(int)

    def __init__(self, parent=None, current=None):
        super().__init__(parent)
        self._current = current or (lambda: {})  # the editor's values: what a restore would replace
        self.list = QListWidget(self)
        self.list.setObjectName("RevisionList")
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # not a MarkdownPreview: a theme change re-renders those from their Markdown
        self.diff = QTextBrowser(self)
        self.diff.setObjectName("RevisionDiff")
        self.diff.setOpenLinks(False)
        self.diff.document().setDocumentMargin(10)
        self.preview = MarkdownPreview(self, delay_ms=0)
        style_preview(self.preview, rerender=False)
        self.views = QTabWidget(self)
        self.views.setDocumentMode(True)
        self.views.addTab(self.diff, "Changes a restore would make")
        self.views.addTab(self.preview, "Revision, rendered")
        self.restore_button = QPushButton("Restore this revision", self)
        self.restore_button.setEnabled(False)
        self.hint = QLabel("Every save keeps a revision. Pick one to see what restoring it would change "
                           "(red goes, green comes back); restoring saves it as a new revision.", self)
        self.hint.setObjectName("MutedLabel")
        self.hint.setWordWrap(True)
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(self.list)
        split.addWidget(self.views)
        split.setSizes([160, 240])
        split.setChildrenCollapsible(False)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.restore_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.hint)
        layout.addWidget(split, 1)
        layout.addLayout(buttons)
        self._revisions: dict[int, dict] = {}
        self.list.currentItemChanged.connect(self._picked)
        self.restore_button.clicked.connect(self._restore)

    def set_revisions(self, revisions: list[dict]):
        self.list.clear()
        self._revisions = {}
        for rev in sorted(revisions, key=lambda r: r.get("number", 0), reverse=True):
            number = int(rev.get("number", 0))
            self._revisions[number] = rev
            item = QListWidgetItem(revision_label(rev))
            item.setData(NUMBER_ROLE, number)
            item.setToolTip(revision_label(rev, full=True))
            self.list.addItem(item)
        self.preview.render_now("")
        self.diff.setHtml("")
        self.restore_button.setEnabled(False)

    def _picked(self, item, _prev):
        if item is None:
            self.restore_button.setEnabled(False)
            self.preview.render_now("")
            self.diff.setHtml("")
            return
        rev = self._revisions.get(item.data(NUMBER_ROLE), {})
        self.preview.render_now(rev.get("body", ""))
        self.show_diff()
        # the newest revision is what is saved now: restoring it would change nothing
        self.restore_button.setEnabled(self.list.row(item) > 0)

    def show_diff(self):
        """Show what restoring the picked revision would change in the editor's current text."""
        number = self.selected_number()
        if number is None:
            return
        self.diff.setHtml(diff_html(self._current(), self._revisions.get(number, {}), is_dark(self.palette())))

    def diff_text(self) -> str:
        return self.diff.toPlainText()

    def changeEvent(self, event):  # noqa: N802 - Qt override
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self.show_diff()
        super().changeEvent(event)

    def selected_number(self) -> int | None:
        item = self.list.currentItem()
        return None if item is None else int(item.data(NUMBER_ROLE))

    def _restore(self):
        number = self.selected_number()
        if number is not None:
            self.restore_requested.emit(number)


def _local_files(mime) -> list[Path]:
    return [Path(u.toLocalFile()) for u in mime.urls() if u.isLocalFile()] if mime.hasUrls() else []


IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def _has_image(mime) -> bool:
    return mime.hasImage() or any(mime.hasFormat(t) for t in IMAGE_TYPES)


def _image_bytes(mime) -> bytes:
    """A pasted image's bytes: as the source offered them (PNG, JPEG…), else Qt's image saved as PNG."""
    for fmt in IMAGE_TYPES:
        if mime.hasFormat(fmt):
            data = bytes(mime.data(fmt))
            if data:
                return data
    image = mime.imageData()
    buf = QByteArray()
    device = QBuffer(buf)
    device.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(device, "PNG")
    device.close()
    return bytes(buf)


class BodyEdit(QPlainTextEdit):
    """The Markdown body. An image pasted or dropped in is stored by ``store_media`` (the window points it
    at the site's media folder) and its Markdown goes in at the cursor, its alt text selected for typing;
    a file that is not an image is refused with ``media_refused``. Text pastes as text."""

    media_refused = Signal(str)
    media_added = Signal(list)  # the Markdown of each image added

    def __init__(self, parent=None):
        super().__init__(parent)
        self.store_media = None  # callable(bytes | Path, alt) -> Markdown; None: plain text only

    def _takes(self, mime) -> str | None:
        if self.store_media is None:
            return None
        if _local_files(mime):
            return "files"
        # an office suite puts a picture of copied text beside the text: the text wins
        if _has_image(mime) and not mime.hasText():
            return "image"
        return None

    def canInsertFromMimeData(self, source) -> bool:  # noqa: N802 - Qt override
        return self._takes(source) is not None or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source):  # noqa: N802 - Qt override
        kind = self._takes(source)
        if kind == "files":
            self.insert_media([(p, p.stem) for p in _local_files(source)])
        elif kind == "image":
            self.insert_media([(_image_bytes(source), "")])
        else:
            super().insertFromMimeData(source)

    def insert_media(self, items: list) -> list[str]:
        """Store each (bytes or path, alt) and insert the Markdown of those that are images at the cursor."""
        added, refused = [], []
        for source, alt in items:
            try:
                added.append(self.store_media(source, alt))
            except ValidationError as exc:
                refused.append(f"{source.name}: {exc}" if isinstance(source, Path) else str(exc))
            except OSError as exc:
                refused.append(f"{getattr(source, 'name', 'the image')}: {exc.strerror or exc}.")
        if added:
            cursor = self.textCursor()
            cursor.beginEditBlock()
            start = cursor.selectionStart()
            cursor.insertText("\n".join(added))
            cursor.endEditBlock()
            if len(added) == 1:  # the alt text, selected: the author types over it
                alt_end = added[0].index("](")
                cursor.setPosition(start + 2)
                cursor.setPosition(start + alt_end, cursor.MoveMode.KeepAnchor)
            self.setTextCursor(cursor)
            self.media_added.emit(added)
        if refused:
            self.media_refused.emit(" ".join(refused))
        return added


class EntryEditor(QWidget):
    dirty_changed = Signal(bool)
    restore_requested = Signal(int)
    loaded = Signal(object)  # the entry now shown (None: a new one), after load() and mark_saved()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.entry: dict | None = None  # as last loaded or saved; None: a new entry not yet created
        self._baseline = {"title": "", "slug": "", "type": "page", "body": "", "fields": {}}
        # the entry's fields as last loaded or saved, and the tags/excerpt text shown for them: fields the
        # editor does not show go back unchanged, and nothing is sent for them unless the text was edited
        self._base_fields: dict = {}
        self._base_texts = ("", "")
        self._dirty = False
        self._loading = False

        self.message_bar = MessageBar(self)
        self.restore_bar = RestoreBar(self)
        self.words_per_minute = WORDS_PER_MINUTE

        self.heading = QLabel(self)
        self.heading.setObjectName("EditorHeading")
        self.status_badge = QLabel(self)
        self.status_badge.setObjectName("StatusBadge")
        self.dirty_label = QLabel("● Unsaved changes", self)
        self.dirty_label.setObjectName("DirtyLabel")
        self.dirty_label.hide()
        head = QHBoxLayout()
        head.setSpacing(10)
        head.addWidget(self.heading, 1)
        head.addWidget(self.dirty_label)
        head.addWidget(self.status_badge)

        self.title = QLineEdit(self)
        self.title.setPlaceholderText("Title")
        self.slug = QLineEdit(self)
        self.slug.setPlaceholderText("made from the title when left empty")
        self.type = QComboBox(self)
        for label, value in TYPES:
            self.type.addItem(label, value)
        self.meta = QLabel(self)
        self.meta.setObjectName("MutedLabel")
        self.meta.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        type_row = QHBoxLayout()
        type_row.addWidget(self.type)
        type_row.addSpacing(12)
        type_row.addWidget(self.meta, 1)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        form.setHorizontalSpacing(10)
        form.setVerticalSpacing(6)
        form.addRow("T&itle", self.title)
        form.addRow("S&lug", self.slug)
        type_label = QLabel("T&ype", self)
        type_label.setBuddy(self.type)
        form.addRow(type_label, type_row)
        self.tags = QLineEdit(self)
        self.tags.setPlaceholderText("comma-separated, e.g. travel, notes (each gets a page on the site)")
        self.excerpt = QLineEdit(self)
        self.excerpt.setPlaceholderText("shown on the home page and in feeds; the first paragraph when empty")
        form.addRow("T&ags", self.tags)
        form.addRow("E&xcerpt", self.excerpt)
        self.form = form

        self.body = BodyEdit(self)
        self.body.setObjectName("BodyEdit")
        self.body.media_refused.connect(lambda text: self.show_error(text, "Not added to the site's media"))
        self.body.setPlaceholderText("Write the body in Markdown…")
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        mono.setPointSizeF(max(mono.pointSizeF(), 10.0))
        self.body.setFont(mono)
        self.body.setTabChangesFocus(False)
        self.body.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.highlighter = MarkdownHighlighter(self.body.document(), is_dark(self.palette()))
        # on the text box only: Ctrl+B elsewhere (a title field) is not a Markdown edit
        context = Qt.ShortcutContext.WidgetShortcut
        self.shortcut_bold = QShortcut(QKeySequence(QKeySequence.StandardKey.Bold), self.body, context=context)
        self.shortcut_bold.activated.connect(lambda: toggle_wrap(self.body, "**"))
        self.shortcut_italic = QShortcut(QKeySequence(QKeySequence.StandardKey.Italic), self.body, context=context)
        self.shortcut_italic.activated.connect(lambda: toggle_wrap(self.body, "*"))
        self.shortcut_link = QShortcut(QKeySequence("Ctrl+K"), self.body, context=context)
        self.shortcut_link.activated.connect(lambda: insert_link(self.body))
        self.body.setToolTip("Markdown: Ctrl+B bold, Ctrl+I italic, Ctrl+K link; paste or drop an image to "
                             "add it to the site's media")
        self.word_count = QLabel(self)
        self.word_count.setObjectName("WordCount")

        self.preview = MarkdownPreview(self)
        style_preview(self.preview, rerender=False)
        self.revisions = RevisionsPanel(self, current=self.values)
        self.tabs = QTabWidget(self)
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.preview, "Preview")
        self.tabs.addTab(self.revisions, "Revisions")

        self.split = QSplitter(Qt.Orientation.Horizontal, self)
        self.split.addWidget(self.body)
        self.split.addWidget(self.tabs)
        self.split.setChildrenCollapsible(False)
        self.split.setStretchFactor(0, 1)
        self.split.setStretchFactor(1, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.setSpacing(8)
        layout.addWidget(self.message_bar)
        layout.addWidget(self.restore_bar)
        layout.addLayout(head)
        layout.addLayout(form)
        # custom fields edited by plugin interfaces (plugin_fields.FieldsPanel puts itself here)
        self.fields_area = QVBoxLayout()
        layout.addLayout(self.fields_area)
        layout.addWidget(self.split, 1)
        layout.addWidget(self.word_count)

        self.title.textChanged.connect(self._edited)
        self.slug.textChanged.connect(self._edited)
        self.type.currentIndexChanged.connect(self._edited)
        self.type.currentIndexChanged.connect(self._show_post_rows)
        self.tags.textChanged.connect(self._edited)
        self.excerpt.textChanged.connect(self._edited)
        self.body.textChanged.connect(self._body_edited)
        self.revisions.restore_requested.connect(self.restore_requested)
        self.tabs.currentChanged.connect(lambda _i: self.revisions.show_diff())
        self._diff_timer = QTimer(self)  # the diff follows typing, debounced like the preview
        self._diff_timer.setSingleShot(True)
        self._diff_timer.setInterval(300)
        self._diff_timer.timeout.connect(self.revisions.show_diff)
        self.load(None)

    def changeEvent(self, event):  # noqa: N802 - Qt override
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            dark = is_dark(self.palette())
            if getattr(self, "highlighter", None) is not None and self.highlighter.dark != dark:
                self.highlighter.set_dark(dark)
        super().changeEvent(event)

    def _show_count(self):
        self.word_count.setText(count_text(self.body.toPlainText(), self.words_per_minute))

    def apply_values(self, values: dict):
        """Put values (title, slug, type, body, e.g. a recovered autosave) into the fields as unsaved edits."""
        for key in EDITED:
            if isinstance(values.get(key), str) and (key != "type" or self.type.findData(values[key]) >= 0):
                self._set_value(key, values[key])
        if isinstance(values.get("fields"), dict):
            self._set_value("fields", values["fields"])
        self._show_meta()
        self.preview.render_now(self.body.toPlainText())
        self._show_count()
        self._set_dirty(self.values() != self._baseline)

    # ---- loading -------------------------------------------------------------------------
    def load(self, entry: dict | None, new_type: str = "page"):
        """Show entry (None: a blank new entry of new_type). Discards unsaved edits: ask first."""
        self.entry = dict(entry) if entry else None
        base = {k: (entry.get(k) or "") for k in EDITED} if entry else \
            {"title": "", "slug": "", "type": new_type, "body": ""}
        self._base_fields = _fields_of(entry)
        self._base_texts = field_texts(self._base_fields)
        base["fields"] = dict(self._base_fields)
        self._baseline = base
        self._loading = True
        try:
            self.title.setText(base["title"])
            self.slug.setText(base["slug"])
            self.type.setCurrentIndex(max(0, self.type.findData(base["type"])))
            self.body.setPlainText(base["body"])
            self.tags.setText(self._base_texts[0])
            self.excerpt.setText(self._base_texts[1])
        finally:
            self._loading = False
        self._show_post_rows()
        self.message_bar.hide()
        self._show_meta()
        self._show_count()
        self.preview.render_now(base["body"])
        self._set_dirty(False)
        if entry is None:
            self.revisions.set_revisions([])
        self.loaded.emit(self.entry)

    def mark_saved(self, entry: dict, sent: dict | None = None):
        """The service stored entry. Where the editor still shows what was sent, adopt the stored values
        (a before-hook may have changed them); anything typed since stays, and stays unsaved."""
        sent = sent if sent is not None else self.values()
        current = self.values()
        self.entry = dict(entry)
        shown = (self.tags.text(), self.excerpt.text())
        sent_texts = field_texts(sent["fields"]) if isinstance(sent.get("fields"), dict) else shown
        self._base_fields = _fields_of(entry)
        self._base_texts = field_texts(self._base_fields)
        self._baseline = {k: (entry.get(k) or "") for k in EDITED}
        self._baseline["fields"] = dict(self._base_fields)
        self._loading = True
        try:
            for key in EDITED:
                if current[key] == sent.get(key, current[key]) and current[key] != self._baseline[key]:
                    self._set_value(key, self._baseline[key])
            # tags and excerpt as stored (a hook may have changed them), unless edited since they were sent
            if field_texts(current["fields"]) == sent_texts:
                self.tags.setText(self._base_texts[0])
                self.excerpt.setText(self._base_texts[1])
        finally:
            self._loading = False
        self._show_meta()
        self.preview.schedule(self.body.toPlainText())
        self._set_dirty(self.values() != self._baseline)
        self.loaded.emit(self.entry)

    def _set_value(self, key, value):
        if key == "title":
            self.title.setText(value)
        elif key == "slug":
            self.slug.setText(value)
        elif key == "type":
            self.type.setCurrentIndex(max(0, self.type.findData(value)))
        elif key == "body":
            self.body.setPlainText(value)
        elif key == "fields":
            tags, excerpt = field_texts(value)
            self.tags.setText(tags)
            self.excerpt.setText(excerpt)

    def _show_post_rows(self, *_):
        """Tags and an excerpt are for posts (tag pages, the home page, feeds)."""
        post = self.type.currentData() == "post"
        self.form.setRowVisible(self.tags, post)
        self.form.setRowVisible(self.excerpt, post)

    def _show_meta(self):
        e = self.entry
        if e is None:
            kind = self.type.currentData() or self._baseline["type"]
            self.heading.setText(f"New {kind}")
            self._badge("new", "Not saved yet")
            self.meta.setText("")
            return
        self.heading.setText(e.get("title") or "(untitled)")
        status = e.get("status") or "draft"
        self._badge(status, status.capitalize())
        parts = []
        if e.get("published_at") and status == "published":
            parts.append(f"published {short_time(e['published_at'])}")
        if e.get("updated_at"):
            parts.append(f"updated {short_time(e['updated_at'])}")
        if e.get("created_at"):
            parts.append(f"created {short_time(e['created_at'])}")
        self.meta.setText("  ·  ".join(parts))

    def _badge(self, status: str, text: str):
        self.status_badge.setText(text)
        self.status_badge.setProperty("status", status)
        self.status_badge.style().unpolish(self.status_badge)
        self.status_badge.style().polish(self.status_badge)

    # ---- state ---------------------------------------------------------------------------
    def values(self) -> dict:
        return {"title": self.title.text(), "slug": self.slug.text().strip(), "type": self.type.currentData(),
                "body": self.body.toPlainText(), "fields": self._fields_now()}

    def _fields_now(self) -> dict:
        """The entry's fields with the tags and excerpt as shown: unchanged unless their text was edited."""
        texts = (self.tags.text(), self.excerpt.text())
        fields = dict(self._base_fields)
        if texts == self._base_texts:
            return fields
        tags = [t.strip() for t in texts[0].split(",") if t.strip()]
        if tags:
            fields["tags"] = tags
        else:
            fields.pop("tags", None)
        if texts[1].strip():
            fields["excerpt"] = texts[1].strip()
        else:
            fields.pop("excerpt", None)
        return fields

    def changes(self) -> dict:
        """The fields that differ from the entry as last saved."""
        now = self.values()
        return {k: v for k, v in now.items() if v != self._baseline[k]}

    def is_new(self) -> bool:
        return self.entry is None

    def is_dirty(self) -> bool:
        return self._dirty

    def status(self) -> str | None:
        return None if self.entry is None else self.entry.get("status")

    def _edited(self, *_):
        if self._loading:
            return
        self._set_dirty(self.values() != self._baseline)
        if self.entry is None:
            self._show_meta()

    def _body_edited(self):
        if self._loading:
            return
        self.preview.schedule(self.body.toPlainText())
        self._show_count()
        if self.tabs.currentWidget() is self.revisions:
            self._diff_timer.start()
        self._edited()

    def _set_dirty(self, dirty: bool):
        self.dirty_label.setVisible(dirty)
        if dirty != self._dirty:
            self._dirty = dirty
            self.dirty_changed.emit(dirty)

    # ---- messages ------------------------------------------------------------------------
    def show_error(self, text: str, title: str = ""):
        self.message_bar.show_message(text, "error", title)

    def show_info(self, text: str, title: str = ""):
        self.message_bar.show_message(text, "info", title)
