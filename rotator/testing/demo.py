"""`make demo`: a Keycloak-compatible token endpoint, a moto server and the
rotator daemon, all on 127.0.0.1, with every rotation shown live.

The demo prints a fingerprint of each token (a hash prefix), never the token.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rotator.testing.keycloak import KeycloakStub

SECRET_ID = "demo/oms-token"
PARAMETER = "/demo/oms-token"
CLIENT_ID = "oms-client"


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:10]


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


def _read(clients: dict[str, Any]) -> dict[str, dict[str, str] | None]:
    out: dict[str, dict[str, str] | None] = {}
    try:
        value = clients["sm"].get_secret_value(SecretId=SECRET_ID, VersionStage="AWSCURRENT")
        out["secretsmanager"] = json.loads(value["SecretString"])
    except Exception:  # not published yet
        out["secretsmanager"] = None
    try:
        value = clients["ssm"].get_parameter(Name=PARAMETER, WithDecryption=True)
        out["ssm"] = json.loads(value["Parameter"]["Value"])
    except Exception:  # not published yet
        out["ssm"] = None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rotator-demo", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run")
    parser.add_argument("--lifespan", type=float, default=15.0, help="access token lifespan")
    args = parser.parse_args(argv)
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        sys.stderr.write("the demo needs moto[server]: run `make demo` (it installs it)\n")
        return 2

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    secret = os.urandom(12).hex()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    _, moto_port = moto.get_host_and_port()
    endpoint = f"http://127.0.0.1:{moto_port}"
    stub = KeycloakStub(
        clients={CLIENT_ID: secret},
        access_token_lifespan=args.lifespan,
        use_refresh_tokens=True,
    ).start()
    aws_env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
    }
    workdir = Path(tempfile.mkdtemp(prefix="rotator-demo-"))
    log_path = workdir / "daemon.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ROTATOR_", "AWS_"))},
        **aws_env,
        "ROTATOR_TOKEN_URL": stub.token_url,
        "ROTATOR_CLIENT_ID": CLIENT_ID,
        "ROTATOR_CLIENT_SECRET": secret,
        "ROTATOR_SECRETSMANAGER_SECRET_ID": SECRET_ID,
        "ROTATOR_SECRETSMANAGER_CREATE": "true",
        # moto has no version quota; on AWS, 15 s tokens would be refused for Secrets Manager
        # (rotator warns about this raised limit at start-up)
        "ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY": "100000",
        "ROTATOR_SSM_PARAMETER": PARAMETER,
        "ROTATOR_VERIFY_URL": stub.verify_url,
        "ROTATOR_CREDENTIAL_NAME": "oms-demo",
    }
    clients = {
        "sm": boto3.client(
            "secretsmanager",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="demo",
            aws_secret_access_key="demo",
        ),
        "ssm": boto3.client(
            "ssm",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="demo",
            aws_secret_access_key="demo",
        ),
    }
    print(
        f"token endpoint  {stub.token_url}  (Keycloak-compatible, {args.lifespan:g} s tokens,"
        " refresh tokens on)"
    )
    print(f"AWS (moto)      {endpoint}  secret {SECRET_ID}, parameter {PARAMETER}")
    print(f"daemon log      {log_path}")
    print(f"running for {args.seconds:g} s; Ctrl-C stops earlier\n")
    with log_path.open("w") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "rotator", "run"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    rotations = 0
    expired_reads = 0
    last: str | None = None
    deadline = time.monotonic() + args.seconds
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            if daemon.poll() is not None:
                print(f"daemon exited with code {daemon.returncode}; see {log_path}")
                break
            held = _read(clients)
            doc = held.get("secretsmanager") or held.get("ssm")
            now = datetime.now(UTC)
            if doc is not None:
                expires_at = datetime.fromisoformat(doc["expires_at"].replace("Z", "+00:00"))
                left = (expires_at - now).total_seconds()
                if left <= 0:
                    expired_reads += 1
                fp = _fingerprint(doc["access_token"])
                if fp != last:
                    rotations += 1
                    last = fp
                    same = (
                        held["secretsmanager"] is not None
                        and held["ssm"] is not None
                        and held["secretsmanager"]["access_token"] == held["ssm"]["access_token"]
                    )
                    grants = {
                        g: stub.count(grant_type=g, outcome="ok")
                        for g in ("client_credentials", "refresh_token")
                    }
                    print(
                        f"{_now()}  rotation {rotations:>2}  token {fp}"
                        f"  expires {doc['expires_at']}"
                        f"  {left:4.1f} s left  SM{'=' if same else '≠'}SSM  "
                        f"grants: {grants['client_credentials']} client_credentials,"
                        f" {grants['refresh_token']} refresh_token",
                        flush=True,
                    )
            stop.wait(0.25)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        stub.stop()
        moto.stop()
    verified = stub.verify_count(ok=True)
    print(
        f"\n{rotations} tokens published; reads of an expired token: {expired_reads}; "
        f"OMS API verifications passed: {verified}; daemon exit code {daemon.returncode}"
    )
    return 0 if expired_reads == 0 and daemon.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
