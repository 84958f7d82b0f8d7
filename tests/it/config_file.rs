//! Loading configuration files: errors name the file, relative paths resolve against it.

use healthgate::Config;
use healthgate::config::ProbeSpec;

use crate::support::temp_dir;

#[test]
fn relative_tls_paths_resolve_against_the_config_file() {
    let pki = crate::tls::pki();
    let dir = std::path::Path::new(&pki.file("ca.pem"))
        .parent()
        .expect("dir")
        .to_path_buf();
    let file = dir.join("healthgate.toml");
    std::fs::write(&file, "[dependencies.api]\nkind = \"http\"\nurl = \"https://localhost/\"\ntls = { ca_file = \"ca.pem\" }\n").expect("write");
    let config = Config::load(&file).expect("valid");
    let ProbeSpec::Http(http) = &config.dependencies["api"].probe else {
        panic!("http")
    };
    assert!(http.tls.ca_pem.is_some());
}

#[test]
fn errors_name_the_file_and_every_problem() {
    let dir = temp_dir("config");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[server]\ngrpc_listen = \"nowhere\"\ndrain_delay = \"soon\"\n",
    )
    .expect("write");
    let err = Config::load(&file).expect_err("invalid");
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let prefix = format!("{}: ", file.display());
    assert!(lines.iter().all(|l| l.starts_with(&prefix)), "{text}");
    assert!(
        lines[0].contains("server.drain_delay: invalid duration \"soon\""),
        "{text}"
    );
    assert!(
        lines[1].contains("server.grpc_listen: invalid address \"nowhere\""),
        "{text}"
    );

    // Past the bound: refused, and not read past it (`/dev/zero` never ends).
    let big = dir.join("big.toml");
    let mut text = String::from("# padding\n");
    while (text.len() as u64) <= healthgate::config::MAX_FILE_BYTES {
        text.push_str(&"#".repeat(1023));
        text.push('\n');
    }
    std::fs::write(&big, &text).expect("write");
    for file in [big.as_path(), std::path::Path::new("/dev/zero")] {
        let err = Config::load(file).expect_err("too large");
        assert!(
            err.to_string().starts_with(&format!(
                "{}: cannot read file: larger than 16 MiB",
                file.display()
            )),
            "{err}"
        );
    }
    std::fs::remove_file(&big).expect("clean");

    let missing = dir.join("missing.toml");
    let err = Config::load(&missing).expect_err("no file");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read file", missing.display())),
        "{err}"
    );
}
