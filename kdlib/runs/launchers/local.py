"""A process pool on this machine: each worker pinned to one CPU thread, or to one GPU (CUDA_VISIBLE_DEVICES).

On small models several single-thread processes beat one multi-thread process (less synchronisation, no
oversubscription). Workers are spawned, not forked, so they start with a clean torch state.
"""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm.auto import tqdm

from ...engine import device as dev
from .worker import run_in_worker


def launch(jobs, ws, workers=2, progress=True, desc="runs"):
    if not jobs:
        return
    ctx = mp.get_context("spawn")
    workers, gpu_queue = dev.gpu_slots(ws.device, workers, ctx.Queue)
    with dev.single_thread_children(), ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=dev.take_gpu,
            initargs=(gpu_queue,)) as pool:
        futures = [pool.submit(run_in_worker, job, teacher, ws) for job, teacher in jobs]
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="run", disable=not progress):
            future.result()
