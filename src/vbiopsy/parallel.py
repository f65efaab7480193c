"""Process pools for per-patient work (generation, checking, preprocessing).

One place decides how workers start and how many threads each may use, so every command that
takes ``--jobs`` behaves the same: ``fork`` when the parent has a single thread (cheap; workers are
children, so ``getrusage`` sees them), else ``forkserver``/``spawn`` (forking a multi-threaded
process, e.g. under a progress-bar thread, can deadlock the child); one BLAS/OpenMP/torch/SimpleITK
thread per worker (unless a step asks for more), because the pool already uses the cores the user
asked for.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

T = TypeVar("T")


def pool_context() -> multiprocessing.context.BaseContext:
    """The start method for worker processes (see the module docstring)."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _init_worker(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    except ImportError:  # pragma: no cover - SimpleITK is a core dependency
        pass
    if initializer is not None:
        initializer(*initargs)


def process_pool(jobs: int, initializer: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = ()) -> ProcessPoolExecutor:
    """A pool of ``jobs`` single-threaded workers; ``initializer(*initargs)`` runs in each."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    return ProcessPoolExecutor(jobs, mp_context=pool_context(), initializer=_init_worker,
                               initargs=(initializer, initargs))


def run_parallel(func: Callable[..., T], items: Sequence[Any], *, jobs: int,
                 initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()) -> Iterator[tuple[int, T]]:
    """Yield ``(index, func(item))`` as results complete; in-process when ``jobs`` is 1.

    On an error or Ctrl-C the pending items are cancelled before the error propagates, so a
    failing run stops promptly instead of finishing the queue first.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs == 1 or len(items) <= 1:
        if initializer is not None:
            initializer(*initargs)
        for index, item in enumerate(items):
            yield index, func(item)
        return
    with process_pool(min(jobs, len(items)), initializer, initargs) as pool:
        futures: dict[Future[T], int] = {pool.submit(func, item): i for i, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
