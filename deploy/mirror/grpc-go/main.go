// Mirror healthgate's Watch into an app's own grpc.health.v1 service (grpc-go).
//
// gRPC clients do client-side health checking (gRFC A17) on the same connection as their RPCs,
// so they ask the app's server, not a healthgate sidecar on another port. This is the piece a Go
// app adds: one Watch per service name on healthgate, each message copied into the app's own
// health.Server with SetServingStatus. While healthgate cannot be reached the mirrored services
// are NOT_SERVING, and the Watch is reopened with backoff (1 s, doubling, at most 10 s).
//
// In an app:
//
//	hs := health.NewServer()
//	healthpb.RegisterHealthServer(server, hs)
//	go Mirror(ctx, healthgateConn, hs, "readiness")
//
// Run alone (the interop suite does): `mirror HEALTHGATE_ADDR SERVICE…` serves its own health
// service on 127.0.0.1:0, prints `app listening on ADDR`, and mirrors until killed. Built in
// GOPATH mode against Debian's golang-google-grpc-dev (no module downloads).
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Mirror copies healthgate's Watch(service) into hs until ctx ends.
func Mirror(ctx context.Context, conn *grpc.ClientConn, hs *health.Server, service string) {
	client := healthpb.NewHealthClient(conn)
	backoff := time.Second
	for ctx.Err() == nil {
		stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err == nil {
			for {
				msg, err := stream.Recv()
				if err != nil {
					break
				}
				hs.SetServingStatus(service, msg.GetStatus())
				backoff = time.Second
			}
		}
		// The stream ended or healthgate is unreachable: not serving until it is back.
		hs.SetServingStatus(service, healthpb.HealthCheckResponse_NOT_SERVING)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff *= 2; backoff > 10*time.Second {
			backoff = 10 * time.Second
		}
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: mirror HEALTHGATE_ADDR SERVICE…")
		os.Exit(1)
	}
	services := os.Args[2:]
	if len(services) == 0 {
		services = []string{""}
	}
	conn, err := grpc.Dial(os.Args[1], grpc.WithInsecure()) // Debian's grpc-go predates credentials/insecure
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(server, hs)
	for _, s := range services {
		hs.SetServingStatus(s, healthpb.HealthCheckResponse_NOT_SERVING)
		go Mirror(context.Background(), conn, hs, s)
	}
	fmt.Printf("app listening on %s\n", lis.Addr())
	if err := server.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
