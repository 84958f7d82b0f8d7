"""Fixtures: real healthgate processes whose HTTP dependency the test can break and mend."""

import http.server
import os
import subprocess
import tempfile
import threading

import pytest

BIN = os.environ.get("HEALTHGATE_BIN", "target/debug/healthgate")


class Dependency:
    """An HTTP server on 127.0.0.1:0 answering 200 or 503, as the test says."""

    def __init__(self):
        self.status = 200
        dep = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(dep.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


class Healthgate:
    """`healthgate serve` with one HTTP dependency behind "" and `extra_service`."""

    def __init__(self, dependency, extra_service="readiness"):
        self.dir = tempfile.mkdtemp(prefix="healthgate-interop-")
        config = os.path.join(self.dir, "healthgate.toml")
        self.config = config
        with open(config, "w") as f:
            f.write(
                f"""
[server]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
drain_delay = "0s"
drain_timeout = "1s"

[dependencies.api]
kind = "http"
url = "http://127.0.0.1:{dependency.port}/health"
interval = "200ms"
timeout = "100ms"
fall = 1
rise = 1
jitter = 0.0

[services.""]
dependencies = {{ api = "critical" }}

[services.{extra_service}]
dependencies = {{ api = "critical" }}
"""
            )
        self.process = subprocess.Popen(
            [BIN, "serve", "--config", config],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.addr = self._listening("grpc")
        self.http_addr = self._listening("http")

    def reload_with(self, text):
        """Replaces the config file (atomically, as an editor or a ConfigMap does) and sends
        SIGHUP."""
        import signal

        tmp = self.config + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config)
        self.process.send_signal(signal.SIGHUP)

    def config_text(self):
        with open(self.config) as f:
            return f.read()

    def metrics(self):
        import urllib.request

        with urllib.request.urlopen(f"http://{self.http_addr}/metrics", timeout=2) as response:
            return response.read().decode()

    def _listening(self, kind):
        line = self.process.stdout.readline().strip()
        prefix = f"{kind} listening on "
        assert line.startswith(prefix), f"unexpected line: {line!r}"
        return line[len(prefix):]

    def close(self):
        self.process.terminate()
        assert self.process.wait(timeout=10) == 0


@pytest.fixture
def dependency():
    dep = Dependency()
    yield dep
    dep.close()


@pytest.fixture
def healthgate(dependency):
    server = Healthgate(dependency)
    yield server
    server.close()


@pytest.fixture
def make_healthgate():
    made = []

    def make(dependency, extra_service):
        server = Healthgate(dependency, extra_service)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


class Prometheus:
    """A real Prometheus server (Debian's package) scraping `target` every second."""

    def __init__(self, target):
        import socket

        self.dir = tempfile.mkdtemp(prefix="healthgate-prometheus-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write(
                "global:\n  scrape_interval: 1s\n"
                "scrape_configs:\n  - job_name: healthgate\n"
                f"    static_configs:\n      - targets: ['{target}']\n"
            )
        self.process = subprocess.Popen(
            [
                os.environ.get("PROMETHEUS_BIN", "prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def query(self, expr):
        import json
        import urllib.parse
        import urllib.request

        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.load(response)["data"]["result"]

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=10)
