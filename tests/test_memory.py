"""sentiment.memory: glibc keeps the large blocks a training step frees, instead of mapping fresh pages each step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# a step's large block (36 MB, as a language model's output logits) from glibc's malloc, touched and freed 20 times
STEPS = """
import ctypes, resource, sys
from sentiment.memory import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "set" else False)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    block = libc.malloc(36_000_000)
    ctypes.memset(block, 1, 36_000_000)
    libc.free(block)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True,
                         env={**clean, "PYTHONPATH": str(ROOT), **env}).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_large_blocks_are_reused_instead_of_faulting_in_new_pages():
    set_, kept = page_faults("set")
    default, mapped = page_faults("default")
    assert set_ == "True" and default == "False"
    # 20 blocks of 8,789 pages: by default every one faults in afresh; kept, only the first does
    assert mapped > 20 * 8000 and kept < 3 * 8800, (mapped, kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_the_users_own_allocator_settings_win():
    set_, faults = page_faults("set", MALLOC_MMAP_THRESHOLD_="131072")
    assert set_ == "False" and faults > 20 * 8000
