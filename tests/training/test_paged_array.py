import numpy as np
import pytest

from spp_detect.training.paged_array import PagedArray


@pytest.mark.parametrize("on_disk", [False, True])
def test_a_paged_array_keeps_its_prefix_through_growth_and_trim(tmp_path, on_disk):
    a = PagedArray(np.float16, tmp_path if on_disk else None)
    a.reserve(10)
    a.array[:10] = np.arange(10)
    for n in (5000, 100_000, 3_000_000):  # remapped each time
        a.reserve(n)
        assert len(a.array) >= n
        a.array[n - 1] = 7
    np.testing.assert_array_equal(a.array[:10], np.arange(10))
    a.trim(10)  # the rest is given back; the prefix stays
    assert len(a.array) * a.dtype.itemsize <= max(4096, 10 * 2) + 4096
    np.testing.assert_array_equal(a.array[:10], np.arange(10))
    a.reserve(50_000)  # and it grows again from there
    np.testing.assert_array_equal(a.array[:10], np.arange(10))
    assert not list(tmp_path.iterdir())  # a file-backed array's file is unlinked at once
