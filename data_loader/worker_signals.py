"""Preemption signals and DataLoader workers.

A cluster scheduler (SLURM, Kubernetes) sends SIGTERM or SIGUSR1 to every process of a job, DataLoader
workers included. Workers ignore them, so the main process can finish its step, write a checkpoint and shut
its workers down itself. Workers are started with those signals blocked, so a signal that arrives while a
worker is starting (before it ignores them) is dropped rather than killing the worker.
"""
from __future__ import annotations

import signal

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def ignore_preemption_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: ignore SIGTERM/SIGUSR1 (pending ones are discarded), then unblock them."""
    for sig in PREEMPTION_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PREEMPTION_SIGNALS)


def start_iterator(loader):
    """``iter(loader)`` with the preemption signals blocked while its worker processes are forked.

    The main process receives a signal sent meanwhile as soon as the iterator exists.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, PREEMPTION_SIGNALS)
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
