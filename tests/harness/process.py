"""Rotator subprocesses: run one command, or keep a daemon and read its log.

* ``run_cli(args, env)``: one command to completion (killed on timeout) -> ``Result``.
* ``run_once(config, env)``: ``rotator once --config`` to completion -> ``Completed``.
* ``Daemon``: ``rotator run`` in the background, output to files; ``stop()`` sends
  SIGTERM and kills it if it does not exit in time.
* ``RotatorProcess``: any verb in the background with every log line kept, with its
  arrival time, in memory; ``wait_for(pattern)`` waits for log lines.
* ``cli(env, *args)``: ``run_cli`` with the arguments in line.
* ``wait_until(predicate, timeout, what)``: wait for a state, never for a time;
  ``wait_for_daemons(what, ready, daemons)``: the same while every daemon keeps running.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
ROTATOR = (sys.executable, "-m", "rotator")
CLI_TIMEOUT = 40.0  # a hang detector for one command
STOP_TIMEOUT = 30.0  # a hang detector: a daemon stops in well under a second
START_TIMEOUT = 30.0  # a hang detector for a daemon reaching a state


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def code(self) -> int:
        """``returncode``, by its short name."""
        return self.returncode

    def describe(self) -> str:
        return (
            f"rotator {' '.join(self.args)} -> {self.returncode} in {self.seconds:.2f}s\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    timeout: float = 60.0,
    umask: int = -1,
    prefix: Sequence[str] = ROTATOR,
) -> Result:
    """Run one rotator command to completion; ``subprocess.run`` kills it on timeout."""
    started = time.monotonic()
    done = subprocess.run(
        [*prefix, *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        umask=umask,
    )
    return Result(
        tuple(args), done.returncode, done.stdout, done.stderr, time.monotonic() - started
    )


def cli(env: Mapping[str, str], *args: str, timeout: float = CLI_TIMEOUT) -> Result:
    """``run_cli(args, env)``, arguments in line: ``cli(env, "once", "--force")``."""
    return run_cli(args, env, timeout=timeout)


class Daemon:
    """``rotator run`` in the background; always stop() it (a context manager does)."""

    def __init__(
        self,
        env: Mapping[str, str],
        out_dir: Path,
        *,
        name: str = "daemon",
        args: Sequence[str] = (),
        prefix: Sequence[str] = ROTATOR,
        metrics_port: int | None = None,
    ) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_port = metrics_port
        port_args = () if metrics_port is None else ("--metrics-port", str(metrics_port))
        self.args = ("run", *port_args, *args)
        self.stdout_path = out_dir / f"{name}.stdout"
        self.stderr_path = out_dir / f"{name}.stderr"
        self._stdout = self.stdout_path.open("wb")
        self._stderr = self.stderr_path.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [*prefix, *self.args],
            env=dict(env),
            stdout=self._stdout,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
        )
        self.result: Result | None = None

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    @property
    def is_running(self) -> bool:
        return self.proc.poll() is None

    def stderr_text(self) -> str:
        if self.result is not None:
            return self.result.stderr
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_text()

    @property
    def stdout(self) -> str:
        if self.result is not None:
            return self.result.stdout
        self._stdout.flush()
        return self.stdout_path.read_text(errors="replace")

    def assert_running(self) -> bool:
        """True while running; fails the test if the daemon has exited."""
        if self.proc.poll() is not None:
            pytest.fail(f"daemon exited early with {self.proc.returncode}:\n{self.stderr}")
        return True

    def get(self, path: str) -> requests.Response:
        """GET ``path`` from the daemon's health server (started with ``metrics_port``)."""
        assert self.metrics_port is not None, "started without metrics_port"
        return requests.get(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=30)

    def wait_for(
        self,
        what: str,
        condition: Callable[[], bool],
        *,
        timeout: float = START_TIMEOUT,
        ignore: tuple[type[Exception], ...] = (requests.ConnectionError,),
    ) -> None:
        """Poll ``condition`` (its ``ignore`` errors count as not yet) until it holds; fail
        with the log if the daemon exits first, or after ``timeout`` (a hang detector)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.stderr}"
                )
            try:
                if condition():
                    return
            except ignore:
                pass
            time.sleep(0.05)
        pytest.fail(
            f"timed out after {timeout:.0f} s waiting for {what}; daemon log:\n{self.stderr}"
        )

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM; the exit code. Fails the test (and kills the daemon) after ``timeout``:
        a hang detector, not a speed requirement."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"daemon ignored SIGTERM for {timeout:.0f} s:\n{self.stderr}")
        self._finish()
        return code

    def stop(self, timeout: float = 15.0) -> Result:
        """SIGTERM, wait, then SIGKILL if it did not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self._finish()

    def kill(self) -> Result:
        """SIGKILL (the crash under test, or the last resort)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        return self._finish()

    def _finish(self) -> Result:
        if self.result is None:
            for handle in (self._stdout, self._stderr):
                with contextlib.suppress(OSError):
                    handle.close()
            self.result = Result(
                self.args,
                self.proc.returncode,
                self.stdout_path.read_text(errors="replace"),
                self.stderr_path.read_text(errors="replace"),
                time.monotonic() - self.started,
            )
        return self.result


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds.

    The timeout is a hang detector, not a speed requirement: make it generous."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def wait_for_daemons(
    what: str,
    ready: Callable[[], bool],
    daemons: Sequence[Daemon],
    *,
    timeout: float = 30.0,
    poll: float = 0.05,
) -> None:
    """Poll ``ready`` until it holds; fail at once if a daemon exited (with its output),
    or after ``timeout`` (a hang detector, not a speed requirement) with every log's tail."""
    deadline = time.monotonic() + timeout
    while not ready():
        for daemon in daemons:
            assert daemon.is_running, daemon.stop().describe()
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s\n" + "\n".join(
            d.stderr_text()[-3000:] for d in daemons
        )
        time.sleep(poll)


