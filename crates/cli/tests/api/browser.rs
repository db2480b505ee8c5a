//! End-to-end tests of the web UI in a real headless Chromium, driven over WebDriver
//! (`chromedriver` + fantoccini): sign in, type a device's pairing code, approve it for a
//! project, watch the device's clip arrive in the media browser without a reload, play it
//! back, then pause and unpair the device from the project page. The same flow takes the
//! screenshots under `docs/screenshots` (set `RUSHES_SCREENSHOTS` to write them there).
//!
//! A second test weighs the pages (HTML + CSS + JS under 100 KB) and checks that no page
//! points the browser at another host.
//!
//! Chromium and chromedriver come from Debian's `chromium` and `chromium-driver` packages;
//! without them these tests fail (they do not skip), so CI cannot silently lose them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client as Driver, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{FIRMWARE, TestServer, spawn_app};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const CLIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clip.mp4");

/// How long any one thing in the browser may take before the test fails.
pub(crate) const STEP: Duration = Duration::from_secs(30);

const PHONE: (u32, u32) = (390, 844);
pub(crate) const DESKTOP: (u32, u32) = (1280, 800);

/// A chromedriver process and one browser session in it. Dropping it kills chromedriver
/// and every Chromium process it started (they share chromedriver's process group).
pub(crate) struct Browser {
    driver: Driver,
    chromedriver: Chromedriver,
    // Removed after the processes that use it are gone.
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) async fn start(width: u32, height: u32) -> Browser {
        assert!(
            Path::new(CHROMEDRIVER).exists(),
            "{CHROMEDRIVER} is missing: install Debian's `chromium-driver` (and `chromium`) \
             packages to run the browser tests"
        );
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: install Debian's `chromium` package to run the browser tests"
        );
        let profile = tempfile::tempdir().expect("browser profile dir");
        let port = free_port();
        let log = std::fs::File::create(profile.path().join("chromedriver.log"))
            .expect("chromedriver log");
        let mut chromedriver = Chromedriver({
            use std::os::unix::process::CommandExt;
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                // Its own process group, so Drop can end Chromium along with it.
                .process_group(0)
                .spawn()
                .expect("start chromedriver")
        });
        let webdriver = format!("http://127.0.0.1:{port}");
        wait_for_status(&webdriver, &mut chromedriver.0, profile.path()).await;

        let user_data = profile.path().join("chromium");
        let caps = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", user_data.display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        let connect = async {
            ClientBuilder::rustls()
                .expect("rustls connector")
                .capabilities(caps)
                .connect(&webdriver)
                .await
        };
        let driver = match tokio::time::timeout(STEP, connect).await {
            Ok(Ok(driver)) => driver,
            Ok(Err(e)) => panic!(
                "no browser session: {e}; chromedriver log: {}",
                read(&profile.path().join("chromedriver.log"))
            ),
            Err(_) => panic!("no browser session within {STEP:?}"),
        };
        let browser = Browser {
            driver,
            chromedriver,
            _profile: profile,
        };
        browser.resize(width, height).await;
        browser
    }

    /// Sets the window so the page's viewport is `width` × `height` CSS pixels.
    async fn resize(&self, width: u32, height: u32) {
        // Headless windows have no browser chrome, but measure rather than assume.
        let deadline = Instant::now() + STEP;
        let (mut w, mut h) = (width, height);
        loop {
            self.driver
                .set_window_size(w, h)
                .await
                .expect("set window size");
            let inner = self
                .js("return [window.innerWidth, window.innerHeight];")
                .await;
            let iw = inner[0].as_u64().unwrap_or(0) as u32;
            let ih = inner[1].as_u64().unwrap_or(0) as u32;
            if (iw, ih) == (width, height) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the viewport stays {iw}x{ih}, not {width}x{height}"
            );
            w = (w + width).saturating_sub(iw);
            h = (h + height).saturating_sub(ih);
        }
    }

    pub(crate) async fn goto(&self, url: &str) {
        tokio::time::timeout(STEP, self.driver.goto(url))
            .await
            .unwrap_or_else(|_| panic!("{url} did not load within {STEP:?}"))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    async fn js(&self, script: &str) -> Value {
        self.driver
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script {script:?} failed: {e}"))
    }

    /// Waits (bounded) for an element to appear on the current page.
    pub(crate) async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .driver
            .wait()
            .at_most(STEP)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => panic!(
                "no `{css}` within {STEP:?} ({e}); the page is {}:\n{}",
                self.url().await,
                self.driver.source().await.unwrap_or_default()
            ),
        }
    }

    pub(crate) async fn click(&self, css: &str) {
        self.wait_for(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click `{css}`: {e}"));
    }

    async fn url(&self) -> String {
        self.driver
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Screenshots the viewport at `size` into `dir/name`, checks it is a PNG of that
    /// size, and checks the page does not overflow sideways at that width.
    async fn screenshot(&self, dir: &Path, name: &str, size: (u32, u32)) {
        self.resize(size.0, size.1).await;
        let overflow = self
            .js("return document.documentElement.scrollWidth - window.innerWidth;")
            .await
            .as_i64()
            .unwrap_or(0);
        let png = self.driver.screenshot().await.expect("screenshot");
        assert!(!png.is_empty(), "{name}: an empty screenshot");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}: not a PNG");
        let png_width = u32::from_be_bytes(png[16..20].try_into().expect("4 bytes"));
        assert!(
            png_width >= size.0,
            "{name}: {png_width} px wide, taken at {size:?}"
        );
        let path = dir.join(name);
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        assert!(std::fs::metadata(&path).expect("written").len() > 0);
        assert!(
            overflow <= 0,
            "{name}: the page is {overflow} px wider than a {}-px viewport (scrolls sideways)",
            size.0
        );
    }

    /// Signs in on the login page at `base` as a person would: types the name and
    /// password, submits, and waits for the signed-in page.
    pub(crate) async fn sign_in(&self, base: &str, user: &str, password: &str) {
        self.goto(&format!("{base}/login")).await;
        let form = self.wait_for("form[action='/login']").await;
        for (field, value) in [("username", user), ("password", password)] {
            form.find(Locator::Css(&format!("input[name={field}]")))
                .await
                .unwrap_or_else(|e| panic!("the {field} field: {e}"))
                .send_keys(value)
                .await
                .unwrap_or_else(|e| panic!("type into the {field} field: {e}"));
        }
        self.click("form[action='/login'] button[type=submit]")
            .await;
        self.wait_for("form[action='/logout']").await;
    }

    pub(crate) async fn close(self) {
        let driver = self.driver.clone();
        let _ = tokio::time::timeout(STEP, driver.close()).await;
        drop(self);
    }
}

