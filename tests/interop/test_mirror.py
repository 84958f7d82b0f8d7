"""The mirror recipes (deploy/mirror/): an app's own grpc.health.v1 follows healthgate's Watch,
for grpcio and grpc-go apps. Flip a dependency: the app's Watch follows within a second of
healthgate's."""

import os
import queue
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from test_interop import NOT_SERVING, SERVING

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def grpc_go_mirror():
    out = os.path.join(ROOT, "target", "mirror-grpc-go")
    env = dict(os.environ, GOPATH="/usr/share/gocode", GO111MODULE="off", GOFLAGS="")
    subprocess.run(["go", "build", "-o", out, "."], cwd=os.path.join(ROOT, "deploy", "mirror", "grpc-go"), env=env, check=True)
    return [out]


def grpcio_mirror():
    return [sys.executable, os.path.join(ROOT, "deploy", "mirror", "grpcio", "mirror.py")]


def watch_into(addr, service, into):
    """Every status of a Watch(service) on addr, with its arrival time, into a queue."""
    channel = grpc.insecure_channel(addr)
    stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service))

    def pump():
        try:
            for response in stream:
                into.put((response.status, time.monotonic()))
        except grpc.RpcError:
            pass

    threading.Thread(target=pump, daemon=True).start()
    return stream


def next_status(q, want, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, at = q.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if status == want:
            return at
    pytest.fail(f"no {want} within {timeout} s")


@pytest.mark.parametrize("mirror", [grpcio_mirror, grpc_go_mirror], ids=["grpcio", "grpc-go"])
def test_the_apps_own_health_follows_healthgate(healthgate, dependency, mirror):
    if mirror is grpc_go_mirror and subprocess.run(["which", "go"], capture_output=True).returncode != 0:
        pytest.fail("go is not installed (.ci/run installs golang-go golang-google-grpc-dev)")
    app = subprocess.Popen(mirror() + [healthgate.addr, "readiness"], stdout=subprocess.PIPE, text=True)
    try:
        line = app.stdout.readline().strip()
        assert line.startswith("app listening on "), line
        app_addr = line[len("app listening on "):]
        theirs, ours = queue.Queue(), queue.Queue()
        app_watch = watch_into(app_addr, "readiness", theirs)
        hg_watch = watch_into(healthgate.addr, "readiness", ours)
        next_status(theirs, SERVING)
        for status, code in [(NOT_SERVING, 503), (SERVING, 200)]:
            dependency.status = code
            seen_by_healthgate = next_status(ours, status)
            seen_by_app = next_status(theirs, status)
            assert seen_by_app - seen_by_healthgate < 1.0, f"the app followed in {seen_by_app - seen_by_healthgate:.3f} s"
        app_watch.cancel()
        hg_watch.cancel()
    finally:
        app.kill()
        app.wait()
