"""A child process that dies with its parent, however the parent dies.

Rules
-----
* ``psutil.pid_exists(parent)`` is not a test of life: a parent that was killed and not
  yet reaped is a zombie, and its pid exists. Two mechanisms that a zombie cannot fool:
* **the lifeline pipe** (every POSIX system): the parent makes a pipe, hands the read
  end to the child and keeps the write end, never writing to it. The kernel closes a
  dying process's files at once, so the child reads EOF the moment the parent is gone.
  The write end is close-on-exec, so no other child the parent starts inherits it.
* **the parent-death signal** (Linux): the child asks the kernel for SIGTERM when its
  parent dies (``prctl(PR_SET_PDEATHSIG)``), then checks that the parent it means is
  still its parent (it may have died before the call). The kernel sends it when the
  *thread* that started the child ends, so a parent asks for it only from a thread that
  lives as long as the child should (an event loop's); SSH-started processes ask for it
  against their sshd, and poll ``os.getppid()`` where there is no such signal: a child
  is re-parented the moment its parent exits, reaped or not.
* The child reads and removes both variables at start, so processes it starts in turn
  (tasks' subprocesses) do not inherit its lifeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import threading

PARENT_PID_ENV = "CORRAL_PARENT_PID"  # die with this process (PDEATHSIG, else getppid polling)
LIFELINE_ENV = "CORRAL_LIFELINE_FD"  # die when this inherited pipe reaches EOF

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
POLL_INTERVAL = 0.5


class Lifeline:
    """The parent's side: a pipe for one child, held open for as long as the child lives."""

    def __init__(self, *, pdeathsig: bool | None = None) -> None:
        self._read, self._write = os.pipe()  # both close-on-exec: no other child gets them
        if pdeathsig is None:  # only a thread that outlives the child may ask for it
            pdeathsig = threading.current_thread() is threading.main_thread()
        self.pdeathsig = pdeathsig

    def environment(self) -> dict[str, str]:
        env = {LIFELINE_ENV: str(self._read)}
        if self.pdeathsig:
            env[PARENT_PID_ENV] = str(os.getpid())
        return env

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """Give this to ``Popen``/``create_subprocess_exec``: the child's end of the pipe."""
        return (self._read,)

    def spawned(self) -> None:
        """The child has its copy of the read end: drop ours."""
        self._close("_read")

    def cut(self) -> None:
        """Close our end: the child reads EOF and goes (also if it never started)."""
        self._close("_read")
        self._close("_write")

    def _close(self, which: str) -> None:
        fd = getattr(self, which)
        if fd >= 0:
            setattr(self, which, -1)
            os.close(fd)


# -- the child's side -----------------------------------------------------------------------

_parent_pid: int | None = None
_lifeline_fd: int | None = None


def inherit() -> None:
    """Take over the lifeline the parent passed (if any); call once, early, in the child."""
    global _parent_pid, _lifeline_fd
    pid, fd = os.environ.pop(PARENT_PID_ENV, None), os.environ.pop(LIFELINE_ENV, None)
    if fd is not None:
        _lifeline_fd = int(fd)
    if pid is not None:
        _parent_pid = int(pid)
        _ask_for_death_signal()
        if os.getppid() != _parent_pid:  # it died before we asked
            os.kill(os.getpid(), signal.SIGTERM)


def _ask_for_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def has_parent() -> bool:
    """Whether this process was started with a parent to die with."""
    return _parent_pid is not None or _lifeline_fd is not None


async def parent_gone() -> None:
    """Return when the parent is gone; never, for a process that has no parent to watch."""
    if _lifeline_fd is not None:
        await _eof(_lifeline_fd)
    elif _parent_pid is not None:
        while os.getppid() == _parent_pid:  # noqa: ASYNC110 - no event for another process
            await asyncio.sleep(POLL_INTERVAL)
    else:
        await asyncio.Event().wait()


async def _eof(fd: int) -> None:
    loop = asyncio.get_running_loop()
    gone = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data and not gone.done():
            gone.set_result(None)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        await gone
    finally:
        loop.remove_reader(fd)
