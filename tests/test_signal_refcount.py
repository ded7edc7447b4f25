"""PySide6 6.12.0 under Python 3.11 drops a reference to True on every Python ``Signal.emit()``; the
interpreter aborts ("bool_dealloc: deallocating True or False") once the count reaches zero, which
killed the window within the hour. The emitting runs in a child process so that such an abort is a
failure of this test, not the end of the test run."""
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(r"""
    import os, sys, threading
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QCoreApplication, QObject, Signal

    app = QCoreApplication([])

    class Emitter(QObject):
        # the kinds of signal the app uses (gui/bridge.py, metrics, tasks)
        text = Signal(str)
        obj = Signal(object)
        number = Signal(int)
        flag = Signal(bool)
        bare = Signal()
        pair = Signal(str, object)

    received = [0]
    def count(*_):
        received[0] += 1

    emitter = Emitter()
    for signal in (emitter.text, emitter.obj, emitter.number, emitter.flag, emitter.bare, emitter.pair):
        signal.connect(count)

    def emit_all(n):
        for i in range(n):
            emitter.text.emit("entry")
            emitter.obj.emit({"id": i, "ok": True})
            emitter.number.emit(i)
            emitter.flag.emit(i % 2 == 0)
            emitter.bare.emit()
            emitter.pair.emit("after_create", None)

    PER_KIND = 20000 // 6 + 1
    true0, false0 = sys.getrefcount(True), sys.getrefcount(False)
    emit_all(PER_KIND)  # from the GUI thread: direct connections
    worker = threading.Thread(target=emit_all, args=(PER_KIND,))
    worker.start()  # from a worker thread: queued onto the GUI thread
    while worker.is_alive() or received[0] < 12 * PER_KIND:
        app.processEvents()
        worker.join(0.001)
        if not worker.is_alive() and received[0] >= 12 * PER_KIND:
            break
    app.processEvents()
    del worker
    print(received[0], sys.getrefcount(True) - true0, sys.getrefcount(False) - false0)
""")


def test_emitting_signals_keeps_the_refcount_of_true_and_false():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=110)
    assert done.returncode == 0, (
        "emitting signals crashed the interpreter (a PySide6 that leaks references to True/False?):\n"
        + done.stderr[-2000:])
    received, true_delta, false_delta = (int(x) for x in done.stdout.split())
    assert received >= 40000
    # a leak of one reference per emit would show as about -20,000 (or an abort above); allow the
    # few references a warm-up of the interpreter takes or gives back
    assert abs(true_delta) < 50, f"refcount of True moved by {true_delta}"
    assert abs(false_delta) < 50, f"refcount of False moved by {false_delta}"
