"""Wall-clock phases of one one-shot run, without a profiler: imports, then the work.

    python tests/bench/phases.py rotator   # imports what `rotator once` uses, then runs it
    python tests/bench/phases.py floor     # imports requests + boto3, then the floor script

Prints ``{"imports_ms": ..., "work_ms": ..., "exit": ...}``; interpreter start-up is the
process's wall time minus both, measured by the caller.
"""

import json
import runpy
import sys
import time
from pathlib import Path

t0 = time.perf_counter()
mode = sys.argv[1]
if mode == "rotator":
    import boto3  # noqa: F401 - imported here so that the work phase holds no import
    import botocore.config  # noqa: F401
    import requests  # noqa: F401

    import rotator.app  # noqa: F401
    import rotator.cli
    import rotator.commands  # noqa: F401
    import rotator.config  # noqa: F401
    import rotator.logs  # noqa: F401

    t1 = time.perf_counter()
    code = rotator.cli.main(["once", "--force"])
else:
    import boto3  # noqa: F401
    import requests  # noqa: F401

    t1 = time.perf_counter()
    runpy.run_path(str(Path(__file__).with_name("floor_script.py")))
    code = 0
t2 = time.perf_counter()
sys.stdout.write(
    json.dumps({"imports_ms": (t1 - t0) * 1000, "work_ms": (t2 - t1) * 1000, "exit": code})
)
