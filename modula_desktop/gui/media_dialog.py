"""Site > Unused Media: the images in <site>/media/ that no entry or revision names, with thumbnails, and a
button that deletes the chosen ones. Listing and deleting run on a worker thread (they read every body);
the core checks use again just before it deletes, so an image an entry started using meanwhile stays."""
from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)

from ..core.build import remove_unused_media, unused_media
from ..core.build.media import media_dir
from .tasks import TaskRunner

THUMB = 64
NAME_ROLE = Qt.ItemDataRole.UserRole


def _size_text(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{max(1, round(n / 1024))} KB"


def _list(root, db) -> list[tuple[str, int, QImage]]:
    """(name, bytes, thumbnail) of each unused image. QImage, unlike QPixmap, may be made off the GUI thread."""
    found = []
    for name in unused_media(root, db):
        path = media_dir(root) / name
        try:
            size = path.stat().st_size
        except OSError:
            continue
        image = QImage(str(path))
        if not image.isNull():
            image = image.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                 Qt.TransformationMode.SmoothTransformation)
        found.append((name, size, image))
    return found


class UnusedMediaDialog(QDialog):
    def __init__(self, service, parent=None):
        super().__init__(parent)
        self.service = service
        self.setObjectName("UnusedMediaDialog")
        self.setWindowTitle("Unused Media")
        self.resize(560, 480)
        self.tasks = TaskRunner(self, max_threads=1)
        self.intro = QLabel(f"Images in <code>{media_dir(service.site.root)}</code> that no entry — draft, "
                            "published or an old revision — uses. Deleting them cannot be undone.", self)
        self.intro.setObjectName("MutedLabel")
        self.intro.setWordWrap(True)
        self.list = QListWidget(self)
        self.list.setObjectName("UnusedMediaList")
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.status = QLabel(self)
        self.remove_button = QPushButton("Delete Selected", self)
        self.remove_all_button = QPushButton("Delete All", self)
        self.close_button = QPushButton("Close", self)
        buttons = QHBoxLayout()
        buttons.addWidget(self.status, 1)
        buttons.addWidget(self.remove_button)
        buttons.addWidget(self.remove_all_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.intro)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        self.remove_button.clicked.connect(self.remove_selected)
        self.remove_all_button.clicked.connect(self.remove_all)
        self.close_button.clicked.connect(self.close)
        self.list.itemSelectionChanged.connect(self._update)
        self._update()

    @property
    def busy(self) -> bool:
        return self.tasks.busy

    def names(self) -> list[str]:
        return [self.list.item(i).data(NAME_ROLE) for i in range(self.list.count())]

    def refresh(self):
        self.status.setText("Looking for unused media…")
        root, db = self.service.site.root, self.service.db
        self.tasks.run(lambda: _list(root, db), self._listed, self._error)
        self._update()

    def _listed(self, found):
        self.list.clear()
        total = 0
        for name, size, image in found:
            item = QListWidgetItem(f"{name}\n{_size_text(size)}")
            item.setData(NAME_ROLE, name)
            item.setToolTip(str(media_dir(self.service.site.root) / name))
            if not image.isNull():
                item.setIcon(QIcon(QPixmap.fromImage(image)))
            self.list.addItem(item)
            total += size
        self.status.setText(f"{len(found)} unused image{'s' if len(found) != 1 else ''}, {_size_text(total)}"
                            if found else "Every image in media/ is used.")
        self._update()

    def _error(self, exc):
        self.status.setText(f"Could not read the media: {exc}")
        self._update()

    def _update(self):
        idle = not self.tasks.busy
        self.remove_button.setEnabled(idle and bool(self.list.selectedItems()))
        self.remove_all_button.setEnabled(idle and self.list.count() > 0)

    def confirm(self, text: str) -> bool:
        """A yes/no question. Tests replace this method."""
        answer = QMessageBox.question(self, "Delete media", text,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def remove_selected(self):
        self._remove([item.data(NAME_ROLE) for item in self.list.selectedItems()])

    def remove_all(self):
        self._remove(self.names())

    def _remove(self, names: list[str]):
        if not names or self.tasks.busy:
            return
        if not self.confirm(f"Delete {len(names)} unused image{'s' if len(names) != 1 else ''} from media/? "
                            "This cannot be undone."):
            return
        root, db = self.service.site.root, self.service.db

        def job():
            return remove_unused_media(root, db, names), _list(root, db)

        def done(result):
            removed, found = result
            self._listed(found)
            kept = len(names) - len(removed)
            self.status.setText(f"Deleted {len(removed)} image{'s' if len(removed) != 1 else ''}"
                                + (f"; {kept} kept (an entry uses it now)" if kept else "") + ".")
        self.status.setText("Deleting…")
        self.tasks.run(job, done, self._error)
        self._update()

    def closeEvent(self, event):  # noqa: N802 - Qt override
        self.tasks.wait(10000)
        super().closeEvent(event)