/// The chromedriver child. Dropping it kills its process group: chromedriver and the
/// Chromium it started.
struct Chromedriver(Child);

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // Not reaped yet, so its id still names its process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls chromedriver's `GET /status` until it says it is ready.
async fn wait_for_status(webdriver: &str, child: &mut Child, dir: &Path) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    let deadline = Instant::now() + STEP;
    loop {
        if let Ok(res) = http.get(format!("{webdriver}/status")).send().await
            && let Ok(body) = res.json::<Value>().await
            && body["value"]["ready"] == true
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "chromedriver exited ({status}): {}",
                read(&dir.join("chromedriver.log"))
            );
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not answer {webdriver}/status within {STEP:?}: {}",
            read(&dir.join("chromedriver.log"))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where screenshots go: `$RUSHES_SCREENSHOTS` (created if need be), or a temp dir.
fn screenshot_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    match std::env::var_os("RUSHES_SCREENSHOTS") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).expect("screenshot dir");
            (dir, None)
        }
        _ => {
            let tmp = tempfile::tempdir().expect("temp dir");
            (tmp.path().to_owned(), Some(tmp))
        }
    }
}

async fn device_me(app: &TestServer, token: &str) -> StatusCode {
    app.client
        .get(app.at("/v2/devices/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("devices/me")
        .status()
}

/// `POST /v2/devices/assets` for a video clip, as the camera sends it.
async fn create_clip(app: &TestServer, token: &str, name: &str, size: usize) -> reqwest::Response {
    app.create_asset_raw(
        token,
        json!({"name": name, "filesize": size, "filetype": "video/mp4"}),
    )
    .await
}

/// The whole of one test, so a hung browser or driver fails it instead of hanging CI.
const WHOLE_TEST: Duration = Duration::from_secs(240);

pub(crate) async fn bounded(test: impl std::future::Future<Output = ()>) {
    // On timeout the test's future is dropped, and with it the browser and the server.
    tokio::time::timeout(WHOLE_TEST, test)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {WHOLE_TEST:?}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_pair_watch_play_pause_and_unpair_in_a_real_browser() {
    bounded(sign_in_pair_watch_play_pause_and_unpair()).await;
}

async fn sign_in_pair_watch_play_pause_and_unpair() {
    let app = spawn_app().await;
    let password = app.web_user("ed", true);
    let project = app.project_id("Default");
    let (shots, _tmp) = screenshot_dir();
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;

    browser.sign_in(&app.url, "ed", &password).await;

    // A camera asks for a code; a person types it into the pairing page.
    let client_id = "BROWSER-CAM-0001";
    let code = app.code(client_id, "asset_create offline").await;
    browser.goto(&app.at("/pair")).await;
    browser
        .wait_for("input#code")
        .await
        .send_keys(&code.user_code)
        .await
        .expect("type the code");
    browser.screenshot(&shots, "pair-phone.png", PHONE).await;
    browser
        .screenshot(&shots, "pair-desktop.png", DESKTOP)
        .await;
    browser
        .click("form[action='/pair'] button[type=submit]")
        .await;

    // The confirm page: which device asked, and where its clips should go.
    let select = browser.wait_for("select#project").await;
    let shown = browser.wait_for("main").await.text().await.expect("text");
    assert!(
        shown.contains(client_id),
        "the confirm page does not show the device's serial: {shown}"
    );
    select
        .select_by_value(&project)
        .await
        .expect("pick the project");
    browser
        .screenshot(&shots, "pair-confirm-phone.png", PHONE)
        .await;
    browser
        .screenshot(&shots, "pair-confirm-desktop.png", DESKTOP)
        .await;
    // The device has no tokens yet.
    let early = app.poll(client_id, &code.device_code).await;
    assert_eq!(early.status(), StatusCode::BAD_REQUEST);
    browser.click("button[name=decision][value=approve]").await;
    let done = browser
        .wait_for(".msg.ok")
        .await
        .text()
        .await
        .expect("text");
    assert!(done.contains("Approved"), "{done}");

    // The device's next poll gets its tokens.
    let res = app.poll(client_id, &code.device_code).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let tokens: Value = res.json().await.expect("token body");
    let token = tokens["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();

    // Open the project page before the upload; mark the document so a reload shows.
    browser.goto(&app.at(&format!("/projects/{project}"))).await;
    browser.wait_for("#media").await;
    browser.wait_for("#inflight").await;
    browser.js("window.__marker = 1; return 1;").await;

    let clip = std::fs::read(CLIP).expect("the MP4 fixture");
    let name = "A001C001_BROWSER.mp4";
    let res = create_clip(&app, &token, name, clip.len()).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let asset: rushes_proto::asset::Asset = res.json().await.expect("asset body");
    app.upload(&asset, &clip).await;
    app.wait_complete(&token, &asset.id).await;

    // The clip shows up in the media browser by itself, in the same document.
    let find_clip = r#"
        var name = arguments[0];
        var links = document.querySelectorAll('#media a');
        var href = null;
        for (var i = 0; i < links.length; i++) {
            if (links[i].textContent.trim() === name) { href = links[i].getAttribute('href'); }
        }
        return { href: href, marker: window.__marker === undefined ? null : window.__marker };
    "#;
    let deadline = Instant::now() + STEP;
    let href = loop {
        let seen = browser
            .driver
            .execute(find_clip, vec![json!(name)])
            .await
            .expect("look for the clip");
        assert_eq!(
            seen["marker"], 1,
            "the project page was reloaded (window.__marker is gone)"
        );
        if let Some(href) = seen["href"].as_str() {
            break href.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not appear in #media within {STEP:?}; #media is:\n{}",
            browser
                .js("return document.getElementById('media').innerHTML;")
                .await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(href, format!("/assets/{}", asset.id));

    // Only the media browser and uploads are live; the device table is current after a
    // load. Screenshot that, so the pictures show a device that has just uploaded.
    browser.goto(&app.at(&format!("/projects/{project}"))).await;
    let row = browser
        .wait_for("tbody tr")
        .await
        .text()
        .await
        .expect("device row");
    assert!(
        row.contains("online") && row.contains(FIRMWARE) && row.contains(client_id),
        "the device row after an upload: {row:?}"
    );
    browser.wait_for("#media a[href^='/assets/']").await;
    browser.screenshot(&shots, "project-phone.png", PHONE).await;
    browser
        .screenshot(&shots, "project-desktop.png", DESKTOP)
        .await;

    // The clip page plays it.
    let link = browser
        .driver
        .find(Locator::LinkText(name))
        .await
        .expect("the clip's link");
    link.click().await.expect("open the clip");
    browser.wait_for("video#player").await;
    let deadline = Instant::now() + STEP;
    loop {
        let state = browser
            .js(
                "var p = document.getElementById('player'); \
                 return { ready: p.readyState, error: p.error ? p.error.code + ' ' + p.error.message : null };",
            )
            .await;
        if state["ready"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(
            state["error"].is_null(),
            "the <video> failed to load the clip: {}",
            state["error"]
        );
        assert!(
            Instant::now() < deadline,
            "the <video> stayed at readyState {} for {STEP:?}",
            state["ready"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Pause from the project page: the device's next upload is refused with 409.
    browser.goto(&app.at(&format!("/projects/{project}"))).await;
    browser.click("form[action$='/pause'] button").await;
    browser.wait_for("form[action$='/resume'] button").await;
    let res = create_clip(&app, &token, "A001C002_BROWSER.mp4", clip.len()).await;
    assert_eq!(
        res.status(),
        StatusCode::CONFLICT,
        "a paused device's upload: {}",
        res.text().await.unwrap_or_default()
    );
    assert_eq!(device_me(&app, &token).await, StatusCode::OK);

    // Unpair: the device's next call is 401.
    browser.click("form[action$='/unpair'] button").await;
    browser
        .driver
        .wait()
        .at_most(STEP)
        .for_element(Locator::XPath(
            "//main//p[contains(., 'No device is paired')]",
        ))
        .await
        .expect("the project page without the device");
    assert_eq!(device_me(&app, &token).await, StatusCode::UNAUTHORIZED);

    browser.close().await;
}

/// Every URL with a scheme in `text` (up to a quote, space or angle bracket).
fn absolute_urls(text: &str) -> Vec<String> {
    let mut urls = Vec::new();
    for scheme in ["http://", "https://", "//"] {
        let mut rest = text;
        while let Some(i) = rest.find(scheme) {
            let url: String = rest[i..]
                .chars()
                .take_while(|c| !matches!(c, '"' | '\'' | ' ' | '<' | '>' | ')' | '\n'))
                .collect();
            // "//" also matches inside "https://" and starts JS comments: count it only
            // where a protocol-relative URL would start (an attribute value or `url(`).
            let before = if i > 0 { rest.as_bytes()[i - 1] } else { b' ' };
            if scheme != "//" || matches!(before, b'"' | b'\'' | b'(' | b'=') {
                urls.push(url);
            }
            rest = &rest[i + scheme.len()..];
        }
    }
    urls
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_are_light_and_reference_no_other_host() {
    bounded(pages_are_light_and_local()).await;
}

async fn pages_are_light_and_local() {
    let app = spawn_app().await;
    let password = app.web_user("ed", true);
    let web = app.web_client("ed", &password).await;
    let project = app.project_id("Default");

    // A project with a device and a clip, so the project page has something on it.
    let tokens = app.pair("WEIGHT-CAM-0001").await;
    let clip = std::fs::read(CLIP).expect("the MP4 fixture");
    let asset = app
        .create_asset(&tokens.access_token, "A002C001.mp4", clip.len())
        .await;
    app.upload(&asset, &clip).await;
    app.wait_complete(&tokens.access_token, &asset.id).await;

    let get = |path: String| {
        let web = web.clone();
        let url = app.at(&path);
        async move {
            let res = web.get(&url).send().await.expect("GET");
            assert_eq!(res.status(), StatusCode::OK, "GET {url}");
            res.bytes().await.expect("body").to_vec()
        }
    };
    let css = get("/static/app.css".into()).await;
    let js = get("/static/app.js".into()).await;
    for asset_file in [&css, &js] {
        let text = String::from_utf8_lossy(asset_file);
        let urls = absolute_urls(&text);
        assert!(urls.is_empty(), "CSS/JS points at other hosts: {urls:?}");
    }

    let pages = [
        ("/pair".to_owned(), true),
        (format!("/projects/{project}"), true),
        ("/".to_owned(), false),
        ("/setup".to_owned(), false),
        (format!("/assets/{}", asset.id), false),
    ];
    for (path, weigh) in pages {
        let html = get(path.clone()).await;
        let text = String::from_utf8_lossy(&html).into_owned();
        assert!(
            text.contains("/static/app.css") && text.contains("/static/app.js"),
            "{path} does not use the shared CSS and JS"
        );
        if weigh {
            let total = html.len() + css.len() + js.len();
            assert!(
                total < 100 * 1024,
                "{path}: HTML {} + CSS {} + JS {} = {total} bytes, over 100 KB",
                html.len(),
                css.len(),
                js.len()
            );
        }
        let foreign: Vec<String> = absolute_urls(&text)
            .into_iter()
            .filter(|u| !(u == &app.url || u.starts_with(&format!("{}/", app.url))))
            .collect();
        assert!(
            foreign.is_empty(),
            "{path} references other hosts: {foreign:?}"
        );
    }

    // The sign-in page, for someone not signed in yet.
    let login = app
        .client
        .get(app.at("/login"))
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("html");
    assert!(login.len() + css.len() + js.len() < 100 * 1024);
    let foreign = absolute_urls(&login);
    assert!(foreign.is_empty(), "/login references: {foreign:?}");
}
