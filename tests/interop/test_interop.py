"""healthgate driven by third-party clients: grpcio's stock health and reflection clients, and
grpcio's client-side health checking with round_robin."""

import json
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def stub(addr):
    return health_pb2_grpc.HealthStub(grpc.insecure_channel(addr))


def test_check_answers_serving_and_not_found(healthgate):
    health = stub(healthgate.addr)
    assert wait_for(lambda: health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status == SERVING)
    response, call = health.Check.with_call(health_pb2.HealthCheckRequest(service="readiness"), timeout=2)
    assert response.status == SERVING
    assert ("x-health-state", "healthy") in call.initial_metadata()
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=2)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_watch_follows_the_dependency(healthgate, dependency):
    health = stub(healthgate.addr)
    assert wait_for(lambda: health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status == SERVING)
    stream = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
    assert next(stream).status == SERVING
    dependency.status = 503
    assert next(stream).status == NOT_SERVING
    dependency.status = 200
    assert next(stream).status == SERVING
    stream.cancel()


def test_watch_of_an_unknown_service_stays_open(healthgate):
    health = stub(healthgate.addr)
    stream = health.Watch(health_pb2.HealthCheckRequest(service="not-yet"), timeout=20)
    assert next(stream).status == SERVICE_UNKNOWN
    # Still open: nothing more arrives, and the call has not ended.
    time.sleep(0.5)
    assert stream.running() or not stream.done()
    stream.cancel()


def test_watch_streams_see_services_appear_and_disappear_across_reloads(healthgate, dependency):
    health = stub(healthgate.addr)
    assert wait_for(lambda: health.Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=2).status == SERVING)
    base = healthgate.config_text()
    readiness = health.Watch(health_pb2.HealthCheckRequest(service="readiness"), timeout=30)
    orders = health.Watch(health_pb2.HealthCheckRequest(service="orders"), timeout=30)
    assert next(readiness).status == SERVING
    assert next(orders).status == SERVICE_UNKNOWN

    # Added by a reload: the stream already open on the name sees it.
    healthgate.reload_with(base + '\n[services.orders]\ndependencies = { api = "critical" }\n')
    assert next(orders).status == SERVING
    assert health.Check(health_pb2.HealthCheckRequest(service="orders"), timeout=2).status == SERVING

    # A broken file changes nothing and sends nothing.
    healthgate.reload_with(base + "\n[services.orders\n")
    assert wait_for(lambda: 'healthgate_config_reloads_total{result="failure"} 1' in healthgate.metrics())
    assert health.Check(health_pb2.HealthCheckRequest(service="orders"), timeout=2).status == SERVING

    # Removed by a reload: SERVICE_UNKNOWN on its stream, NOT_FOUND for Check.
    healthgate.reload_with(base)
    assert next(orders).status == SERVICE_UNKNOWN
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="orders"), timeout=2)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    # Three reloads later, the stream of a service they did not touch got nothing: its next
    # message is the next real change.
    dependency.status = 503
    assert next(readiness).status == NOT_SERVING
    readiness.cancel()
    orders.cancel()


def test_list_returns_every_service(healthgate):
    health = stub(healthgate.addr)
    assert wait_for(lambda: health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status == SERVING)
    statuses = health.List(health_pb2.HealthListRequest(), timeout=2).statuses
    assert set(statuses) == {"", "readiness"}
    assert statuses["readiness"].status == SERVING


def test_reflection_lists_health_and_detail(healthgate):
    reflection = reflection_pb2_grpc.ServerReflectionStub(grpc.insecure_channel(healthgate.addr))
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    response = next(reflection.ServerReflectionInfo(iter([request]), timeout=5))
    names = {s.name for s in response.list_services_response.service}
    assert {"grpc.health.v1.Health", "healthgate.v1.Detail"} <= names


def answered_by(channel, rpcs=30):
    """Which instance answered each List call (each has its own extra service name)."""
    health = health_pb2_grpc.HealthStub(channel)
    names = set()
    for _ in range(rpcs):
        try:
            statuses = health.List(health_pb2.HealthListRequest(), timeout=2).statuses
        except grpc.RpcError:
            return set()  # no healthy backend at this instant: sample again
        names.update(name for name in statuses if name)
    return names


def test_client_side_health_checking_moves_traffic_off_a_failing_instance(make_healthgate):
    from conftest import Dependency

    dep_a, dep_b = Dependency(), Dependency()
    try:
        a = make_healthgate(dep_a, "instance-a")
        b = make_healthgate(dep_b, "instance-b")
        config = json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}})
        # The plain multi-address target: grpcio sends "addr1,addr2" as :authority, which
        # upstream h2 resets with PROTOCOL_ERROR; healthgate's patched h2 serves it
        # (vendor/h2/PATCHED.md).
        channel = grpc.insecure_channel(
            f"ipv4:{a.addr},{b.addr}",
            options=[
                ("grpc.service_config", config),
                ("grpc.enable_retries", 0),
            ],
        )
        assert wait_for(lambda: answered_by(channel) == {"instance-a", "instance-b"}), "both instances take traffic"
        dep_a.status = 503
        assert wait_for(lambda: answered_by(channel) == {"instance-b"}), "traffic left the failing instance"
        dep_a.status = 200
        assert wait_for(lambda: answered_by(channel) == {"instance-a", "instance-b"}), "traffic came back"
        channel.close()
    finally:
        dep_a.close()
        dep_b.close()


def test_prometheus_scrapes_the_dependency_health_series(healthgate, dependency):
    import shutil

    from conftest import Prometheus

    if shutil.which("prometheus") is None and "PROMETHEUS_BIN" not in __import__("os").environ:
        pytest.fail("prometheus is not installed (.ci/run installs Debian's package)")
    prometheus = Prometheus(healthgate.http_addr)
    try:
        def healthy():
            try:
                result = prometheus.query('healthgate_dependency_health{dependency="api"}')
            except OSError:
                return False  # not up yet
            return len(result) == 1 and result[0]["value"][1] == "0"

        assert wait_for(healthy, timeout=30), "Prometheus saw api healthy"
        dependency.status = 503

        def unhealthy():
            result = prometheus.query('healthgate_dependency_health{dependency="api"}')
            return len(result) == 1 and result[0]["value"][1] == "3"

        assert wait_for(unhealthy, timeout=30), "Prometheus saw api unhealthy"
        served = prometheus.query('healthgate_grpc_requests_total')
        assert all(set(s["metric"]) >= {"method", "code"} for s in served)
    finally:
        prometheus.close()
