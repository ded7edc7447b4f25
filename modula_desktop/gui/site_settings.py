"""The site settings dialog: the [site] table of modula.toml (SPEC 9) — title, description, base URL,
language, author, theme, posts per page and permalink style.

Each field is checked as it is typed by the same rules modula.toml is loaded with
(``core.settings.site_problems``), and a problem is said under its field; Save stays off until there is
none. Saving goes through ``service.save_site_settings``, which edits only [site] and keeps the rest of
the file, its comments included.
"""
from __future__ import annotations

import dataclasses

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.build import available_themes
from ..core.errors import SettingsError
from ..core.settings import MAX_POSTS_PER_PAGE, PERMALINK_STYLES, SiteSettings, site_problems

FIELDS = (  # key, label, the words a problem's sentence starts with
    ("title", "&Title", "The title"),
    ("description", "&Description", "The description"),
    ("base_url", "&Base URL", "The base URL"),
    ("language", "&Language", "The language"),
    ("author", "&Author", "The author"),
    ("theme", "T&heme", "The theme"),
    ("posts_per_page", "&Posts per page", "Posts per page"),
    ("permalink", "Per&malink", "The permalink"),
)
PERMALINK_LABELS = {
    "/<slug>/": "/<slug>/  — example.com/my-post/",
    "/<year>/<slug>/": "/<year>/<slug>/  — example.com/2026/my-post/",
    "/<year>/<month>/<slug>/": "/<year>/<month>/<slug>/  — example.com/2026/05/my-post/",
    "/<year>/<month>/<day>/<slug>/": "/<year>/<month>/<day>/<slug>/",
    "/<slug>.html": "/<slug>.html  — example.com/my-post.html",
}


def problem_text(key: str, sentence: str) -> str:
    """"base_url must start with …" -> "The base URL must start with …"."""
    words = next((w for k, _label, w in FIELDS if k == key), key)
    rest = sentence[len(key):] if sentence.startswith(key) else " " + sentence
    return words + rest + ("" if rest.endswith(".") else ".")


class SiteSettingsDialog(QDialog):
    saved = Signal(object)  # the new SiteSettings

    def __init__(self, service, parent=None):
        super().__init__(parent)
        self.service = service
        self.setObjectName("SiteSettingsDialog")
        self.setWindowTitle("Site Settings")
        self.setMinimumWidth(560)
        current = service.settings.site

        self.title = QLineEdit(current.title, self)
        self.description = QLineEdit(current.description, self)
        self.description.setPlaceholderText("one sentence for search engines and feeds")
        self.base_url = QLineEdit(current.base_url, self)
        self.base_url.setPlaceholderText("https://example.com/")
        self.language = QLineEdit(current.language, self)
        self.language.setPlaceholderText("en, de, pt-BR…")
        self.language.setMaximumWidth(140)
        self.author = QLineEdit(current.author, self)
        self.theme = QComboBox(self)
        themes = available_themes(service.site.root)
        for name in themes:
            self.theme.addItem("Default (built in)" if name == "default" else name, name)
        if current.theme not in themes:
            self.theme.addItem(f"{current.theme} (missing from themes/)", current.theme)
        self.theme.setCurrentIndex(self.theme.findData(current.theme))
        self.posts_per_page = QSpinBox(self)
        self.posts_per_page.setRange(1, MAX_POSTS_PER_PAGE)
        self.posts_per_page.setValue(max(1, min(MAX_POSTS_PER_PAGE, current.posts_per_page)))
        self.posts_per_page.setMaximumWidth(100)
        self.permalink = QComboBox(self)
        self.permalink.setEditable(True)
        self.permalink.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        for style in PERMALINK_STYLES:
            self.permalink.addItem(PERMALINK_LABELS.get(style, style), style)
        self.permalink.setCurrentIndex(-1)
        self.permalink.setEditText(current.permalink)
        self.permalink.setToolTip("Where a post is written: <slug>, <year>, <month> and <day>; ends in / or .html. "
                                  "Pages always use /<slug>/.")
        # a preset picked from the list puts its pattern, not its label, in the field
        self.permalink.activated.connect(lambda i: self.permalink.setEditText(self.permalink.itemData(i)))

        self.intro = QLabel(f"The <b>[site]</b> section of <code>{service.site.settings_path}</code>. "
                            "The next build uses these; the rest of the file is left as it is.", self)
        self.intro.setObjectName("MutedLabel")
        self.intro.setWordWrap(True)
        self.intro.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error = QLabel(self)  # a problem with the file itself
        self.error.setObjectName("FieldError")
        self.error.setWordWrap(True)
        self.error.hide()

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        form.setVerticalSpacing(4)
        self.problem_labels: dict[str, QLabel] = {}
        for key, label, _words in FIELDS:
            widget = getattr(self, key)
            box = QWidget(self)
            col = QVBoxLayout(box)
            col.setContentsMargins(0, 0, 0, 2)
            col.setSpacing(2)
            col.addWidget(widget)
            problem = QLabel(box)
            problem.setObjectName("FieldError")
            problem.setWordWrap(True)
            problem.hide()
            col.addWidget(problem)
            self.problem_labels[key] = problem
            name = QLabel(label, self)
            name.setBuddy(widget)
            form.addRow(name, box)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                        | QDialogButtonBox.StandardButton.Cancel, self)
        self.save_button = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.intro)
        layout.addSpacing(4)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addStretch(1)
        layout.addWidget(self.buttons)

        for w in (self.title, self.description, self.base_url, self.language, self.author):
            w.textChanged.connect(self.check)
        self.theme.currentIndexChanged.connect(self.check)
        self.posts_per_page.valueChanged.connect(self.check)
        self.permalink.editTextChanged.connect(self.check)
        self.check()

    def values(self) -> dict:
        return {"title": self.title.text(), "description": self.description.text(),
                "base_url": self.base_url.text().strip(), "language": self.language.text().strip(),
                "author": self.author.text(), "theme": self.theme.currentData() or "default",
                "posts_per_page": self.posts_per_page.value(), "permalink": self.permalink.currentText().strip()}

    def problems(self) -> dict[str, str]:
        """Field key -> the sentence shown under it."""
        found = site_problems(dataclasses.replace(SiteSettings(), **self.values()))
        return {key: problem_text(key, sentence) for key, sentence in found.items()}

    def check(self, *_) -> bool:
        problems = self.problems()
        for key, label in self.problem_labels.items():
            label.setText(problems.get(key, ""))
            label.setVisible(key in problems)
        self.save_button.setEnabled(not problems)
        self.error.hide()
        return not problems

    def save(self) -> bool:
        if not self.check():
            return False
        try:
            site = self.service.save_site_settings(self.values())
        except SettingsError as exc:  # the file cannot be read or written: say so, keep the dialog open
            self.error.setText(f"Could not save: {exc}")
            self.error.show()
            return False
        self.saved.emit(site)
        self.accept()
        return True
