//! The one harness every black-box test uses: start the real `rushes serve` binary on a
//! random port with a temporary data directory, and talk HTTPS to it with a client that
//! trusts only the CA that server generated.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Certificate, Client, Response, StatusCode};
use rushes_proto::asset::{Asset, UploadStatus};
use rushes_proto::auth::{DeviceCodeResponse, GRANT_DEVICE_CODE, TokenResponse};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const MIB: usize = 1024 * 1024;

pub struct TestServer {
    pub url: String,
    pub client: Client,
    pub data: PathBuf,
    /// The server's PostgreSQL database, when the suite runs against PostgreSQL
    /// (`RUSHES_TEST_DATABASE_URL`); `None`: SQLite in the data directory.
    pub database_url: Option<String>,
    /// The S3 server holding the media, when the suite runs against S3
    /// (`RUSHES_TEST_MEDIA=s3`) or a test asked for it; `None`: the local store.
    pub s3: Option<Arc<S3Server>>,
    args: Vec<String>,
    child: Option<Child>,
    // Dropped last: the server must stop before its directory goes.
    _dir: Option<tempfile::TempDir>,
}

/// Starts a server with the default settings.
pub async fn spawn_app() -> TestServer {
    spawn_app_with(&[]).await
}

/// Starts a server with extra `rushes serve` flags (e.g. `--poll-interval 1`), its media in
/// the data directory, or in S3 when `RUSHES_TEST_MEDIA=s3`.
pub async fn spawn_app_with(args: &[&str]) -> TestServer {
    spawn(args, suite_uses_s3()).await
}

/// Starts a server whose media store is a real S3 server (s3s-fs) of its own, whatever
/// `RUSHES_TEST_MEDIA` says.
pub async fn spawn_app_on_s3(args: &[&str]) -> TestServer {
    spawn(args, true).await
}

/// Starts a server on the local store whose data directory is `data` (a small file system
/// of the test's own, say); the caller keeps `data` alive.
pub async fn spawn_app_in(data: &Path, args: &[&str]) -> TestServer {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let database_url = fresh_database();
    let (child, url) = start(data, &args, "127.0.0.1:0", database_url.as_deref(), None);
    TestServer {
        url,
        client: client_for(data),
        data: data.to_owned(),
        database_url,
        s3: None,
        args,
        child: Some(child),
        _dir: None,
    }
}

/// Whether this run of the suite keeps media in S3 (`RUSHES_TEST_MEDIA=s3`).
pub fn suite_uses_s3() -> bool {
    std::env::var("RUSHES_TEST_MEDIA").is_ok_and(|m| m == "s3")
}

/// For a test about the local media store itself (its `/upload` route, or a server in the
/// path of the part bytes): under S3 it says why it is skipped, on stderr, and returns
/// `true`; start such a test with `if local_store_only("...") { return; }`.
pub fn local_store_only(why: &str) -> bool {
    let skip = suite_uses_s3();
    if skip {
        eprintln!("skipped under S3: {why}");
    }
    skip
}

/// The part number a part URL of either store names, and the bytes it grants when the URL
/// shows them: the local store's `/upload/{asset}/{part}?size=...`, or a presigned S3
/// `UploadPart` URL (`partNumber=`). A presigned URL signs `Content-Length` without
/// carrying its value, so its size is `None`.
pub fn part_url_number_and_size(url: &str) -> (u32, Option<usize>) {
    let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let query = |key: &str| {
        parsed
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(number) = query("partNumber") {
        let number = number
            .parse()
            .unwrap_or_else(|_| panic!("partNumber: {url}"));
        return (number, None);
    }
    let segments: Vec<&str> = parsed
        .path_segments()
        .map(Iterator::collect)
        .unwrap_or_default();
    let ["upload", _, number] = segments[..] else {
        panic!("not a part URL of either store: {url}");
    };
    let number = number
        .parse()
        .unwrap_or_else(|_| panic!("part number: {url}"));
    let size = query("size").map(|s| s.parse().unwrap_or_else(|_| panic!("size: {url}")));
    (number, size)
}

/// How [`put_part_expecting_continue`] frames a body.
#[derive(Clone, Copy)]
pub enum RawBody<'a> {
    /// With a `Content-Length`.
    Sized(&'a [u8]),
    /// `Transfer-Encoding: chunked`, one chunk per slice, no `Content-Length`.
    Chunked(&'a [&'a [u8]]),
}

