//! A small WebDriver client for the console tests: Debian's `chromedriver`
//! driving headless `chromium`, spoken to over its HTTP API (W3C WebDriver)
//! with `ureq` and `serde_json`. Enough to navigate, find elements by CSS,
//! click, type, read text, run a script, wait for a condition and take a
//! screenshot.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The key W3C WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a wait lasts before the test fails.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// A browser session; chromedriver (and with it Chromium) is killed on drop.
pub(crate) struct Browser {
    driver: Child,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    agent: ureq::Agent,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

/// A WebDriver error answer: its `error` code and message.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) error: String,
    pub(crate) message: String,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session.
    /// Fails the test, saying how to install them, when either binary is
    /// missing: a console test that cannot run must not pass.
    pub(crate) fn start() -> Browser {
        for bin in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the console tests drive a real headless Chromium. \
                 Run `bash tests/services start` (it installs Debian's `chromium` and \
                 `chromium-driver`), or `apt-get install -y chromium chromium-driver`"
            );
        }
        let profile = tempfile::tempdir().unwrap();
        let log = profile.path().join("chromedriver.log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Browser {
            driver,
            session: String::new(),
            agent,
            log,
            _profile: profile,
        };
        // chromedriver answers /status once it listens.
        let t = Instant::now();
        loop {
            let ready = b
                .agent
                .get(format!("{base}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "chromedriver did not start in 20 s:\n{}",
                b.driver_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let user_data = b._profile.path().join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", user_data.display()),
                ],
            },
        }}});
        let r = b.send("POST", &format!("{base}/session"), Some(caps));
        let id = match r {
            Ok(v) => v["sessionId"].as_str().unwrap().to_string(),
            Err(e) => panic!(
                "chromedriver cannot start {CHROMIUM}: {} ({})\n{}",
                e.message,
                e.error,
                b.driver_log()
            ),
        };
        b.session = format!("{base}/session/{id}");
        b
    }

    fn driver_log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// One WebDriver call: the answer's `value`, or its error.
    fn send(&self, method: &str, url: &str, body: Option<Value>) -> Result<Value, Refused> {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string()).unwrap_or_default())
            .unwrap();
        let mut r = self
            .agent
            .run(req)
            .unwrap_or_else(|e| panic!("chromedriver does not answer {method} {url}: {e}"));
        let ok = r.status().is_success();
        let text = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_else(|e| panic!("cannot read chromedriver's answer to {method} {url}: {e}"));
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("chromedriver answered {method} {url} with no JSON ({e}): {text}")
        });
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if ok {
            // `POST /session` answers `{value: {sessionId, capabilities}}`.
            Ok(value)
        } else {
            Err(Refused {
                error: value["error"].as_str().unwrap_or("unknown error").into(),
                message: value["message"].as_str().unwrap_or_default().into(),
            })
        }
    }

    /// A call on this session that must succeed.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.send(method, &format!("{}{path}", self.session), body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {}: {}", e.error, e.message))
    }

    pub(crate) fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub(crate) fn exec(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The first element matching `css`, if any.
    pub(crate) fn find(&self, css: &str) -> Option<String> {
        let path = format!("{}/element", self.session);
        match self.send(
            "POST",
            &path,
            Some(json!({"using": "css selector", "value": css})),
        ) {
            Ok(v) => Some(v[ELEMENT].as_str().unwrap().to_string()),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("find {css}: {}: {}", e.error, e.message),
        }
    }

    /// The visible text of the first element matching `css`, if any.
    pub(crate) fn text(&self, css: &str) -> Option<String> {
        self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            json!([css]),
        )
        .as_str()
        .map(str::to_string)
    }

    /// The visible texts of every element matching `css`.
    pub(crate) fn texts(&self, css: &str) -> Vec<String> {
        let v = self.exec(
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText);",
            json!([css]),
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Whether an element matching `css` exists and is shown.
    pub(crate) fn visible(&self, css: &str) -> bool {
        self.exec(
            "const e = document.querySelector(arguments[0]); return !!e && e.checkVisibility();",
            json!([css]),
        ) == true
    }

    /// Polls `f` until it gives a value; fails the test after [`WAIT`],
    /// naming `what` and showing the page's text.
    pub(crate) fn wait<T>(&self, what: &str, mut f: impl FnMut(&Browser) -> Option<T>) -> T {
        let t = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if t.elapsed() > WAIT {
                let page = self.text("body").unwrap_or_else(|| "(no body)".to_string());
                let url = self.call("GET", "/url", None);
                panic!(
                    "waited {WAIT:?} for {what}; the page ({url}) shows:\n{page}\n--- browser log\n{}",
                    self.console_log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until an element matching `css` is shown.
    pub(crate) fn wait_visible(&self, css: &str) {
        self.wait(&format!("{css} to be shown"), |b| {
            b.visible(css).then_some(())
        });
    }

    /// Waits until the text of `css` contains `part`; returns the text.
    pub(crate) fn wait_text(&self, css: &str, part: &str) -> String {
        self.wait(&format!("{css} to show {part:?}"), |b| {
            b.text(css).filter(|t| t.contains(part))
        })
    }

    /// Clicks the element matching `css` once it is shown and enabled, as
    /// a person would (WebDriver's element click: scrolled into view,
    /// refused if something covers it).
    pub(crate) fn click(&self, css: &str) {
        self.wait(&format!("{css} to be clickable"), |b| {
            let id = b.find(css)?;
            let path = format!("{}/element/{id}/click", b.session);
            match b.send("POST", &path, Some(json!({}))) {
                Ok(_) => Some(()),
                Err(e)
                    if [
                        "stale element reference",
                        "element not interactable",
                        "element click intercepted",
                    ]
                    .contains(&e.error.as_str()) =>
                {
                    None
                }
                Err(e) => panic!("click {css}: {}: {}", e.error, e.message),
            }
        });
    }

    /// Clears the input matching `css` and types `text` into it.
    pub(crate) fn type_into(&self, css: &str, text: &str) {
        self.wait_visible(css);
        let id = self.find(css).unwrap();
        self.call("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// The page's address.
    pub(crate) fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap().to_string()
    }

    /// Resizes the window so that the page's viewport is `width` × `height`
    /// CSS pixels (the window's own frame comes on top).
    pub(crate) fn set_viewport(&self, width: u64, height: u64) {
        let frame = self.exec(
            "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];",
            json!([]),
        );
        let (w, h) = (frame[0].as_u64().unwrap(), frame[1].as_u64().unwrap());
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width + w, "height": height + h})),
        );
    }

    /// A PNG of the window.
    pub(crate) fn screenshot(&self) -> Vec<u8> {
        let v = self.call("GET", "/screenshot", None);
        base64_decode(v.as_str().unwrap())
    }

    /// The browser's console messages since the last call, one line each.
    pub(crate) fn console_log(&self) -> Vec<String> {
        let path = format!("{}/se/log", self.session);
        match self.send("POST", &path, Some(json!({"type": "browser"}))) {
            Ok(v) => v
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| format!("{} {}", e["level"], e["message"]))
                        .collect()
                })
                .unwrap_or_default(),
            Err(e) => vec![format!("(no browser log: {})", e.message)],
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.send("DELETE", &self.session.clone(), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (WebDriver's screenshots) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for group in clean.chunks(4) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | value(c) << (18 - 6 * i));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    out
}

#[test]
fn base64_decodes_with_and_without_padding() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode(""), b"");
}
