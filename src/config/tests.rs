//! Validation tests: the documented sample validates, and every kind of mistake is reported
//! with its key path, all at once.

use std::time::Duration;

use super::*;
use crate::Impact;

fn env(name: &str) -> Option<String> {
    match name {
        "PAYMENTS_TOKEN" => Some("tok-CANARY-1234".to_owned()),
        "DB_PASSWORD" => Some("pw-CANARY-5678".to_owned()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_with_env(text, &env)
}

fn messages(err: &ConfigError) -> Vec<String> {
    err.problems().iter().map(ToString::to_string).collect()
}

/// The sample from DESIGN.md §5, verbatim.
const DESIGN_SAMPLE: &str = r#"
[server]
grpc_listen = "0.0.0.0:50051"
drain_delay = "5s"
drain_timeout = "10s"

[defaults]            # applies to every dependency unless it overrides
interval = "5s"
timeout = "2s"
fall = 3
rise = 2

[dependencies.orders-db-proxy]
kind = "http"
url = "http://127.0.0.1:9000/health"
degraded_after = "300ms"

[dependencies.payments]
kind = "grpc"
target = "http://127.0.0.1:50052"
service = "payments.v1.Payments"

[services.""]
dependencies = { orders-db-proxy = "critical", payments = "degrading" }

[services.readiness]
dependencies = { orders-db-proxy = "critical", payments = "critical" }
degraded = "serving"

[services.liveness]   # no dependencies: alive while the process serves
"#;

#[test]
fn design_sample_validates() {
    let config = parse(DESIGN_SAMPLE).expect("the documented sample is valid");
    assert_eq!(config.server.drain_timeout, Duration::from_secs(10));
    let db = &config.dependencies["orders-db-proxy"];
    assert_eq!(db.kind(), "http");
    assert_eq!(db.degraded_after, Some(Duration::from_millis(300)));
    assert_eq!(
        (db.fall, db.rise, db.timeout),
        (3, 2, Duration::from_secs(2))
    );
    assert_eq!(
        db.stale_after,
        Duration::from_secs(17),
        "3 × interval + timeout"
    );
    assert_eq!(
        config.services[""].dependencies["payments"],
        Impact::Degrading
    );
    assert!(config.services["liveness"].dependencies.is_empty());
}

#[test]
fn every_problem_is_reported_at_once_with_its_key_path() {
    let err = parse(
        r#"
[defaults]
intervl = "5s"

[dependencies.payments]
kind = "grpc"
target = "http://127.0.0.1:50052"
interval = "5s"
timeout = "5s"
colour = "blue"

[dependencies.db]
kind = "http"
interval = "5"

[dependencies.cache]
kind = "redis"

[services.readiness]
dependencies = { paymnts = "critical", db = "fatal" }
"#,
    )
    .expect_err("many problems");
    let got = messages(&err);
    let expect = [
        "defaults.intervl: unknown key",
        "dependencies.cache.kind: unknown kind \"redis\": expected \"http\", \"grpc\", \"tcp\" or \"push\"",
        "dependencies.db: missing key `url`",
        "dependencies.db.interval: invalid duration \"5\"",
        "dependencies.payments.colour: unknown key",
        "dependencies.payments: timeout (5s) must be less than interval (5s)",
        "services.readiness.dependencies.db: unknown impact \"fatal\"",
        "services.readiness.dependencies.paymnts: no dependency named \"paymnts\"",
    ];
    for e in expect {
        assert!(
            got.iter().any(|g| g.starts_with(e)),
            "missing {e:?} in {got:#?}"
        );
    }
    assert!(
        err.to_string().lines().all(|l| l.starts_with("<config>: ")),
        "{err}"
    );
}

#[test]
fn a_service_naming_a_missing_dependency_is_an_error() {
    let err = parse("[services.readiness]\ndependencies = { nope = \"critical\" }\n")
        .expect_err("missing dep");
    assert_eq!(
        messages(&err),
        ["services.readiness.dependencies.nope: no dependency named \"nope\""]
    );
}

#[test]
fn kind_specific_keys_are_rejected_on_other_kinds() {
    let err =
        parse("[dependencies.x]\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\nurl = \"http://a\"\n")
            .expect_err("url on tcp");
    assert_eq!(
        messages(&err),
        ["dependencies.x.url: only valid for kind = \"http\""]
    );
}

#[test]
fn http_version_and_keep_alive_are_checked_and_belong_to_http() {
    let ok = parse(
        "[dependencies.x]\nkind = \"http\"\nurl = \"http://a/\"\nhttp_version = \"2\"\nkeep_alive = false\n",
    )
    .expect("valid");
    let ProbeSpec::Http(spec) = &ok.dependencies["x"].probe else {
        panic!("an http dependency")
    };
    assert_eq!((spec.version, spec.keep_alive), (HttpVersion::Http2, false));
    let err =
        parse("[dependencies.x]\nkind = \"http\"\nurl = \"http://a/\"\nhttp_version = \"3\"\n")
            .expect_err("unknown version");
    assert_eq!(
        messages(&err),
        ["dependencies.x.http_version: unknown version \"3\": expected \"auto\", \"1.1\" or \"2\""]
    );
    let err = parse("[dependencies.x]\nkind = \"tcp\"\naddress = \"a:1\"\nkeep_alive = false\n")
        .expect_err("http key on tcp");
    assert_eq!(
        messages(&err),
        ["dependencies.x.keep_alive: only valid for kind = \"http\""]
    );
}

#[test]
fn an_invalid_tls_server_name_is_a_config_error() {
    let err = parse(
        "[dependencies.x]\nkind = \"http\"\nurl = \"https://10.0.0.7/\"\ntls = { server_name = \"not a name\" }\n",
    )
    .expect_err("invalid name");
    assert_eq!(
        messages(&err),
        [
            "dependencies.x.tls.server_name: invalid server name \"not a name\": expected a DNS name or an IP address"
        ]
    );
    parse("[dependencies.x]\nkind = \"http\"\nurl = \"https://10.0.0.7/\"\ntls = { server_name = \"orders.internal\" }\n")
        .expect("a DNS name is fine");
}

#[test]
fn liveness_must_not_depend_on_dependencies() {
    let err = parse(
        "[dependencies.db]\nkind = \"tcp\"\naddress = \"127.0.0.1:5432\"\n[services.liveness]\ndependencies = { db = \"critical\" }\n",
    )
    .expect_err("liveness with deps");
    assert!(
        messages(&err)[0].starts_with("services.liveness: liveness must not depend"),
        "{err}"
    );
}

#[test]
fn overall_service_defaults_to_every_dependency_critical() {
    let config = parse(
        "[dependencies.a]\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\n[dependencies.b]\nkind = \"tcp\"\naddress = \"127.0.0.1:2\"\n",
    )
    .expect("valid");
    let overall = &config.services[""];
    assert_eq!(overall.dependencies.len(), 2);
    assert!(
        overall
            .dependencies
            .values()
            .all(|i| *i == Impact::Critical)
    );
}

#[test]
fn environment_variables_expand_and_become_secrets() {
    let config = parse(
        r#"
[dependencies.api]
kind = "http"
url = "https://svc:${DB_PASSWORD}@api.internal/health?key=abc123456"
headers = { Authorization = "Bearer ${PAYMENTS_TOKEN}", X-Trace = "plain" }
"#,
    )
    .expect("valid");
    let dep = &config.dependencies["api"];
    let ProbeSpec::Http(http) = &dep.probe else {
        panic!("http spec")
    };
    assert_eq!(http.url.password(), Some("pw-CANARY-5678"));
    assert!(http.headers["authorization"].is_sensitive());
    assert!(!http.headers["x-trace"].is_sensitive());
    assert_eq!(
        dep.target(),
        "https://[redacted]@api.internal/health?key=[redacted]"
    );
    let debug = format!("{dep:?}");
    for secret in ["pw-CANARY-5678", "tok-CANARY-1234", "abc123456"] {
        assert!(
            !debug.contains(secret),
            "{secret} leaked into Debug: {debug}"
        );
        assert_eq!(
            dep.secrets.scrub(&format!("x {secret} y")),
            "x [redacted] y"
        );
    }
}

#[test]
fn missing_environment_variable_names_the_variable_not_a_value() {
    let err = parse("[dependencies.a]\nkind = \"http\"\nurl = \"http://h/${NOPE}\"\n")
        .expect_err("unset");
    assert_eq!(
        messages(&err),
        ["dependencies.a.url: environment variable NOPE is not set"]
    );
}

#[test]
fn invalid_urls_are_not_echoed() {
    let err = parse("[dependencies.a]\nkind = \"http\"\nurl = \"ftp://user:hunter2@h/\"\n")
        .expect_err("ftp");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn syntax_errors_name_line_and_column() {
    let err = parse("[server]\ngrpc_listen = \n").expect_err("syntax");
    assert!(messages(&err)[0].starts_with("line 2, column"), "{err}");
}

#[test]
fn wrong_value_types_name_the_key() {
    let err = parse("[dependencies.a]\nkind = \"tcp\"\naddress = \"h:1\"\nfall = \"three\"\n")
        .expect_err("type");
    assert!(
        messages(&err)[0].starts_with("dependencies.a.fall: invalid type"),
        "{err}"
    );
}

#[test]
fn on_demand_settings_are_checked() {
    let config = parse("[dependencies.a]\nkind = \"tcp\"\naddress = \"h:1\"\nmode = \"on_demand\"\nttl = \"10s\"\n").expect("valid");
    let Mode::OnDemand(o) = config.dependencies["a"].mode else {
        panic!("on demand")
    };
    assert_eq!(
        (o.ttl, o.failure_ttl, o.max_failure_ttl),
        (
            Duration::from_secs(10),
            Duration::from_secs(1),
            Duration::from_secs(30)
        )
    );
    let err = parse("[dependencies.a]\nkind = \"tcp\"\naddress = \"h:1\"\nttl = \"10s\"\n")
        .expect_err("ttl without on_demand");
    assert_eq!(
        messages(&err),
        ["dependencies.a.ttl: only valid with mode = \"on_demand\""]
    );
}

#[test]
fn statuses_and_body_conditions_parse() {
    let config = parse(
        r#"
[dependencies.a]
kind = "http"
url = "http://h/"
expected_statuses = [200, "204-206"]
degraded_statuses = [429]
body = [{ contains = "ok" }, { json = "$.status", equals = "UP", on_mismatch = "degraded" }]
"#,
    )
    .expect("valid");
    let ProbeSpec::Http(http) = &config.dependencies["a"].probe else {
        panic!("http")
    };
    assert!(http.expected_statuses.contains(205) && !http.expected_statuses.contains(201));
    assert!(http.degraded_statuses.contains(429));
    assert_eq!(http.body.len(), 2);
    let err = parse("[dependencies.a]\nkind = \"http\"\nurl = \"http://h/\"\nexpected_statuses = [\"299-200\", 99]\n").expect_err("bad statuses");
    assert_eq!(err.problems().len(), 2, "{err}");
}

#[test]
fn unreadable_tls_files_are_config_errors() {
    let err = parse("[dependencies.a]\nkind = \"http\"\nurl = \"https://h/\"\ntls = { ca_file = \"/nonexistent/ca.pem\" }\n").expect_err("no file");
    assert!(
        messages(&err)[0]
            .starts_with("dependencies.a.tls.ca_file: cannot read /nonexistent/ca.pem"),
        "{err}"
    );
}

#[test]
fn durations_beyond_the_maximum_are_refused_with_their_key() {
    let err = parse(
        r#"
        [server]
        drain_delay = "400days"
        [dependencies.a]
        kind = "tcp"
        address = "127.0.0.1:1"
        stale_after = "800days"
        [dependencies.b]
        kind = "tcp"
        address = "127.0.0.1:1"
        mode = "on_demand"
        ttl = "500days"
        failure_ttl = "366days"
        "#,
    )
    .expect_err("durations over a year");
    let m = messages(&err);
    for key in [
        "server.drain_delay",
        "dependencies.a.stale_after",
        "dependencies.b.ttl",
        "dependencies.b.failure_ttl",
    ] {
        assert!(
            m.iter()
                .any(|p| p.starts_with(&format!("{key}: ")) && p.contains("at most 365days")),
            "{key} not refused: {m:?}"
        );
    }
}

#[test]
fn the_longest_durations_validation_accepts_are_consistent() {
    let config = parse(
        r#"
        [dependencies.a]
        kind = "tcp"
        address = "127.0.0.1:1"
        interval = "200days"
        timeout = "1day"
        stale_after = "365days"
        [dependencies.b]
        kind = "tcp"
        address = "127.0.0.1:1"
        mode = "on_demand"
        ttl = "300days"
        failure_ttl = "200days"
        max_failure_ttl = "365days"
        "#,
    )
    .expect("a year is the maximum, inclusive");
    // The default staleness (3 × the period + timeout) may exceed it.
    assert_eq!(
        config.dependencies["b"].stale_after,
        Duration::from_secs(3 * 365 * 24 * 60 * 60 + 2)
    );
}

#[test]
fn sums_of_huge_durations_are_checked_not_overflowed() {
    // A library caller can hand the engine any Duration; the check must report, not panic.
    let mut spec = DependencySpec::new(ProbeSpec::Tcp(TcpSpec {
        address: "127.0.0.1:1".into(),
        tls: None,
    }));
    spec.mode = Mode::Background {
        interval: Duration::MAX,
        jitter: 0.0,
    };
    spec.timeout = Duration::MAX;
    spec.stale_after = Duration::MAX;
    spec.degraded_after = Some(Duration::MAX);
    spec.fall = u32::MAX;
    let problems: Vec<String> = spec
        .check("dependencies.x")
        .iter()
        .map(ToString::to_string)
        .collect();
    for what in [
        "timeout (",
        "interval (",
        "stale_after (",
        "must be greater than interval + timeout",
        "fall and rise must be between 1 and 1000",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(what)),
            "{what}: {problems:?}"
        );
    }
    // Numbers that do not fit the runtime's types are range errors too.
    let err = parse(
        r#"
        [dependencies.a]
        kind = "tcp"
        address = "127.0.0.1:1"
        fall = 5000000000
        rise = 0
        interval = "99999999999999999999years"
        "#,
    )
    .expect_err("out of range");
    let m = messages(&err);
    assert!(
        m.iter()
            .any(|p| p.starts_with("dependencies.a.fall: 5000000000 must be between 1 and 1000")),
        "{m:?}"
    );
    assert!(
        m.iter()
            .any(|p| p.starts_with("dependencies.a.rise: 0 must be between 1 and 1000")),
        "{m:?}"
    );
    assert!(
        m.iter().any(|p| p.starts_with("dependencies.a.interval: ")),
        "{m:?}"
    );
}

#[test]
fn http_front_keys_are_checked_with_their_paths() {
    let err = Config::from_toml(
        "[server]\nhttp_failure_status = 404\nhaproxy_agent_listen = \"nowhere\"\n\
         haproxy_agent_degraded_weight = 0\n",
    )
    .expect_err("three problems");
    let got = messages(&err);
    for e in [
        "server.http_failure_status: 404 is not allowed: expected 503",
        "server.haproxy_agent_listen: invalid address \"nowhere\"",
        "server.haproxy_agent_degraded_weight: ",
    ] {
        assert!(
            got.iter().any(|g| g.starts_with(e)),
            "missing {e:?} in {got:#?}"
        );
    }
    let config = Config::from_toml(
        "[server]\nhttp_failure_status = 500\nhaproxy_agent_listen = \"127.0.0.1:9465\"\n\
         haproxy_agent_degraded_weight = 25\n",
    )
    .expect("valid");
    assert_eq!(config.server.http_failure_status, 500);
    assert_eq!(config.server.haproxy_agent_degraded_weight, 25);
    assert!(config.server.haproxy_agent_listen.is_some());
}

#[test]
fn specs_parsed_from_the_same_text_are_equal_and_any_change_shows() {
    let text = |interval: &str, header: &str, metadata: &str| {
        format!(
            r#"
[dependencies.web]
kind = "http"
url = "https://user:${{DB_PASSWORD}}@web.internal/health"
interval = "{interval}"
headers = {{ Authorization = "Bearer ${{PAYMENTS_TOKEN}}", X-Probe = "{header}" }}

[dependencies.rpc]
kind = "grpc"
target = "http://rpc.internal:50051"
metadata = {{ x-tenant = "{metadata}" }}

[dependencies.port]
kind = "tcp"
address = "db.internal:5432"
"#
        )
    };
    let config = |t: String| parse(&t).expect("valid");
    let base = config(text("5s", "a", "t1"));
    let same = config(text("5s", "a", "t1"));
    for name in ["web", "rpc", "port"] {
        assert!(base.dependencies[name] == same.dependencies[name], "{name}");
    }
    assert_eq!(base.services, same.services);
    let interval = config(text("6s", "a", "t1"));
    assert!(base.dependencies["web"] != interval.dependencies["web"]);
    assert!(base.dependencies["rpc"] == interval.dependencies["rpc"]);
    let header = config(text("5s", "b", "t1"));
    assert!(base.dependencies["web"] != header.dependencies["web"]);
    assert!(base.dependencies["rpc"] == header.dependencies["rpc"]);
    let metadata = config(text("5s", "a", "t2"));
    assert!(base.dependencies["rpc"] != metadata.dependencies["rpc"]);
    assert!(base.dependencies["port"] == metadata.dependencies["port"]);
}

#[test]
fn push_dependencies_need_a_ttl_take_a_secret_token_and_nothing_about_probing() {
    let config = parse(
        r#"
[defaults]
fall = 5

[dependencies.backup]
kind = "push"
ttl = "26h"
token = "${PAYMENTS_TOKEN}"
"#,
    )
    .expect("valid");
    let spec = &config.dependencies["backup"];
    assert_eq!(spec.kind(), "push");
    assert_eq!(
        spec.mode,
        Mode::Push {
            ttl: Duration::from_secs(26 * 3600)
        }
    );
    assert_eq!(
        (spec.fall, spec.rise),
        (1, 1),
        "[defaults] are about probing"
    );
    assert_eq!(spec.stale_after, Duration::from_secs(26 * 3600));
    assert_eq!(spec.push_token(), Some("tok-CANARY-1234"));
    let shown = format!("{spec:?} {}", spec.target());
    assert!(!shown.contains("CANARY"), "{shown}");
    assert_eq!(spec.secrets.scrub("a tok-CANARY-1234 b"), "a [redacted] b");

    let err = parse(
        r#"
[dependencies.job]
kind = "push"
interval = "5s"
stale_after = "1h"
fall = 0

[dependencies.other]
kind = "http"
url = "http://x/"
token = "t"
"#,
    )
    .expect_err("invalid");
    let m = messages(&err);
    for expected in [
        "dependencies.job: missing key `ttl`",
        "dependencies.job.interval: not used with kind = \"push\"",
        "dependencies.job.stale_after: not used with kind = \"push\"",
        "dependencies.job.fall:",
        "dependencies.other.token: only valid for kind = \"push\"",
    ] {
        assert!(m.iter().any(|l| l.contains(expected)), "{expected}: {m:#?}");
    }
}

#[test]
fn the_admin_token_is_long_enough_from_the_environment_and_never_shown() {
    let config = parse("[admin]\ntoken = \"${PAYMENTS_TOKEN}-and-more\"\n").expect("valid");
    assert_eq!(
        config.admin.token.as_deref(),
        Some("tok-CANARY-1234-and-more")
    );
    assert!(!format!("{:?}", config.admin).contains("CANARY"));
    let err = parse("[admin]\ntoken = \"short\"\n").expect_err("too short");
    assert!(messages(&err)[0].starts_with("admin.token: must be at least 16 characters"));
    assert!(
        parse("").expect("valid").admin.token.is_none(),
        "off unless configured"
    );
}

#[test]
fn the_state_file_is_resolved_beside_the_config_and_its_directory_must_exist() {
    let dir = std::env::temp_dir().join(format!("healthgate-cfg-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("healthgate.toml");
    let config =
        Config::from_file_text(&file, "[server]\nstate_file = \"state.json\"\n").expect("valid");
    assert_eq!(config.server.state_file, Some(dir.join("state.json")));
    for (value, says) in [
        ("missing/state.json", "the directory"),
        ("", "must not be empty"),
        (".", "is a directory"),
    ] {
        let err = Config::from_file_text(&file, &format!("[server]\nstate_file = {value:?}\n"))
            .expect_err(value);
        let got = messages(&err);
        assert!(
            got.iter()
                .any(|g| g.starts_with("server.state_file: ") && g.contains(says)),
            "{value:?}: {got:?}"
        );
    }
    std::fs::remove_dir_all(&dir).expect("clean");
}

#[test]
fn a_reread_takes_the_earlier_spec_of_an_unchanged_table_that_used_no_variable_and_no_file() {
    let dir = std::env::temp_dir().join(format!("healthgate-validated-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cert = rcgen::generate_simple_self_signed(vec!["ca.internal".to_owned()]).expect("cert");
    std::fs::write(dir.join("ca.pem"), cert.cert.pem()).expect("ca file");
    let path = dir.join("healthgate.toml");
    let text = |url: &str, fall: u32| {
        format!(
            "[defaults]\nfall = {fall}\n\
             [dependencies.a]\nkind = \"http\"\nurl = \"{url}\"\n\
             [dependencies.b]\nkind = \"http\"\nurl = \"http://b.internal/\"\nheaders = {{ x-path = \"${{PATH}}\" }}\n\
             [dependencies.c]\nkind = \"http\"\nurl = \"https://c.internal/\"\ntls = {{ ca_file = \"ca.pem\" }}\n"
        )
    };
    let first = text("http://a.internal/", 2);
    let config = Config::from_file_text(&path, &first).expect("valid");
    let (again, kept) =
        parse_again(&path, &first, (&config, &Validated::default())).expect("valid");
    assert_eq!(
        again.dependencies, config.dependencies,
        "nothing to take: validated in full"
    );
    let kept_names: Vec<&String> = (kept.raw.dependencies.keys().zip(&kept.pure))
        .filter_map(|(name, pure)| pure.then_some(name))
        .collect();
    assert_eq!(kept_names, ["a"], "b reads ${{PATH}}, c reads a file");

    // An earlier spec that differs from what validating would give shows which one is taken.
    let mut earlier = config.clone();
    for spec in earlier.dependencies.values_mut() {
        spec.fall = 9;
    }
    let (taken, _) = parse_again(&path, &first, (&earlier, &kept)).expect("valid");
    assert_eq!(
        taken.dependencies["a"].fall, 9,
        "a's table is unchanged: taken"
    );
    assert_eq!(
        taken.dependencies["b"], config.dependencies["b"],
        "validated again"
    );
    assert_eq!(
        taken.dependencies["c"], config.dependencies["c"],
        "validated again"
    );
    // A changed table, or changed defaults, is validated again.
    let (changed, _) =
        parse_again(&path, &text("http://a2.internal/", 2), (&earlier, &kept)).expect("valid");
    assert_eq!(changed.dependencies["a"].fall, 2);
    let (defaults, _) =
        parse_again(&path, &text("http://a.internal/", 3), (&earlier, &kept)).expect("valid");
    assert_eq!(defaults.dependencies["a"].fall, 3);
    // A file with a problem is refused whatever was taken.
    let broken = format!("{first}[dependencies.d]\nkind = \"http\"\n");
    assert!(parse_again(&path, &broken, (&earlier, &kept)).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
