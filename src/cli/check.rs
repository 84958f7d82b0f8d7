//! `healthgate check`: a drop-in for grpc_health_probe (same flags, same exit codes: 0 serving,
//! 1 bad arguments, 2 connection failure, 3 RPC failure including an unknown service, 4 not
//! serving), plus several `--service`s, `--watch`, and `--detail` (a table, or `--json`).

mod render;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use healthgate::config::TlsSpec;
use healthgate::grpc::client::{ClientOptions, ConnectError, connect};
use healthgate::grpc::pb::detail::DetailRequest;
use healthgate::grpc::pb::detail::detail_client::DetailClient;
use healthgate::grpc::pb::health::HealthCheckRequest;
use healthgate::grpc::pb::health::health_check_response::ServingStatus;
use healthgate::grpc::pb::health::health_client::HealthClient;
use render::{detail_json, detail_table};
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;

/// Long flags that grpc_health_probe users write with a single dash.
pub(crate) const LONG_FLAGS: &[&str] = &[
    "addr",
    "service",
    "connect-timeout",
    "rpc-timeout",
    "timeout",
    "tls",
    "tls-ca-cert",
    "tls-client-cert",
    "tls-client-key",
    "tls-no-verify",
    "tls-server-name",
    "user-agent",
    "rpc-header",
    "gzip",
    "detail",
    "json",
    "watch",
    "token",
];

const SERVING: u8 = 0;
const BAD_ARGUMENTS: u8 = 1;
const CONNECTION_FAILURE: u8 = 2;
const RPC_FAILURE: u8 = 3;
const NOT_SERVING: u8 = 4;

#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// Server address: HOST:PORT, or :PORT for localhost.
    #[arg(long)]
    addr: String,
    /// Service to check ("" is the whole server, the default); repeat for several.
    #[arg(long = "service")]
    services: Vec<String>,
    /// How long connecting may take.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// How long each RPC may take.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    rpc_timeout: Duration,
    /// Sets both timeouts.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Use TLS (system roots unless --tls-ca-cert).
    #[arg(long)]
    tls: bool,
    /// CA certificate (PEM) to verify the server with.
    #[arg(long, requires = "tls")]
    tls_ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS.
    #[arg(long, requires_all = ["tls", "tls_client_key"])]
    tls_client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mTLS.
    #[arg(long, requires_all = ["tls", "tls_client_cert"])]
    tls_client_key: Option<PathBuf>,
    /// Do not verify the server's certificate.
    #[arg(long, requires = "tls", conflicts_with = "tls_ca_cert")]
    tls_no_verify: bool,
    /// Name to verify the server's certificate against.
    #[arg(long, requires = "tls")]
    tls_server_name: Option<String>,
    /// User agent.
    #[arg(long, default_value = concat!("healthgate-check/", env!("CARGO_PKG_VERSION")))]
    user_agent: String,
    /// Extra request metadata, "NAME: VALUE"; repeatable.
    #[arg(long = "rpc-header")]
    rpc_headers: Vec<String>,
    /// Compress requests with gzip (and accept gzip responses).
    #[arg(long)]
    gzip: bool,
    /// Also print why: the detail RPC, as a table.
    #[arg(long, conflicts_with = "watch")]
    detail: bool,
    /// With --detail: print one JSON object instead of a table.
    #[arg(long, requires = "detail")]
    json: bool,
    /// Follow the service's Watch stream, printing each status, until it ends.
    #[arg(long)]
    watch: bool,
    /// Bearer token for the detail RPC (when the server sets detail_token).
    #[arg(long, env = "HEALTHGATE_DETAIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Verbose output (accepted for grpc_health_probe compatibility).
    #[arg(short = 'v')]
    verbose: bool,
}

pub(crate) async fn run(mut args: CheckArgs) -> ExitCode {
    if let Some(t) = args.timeout {
        args.connect_timeout = t;
        args.rpc_timeout = t;
    }
    if args.services.is_empty() {
        args.services.push(String::new());
    }
    let (tls, metadata) = match (tls_spec(&args), metadata(&args.rpc_headers)) {
        (Ok(tls), Ok(metadata)) => (tls, metadata),
        (Err(e), _) | (_, Err(e)) => return fail(BAD_ARGUMENTS, &format!("error: {e}")),
    };
    if args.watch && args.services.len() > 1 {
        return fail(BAD_ARGUMENTS, "error: --watch follows one --service");
    }
    let options = ClientOptions {
        addr: args.addr.clone(),
        tls,
        connect_timeout: args.connect_timeout,
        user_agent: Some(args.user_agent.clone()),
    };
    let channel = match connect(&options).await {
        Ok(channel) => channel,
        Err(ConnectError::Invalid(e)) => return fail(BAD_ARGUMENTS, &format!("error: {e}")),
        Err(ConnectError::Timeout(d)) => {
            return fail(
                CONNECTION_FAILURE,
                &format!(
                    "timeout: failed to connect service {:?} within {}",
                    args.addr,
                    humantime::format_duration(d)
                ),
            );
        }
        Err(ConnectError::Failed(e)) => {
            return fail(
                CONNECTION_FAILURE,
                &format!("error: failed to connect service at {:?}: {e}", args.addr),
            );
        }
    };
    let mut client = HealthClient::new(channel.clone());
    if args.gzip {
        client = client
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
    }
    if args.watch {
        return watch(client, &args, metadata).await;
    }
    let several = args.services.len() > 1;
    // In JSON mode stdout carries exactly one JSON object; status lines go to stderr.
    let quiet_stdout = args.json;
    let mut code = SERVING;
    for service in &args.services {
        let result = check_one(&mut client, service, &args, &metadata).await;
        let prefix = if several {
            format!("{service:?}: ")
        } else {
            String::new()
        };
        let this = match result {
            Ok(ServingStatus::Serving) => {
                let line = format!("{prefix}status: SERVING");
                if quiet_stdout {
                    eprintln!("{line}")
                } else {
                    println!("{line}")
                }
                SERVING
            }
            Ok(status) => {
                eprintln!(
                    "{prefix}service unhealthy (responded with {:?})",
                    status.as_str_name()
                );
                NOT_SERVING
            }
            Err((code, message)) => {
                eprintln!("{prefix}{message}");
                code
            }
        };
        code = worse(code, this);
    }
    if args.detail {
        print_detail(channel, &args, metadata).await;
    }
    ExitCode::from(code)
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(code)
}

