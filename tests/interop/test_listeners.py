"""healthgate's listeners driven by grpcio: secure channels against TLS and required mTLS, and
`unix:` targets."""

import os
import subprocess
import tempfile

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import BIN, Dependency
from test_interop import SERVING, wait_for


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(dir):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate with a
    SPIFFE ID, made with the openssl CLI."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    path = lambda name: os.path.join(dir, name)
    openssl("req", "-x509", *ec, "-keyout", path("ca.key"), "-out", path("ca.pem"), "-days", "2", "-subj", "/CN=interop CA")
    for name, san in [("server", "DNS:localhost,IP:127.0.0.1"), ("client", "URI:spiffe://interop.test/ns/ops/sa/admin")]:
        openssl("req", *ec, "-keyout", path(f"{name}.key"), "-out", path(f"{name}.csr"), "-subj", f"/CN={name}")
        with open(path(f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName={san}\n")
        openssl(
            "x509", "-req", "-in", path(f"{name}.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
            "-CAcreateserial", "-out", path(f"{name}.pem"), "-days", "2", "-extfile", path(f"{name}.ext"),
        )
    return path


class Served:
    """`healthgate serve` with `config`, waiting for the `grpc listening on` line."""

    def __init__(self, dir, config):
        file = os.path.join(dir, "healthgate.toml")
        with open(file, "w") as f:
            f.write(config)
        self.process = subprocess.Popen([BIN, "serve", "--config", file], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline().strip()
        assert line.startswith("grpc listening on "), line
        self.addr = line[len("grpc listening on "):]

    def close(self):
        self.process.terminate()
        assert self.process.wait(timeout=10) == 0


def dependency_section(dep):
    return f"""
[dependencies.api]
kind = "http"
url = "http://127.0.0.1:{dep.port}/health"
interval = "200ms"
timeout = "100ms"
"""


def serving(channel):
    health = health_pb2_grpc.HealthStub(channel)

    def check():
        try:
            return health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status == SERVING
        except grpc.RpcError:
            return False

    return wait_for(check)


def read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("client_auth", ["none", "required"])
def test_grpcio_secure_channels_against_tls_and_required_mtls(client_auth):
    dir = tempfile.mkdtemp(prefix="healthgate-interop-tls-")
    path = make_pki(dir)
    dep = Dependency()
    tls = f'[server.grpc_tls]\ncert_file = "server.pem"\nkey_file = "server.key"\n'
    if client_auth == "required":
        tls += 'client_ca_file = "ca.pem"\nclient_auth = "required"\n'
    served = Served(dir, f'[server]\ngrpc_listen = "127.0.0.1:0"\ndrain_delay = "0s"\n\n{tls}{dependency_section(dep)}')
    try:
        options = [("grpc.ssl_target_name_override", "localhost")]
        with_cert = grpc.ssl_channel_credentials(read(path("ca.pem")), read(path("client.key")), read(path("client.pem")))
        without = grpc.ssl_channel_credentials(read(path("ca.pem")))
        assert serving(grpc.secure_channel(served.addr, with_cert, options)), "a client certificate is always accepted"
        plain = serving(grpc.secure_channel(served.addr, without, options))
        if client_auth == "required":
            assert not plain, "required mTLS refuses a client without a certificate"
        else:
            assert plain, "TLS without client authentication serves any client"
        # A plaintext client gets nowhere on a TLS port.
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(served.addr))
        with pytest.raises(grpc.RpcError):
            health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    finally:
        served.close()
        dep.close()


def test_grpcio_unix_targets():
    dir = tempfile.mkdtemp(prefix="healthgate-interop-unix-")
    socket = os.path.join(dir, "grpc.sock")
    dep = Dependency()
    served = Served(dir, f'[server]\ngrpc_listen = "unix:{socket}"\ndrain_delay = "0s"\n{dependency_section(dep)}')
    try:
        assert served.addr == f"unix:{socket}"
        # Both of grpcio's spellings: unix:PATH and unix://ABSOLUTE_PATH.
        for target in [f"unix:{socket}", f"unix://{socket}"]:
            assert serving(grpc.insecure_channel(target)), target
    finally:
        served.close()
        dep.close()
    assert not os.path.exists(socket), "the socket file goes at exit"
