//! The integration tests: one binary, real dependencies on 127.0.0.1:0, no mocks.

mod support;

mod admin;
mod browser;
mod cert_expiry;
mod churn;
mod cli;
mod config_file;
mod config_props;
mod engine;
mod front;
mod haproxy;
mod http_twin;
mod limits;
mod listeners;
mod metrics;
mod otlp;
mod parents;
mod probe_dns;
mod probe_grpc;
mod probe_http;
mod probe_http2;
mod probe_tcp;
mod probe_watch;
mod push;
mod reload;
mod secrets;
mod state;
mod systemd;
mod tls;
mod wire;
