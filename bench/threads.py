"""torch's intra-op thread count, decided once per process before parallel work starts.

`torch.set_num_threads` is process-wide: a worker thread that changes it while another thread is
inside a torch kernel races with it (the other thread's parallel regions change size mid-run, and
two workers that each "restore" the count undo each other). So the count is chosen in one place,
by the code that starts the workers (`data_recipes.prepare.prepare_all`), before they start and
after they finish, never inside a stage.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


def per_worker(workers: int, total: int) -> int:
    """Threads each of `workers` concurrent workers gets out of `total`: at least 1.

    Small batched ops (the 3DMM fit's T x 468 tensors) lose badly when workers together run more
    threads than there are cores (two threads each on a busy 2-core machine made a fit step 30x
    slower), so the cores are split, not shared.
    """
    return max(1, int(total) // max(1, int(workers)))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Run a block with `n` torch intra-op threads (0 = unchanged), restoring the count afterwards.

    Only for code that owns the process at that moment (nothing else computing with torch in other
    threads): the single-threaded set-up of a worker pool, a benchmark. Yields the count in effect.
    """
    import torch

    before = torch.get_num_threads()
    if n > 0 and n != before:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
