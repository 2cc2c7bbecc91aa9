"""A process pool on this machine: each worker pinned to one CPU thread, or to one GPU (CUDA_VISIBLE_DEVICES).

On small models several single-thread processes beat one multi-thread process (less synchronisation, no
oversubscription). Workers are spawned, not forked, so they start with a clean torch state.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm.auto import tqdm

from . import run_in_worker


def _init_worker(device: str, gpu_queue):
    if device == "cuda" and gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())


def launch(jobs, out, data_dir=None, device="cpu", workers=2, progress=True, desc="runs"):
    if not jobs:
        return
    ctx = mp.get_context("spawn")
    gpu_queue = None
    if device == "cuda":
        import torch
        n = torch.cuda.device_count()
        if n == 0:
            raise RuntimeError("--device cuda was asked for, but no GPU is visible")
        workers = min(workers, n)
        gpu_queue = ctx.Queue()
        for i in range(workers):
            gpu_queue.put(i)
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned workers before torch loads
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker,
                                 initargs=(device, gpu_queue)) as pool:
            futures = [pool.submit(run_in_worker, job, teacher, out, data_dir, device) for job, teacher in jobs]
            for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="run",
                               disable=not progress):
                future.result()
    finally:
        if env_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_threads