/// PUTs a part to an `http://` URL (the test S3 server) with a camera's headers
/// (`Content-Type: video/mp4`, `x-amz-acl: private`) and `Expect: 100-continue`, over a
/// connection of its own, and returns the answer's status and text (head and body). S3
/// refuses a PUT before reading its body and closes the connection, so an ordinary client
/// still writing a large body fails with a broken pipe instead of reporting the answer; with
/// `Expect` the body is sent only once it is asked for.
pub async fn put_part_expecting_continue(url: &str, body: RawBody<'_>) -> (StatusCode, String) {
    put_part_raw(url, body, true).await
}

/// [`put_part_expecting_continue`], with or without the `x-amz-acl` header.
pub async fn put_part_raw(url: &str, body: RawBody<'_>, acl: bool) -> (StatusCode, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let parsed = reqwest::Url::parse(url).expect("URL parses");
    assert_eq!(
        parsed.scheme(),
        "http",
        "only for the plain-HTTP test S3: {url}"
    );
    let host = parsed.host_str().expect("host").to_owned();
    let port = parsed.port_or_known_default().expect("port");
    let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .expect("connect");
    let target = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let framing = match body {
        RawBody::Sized(bytes) => format!("Content-Length: {}", bytes.len()),
        RawBody::Chunked(_) => "Transfer-Encoding: chunked".to_owned(),
    };
    let acl = if acl { "x-amz-acl: private\r\n" } else { "" };
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: video/mp4\r\n\
         {acl}{framing}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("send head");

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut received: Vec<u8> = Vec::new();
    let mut body_sent = false;
    loop {
        // A complete head: 100 Continue asks for the body; anything else is the answer.
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&received[..end]).into_owned();
            let code: u16 = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
            if code == 100 {
                assert!(!body_sent, "a second 100 Continue");
                received.drain(..end + 4);
                match body {
                    RawBody::Sized(bytes) => stream.write_all(bytes).await,
                    RawBody::Chunked(chunks) => {
                        let mut framed = Vec::new();
                        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
                            framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                            framed.extend_from_slice(chunk);
                            framed.extend_from_slice(b"\r\n");
                        }
                        framed.extend_from_slice(b"0\r\n\r\n");
                        stream.write_all(&framed).await
                    }
                }
                .expect("send body");
                body_sent = true;
                continue;
            }
            // Connection: close, so the answer ends where the connection does.
            let mut rest = Vec::new();
            let read = tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                stream.read_to_end(&mut rest),
            )
            .await;
            assert!(read.is_ok(), "the answer to {url} never ended");
            let answer = format!(
                "{text}\n\n{}{}",
                String::from_utf8_lossy(&received[end + 4..]),
                String::from_utf8_lossy(&rest)
            );
            return (StatusCode::from_u16(code).expect("a status code"), answer);
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            stream.read(&mut buf),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer to {url}"))
        .expect("read the answer");
        assert!(n > 0, "the connection closed without an answer to {url}");
        received.extend_from_slice(&buf[..n]);
    }
}

async fn spawn(args: &[&str], on_s3: bool) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let database_url = fresh_database();
    let s3 = on_s3.then(|| Arc::new(S3Server::start(&dir.path().join("s3"))));
    let (child, url) = start(
        &data,
        &args,
        "127.0.0.1:0",
        database_url.as_deref(),
        s3.as_deref(),
    );
    let client = client_for(&data);
    TestServer {
        url,
        client,
        data,
        database_url,
        s3,
        args,
        child: Some(child),
        _dir: Some(dir),
    }
}

/// A real S3-compatible server (s3s-fs, which checks SigV4 signatures, presigned expiry and
/// the 5 MiB part minimum) on a random port, storing buckets as folders under `root`.
/// Killed when dropped.
pub struct S3Server {
    pub endpoint: String,
    pub root: PathBuf,
    pub bucket: String,
    port: u16,
    child: std::sync::Mutex<Child>,
}

pub const S3_ACCESS_KEY: &str = "rushes-test-key";
pub const S3_SECRET_KEY: &str = "rushes-test-secret";

