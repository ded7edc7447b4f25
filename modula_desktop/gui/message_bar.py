"""An inline message bar (like KMessageWidget): shows a hook's refusal without a modal dialog."""
from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QStyle, QToolButton

KINDS = {
    "error": QStyle.StandardPixmap.SP_MessageBoxCritical,
    "warning": QStyle.StandardPixmap.SP_MessageBoxWarning,
    "info": QStyle.StandardPixmap.SP_MessageBoxInformation,
}


class MessageBar(QFrame):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("MessageBar")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.setSpacing(8)
        self._icon = QLabel(self)
        self._icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        self._label = QLabel(self)
        self._label.setObjectName("MessageBarText")
        self._label.setWordWrap(True)
        self._label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._label.setTextFormat(Qt.TextFormat.RichText)
        self._text = ""
        self._title_text = ""
        close = QToolButton(self)
        close.setAutoRaise(True)
        close.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_TitleBarCloseButton))
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        layout.addWidget(self._icon, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self._label, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.kind = "info"
        self.hide()

    def show_message(self, text: str, kind: str = "info", title: str = ""):
        self.kind = kind if kind in KINDS else "info"
        self.setProperty("kind", self.kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self._icon.setPixmap(self.style().standardIcon(KINDS[self.kind]).pixmap(18, 18))
        self._text, self._title_text = text, title
        body = html.escape(text).replace("\n", "<br>")
        self._label.setText(f"<b>{html.escape(title)}</b>&nbsp; {body}" if title else body)
        self.show()

    def text(self) -> str:
        return self._text

    def title(self) -> str:
        return self._title_text
