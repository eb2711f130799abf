import threading
import time

import pytest

from spp_detect.training.prefetch import prefetched


def test_same_items_in_order_computed_ahead():
    computed = []

    def items():
        for i in range(20):
            computed.append(i)
            yield i

    out = []
    for i in prefetched(items(), depth=3):
        time.sleep(0.002)  # a busy consumer: the thread works ahead
        out.append(i)
    assert out == list(range(20)) == computed


def test_an_error_is_raised_at_its_item():
    def items():
        yield 1
        yield 2
        raise ValueError("bad image 3")

    got = []
    with pytest.raises(ValueError, match="bad image 3"):
        for i in prefetched(items()):
            got.append(i)
    assert got == [1, 2]


def test_closing_early_stops_the_thread():
    def items():
        i = 0
        while True:
            yield i
            i += 1

    gen = prefetched(items(), depth=2)
    assert next(gen) == 0
    gen.close()
    time.sleep(0.3)
    assert not any(t.name == "prefetch" for t in threading.enumerate())
