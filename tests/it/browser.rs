//! The status page in a real browser: Debian's headless `chromium`, driven over WebDriver
//! (`chromedriver`; the protocol is HTTP + JSON, spoken here directly). Skipped when either is
//! missing, unless `HEALTHGATE_REQUIRE_TOOLS=1` (CI installs them).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use healthgate::http::TwinOptions;
use healthgate::listener::Limits;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::support::{Answer, HttpServer, PATIENCE, start, state_where};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One WebDriver command; the response's `value`.
async fn webdriver(driver: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {driver}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(driver)
        .await
        .expect("chromedriver");
    tcp.write_all(request.as_bytes()).await.expect("write");
    // Read the head, then exactly Content-Length bytes (chromedriver may keep the connection).
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let body = loop {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("chromedriver answers")
            .expect("read");
        assert!(n > 0, "chromedriver closed before answering");
        response.extend_from_slice(&buf[..n]);
        let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a Content-Length");
        if response.len() >= end + 4 + length {
            break String::from_utf8_lossy(&response[end + 4..end + 4 + length]).into_owned();
        }
    };
    let value: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    value["value"].clone()
}

struct Browser {
    driver: SocketAddr,
    session: String,
    _child: tokio::process::Child,
    group: u32,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.group)])
            .stderr(Stdio::null())
            .status();
    }
}

impl Browser {
    async fn start() -> Option<Browser> {
        let present =
            std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
        if !present {
            assert!(
                std::env::var_os("HEALTHGATE_REQUIRE_TOOLS").is_none(),
                "chromium and chromium-driver are required (apt-get install chromium chromium-driver)"
            );
            eprintln!("skipped: {CHROMIUM} or {CHROMEDRIVER} missing");
            return None;
        }
        // Its own process group, so that Chromium (chromedriver's child) goes with it even
        // when the test fails before `quit`.
        let mut child = tokio::process::Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let port = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.expect("read") {
                if let Some(rest) =
                    line.strip_prefix("ChromeDriver was started successfully on port ")
                {
                    return rest.trim_end_matches('.').parse::<u16>().expect("a port");
                }
            }
            panic!("chromedriver ended without saying its port");
        })
        .await
        .expect("chromedriver says its port");
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let driver = SocketAddr::from(([127, 0, 0, 1], port));
        let capabilities = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        }}}});
        let session = webdriver(driver, "POST", "/session", Some(capabilities)).await;
        let session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a session: {session}"))
            .to_owned();
        let group = child.id().expect("running");
        Some(Browser {
            driver,
            session,
            _child: child,
            group,
        })
    }

    async fn open(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        webdriver(self.driver, "POST", &path, Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body) in the page and returns its value.
    async fn eval(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        let body = json!({ "script": script, "args": [] });
        webdriver(self.driver, "POST", &path, Some(body)).await
    }

    /// Runs `script` (a function body whose last argument is the callback) and returns what
    /// it passes to the callback.
    async fn eval_async(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/async", self.session);
        let body = json!({ "script": script, "args": [] });
        webdriver(self.driver, "POST", &path, Some(body)).await
    }

    async fn quit(self) {
        let path = format!("/session/{}", self.session);
        webdriver(self.driver, "DELETE", &path, None).await;
    }
    // Dropping the browser (after `quit`, or on a failure) kills its process group.
}

const EVIL: &str = "<img src=x onerror=\"window.pwned=1\">";

#[tokio::test]
async fn the_status_page_renders_every_dependency_updates_live_and_runs_no_injected_script() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let web = HttpServer::start().await;
    let toml = format!(
        "[dependencies.web]\nkind = \"http\"\nurl = \"{}\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\n\
         fall = 1\njitter = 0.0\n\
         [dependencies.'{}']\nkind = \"tcp\"\naddress = \"{}\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\n\
         [services.readiness]\ndependencies = {{ web = \"critical\" }}\n",
        web.url("/"),
        EVIL,
        web.addr,
    );
    let handle = start(&toml);
    state_where(&handle, "web", |d| d.health == healthgate::Health::Healthy).await;
    state_where(&handle, EVIL, |d| d.last_outcome.is_some()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(healthgate::http::serve(
        listener,
        "http",
        healthgate::http::twin_router(handle.clone(), TwinOptions::default()),
        Limits::default(),
        None,
        None,
        std::future::pending(),
    ));

    browser.open(&format!("http://{addr}/")).await;
    let rows = browser
        .eval(
            "return [...document.querySelectorAll('#dependencies tbody tr')]\
             .map(r => [r.dataset.name, r.className]);",
        )
        .await;
    assert_eq!(
        rows,
        json!([[EVIL, "h-healthy"], ["web", "h-healthy"]]),
        "every dependency, escaped"
    );
    // The server's own first render, as the browser parses it (no script involved): the name
    // is text, not an element. (The CSP would also block the inline handler if it were not.)
    let first = browser
        .eval_async(
            "const done = arguments[arguments.length - 1];\
             fetch('/').then(r => r.text()).then(t => {\
               const d = new DOMParser().parseFromString(t, 'text/html');\
               done([d.querySelectorAll('img').length,\
                     [...d.querySelectorAll('#dependencies tbody tr')].map(r => r.dataset.name),\
                     d.querySelector('script[src=\"/status.js\"]') !== null]);\
             });",
        )
        .await;
    assert_eq!(first, json!([0, [EVIL, "web"], true]));
    // Mark this document: a reload would lose the mark.
    browser.eval("window.mark = 42; return null;").await;

    web.set(Answer {
        status: 503,
        ..Answer::default()
    });
    let started = tokio::time::Instant::now();
    let changed = loop {
        let class = browser
            .eval(
                "const r = document.querySelector('#dependencies tr[data-name=\"web\"]');\
                 return [r ? r.className : null, window.mark,\
                 document.getElementById('updated').textContent];",
            )
            .await;
        if class[0] == "h-unhealthy" {
            break class;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the row did not change within 5 s: {class}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(changed[1], 42, "updated without a reload: {changed}");
    assert!(
        changed[2]
            .as_str()
            .is_some_and(|t| t.starts_with("updated ")),
        "the script redrew the page: {changed}"
    );

    // The name is text in both renderings: no element from it, no script ran.
    let safe = browser
        .eval(
            "return [document.querySelectorAll('img').length, window.pwned === undefined,\
             document.body.textContent.includes('<img src=x onerror=')];",
        )
        .await;
    assert_eq!(safe, json!([0, true, true]));
    // Unhealthy first.
    let first = browser
        .eval("return document.querySelector('#dependencies tbody tr').dataset.name;")
        .await;
    assert_eq!(first, "web");
    browser.quit().await;
    handle.shutdown().await;
}
