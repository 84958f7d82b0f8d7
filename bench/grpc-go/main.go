// Benchmark peer: grpc-go's health.NewServer() with the same service names, all SERVING.
// Built in GOPATH mode against Debian's golang-google-grpc-dev (no module downloads).
// Usage: grpc-go-health ADDR. Each SIGUSR1 flips "" between SERVING and NOT_SERVING (for the
// Watch fan-out benchmark).
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	addr := "127.0.0.1:0"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := grpc.NewServer()
	h := health.NewServer()
	for _, name := range []string{"", "readiness", "liveness"} {
		h.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(server, h)
	flips := make(chan os.Signal, 1)
	signal.Notify(flips, syscall.SIGUSR1)
	go func() {
		serving := true
		for range flips {
			serving = !serving
			status := healthpb.HealthCheckResponse_NOT_SERVING
			if serving {
				status = healthpb.HealthCheckResponse_SERVING
			}
			h.SetServingStatus("", status)
		}
	}()
	fmt.Printf("grpc listening on %s\n", lis.Addr())
	if err := server.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
