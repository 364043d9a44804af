"""Timing, counting and budget helpers of the GPU check (device-agnostic)."""
import contextlib
import statistics
import time
import traceback
import warnings
from collections import Counter
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ['Budget', 'Job', 'time_jobs', 'OpCounter', 'count_device_launches', 'sync_debug',
           'exact_fp32', 'synchronize', 'error_text']


class Budget:
    """Seconds a part may spend, never past the whole run's ``deadline`` (``perf_counter``
    time). Checked between items: an item that has started runs to its end."""

    def __init__(self, seconds: float, deadline: Optional[float] = None):
        self.start = time.perf_counter()
        self.seconds = float(seconds)
        self.deadline = deadline

    def end(self) -> float:
        end = self.start + self.seconds
        return end if self.deadline is None else min(end, self.deadline)

    def left(self) -> float:
        return self.end() - time.perf_counter()

    def spent(self) -> float:
        return time.perf_counter() - self.start

    def exhausted(self, essential: bool = False) -> bool:
        """Past the part's share; ``essential`` parts (the correctness checks, seconds on a
        GPU) stop only at the whole run's deadline."""
        if essential:
            return self.deadline is not None and time.perf_counter() >= self.deadline
        return self.left() <= 0


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


#: ``(prep, body, post)``: ``prep()`` (untimed) returns the argument of ``body`` (timed),
#: ``post()`` (untimed) runs after it, e.g. an optimizer-like weight update
Job = Tuple[Callable[[], object], Callable[[object], None], Optional[Callable[[], None]]]


def time_jobs(jobs: Dict[str, Job], device: torch.device, warmup: int, iters: int,
              deadline: Optional[float] = None, min_iters: int = 3) -> Dict[str, float]:
    """Median milliseconds of every job's ``body``, the jobs interleaved round by round (load
    on the machine hits them alike). On CUDA the body is bracketed by CUDA events in the
    stream (no host sync per step; one ``synchronize`` per round); on the CPU by
    ``perf_counter``. Past ``deadline`` (``perf_counter`` time) it stops once ``min_iters``
    rounds are recorded."""
    cuda = device.type == 'cuda'
    times = {k: [] for k in jobs}
    for i in range(warmup + iters):
        if (deadline is not None and i >= warmup + min_iters
                and time.perf_counter() > deadline):
            break
        events = {}
        for name, (prep, body, post) in jobs.items():
            arg = prep() if prep is not None else None
            if cuda:
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                body(arg)
                e1.record()
                events[name] = (e0, e1)
            else:
                t0 = time.perf_counter()
                body(arg)
                events[name] = time.perf_counter() - t0
            if post is not None:
                post()
        if cuda:
            torch.cuda.synchronize(device)
        if i >= warmup:
            for name, ev in events.items():
                times[name].append(ev[0].elapsed_time(ev[1]) if cuda else 1e3 * ev)
    return {k: statistics.median(v) for k, v in times.items()}


class OpCounter(TorchDispatchMode):
    """Counts the ATen ops dispatched inside the block, backward included."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func._schema.name] += 1
        return func(*args, **(kwargs or {}))


def count_device_launches(fn: Callable[[], None], device: torch.device) -> Optional[int]:
    """Device activities (kernels, memcpy, memset) recorded by ``torch.profiler`` while
    ``fn`` runs; None off CUDA."""
    if device.type != 'cuda':
        return None
    from torch.profiler import ProfilerActivity, profile
    synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        synchronize(device)
    cuda_type = torch.autograd.DeviceType.CUDA
    return sum(1 for e in prof.events() if e.device_type == cuda_type)


def sync_debug(step: Callable[[], None]) -> dict:
    """Runs the CUDA ``step`` under ``torch.cuda.set_sync_debug_mode``: 'warn' lists every
    synchronising call with the Python line that made it (``warn_mode_syncs``, ``where``),
    then 'error' must not raise (``error_mode``: 'no error' or the message)."""
    out = {}
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode(0)  # before our own synchronize below
        torch.cuda.synchronize()
    syncs = [w for w in caught if 'synchroniz' in str(w.message).lower()]
    out['warn_mode_syncs'] = len(syncs)
    out['where'] = sorted({f'{w.filename}:{w.lineno}' for w in syncs})[:8]
    torch.cuda.set_sync_debug_mode('error')
    try:
        step()
        out['error_mode'] = 'no error'
    except RuntimeError as exc:
        out['error_mode'] = str(exc)[:300]
    finally:
        torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
    return out


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off (cuDNN convolutions use it by default on Ampere and later: ~1e-3 relative,
    which would fail a float32 comparison), restored afterwards."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
           torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision('highest')
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old[:2]
        torch.set_float32_matmul_precision(old[2])


def error_text(exc: BaseException, limit: int = 600) -> Dict[str, str]:
    """An exception as JSON: type and message (cut to ``limit``) and the last frames."""
    msg = f'{type(exc).__name__}: {exc}'
    if len(msg) > limit:
        msg = msg[:limit] + ' ...'
    tb = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-4:])
    return dict(error=msg, traceback=tb[-1500:])
