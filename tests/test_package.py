"""Process-level defaults that importing the package sets."""

import os
import subprocess
import sys


def _thp_after_import(env_value):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if env_value is not None:
        env["THP_MEM_ALLOC_ENABLE"] = env_value
    code = "import os, spp_detect; print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_huge_pages_on_by_default_and_user_setting_kept():
    assert _thp_after_import(None) == "1"
    assert _thp_after_import("0") == "0"
