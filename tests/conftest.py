import os

# Every Qt test runs offscreen; set before anything imports Qt.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Several GUI tests also save what they show into this folder, for a developer to look at; it must exist
# whatever the order the tests run in.
os.makedirs("/tmp/gui2shots", exist_ok=True)