# ---------------------------------------------------------------- log-reading processes

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")


def log_time(line: str) -> float:
    """The epoch seconds of a text-format log line."""
    match = _LOG_TIME.match(line)
    if match is None:
        raise AssertionError(f"not a log line: {line!r}")
    return datetime.fromisoformat(match.group(1) + "+00:00").timestamp()


@dataclass
class Line:
    time: float
    text: str


class RotatorProcess:
    """``python -m rotator ARGS`` with its stdout/stderr pumped into memory."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str]) -> None:
        self.args = list(args)
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rotator", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=dict(env),
            cwd=ROOT,
        )
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.stderr: list[Line] = []
        self.stdout: list[Line] = []
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    def _pump(self, stream: Any, into: list[Line]) -> None:
        for text in stream:
            with self._changed:
                into.append(Line(time.time(), text.rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self, pattern: str | None = None) -> list[Line]:
        with self._lock:
            lines = list(self.stderr)
        if pattern is None:
            return lines
        regex = re.compile(pattern)
        return [line for line in lines if regex.search(line.text)]

    def log(self) -> str:
        return "\n".join(line.text for line in self.lines())

    def wait_for(self, pattern: str, *, count: int = 1, timeout: float = 10.0) -> list[Line]:
        """Wait until ``count`` stderr lines match ``pattern``; return them all."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self.stderr if regex.search(line.text)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._pumping()):
                    break
                self._changed.wait(min(left, 0.1))
        raise AssertionError(
            f"no {count} log line(s) matching {pattern!r} within {timeout} s "
            f"(exit code {self.proc.poll()}); log:\n{self.log()}"
        )

    def _pumping(self) -> bool:
        return any(p.is_alive() for p in self._pumps)

    def metrics_port(self, timeout: float = 10.0) -> int:
        [line, *_] = self.wait_for(r"metrics and health on port \d+", timeout=timeout)
        match = re.search(r"on port (\d+)", line.text)
        assert match is not None
        return int(match.group(1))

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        for pump in self._pumps:
            pump.join(5)
        return code

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; safe to call more than once."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pump in self._pumps:
            pump.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str
    started_at: float
    duration: float

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_once(config: Path, env: Mapping[str, str], *args: str, timeout: float = 30.0) -> Completed:
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "rotator", "once", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=dict(env),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    return Completed(proc.returncode, proc.stdout, proc.stderr, started, time.time() - started)


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text, text
    assert 'File "' not in text, text
