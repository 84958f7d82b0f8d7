"""Mirror healthgate's Watch into an app's own grpc.health.v1 service (grpcio).

gRPC clients do client-side health checking (gRFC A17) on the same connection as their RPCs,
so they ask the *app's* server, not a healthgate sidecar on another port. This is the piece an
app (in any language grpcio serves) adds: one Watch per service name on healthgate, each
message copied into the app's own HealthServicer. While healthgate cannot be reached, the
mirrored services are NOT_SERVING (the app cannot vouch for its dependencies), and the Watch
is reopened with backoff (1 s, doubling, at most 10 s).

In an app:

    health = grpc_health.v1.health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    Mirror("localhost:50051", health, ["", "readiness"]).start()

Run alone (the interop suite does): `python mirror.py HEALTHGATE_ADDR SERVICE…` serves its
own health service on 127.0.0.1:0, prints `app listening on ADDR`, and mirrors until killed.
"""

import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Mirror:
    def __init__(self, healthgate, servicer, services):
        self.healthgate = healthgate
        self.servicer = servicer
        self.services = services
        self.stopped = threading.Event()

    def start(self):
        for service in self.services:
            # Not serving until healthgate says otherwise.
            self.servicer.set(service, NOT_SERVING)
            threading.Thread(target=self._follow, args=(service,), daemon=True).start()
        return self

    def stop(self):
        self.stopped.set()

    def _follow(self, service):
        backoff = 1.0
        channel = grpc.insecure_channel(self.healthgate)
        stub = health_pb2_grpc.HealthStub(channel)
        while not self.stopped.is_set():
            try:
                for response in stub.Watch(health_pb2.HealthCheckRequest(service=service)):
                    self.servicer.set(service, response.status)
                    backoff = 1.0
                    if self.stopped.is_set():
                        return
            except grpc.RpcError:
                pass
            # The stream ended or healthgate is unreachable: not serving until it is back.
            self.servicer.set(service, NOT_SERVING)
            self.stopped.wait(backoff)
            backoff = min(backoff * 2, 10.0)


def main():
    healthgate, services = sys.argv[1], sys.argv[2:] or [""]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    Mirror(healthgate, servicer, services).start()
    print(f"app listening on 127.0.0.1:{port}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
