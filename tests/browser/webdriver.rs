//! A small W3C WebDriver client over HTTP (reqwest, JSON): just what the dashboard's tests
//! need, against Debian's `chromedriver` driving headless `chromium`. The driver process is
//! started on a free loopback port and killed when the test ends.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// W3C's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The first of `names` found on `PATH` (or the usual Debian paths).
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/bin", "/usr/lib/chromium"].map(PathBuf::from));
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// `chromedriver` and a Chromium to drive, when both are installed.
pub fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    let driver = find_program(&["chromedriver"])?;
    let browser = find_program(&["chromium", "chromium-browser", "google-chrome"])?;
    Some((driver, browser))
}

/// A running `chromedriver`, stopped on drop with the browsers it started.
pub struct Driver {
    child: Child,
    port: u16,
    base: String,
    http: reqwest::Client,
    /// Every session opened, so that a failing test still quits its browser.
    sessions: Mutex<Vec<String>>,
}

impl Drop for Driver {
    /// A browser outlives a killed `chromedriver`: each session is deleted first (a plain
    /// blocking request, as drop cannot wait on the runtime; a session already closed just
    /// answers an error), then the driver, the child process this test started, is ended.
    fn drop(&mut self) {
        let sessions =
            std::mem::take(&mut *self.sessions.lock().unwrap_or_else(|p| p.into_inner()));
        for id in sessions {
            let _ = delete_session_blocking(self.port, &id);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `DELETE /session/{id}` over a bare HTTP/1.1 connection, waiting at most 10 s.
fn delete_session_blocking(port: u16, id: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(())
}

impl Driver {
    /// Starts `chromedriver` on a free port and waits (at most 20 s) until it is ready.
    pub async fn start(driver: &Path) -> Driver {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("addr").port()
        };
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        let driver = Driver {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            http,
            sessions: Mutex::new(Vec::new()),
        };
        let started = Instant::now();
        loop {
            let ready = driver.http.get(format!("{}/status", driver.base)).send().await;
            if let Ok(response) = ready {
                let body: Value = response.json().await.unwrap_or_default();
                if body["value"]["ready"] == json!(true) {
                    return driver;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new headless browser session with a window of `width` × `height`.
    pub async fn session(&self, browser: &Path, width: u32, height: u32) -> Session {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            &format!("--window-size={width},{height}"),
        ];
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": browser, "args": args },
            }}
        });
        let answer = call(
            &self.http,
            reqwest::Method::POST,
            &format!("{}/session", self.base),
            Some(capabilities),
        )
        .await;
        let id = answer["sessionId"].as_str().expect("a session id").to_owned();
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).push(id.clone());
        Session { http: self.http.clone(), base: format!("{}/session/{id}", self.base) }
    }
}

/// One browser session (a window).
pub struct Session {
    http: reqwest::Client,
    base: String,
}

/// Sends a WebDriver command; a WebDriver error fails the test with its message.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Value {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("webdriver request");
    let status = response.status();
    let body: Value = response.json().await.expect("webdriver answers JSON");
    assert!(status.is_success(), "webdriver {url}: {status} {body}");
    body["value"].clone()
}

impl Session {
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        call(&self.http, method, &format!("{}{path}", self.base), body).await
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn current_url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element `css` selects (it must exist).
    pub async fn find(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}")).to_owned()
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({})))
            .await;
    }

    /// Runs `script` (a function body) in the page with `args`; its return value.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Polls `script` until it returns `true`, every 200 ms, at most `timeout`; the last value
    /// it returned is in the failure message.
    pub async fn wait_for(&self, what: &str, timeout: Duration, script: &str) {
        let started = Instant::now();
        loop {
            let value = self.run(script, json!([])).await;
            if value == json!(true) {
                return;
            }
            assert!(started.elapsed() < timeout, "timed out waiting for {what}; last: {value}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let encoded = self.command(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 screenshot"))
            .expect("a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artifacts folder");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    pub async fn close(self) {
        self.command(reqwest::Method::DELETE, "", None).await;
    }
}