/// The worse of two exit codes: connection failure, then RPC failure, then not serving.
fn worse(a: u8, b: u8) -> u8 {
    let rank = |c| match c {
        CONNECTION_FAILURE => 3,
        RPC_FAILURE => 2,
        NOT_SERVING => 1,
        _ => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

async fn check_one(
    client: &mut HealthClient<Channel>,
    service: &str,
    args: &CheckArgs,
    metadata: &MetadataMap,
) -> Result<ServingStatus, (u8, String)> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    *request.metadata_mut() = metadata.clone();
    request.set_timeout(args.rpc_timeout);
    match tokio::time::timeout(args.rpc_timeout, client.check(request)).await {
        Err(_) => Err((
            RPC_FAILURE,
            format!(
                "timeout: health rpc did not complete within {}",
                humantime::format_duration(args.rpc_timeout)
            ),
        )),
        Ok(Err(status)) => Err((RPC_FAILURE, rpc_error(&status, args.rpc_timeout))),
        Ok(Ok(response)) => Ok(response.into_inner().status()),
    }
}

fn rpc_error(status: &tonic::Status, timeout: Duration) -> String {
    match status.code() {
        Code::Unimplemented => format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
            status.message()
        ),
        Code::DeadlineExceeded => format!(
            "timeout: health rpc did not complete within {}",
            humantime::format_duration(timeout)
        ),
        code => format!(
            "error: health rpc failed: code = {code:?} desc = {}",
            status.message()
        ),
    }
}

async fn watch(
    mut client: HealthClient<Channel>,
    args: &CheckArgs,
    metadata: MetadataMap,
) -> ExitCode {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: args.services[0].clone(),
    });
    *request.metadata_mut() = metadata;
    let mut stream = match client.watch(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return fail(RPC_FAILURE, &rpc_error(&status, args.rpc_timeout)),
    };
    let mut last = None;
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(m)) => {
                    println!("{} status: {}", humantime::format_rfc3339_millis(SystemTime::now()), m.status().as_str_name());
                    last = Some(m.status());
                }
                Ok(None) => break,
                Err(status) => return fail(RPC_FAILURE, &rpc_error(&status, args.rpc_timeout)),
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    ExitCode::from(if last == Some(ServingStatus::Serving) {
        SERVING
    } else {
        NOT_SERVING
    })
}

async fn print_detail(channel: Channel, args: &CheckArgs, mut metadata: MetadataMap) {
    if let Some(token) = &args.token {
        match MetadataValue::try_from(format!("Bearer {token}")) {
            Ok(v) => {
                metadata.insert("authorization", v);
            }
            Err(_) => eprintln!("error: the token is not a valid header value"),
        }
    }
    let mut request = tonic::Request::new(DetailRequest {
        services: args.services.clone(),
        history: false,
    });
    *request.metadata_mut() = metadata;
    request.set_timeout(args.rpc_timeout);
    match DetailClient::new(channel).get(request).await {
        Ok(response) if args.json => println!("{}", detail_json(&response.into_inner())),
        Ok(response) => print!("{}", detail_table(&response.into_inner())),
        Err(status) => eprintln!(
            "error: detail rpc failed: code = {:?} desc = {}",
            status.code(),
            status.message()
        ),
    }
}

fn tls_spec(args: &CheckArgs) -> Result<Option<TlsSpec>, String> {
    if !args.tls {
        return Ok(None);
    }
    let read =
        |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let identity_pem = match (&args.tls_client_cert, &args.tls_client_key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Ok(Some(TlsSpec {
        ca_pem: args.tls_ca_cert.as_ref().map(read).transpose()?,
        identity_pem,
        server_name: args.tls_server_name.clone(),
        insecure: args.tls_no_verify,
        ..TlsSpec::default()
    }))
}

fn metadata(headers: &[String]) -> Result<MetadataMap, String> {
    let mut map = MetadataMap::new();
    for header in headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("--rpc-header {header:?}: expected \"NAME: VALUE\""))?;
        let name = MetadataKey::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("--rpc-header: invalid name {name:?}"))?;
        let value = MetadataValue::try_from(value.trim())
            .map_err(|_| "--rpc-header: invalid value".to_owned())?;
        map.append(name, value);
    }
    Ok(map)
}