/// Where s3s-fs is: `RUSHES_S3S_FS`, the path `scripts/install-test-tools` installs it
/// to, or `s3s-fs` on the PATH.
fn s3s_fs_binary() -> PathBuf {
    if let Ok(path) = std::env::var("RUSHES_S3S_FS") {
        return PathBuf::from(path);
    }
    let installed = PathBuf::from("/opt/rushes-tools/bin/s3s-fs");
    if installed.exists() {
        return installed;
    }
    PathBuf::from("s3s-fs")
}

impl S3Server {
    pub fn start(root: &Path) -> S3Server {
        let bucket = "rushes-media".to_owned();
        std::fs::create_dir_all(root.join(&bucket)).expect("bucket folder");
        for _ in 0..5 {
            // A free port, released just before s3s-fs takes it; retried if another
            // process took it in between.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            if let Some(child) = launch_s3s_fs(root, port) {
                return S3Server {
                    endpoint: format!("http://127.0.0.1:{port}"),
                    root: root.to_owned(),
                    bucket,
                    port,
                    child: std::sync::Mutex::new(child),
                };
            }
        }
        panic!(
            "s3s-fs did not start: {}",
            std::fs::read_to_string(root.with_extension("log")).unwrap_or_default()
        );
    }

    /// Starts the store again after [`S3Server::stop`], on the same port and folder.
    pub fn restart(&self) {
        self.stop();
        let child = launch_s3s_fs(&self.root, self.port).expect("s3s-fs restarts on its port");
        *self.child.lock().expect("s3s-fs child") = child;
    }

    /// The flags that point `rushes serve` at this store.
    pub fn serve_args(&self) -> Vec<String> {
        vec![
            "--s3-endpoint".into(),
            self.endpoint.clone(),
            "--s3-bucket".into(),
            self.bucket.clone(),
            "--s3-region".into(),
            "auto".into(),
        ]
    }

    /// Where s3s-fs keeps an object's bytes.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.join(&self.bucket).join(key)
    }

    /// Stops the store (to test what servers do while it is down).
    pub fn stop(&self) {
        let mut child = self.child.lock().expect("s3s-fs child");
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Starts s3s-fs on `port` and waits until it accepts connections; `None` if it exits first
/// (the port was taken).
fn launch_s3s_fs(root: &Path, port: u16) -> Option<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.with_extension("log"))
        .expect("s3s-fs log");
    let mut child = Command::new(s3s_fs_binary())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start s3s-fs ({e}); install it with scripts/install-test-tools \
                 or set RUSHES_S3S_FS"
            )
        });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        if child.try_wait().expect("s3s-fs status").is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// With `RUSHES_TEST_DATABASE_URL=postgres://user@host:port` set, every test server gets
