"""The first-run message of a new site: where its plugins folder is, and an offer to copy the examples."""
from __future__ import annotations

import html

from PySide6.QtCore import QUrl, Qt, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QStyle, QToolButton

from ..core.paths import BUNDLED_PLUGINS


class FirstRunBar(QFrame):
    """Shown once, above the list and editor, when the window opens a site that was just created."""

    copy_requested = Signal()

    def __init__(self, site, parent=None):
        super().__init__(parent)
        self.setObjectName("MessageBar")  # the message bar's look (and so both palettes of style.qss)
        self.setProperty("kind", "info")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.site = site
        self.folder_url = QUrl.fromLocalFile(str(site.plugins_dir))
        self.label = QLabel(self)
        self.label.setObjectName("MessageBarText")
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_button = QPushButton("Copy Example Plugins", self)
        self.copy_button.setObjectName("CopyExamplePlugins")
        self.copy_button.setToolTip(f"Copy the example plugins from {BUNDLED_PLUGINS} into this site")
        self.open_button = QPushButton("Open Plugins Folder", self)
        self.open_button.setObjectName("OpenPluginsFolder")
        self.open_button.setProperty("url", self.folder_url.toString())
        close = QToolButton(self)
        close.setAutoRaise(True)
        close.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_TitleBarCloseButton))
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.copy_button)
        layout.addWidget(self.open_button)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.copy_button.clicked.connect(self.copy_requested)
        self.open_button.clicked.connect(self.open_folder)
        self.set_text()
        self.copy_button.setVisible(self.has_examples() and not self.examples_copied())

    def set_text(self, note: str = ""):
        self.label.setText(
            f"<b>Welcome to your new site.</b> It lives in <code>{html.escape(str(self.site.root))}</code>; "
            f"its plugins go in <code>{html.escape(str(self.site.plugins_dir))}</code> (one folder with an "
            "<code>init.lua</code> each, or <code>modula plugin init NAME</code>)."
            + (f"<br>{html.escape(note)}" if note else ""))

    def has_examples(self) -> bool:
        return BUNDLED_PLUGINS.is_dir() and any((p / "init.lua").is_file() for p in BUNDLED_PLUGINS.iterdir())

    def examples_copied(self) -> bool:
        """Every example is in the site already (the default site gets them on its first start)."""
        return all((self.site.plugins_dir / p.name).exists() for p in BUNDLED_PLUGINS.iterdir()
                   if (p / "init.lua").is_file())

    def open_folder(self) -> bool:
        self.site.plugins_dir.mkdir(parents=True, exist_ok=True)
        ok = QDesktopServices.openUrl(self.folder_url)
        if not ok:
            self.set_text(f"No file manager could be opened; the folder is {self.site.plugins_dir}")
        return ok
