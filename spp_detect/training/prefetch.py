"""Work ahead: items of an iterator computed in a background thread while the caller is busy.

The SVM miner alternates between computing an image's features (torch and HDF5, which release
the GIL) and waiting for liblinear's fits in worker processes; computing the next images'
features meanwhile fills that wait.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

_DONE = object()


def prefetched(items: Iterable, depth: int = 2) -> Iterator:
    """Yield ``items`` in order, computing up to ``depth`` of them ahead in one background thread.

    An exception raised while computing an item is raised here, at that item. Closing the
    returned generator early stops the thread after the item it is computing.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def work():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            q.put((_DONE, exc))

    thread = threading.Thread(target=work, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is _DONE:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # let a blocked put see the stop
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.1)