/// a database of its own on that PostgreSQL server.
fn fresh_database() -> Option<String> {
    let base = std::env::var("RUSHES_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let base = base.trim_end_matches('/');
    let name = format!("rushes_test_{}", uuid::Uuid::new_v4().simple());
    psql(
        &format!("{base}/postgres"),
        &format!("CREATE DATABASE {name}"),
    );
    // So that `rushes check` checks indexes and tables too (it needs a superuser once).
    psql(&format!("{base}/{name}"), "CREATE EXTENSION amcheck");
    Some(format!("{base}/{name}"))
}

/// Runs one SQL statement with `psql` on the database at `url`; panics if it fails.
fn psql(url: &str, statement: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", statement])
        .output()
        .expect("run psql (install postgresql-client)");
    assert!(
        out.status.success(),
        "psql {statement}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start(
    data: &Path,
    args: &[String],
    listen: &str,
    database_url: Option<&str>,
    s3: Option<&S3Server>,
) -> (Child, String) {
    std::fs::create_dir_all(data).expect("data dir");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("server.log"))
        .expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_rushes"));
    if let Some(url) = database_url {
        command.env("RUSHES_DATABASE_URL", url);
    }
    if s3.is_some() {
        command
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY);
    }
    let s3_args = s3.map(S3Server::serve_args).unwrap_or_default();
    let mut child = command
        .arg("serve")
        .arg("--data")
        .arg(data)
        .arg("--listen")
        .arg(listen)
        .args(&s3_args)
        .args(args)
        .env("RUST_LOG", "info")
        .env("RUSHES_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start rushes serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                // Connect to the bound address, whatever --public-url says.
                if let Some(addr) = line.trim().strip_prefix("listening on ") {
                    break format!("https://{addr}");
                }
            }
            _ => panic!(
                "the server exited before it was ready; log: {}",
                read_log(data)
            ),
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

fn read_log(data: &Path) -> String {
    std::fs::read_to_string(data.join("server.log")).unwrap_or_default()
}

/// The firmware version the test client reports on every call, as cameras do.
pub const FIRMWARE: &str = "1.2.3";

/// A client that trusts only the test server's own CA and sends `x-client-version` on
/// every call, as a camera would (a request may still set its own).
pub fn client_for(data: &Path) -> Client {
    let pem = std::fs::read(data.join("tls/ca.crt")).expect("ca.crt");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        rushes_proto::CLIENT_VERSION_HEADER,
        reqwest::header::HeaderValue::from_static(FIRMWARE),
    );
    Client::builder()
        .tls_certs_only([Certificate::from_pem(&pem).expect("CA pem")])
        .default_headers(headers)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

impl TestServer {
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn log(&self) -> String {
        read_log(&self.data)
    }

    /// A second server process on the same data directory and database, as when several
    /// servers share one PostgreSQL and one media store.
    pub fn peer(&self) -> TestServer {
        let (child, url) = start(
            &self.data,
            &self.args,
            "127.0.0.1:0",
            self.database_url.as_deref(),
            self.s3.as_deref(),
        );
        TestServer {
            url,
            client: client_for(&self.data),
            data: self.data.clone(),
            database_url: self.database_url.clone(),
            s3: self.s3.clone(),
            args: self.args.clone(),
            child: Some(child),
            _dir: None,
        }
    }

    /// SIGKILL: no shutdown handler runs, nothing is flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory and port.
    pub fn restart(&mut self) {
        self.kill();
        let addr = self.url.trim_start_matches("https://").to_owned();
        let (child, url) = start(
            &self.data,
            &self.args,
            &addr,
            self.database_url.as_deref(),
            self.s3.as_deref(),
        );
        self.child = Some(child);
        self.url = url;
    }

    /// Runs an admin command (`rushes --data <dir> ARGS`), returning stdout; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_raw(args);
        assert!(
            out.status.success(),
            "rushes {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn cli_raw(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rushes"));
        if let Some(url) = &self.database_url {
            command.env("RUSHES_DATABASE_URL", url);
        }
        command
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .output()
            .expect("run rushes")
    }

    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.push("--json");
        serde_json::from_str(&self.cli(&full)).expect("--json output is JSON")
    }

    /// `POST /v2/auth/device/code` as a multipart form, like cameras send it.
    pub async fn request_code(&self, client_id: &str, scope: &str) -> Response {
        let form = reqwest::multipart::Form::new()
            .text("client_id", client_id.to_owned())
            .text("client_secret", "test-model-secret")
            .text("scope", scope.to_owned());
        self.client
            .post(self.at("/v2/auth/device/code"))
            .header("x-client-version", "1.2.3")
            .multipart(form)
            .send()
            .await
            .expect("device/code")
    }

    pub async fn code(&self, client_id: &str, scope: &str) -> DeviceCodeResponse {
        let res = self.request_code(client_id, scope).await;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        assert_eq!(
            status,
            StatusCode::OK,
            "device/code answered {text}; server log: {}",
            self.log()
        );
        serde_json::from_str(&text).expect("device code body")
    }

    /// One device-code poll, as a urlencoded form.
    pub async fn poll(&self, client_id: &str, device_code: &str) -> Response {
        self.client
            .post(self.at("/v2/auth/token"))
            .form(&[
                ("grant_type", GRANT_DEVICE_CODE),
                ("client_id", client_id),
                ("device_code", device_code),
            ])
            .send()
            .await
            .expect("token poll")
    }

    pub async fn refresh(&self, client_id: &str, refresh_token: &str) -> Response {
        self.client
            .post(self.at("/v2/auth/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("client_secret", "test-model-secret"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .expect("refresh")
    }

    /// Runs one SQL statement on the server's database behind its back (`sqlite3` or
    /// `psql`), as damage or a bug could: for tests of what notices.
    pub fn sql(&self, statement: &str) {
        if let Some(url) = &self.database_url {
            return psql(url, statement);
        }
        let out = Command::new("sqlite3")
            .arg(self.data.join("rushes.db"))
            .args([".timeout 10000", statement])
            .output()
            .expect("run sqlite3 (apt-get install sqlite3)");
        assert!(
            out.status.success(),
            "{statement}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Everything the metadata store holds, as text (to check what is stored in clear).
    pub fn database_dump(&self) -> String {
        match &self.database_url {
            Some(url) => {
                let out = Command::new("pg_dump")
                    .args(["--data-only", url])
                    .output()
                    .expect("run pg_dump");
                assert!(
                    out.status.success(),
                    "pg_dump failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
            None => ["rushes.db", "rushes.db-wal"]
                .iter()
                .filter_map(|name| std::fs::read(self.data.join(name)).ok())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .collect(),
        }
    }

    /// Creates a web user through the CLI and returns its password.
    pub fn web_user(&self, name: &str, admin: bool) -> String {
        let mut args = vec!["user", "add", name];
        if admin {
            args.push("--admin");
        }
        let out = self.cli(&args);
        out.trim()
            .rsplit(' ')
            .next()
            .expect("a password")
            .to_owned()
    }

    /// A client with a cookie store, signed in to the web UI as `name`.
    pub async fn web_client(&self, name: &str, password: &str) -> Client {
        let pem = std::fs::read(self.data.join("tls/ca.crt")).expect("ca.crt");
        let client = Client::builder()
            .tls_certs_only([Certificate::from_pem(&pem).expect("CA pem")])
            .cookie_store(true)
            .build()
            .expect("client");
        let page = client
            .get(self.at("/login"))
            .send()
            .await
            .expect("login page")
            .text()
            .await
            .expect("html");
        let csrf = csrf_of(&page);
        let res = client
            .post(self.at("/login"))
            .form(&[
                ("username", name),
                ("password", password),
                ("csrf", &csrf),
                ("next", "/"),
            ])
            .send()
            .await
            .expect("sign in");
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "sign-in failed: {}",
            res.text().await.unwrap_or_default()
        );
        client
    }

    /// Approves a pending code for the `Default` project through the CLI.
    pub fn approve(&self, user_code: &str) {
        self.cli(&["pairing", "approve", user_code, "--project", "Default"]);
    }

    /// Requests a code, approves it for `project` through the CLI, and exchanges it.
    pub async fn pair_into(&self, client_id: &str, scope: &str, project: &str) -> TokenResponse {
        let code = self.code(client_id, scope).await;
        self.cli(&["pairing", "approve", &code.user_code, "--project", project]);
        let res = self.poll(client_id, &code.device_code).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "{}",
            res.text().await.unwrap_or_default()
        );
        res.json().await.expect("token body")
    }

    pub async fn pair(&self, client_id: &str) -> TokenResponse {
        self.pair_into(client_id, "asset_create offline", "Default")
            .await
    }

    /// `POST /v2/devices/assets` with a JSON body.
    pub async fn create_asset_raw(&self, token: &str, body: Value) -> Response {
        self.client
            .post(self.at("/v2/devices/assets"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("create asset")
    }

    pub async fn create_asset(&self, token: &str, name: &str, size: usize) -> Asset {
        let res = self
            .create_asset_raw(
                token,
                json!({"name": name, "filesize": size, "filetype": "video/mp4"}),
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "{}",
            res.text().await.unwrap_or_default()
        );
        res.json().await.expect("asset body")
    }

    /// PUTs one part the way cameras do (Content-Type and x-amz-acl headers).
    pub async fn put_part(&self, url: &str, bytes: Vec<u8>) -> Response {
        self.client
            .put(url)
            .header("content-type", "video/mp4")
            .header("x-amz-acl", "private")
            .body(bytes)
            .send()
            .await
            .expect("part PUT")
    }

    /// Uploads `data` through the asset's URLs, cutting it as the contract says.
    pub async fn upload(&self, asset: &Asset, data: &[u8]) {
        let part = data.len().div_ceil(asset.upload_urls.len());
        for (i, url) in asset.upload_urls.iter().enumerate() {
            let chunk = data[i * part..((i + 1) * part).min(data.len())].to_vec();
            let res = self.put_part(url, chunk).await;
            assert_eq!(
                res.status(),
                StatusCode::OK,
                "part {}: {}",
                i + 1,
                res.text().await.unwrap_or_default()
            );
        }
    }

    pub async fn upload_status(&self, token: &str, asset_id: &str) -> Response {
        self.client
            .get(self.at(&format!("/v2/devices/assets/{asset_id}/upload")))
            .bearer_auth(token)
            .send()
            .await
            .expect("upload status")
    }

    /// Waits (polling the resume extension, 30 s at most) until the asset is complete.
    pub async fn wait_complete(&self, token: &str, asset_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status: UploadStatus = self
                .upload_status(token, asset_id)
                .await
                .json()
                .await
                .expect("status");
            if status.state == "complete" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "asset {asset_id} did not complete; log: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The id of the project named `name`, from `rushes project list --json`.
    pub fn project_id(&self, name: &str) -> String {
        let list = self.cli_json(&["project", "list"]);
        list.as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .and_then(|p| p["id"].as_str())
            .unwrap_or_else(|| panic!("no project {name:?}: {list}"))
            .to_owned()
    }

    /// Waits (30 s at most, polling the admin listing) until the asset is complete.
    pub async fn wait_listed_complete(&self, asset_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.asset_entry(asset_id)["state"] != "complete" {
            assert!(
                Instant::now() < deadline,
                "asset {asset_id} never completed; log: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `rushes asset list --json` entry of an asset.
    pub fn asset_entry(&self, asset_id: &str) -> Value {
        let list = self.cli_json(&["asset", "list"]);
        list.as_array()
            .and_then(|a| a.iter().find(|e| e["id"] == asset_id).cloned())
            .unwrap_or_else(|| panic!("asset {asset_id} not listed: {list}"))
    }

    /// The finished file on disk for a listed asset (in the S3 server's folder when the
    /// media is in S3).
    pub fn asset_file(&self, entry: &Value) -> PathBuf {
        let project = entry["project"].as_str().expect("project");
        let path = entry["path"].as_str().expect("path");
        match &self.s3 {
            Some(s3) => s3.object_path(&format!("{project}/{path}")),
            None => self.data.join("media").join(project).join(path),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic test bytes that differ per `seed` (so a misplaced part changes the hash).
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The detailed error body's title and status, checked for shape.
pub async fn detailed_error(res: Response) -> (StatusCode, String, String) {
    let status = res.status();
    let body: Value = res.json().await.expect("error body is JSON");
    assert_eq!(body["code"], status.as_u16(), "{body}");
    assert_eq!(body["errors"][0]["status"], status.as_u16(), "{body}");
    assert_eq!(body["errors"][0]["code"], status.as_u16(), "{body}");
    assert_eq!(body["message"], body["errors"][0]["title"], "{body}");
    (
        status,
        body["errors"][0]["title"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["errors"][0]["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// The OAuth error code of a 400 from `/v2/auth/*`.
pub async fn oauth_error(res: Response) -> String {
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.expect("error body is JSON");
    body["error"].as_str().expect("error code").to_owned()
}

/// A `rushes device ...` command for the device whose state lives in `state`.
pub fn device_command(state: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rushes"));
    cmd.arg("--state").arg(state).arg("device").args(args);
    cmd
}

impl TestServer {
    /// Pairs a device state directory through the real `rushes device pair` command: reads
    /// the code it prints, approves it with the admin command, and waits for it to finish.
    /// `server_url` lets a test pair through a proxy; `None` means this server directly.
    pub fn pair_device_cli(&self, state: &Path, name: &str, server_url: Option<&str>) {
        let server = server_url.unwrap_or(&self.url).to_owned();
        let ca = self.data.join("tls/ca.crt");
        let args = [
            "pair",
            "--server",
            &server,
            "--ca",
            ca.to_str().unwrap(),
            "--name",
            name,
        ];
        let (ok, output) = self.run_pairing(device_command(state, &args));
        assert!(ok, "rushes device pair failed: {output}");
        assert!(
            output.lines().any(|l| l.starts_with("Paired as")),
            "{output}"
        );
    }

    /// Runs a `rushes device pair` command (however it is wrapped), approves the code it
    /// prints with the admin command, and waits for it to end: whether it succeeded, and
    /// everything it printed.
    pub fn run_pairing(&self, mut pair: Command) -> (bool, String) {
        let mut child = pair
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rushes device pair");
        let stdout = child.stdout.take().expect("stdout");
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(code) = line.strip_prefix("Pairing code: ") {
                self.approve(code.trim());
            }
            seen.push(line);
        }
        let out = child.wait_with_output().expect("pair finishes");
        seen.push(String::from_utf8_lossy(&out.stderr).into_owned());
        (out.status.success(), seen.join("\n"))
    }
}

/// The asset id of the first `completed` event of a `--json` run.
pub fn completed_asset_id(events: &[Value]) -> String {
    events
        .iter()
        .find(|e| e["event"] == "completed")
        .and_then(|e| e["asset_id"].as_str())
        .unwrap_or_else(|| panic!("no completed event: {events:?}"))
        .to_owned()
}

/// The CSRF token of the first form on a page.
pub fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html
        .find(marker)
        .map(|i| i + marker.len())
        .expect("a form with a CSRF token");
    html[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect()
}

/// Parses `--json` event lines printed by `rushes device upload|watch`.
pub fn json_events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `POST {path}` with a JSON body (real-time part registration and its aliases).
pub async fn post_json(app: &TestServer, token: &str, path: &str, body: &Value) -> Response {
    app.client
        .post(app.at(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("POST")
}

/// Registers real-time parts and returns the upload URLs, insisting on 200.
pub async fn register_ok(app: &TestServer, token: &str, path: &str, body: Value) -> Vec<String> {
    let res = post_json(app, token, path, &body).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{path} {body}: {}",
        res.text().await.unwrap_or_default()
    );
    let answer: Value = res.json().await.expect("upload_urls JSON");
    answer["upload_urls"]
        .as_array()
        .unwrap_or_else(|| panic!("no upload_urls in {answer}"))
        .iter()
        .map(|u| u.as_str().expect("URL string").to_owned())
        .collect()
}

/// Asserts the asset is listed complete with `data`'s SHA-256 and size, and that its
/// file (in the data directory, or s3s-fs's folder) holds exactly `data`.
pub fn assert_complete_with(app: &TestServer, asset_id: &str, data: &[u8]) -> Value {
    let entry = app.asset_entry(asset_id);
    assert_eq!(entry["state"], "complete", "{entry}");
    assert_eq!(entry["sha256"], sha256_hex(data), "{entry}");
    assert_eq!(entry["size"], data.len(), "{entry}");
    let object = app.asset_file(&entry);
    let stored = std::fs::read(&object).unwrap_or_else(|e| {
        let folder = object.parent().expect("a folder");
        let beside: Vec<String> = std::fs::read_dir(folder)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        panic!(
            "no file at {}: {e}; {entry}; the folder holds {beside:?}",
            object.display()
        )
    });
    assert_eq!(stored.len(), data.len(), "{}", object.display());
    assert!(stored == data, "the stored file differs from the source");
    entry
}

/// A TLS connection of the test's own to the server, trusting only its CA, offering `alpn`
/// (none: no ALPN extension) and naming `server_name` (an IP address sends no SNI): for
/// requests no HTTP client library would send, and for WebSocket clients.
pub async fn tls_connection(
    app: &TestServer,
    alpn: &[&[u8]],
    server_name: rustls::pki_types::ServerName<'static>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(app.data.join("tls/ca.crt")).expect("the CA file") {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a CA certificate");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(app.url.trim_start_matches("https://"))
        .await
        .expect("connect to the server");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .expect("the TLS handshake completes")
}

/// [`tls_connection`] as an HTTP/1.1 client names the server.
pub async fn http11_connection(
    app: &TestServer,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls_connection(
        app,
        &[b"http/1.1"],
        rustls::pki_types::ServerName::try_from("localhost").expect("a name"),
    )
    .await
}

/// Polls `probe` every 50 ms until it gives `Ok`, for `within` at most, then panics with
/// `what` and the last `Err` it gave (what was seen instead): for what the server does off
/// the request's path (records written, uploads aborted, clips scrubbed), never a fixed
/// sleep.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "{what} (not within {within:?}): {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
