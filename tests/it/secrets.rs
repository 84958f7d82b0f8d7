//! Canary secrets in URL user info, query values, headers, metadata and `${ENV}` values are
//! used on the wire but appear in no snapshot field, reason, `Debug` output or error message.

use healthgate::{Config, Engine};

use crate::support::{Answer, HttpServer, closed_port, garbage_server, silent_server, state_where};

const CANARIES: [&str; 9] = [
    "CANARY-PW-1",
    "CANARY-Q-2",
    "CANARY-H-3",
    "CANARY-ENV-4",
    "CANARY-MD-5",
    "canary-host-6",
    "CANARY-RAW-7",
    "CANARY-ADDR-8",
    "CANARY-PATH-9",
];

fn env(name: &str) -> Option<String> {
    let value = match name {
        "API_KEY" => "CANARY-ENV-4",
        // A host that cannot resolve: the DNS error's reason names it.
        "SECRET_HOST" => "canary-host-6.invalid",
        "RAW_QUERY" => "CANARY-RAW-7",
        "BAD_ADDRESS" => "CANARY-ADDR-8",
        "SECRET_PATH" => "CANARY-PATH-9",
        "LOOPBACK" => "127.0.0.1",
        _ => return None,
    };
    Some(value.to_owned())
}

fn assert_clean(what: &str, text: &str) {
    for canary in CANARIES {
        assert!(
            !text.contains(canary),
            "{canary} leaked into {what}: {text}"
        );
    }
}

#[tokio::test]
async fn canary_secrets_never_appear_in_what_we_show() {
    let failing = HttpServer::start().await;
    failing.set(Answer {
        status: 503,
        ..Answer::default()
    });
    let ok = HttpServer::start().await;
    let refused = closed_port().await;
    let garbage = garbage_server().await;
    let hung = silent_server().await;
    let secret_http = |addr: String| {
        format!(
            "kind = \"http\"\nurl = \"http://probe:CANARY-PW-1@{addr}/health?token=CANARY-Q-2\"\n\
             headers = {{ Authorization = \"Bearer CANARY-H-3\", X-Api-Key = \"${{API_KEY}}\" }}\n\
             timeout = \"500ms\"\ninterval = \"30s\"\njitter = 0.0\n"
        )
    };
    let toml = format!(
        "[dependencies.failing]\n{}\n[dependencies.ok]\n{}\n[dependencies.refused]\n{}\n\
         [dependencies.garbage]\n{}\n[dependencies.hung]\n{}\n\
         [dependencies.grpc]\nkind = \"grpc\"\ntarget = \"http://{refused}\"\n\
         metadata = {{ authorization = \"Bearer CANARY-MD-5\" }}\ninterval = \"30s\"\njitter = 0.0\n\
         [dependencies.env-host]\nkind = \"http\"\n\
         url = \"http://${{SECRET_HOST}}:{port}/${{SECRET_PATH}}?${{RAW_QUERY}}\"\n\
         interval = \"30s\"\njitter = 0.0\n\
         [dependencies.env-tcp]\nkind = \"tcp\"\naddress = \"${{LOOPBACK}}:{port}\"\n\
         interval = \"30s\"\njitter = 0.0\n",
        secret_http(failing.addr.to_string()),
        secret_http(ok.addr.to_string()),
        secret_http(refused.to_string()),
        secret_http(garbage.to_string()),
        secret_http(hung.to_string()),
        port = ok.addr.port(),
    );
    let config = Config::from_toml_with_env(&toml, &env).expect("valid");
    assert_clean("Config Debug", &format!("{config:?}"));

    let handle = Engine::from_config(&config).start().expect("starts");
    for dep in [
        "failing", "ok", "refused", "garbage", "hung", "grpc", "env-host", "env-tcp",
    ] {
        state_where(&handle, dep, |d| d.last_outcome.is_some()).await;
    }
    let snapshot = handle.snapshot();
    assert_clean("Snapshot Debug", &format!("{snapshot:?}"));
    for d in &snapshot.dependencies {
        assert_clean("target", &d.target);
        let reason = d
            .last_outcome
            .as_ref()
            .and_then(|o| o.verdict.reason())
            .map(|r| r.to_string());
        assert_clean("reason", reason.as_deref().unwrap_or(""));
    }
    assert_eq!(
        &*snapshot.dependency("ok").expect("ok").target,
        format!("http://[redacted]@{}/health?token=[redacted]", ok.addr)
    );
    // Values from the environment show as their variables, wherever they stand.
    assert_eq!(
        &*snapshot.dependency("env-host").expect("env-host").target,
        format!(
            "http://${{SECRET_HOST}}:{}/${{SECRET_PATH}}?[redacted]",
            ok.addr.port()
        )
    );
    let env_tcp = snapshot.dependency("env-tcp").expect("env-tcp");
    assert_eq!(
        &*env_tcp.target,
        format!("${{LOOPBACK}}:{}", ok.addr.port())
    );
    assert_eq!(
        env_tcp.health,
        healthgate::Health::Healthy,
        "the address was used"
    );
    assert!(
        reason_of(snapshot.dependency("env-host").expect("env-host")).starts_with("dns: "),
        "the secret host was looked up"
    );

    // The secrets were really used: the healthy server received them.
    let headers = ok
        .last_headers
        .lock()
        .expect("not poisoned")
        .clone()
        .expect("request seen");
    assert_eq!(headers["authorization"], "Bearer CANARY-H-3");
    assert_eq!(headers["x-api-key"], "CANARY-ENV-4");
    handle.shutdown().await;

    // Error messages: a broken URL and a rejected runtime change carrying secrets.
    let bad = "[dependencies.x]\nkind = \"http\"\nurl = \"ftp://u:CANARY-PW-1@h/?t=CANARY-Q-2\"\n\
               headers = { Authorization = \"Bearer CANARY-H-3\\u0001\" }\n";
    let err = Config::from_toml_with_env(bad, &env).expect_err("invalid");
    assert_clean("config error", &err.to_string());
    assert_clean("config error Debug", &format!("{err:?}"));
    // An expanded value that is invalid is reported by its variable, never by its value.
    let bad = "[dependencies.x]\nkind = \"tcp\"\naddress = \"${BAD_ADDRESS}\"\n\
               [telemetry]\notlp_endpoint = \"ftp://u:CANARY-PW-1@collector\"\n";
    let err = Config::from_toml_with_env(bad, &env).expect_err("invalid");
    assert!(err.to_string().contains("${BAD_ADDRESS}"), "{err}");
    assert_clean("config error", &err.to_string());
}

fn reason_of(d: &healthgate::snapshot::DependencyState) -> String {
    d.last_outcome
        .as_ref()
        .and_then(|o| o.verdict.reason())
        .map(|r| r.to_string())
        .unwrap_or_default()
}
