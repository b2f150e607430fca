"""The servers and processes the benchmarks talk to and measure, all on 127.0.0.1.

* ``MotoProcess``: a moto server in its own process (``python -m moto.server``), so its
  CPU never counts as rotator's.
* ``aws_client``: a boto3 client on that server.
* ``measure``: run a command to completion and read its wall time, peak RSS and CPU
  time (``/usr/bin/time``'s rusage; wall time measured here, finer than its 10 ms).
* ``ProcStats``: CPU and memory of a running process from ``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = ROOT / ".bench"
REGION = "us-east-1"
AWS_KEY = "bench"
CLIENT_SECRET = "bench-client-secret-" + "x" * 12


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_env() -> dict[str, str]:
    """This process's environment without any ROTATOR_* or AWS_* variable, and with
    bytecode cached under .bench/pycache: every measured Python program runs from
    compiled bytecode, as it would from an installed image, whatever
    PYTHONDONTWRITEBYTECODE says here."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ROTATOR_", "AWS_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONPYCACHEPREFIX"] = str(SCRATCH / "pycache")
    return env


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": AWS_KEY,
        "AWS_SECRET_ACCESS_KEY": AWS_KEY,
    }


class MotoProcess:
    """A moto server in a child process, on a free loopback port. ``module``: the module
    run with ``python -m`` (``tests.bench.moto_main`` for moto without its per-request
    directory listing)."""

    def __init__(self, module: str = "moto.server") -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.module = module

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoProcess:
        for _ in range(3):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=base_env(),
                cwd=ROOT,
            )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    self.post("/moto-api/reset")
                    return self
                except OSError:
                    time.sleep(0.1)
            self.stop()
        raise RuntimeError("moto server did not start")

    def post(self, path: str, body: bytes = b"") -> bytes:
        request = urllib.request.Request(
            self.endpoint + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            data: bytes = response.read()
        return data

    def reset(self) -> None:
        self.post("/moto-api/reset")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> MotoProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def aws_client(service: str, endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    make: Any = boto3.client
    return make(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=AWS_KEY,
        aws_secret_access_key=AWS_KEY,
        config=Config(retries={"total_max_attempts": 1}, max_pool_connections=16),
    )


@dataclass(frozen=True)
class Run:
    """One finished process: wall seconds, peak RSS (KiB), user+system CPU seconds."""

    wall: float
    maxrss_kib: int
    cpu: float
    returncode: int


_TIME = Path("/usr/bin/time")
# Without /usr/bin/time: a minimal interpreter that spawns the command and reports its
# rusage. Either way the measured process is forked from a small parent: a child forked
# straight from this (large) process would report this process's RSS as its own peak,
# because Linux keeps the pre-exec address space's high-water mark.
_LAUNCHER = (
    "import os,sys\n"
    "pid=os.posix_spawnp(sys.argv[2],sys.argv[2:],os.environ)\n"
    "_,st,ru=os.wait4(pid,0)\n"
    "open(sys.argv[1],'w').write(f'{ru.ru_maxrss} {ru.ru_utime} {ru.ru_stime}')\n"
    "sys.exit(os.waitstatus_to_exitcode(st))\n"
)


def measure(
    cmd: list[str], env: dict[str, str], *, stdout: Any = subprocess.DEVNULL, timeout: float = 120
) -> Run:
    """Run ``cmd`` to completion: wall time around it, peak RSS and CPU from its rusage."""
    SCRATCH.mkdir(exist_ok=True)
    report = SCRATCH / f"rusage-{os.getpid()}.txt"
    report.unlink(missing_ok=True)
    if _TIME.exists():
        wrapped = [str(_TIME), "-f", "%M %U %S", "-o", str(report), *cmd]
    else:
        wrapped = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(report), *cmd]
    start = time.perf_counter()
    proc = subprocess.Popen(wrapped, env=env, stdout=stdout, stderr=subprocess.STDOUT)
    # A blocking wait: Popen.wait(timeout=...) polls with sleeps growing to 50 ms, which
    # would round every wall time up to its next poll.
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        returncode = proc.wait()
    finally:
        killer.cancel()
    wall = time.perf_counter() - start
    maxrss, utime, stime = report.read_text().strip().splitlines()[-1].split()
    report.unlink()
    return Run(
        wall=wall, maxrss_kib=int(maxrss), cpu=float(utime) + float(stime), returncode=returncode
    )


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.0f} GiB"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": mem,
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
    }


class ProcStats:
    """CPU and memory of a live process, read from /proc (Linux)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._tick = os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self) -> float:
        """User + system CPU of every thread, exited ones included (10 ms ticks)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick

    def cpu_ns(self) -> int:
        """On-CPU nanoseconds of the live threads (schedstat): precise, for idle windows."""
        total = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
        return total

    def memory_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB."""
        rss = hwm = 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
        return rss, hwm

    def threads(self) -> int:
        return len(list(Path(f"/proc/{self.pid}/task").iterdir()))


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30) -> Any:
    """SIGTERM, wait (reaping with wait4 for the rusage), SIGKILL if it hangs."""
    if proc.poll() is not None:
        return None
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage
        time.sleep(0.02)
    proc.kill()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage
