//! The web UI over plain HTTP, as a browser without JavaScript would use it: signing in and
//! out (cookie flags, the `next` redirect and its open-redirect guard, the sign-in rate
//! limit), CSRF on every state-changing form, project isolation between users, the pairing
//! page (code lookup, approve, deny, wrong, expired and burned codes, rate limits), escaping
//! of device and clip names, clip downloads with ranges, the live event stream, security
//! headers, and the user administration commands. Browser-driven tests live in `browser.rs`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::header::{
    CONTENT_DISPOSITION, CONTENT_RANGE, CONTENT_TYPE, COOKIE, HeaderMap, LOCATION, RANGE,
    SET_COOKIE,
};
use reqwest::{Certificate, Client, Response, StatusCode};
use rushes_proto::auth::DeviceCodeResponse;
use serde_json::Value;

use crate::helpers::*;

const SCOPE: &str = "asset_create offline";
const WRONG_SIGN_IN: &str = "Wrong user name or password";
const NOT_WAITING: &str = "No device is waiting with that code";
const CONFIRM_TITLE: &str = "Approve this device?";

// ---------------------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------------------

/// A browser: a cookie store, the test CA, and redirects shown rather than followed.
fn browser(app: &TestServer) -> Client {
    browser_from(app, None)
}

/// A browser whose connections come from `local` (any 127.x address reaches the server).
fn browser_from(app: &TestServer, local: Option<IpAddr>) -> Client {
    let pem = std::fs::read(app.data.join("tls/ca.crt")).expect("ca.crt");
    Client::builder()
        .tls_certs_only([Certificate::from_pem(&pem).expect("CA pem")])
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(local)
        .read_timeout(Duration::from_secs(40))
        .build()
        .expect("client")
}

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().expect("an IP address"))
}

async fn body(res: Response) -> String {
    res.text().await.expect("a text body")
}

fn location(res: &Response) -> String {
    res.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no Location on a {}", res.status()))
        .to_owned()
}

fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect()
}

/// The `Set-Cookie` line that sets `name` to a non-empty value, if any.
fn cookie_set(headers: &HeaderMap, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    set_cookies(headers).into_iter().find(|c| {
        c.strip_prefix(&prefix)
            .is_some_and(|rest| !rest.starts_with(';') && !rest.is_empty())
    })
}

/// The value of a `Set-Cookie` line.
fn cookie_value(line: &str) -> String {
    line.split(';')
        .next()
        .and_then(|pair| pair.split_once('='))
        .map(|(_, v)| v.to_owned())
        .expect("name=value")
}

/// Opens the sign-in page (setting the pre-session cookie) and returns its CSRF token.
async fn login_csrf(app: &TestServer, client: &Client) -> String {
    let res = client
        .get(app.at("/login"))
        .send()
        .await
        .expect("login page");
    assert_eq!(res.status(), StatusCode::OK);
    csrf_of(&body(res).await)
}

/// Posts the sign-in form with the given token.
async fn post_login(
    app: &TestServer,
    client: &Client,
    csrf: &str,
    user: &str,
    password: &str,
    next: &str,
) -> Response {
    client
        .post(app.at("/login"))
        .form(&[
            ("username", user),
            ("password", password),
            ("csrf", csrf),
            ("next", next),
        ])
        .send()
        .await
        .expect("sign in")
}

/// Opens the sign-in page and signs in, returning the raw answer.
async fn submit_login(
    app: &TestServer,
    client: &Client,
    user: &str,
    password: &str,
    next: &str,
) -> Response {
    let csrf = login_csrf(app, client).await;
    post_login(app, client, &csrf, user, password, next).await
}

/// A signed-in browser and its session's CSRF token.
struct Session {
    client: Client,
    csrf: String,
    /// The `rushes_session` cookie value.
    token: String,
}

impl Session {
    async fn get(&self, app: &TestServer, path: &str) -> Response {
        self.client
            .get(app.at(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Posts exactly `fields` (no token is added).
    async fn post(&self, app: &TestServer, path: &str, fields: &[(&str, &str)]) -> Response {
        self.client
            .post(app.at(path))
            .form(fields)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Types a code into the pairing page.
    async fn enter_code(&self, app: &TestServer, code: &str) -> Response {
        self.post(app, "/pair", &[("code", code), ("csrf", &self.csrf)])
            .await
    }

    async fn decide(
        &self,
        app: &TestServer,
        code: &str,
        project: &str,
        decision: &str,
    ) -> Response {
        self.post(
            app,
            "/pair/decide",
            &[
                ("code", code),
                ("project", project),
                ("decision", decision),
                ("csrf", &self.csrf),
            ],
        )
        .await
    }
}

async fn sign_in(app: &TestServer, user: &str, password: &str) -> Session {
    sign_in_from(app, user, password, None).await
}

async fn sign_in_from(
    app: &TestServer,
    user: &str,
    password: &str,
    local: Option<IpAddr>,
) -> Session {
    let client = browser_from(app, local);
    let res = submit_login(app, &client, user, password, "/").await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "sign-in of {user}: {}",
        body_of(res).await
    );
    let token = cookie_value(
        &cookie_set(res.headers(), "rushes_session").expect("a session cookie on sign-in"),
    );
    let page = client.get(app.at("/")).send().await.expect("projects");
    assert_eq!(page.status(), StatusCode::OK);
    let csrf = csrf_of(&body(page).await);
    Session {
        client,
        csrf,
        token,
    }
}

async fn body_of(res: Response) -> String {
    res.text().await.unwrap_or_default()
}

/// A request carrying only the given session cookie (no cookie store).
async fn get_with_cookie(app: &TestServer, path: &str, token: &str) -> Response {
    let pem = std::fs::read(app.data.join("tls/ca.crt")).expect("ca.crt");
    let client = Client::builder()
        .tls_certs_only([Certificate::from_pem(&pem).expect("CA pem")])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    client
        .get(app.at(path))
        .header(COOKIE, format!("rushes_session={token}"))
        .send()
        .await
        .expect("GET with a cookie")
}

/// The `rushes device list --json` entry of a device.
fn device(app: &TestServer, client_id: &str) -> Value {
    let list = app.cli_json(&["device", "list"]);
    list.as_array()
        .and_then(|a| a.iter().find(|d| d["client_id"] == client_id).cloned())
        .unwrap_or_else(|| panic!("device {client_id:?} not listed: {list}"))
}

fn str_of(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
        .to_owned()
}

/// The user codes `rushes pairing list` shows as pending.
fn pending_codes(app: &TestServer) -> Vec<String> {
    app.cli_json(&["pairing", "list"])
        .as_array()
        .expect("pairing list is an array")
        .iter()
        .map(|c| str_of(c, "user_code"))
        .collect()
}

/// `POST /v2/auth/device/code` proposing a device name, as `rushes device pair` does.
async fn named_code(app: &TestServer, client_id: &str, name: &str) -> DeviceCodeResponse {
    let form = reqwest::multipart::Form::new()
        .text("client_id", client_id.to_owned())
        .text("client_secret", "test-model-secret")
        .text("scope", SCOPE)
        .text("device_name", name.to_owned());
    let res = app
        .client
        .post(app.at("/v2/auth/device/code"))
        .header("x-client-version", "1.2.3")
        .multipart(form)
        .send()
        .await
        .expect("device/code");
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.expect("device code body")
}

/// A 6-digit code that is none of `live`, the first from `seed` on.
fn wrong_code(live: &[&str], seed: u32) -> String {
    (seed..)
        .map(|n| format!("{:06}", n % 1_000_000))
        .find(|c| !live.contains(&c.as_str()))
        .expect("a free code")
}

fn assert_security_headers(res: &Response, what: &str) {
    let h = res.headers();
    let get = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {name} header"))
            .to_owned()
    };
    let csp = get("content-security-policy");
    assert!(
        csp.split(';').any(|d| d.trim() == "default-src 'self'"),
        "{what}: CSP {csp:?}"
    );
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
}

/// Pairs `client_id` into `project` and uploads a complete clip; returns (token, asset).
async fn paired_clip(
    app: &TestServer,
    client_id: &str,
    project: &str,
    name: &str,
    data: &[u8],
) -> (String, rushes_proto::asset::Asset) {
    let token = app.pair_into(client_id, SCOPE, project).await.access_token;
    let asset = app.create_asset(&token, name, data.len()).await;
    app.upload(&asset, data).await;
    app.wait_complete(&token, &asset.id).await;
    (token, asset)
}

// ---------------------------------------------------------------------------------------
// Signing in and out
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pages_need_a_signed_in_user_and_send_them_back_after_sign_in() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", false);
    let client = browser(&app);

    let res = client.get(app.at("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?next=/");

    // The verification_uri_complete flow: the code survives the detour through sign-in.
    let res = client
        .get(app.at("/pair?code=123456"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let to = location(&res);
    assert_eq!(to, "/login?next=/pair%3Fcode%3D123456");
    let page = body(client.get(app.at(&to)).send().await.unwrap()).await;
    assert!(
        page.contains(r#"name="next" value="/pair?code=123456""#),
        "{page}"
    );
    let csrf = csrf_of(&page);
    let res = post_login(&app, &client, &csrf, "alice", &pw, "/pair?code=123456").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/pair?code=123456");
    let res = client
        .get(app.at("/pair?code=123456"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(body(res).await.contains(r#"value="123456""#));
}

#[tokio::test]
async fn sign_in_sets_a_secure_httponly_lax_cookie_and_wrong_passwords_are_refused() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", false);
    let client = browser(&app);

    // The sign-in page's pre-session cookie has the same flags.
    let res = client.get(app.at("/login")).send().await.unwrap();
    let pre = cookie_set(res.headers(), "rushes_pre").expect("a pre-session cookie");
    for flag in ["Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(pre.split("; ").any(|f| f == flag), "{flag} in {pre}");
    }
    let csrf = csrf_of(&body(res).await);

    for (user, password) in [("alice", "not-the-password"), ("nobody", pw.as_str())] {
        let res = post_login(&app, &client, &csrf, user, password, "/").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{user}");
        assert_eq!(cookie_set(res.headers(), "rushes_session"), None, "{user}");
        let page = body(res).await;
        // The same words whether the user exists or not.
        assert!(page.contains(WRONG_SIGN_IN), "{user}: {page}");
    }
    let res = client.get(app.at("/")).send().await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "signed in by a wrong password"
    );

    let res = post_login(&app, &client, &csrf, "alice", &pw, "/").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/");
    let cookie = cookie_set(res.headers(), "rushes_session").expect("a session cookie");
    let flags: Vec<&str> = cookie.split("; ").skip(1).collect();
    for flag in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(flags.contains(&flag), "{flag} missing in {cookie}");
    }
    assert!(
        cookie_value(&cookie).len() >= 32,
        "a guessable token: {cookie}"
    );
    let res = client.get(app.at("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(body(res).await.contains("Sign out alice"));
}

#[tokio::test]
async fn sign_out_ends_the_session_for_good() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", false);
    let s = sign_in(&app, "alice", &pw).await;
    assert_eq!(
        get_with_cookie(&app, "/", &s.token).await.status(),
        StatusCode::OK
    );

    let res = s.post(&app, "/logout", &[("csrf", &s.csrf)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login");
    let cleared = set_cookies(res.headers());
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("rushes_session=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );

    // The old cookie, replayed by someone who kept it, no longer works.
    let res = get_with_cookie(&app, "/", &s.token).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?next=/");
    let res = s.get(&app, "/").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sign_in_never_redirects_off_the_site() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", false);

    // The page does not carry a foreign `next` into its form.
    let client = browser(&app);
    let page = body(
        client
            .get(app.at("/login?next=//evil.example"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(page.contains(r#"name="next" value="/""#), "{page}");
    assert!(!page.contains("evil.example"), "{page}");

    // Nor does the form post, whatever `next` it carries.
    for next in [
        "//evil.example",
        "https://evil.example/",
        "/\\evil.example",
        "evil.example",
    ] {
        let client = browser(&app);
        let res = submit_login(&app, &client, "alice", &pw, next).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{next}");
        assert_eq!(location(&res), "/", "next={next}");
    }
}

#[tokio::test]
async fn sign_in_is_rate_limited_per_address() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", false);
    let client = browser(&app);
    let csrf = login_csrf(&app, &client).await;
    for i in 0..10 {
        let res = post_login(&app, &client, &csrf, "alice", "guess", "/").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "attempt {}", i + 1);
    }
    // The eleventh within the minute is refused even with the right password.
    let res = post_login(&app, &client, &csrf, "alice", &pw, "/").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(cookie_set(res.headers(), "rushes_session"), None);
    assert!(body(res).await.contains("Too many attempts"));

    // Another address is not held back.
    let other = browser_from(&app, ip("127.0.0.2"));
    let res = submit_login(&app, &other, "alice", &pw, "/").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

// ---------------------------------------------------------------------------------------
// CSRF
// ---------------------------------------------------------------------------------------

/// The token of another (live) session of the same user: well formed, signed by the
/// server, but not this session's.
async fn foreign_token(app: &TestServer, user: &str, password: &str) -> String {
    sign_in(app, user, password).await.csrf
}

fn assert_refused(status: StatusCode, what: &str, missing: bool) {
    if missing {
        // A form without the field never reaches the handler's check: axum refuses it.
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{what} without csrf: {status}"
        );
    } else {
        assert_eq!(status, StatusCode::FORBIDDEN, "{what} with a wrong csrf");
    }
}

#[tokio::test]
async fn sign_in_without_the_right_csrf_is_refused() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", false);
    let client = browser(&app);
    let mine = login_csrf(&app, &client).await;
    let other = login_csrf(&app, &browser(&app)).await;
    assert_ne!(mine, other, "pre-sessions share a token");

    for (csrf, what) in [
        (other.as_str(), "another page's token"),
        ("", "an empty token"),
        ("00", "a short token"),
        (&"0".repeat(64), "a zero token"),
    ] {
        let res = post_login(&app, &client, csrf, "alice", &pw, "/").await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{what}");
        assert_eq!(cookie_set(res.headers(), "rushes_session"), None, "{what}");
    }
    let res = client
        .post(app.at("/login"))
        .form(&[("username", "alice"), ("password", &pw), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_refused(res.status(), "/login", true);
    assert_eq!(cookie_set(res.headers(), "rushes_session"), None);

    // A cross-site post has no pre-session cookie at all.
    let bare = browser(&app);
    let res = post_login(&app, &bare, &mine, "alice", &pw, "/").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(cookie_set(res.headers(), "rushes_session"), None);

    // None of that signed anyone in.
    let res = client.get(app.at("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // The right token does.
    let res = post_login(&app, &client, &mine, "alice", &pw, "/").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sign_out_without_the_right_csrf_is_refused() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", false);
    let s = sign_in(&app, "alice", &pw).await;
    let foreign = foreign_token(&app, "alice", &pw).await;
    assert_ne!(foreign, s.csrf);

    let res = s.post(&app, "/logout", &[("csrf", &foreign)]).await;
    assert_refused(res.status(), "/logout", false);
    let res = s.post(&app, "/logout", &[]).await;
    assert_refused(res.status(), "/logout", true);
    assert_eq!(
        get_with_cookie(&app, "/", &s.token).await.status(),
        StatusCode::OK,
        "a forged sign-out ended the session"
    );
}

#[tokio::test]
async fn pairing_forms_without_the_right_csrf_are_refused() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", true);
    let s = sign_in(&app, "alice", &pw).await;
    let foreign = foreign_token(&app, "alice", &pw).await;
    let default = app.project_id("Default");
    let code = app.code("cam-csrf", SCOPE).await;
    let user_code = code.user_code.as_str();

    // Looking a code up.
    let res = s
        .post(&app, "/pair", &[("code", user_code), ("csrf", &foreign)])
        .await;
    assert_refused(res.status(), "/pair", false);
    assert!(!body(res).await.contains(CONFIRM_TITLE));
    let res = s.post(&app, "/pair", &[("code", user_code)]).await;
    assert_refused(res.status(), "/pair", true);

    // Deciding.
    for decision in ["approve", "deny"] {
        let res = s
            .post(
                &app,
                "/pair/decide",
                &[
                    ("code", user_code),
                    ("project", &default),
                    ("decision", decision),
                    ("csrf", &foreign),
                ],
            )
            .await;
        assert_refused(res.status(), "/pair/decide", false);
        let res = s
            .post(
                &app,
                "/pair/decide",
                &[
                    ("code", user_code),
                    ("project", &default),
                    ("decision", decision),
                ],
            )
            .await;
        assert_refused(res.status(), "/pair/decide", true);
    }
    assert_eq!(pending_codes(&app), vec![user_code.to_owned()]);
    let res = app.poll("cam-csrf", &code.device_code).await;
    assert_eq!(oauth_error(res).await, "authorization_pending");

    // Refused posts were not even counted as wrong guesses: five more wrong-token posts
    // would otherwise have burned the code.
    for _ in 0..5 {
        let res = s
            .post(&app, "/pair", &[("code", "000000"), ("csrf", &foreign)])
            .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(pending_codes(&app), vec![user_code.to_owned()]);
    // With the right token, it works.
    let res = s.enter_code(&app, user_code).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(body(res).await.contains(CONFIRM_TITLE));
}

#[tokio::test]
async fn device_actions_without_the_right_csrf_are_refused() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", true);
    let s = sign_in(&app, "alice", &pw).await;
    let foreign = foreign_token(&app, "alice", &pw).await;
    let token = app.pair("cam-actions").await.access_token;
    let dev = device(&app, "cam-actions");
    let id = str_of(&dev, "id");
    let name = str_of(&dev, "name");
    let status = str_of(&dev, "status");
    assert_ne!(status, "paused");

    for action in ["pause", "unpair", "rename"] {
        let path = format!("/devices/{id}/{action}");
        let res = s
            .post(&app, &path, &[("csrf", &foreign), ("name", "forged")])
            .await;
        assert_refused(res.status(), &path, false);
        let res = s.post(&app, &path, &[("name", "forged")]).await;
        assert_refused(res.status(), &path, true);
    }
    let now = device(&app, "cam-actions");
    assert_eq!(now["status"], status.as_str(), "{now}");
    assert_eq!(now["name"], name.as_str(), "{now}");
    let res = app
        .create_asset_raw(
            &token,
            serde_json::json!({"name": "a.mp4", "filesize": 10, "filetype": "video/mp4"}),
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "a forged unpair or pause worked"
    );

    app.cli(&["device", "pause", &id]);
    let path = format!("/devices/{id}/resume");
    let res = s.post(&app, &path, &[("csrf", &foreign)]).await;
    assert_refused(res.status(), &path, false);
    let res = s.post(&app, &path, &[]).await;
    assert_refused(res.status(), &path, true);
    assert_eq!(device(&app, "cam-actions")["status"], "paused");

    // The same forms with this session's token take effect.
    let res = s.post(&app, &path, &[("csrf", &s.csrf)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_ne!(device(&app, "cam-actions")["status"], "paused");
    let path = format!("/devices/{id}/rename");
    let res = s
        .post(&app, &path, &[("csrf", &s.csrf), ("name", "B-cam")])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(device(&app, "cam-actions")["name"], "B-cam");
}

// ---------------------------------------------------------------------------------------
// Isolation between projects
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_user_sees_nothing_of_projects_they_are_not_a_member_of() {
    let app = spawn_app().await;
    let admin_pw = app.web_user("alice", true);
    let bob_pw = app.web_user("bob", false);
    app.cli(&["project", "create", "B"]);
    app.cli(&["project", "add-member", "B", "bob"]);
    let default = app.project_id("Default");
    let b = app.project_id("B");

    let data = test_bytes(2000, 1);
    let (_, asset) = paired_clip(&app, "cam-default", "Default", "secret.mp4", &data).await;
    let default_dev = str_of(&device(&app, "cam-default"), "id");
    app.pair_into("cam-b", SCOPE, "B").await;
    let b_dev = str_of(&device(&app, "cam-b"), "id");

    let bob = sign_in(&app, "bob", &bob_pw).await;

    // The project list.
    let res = bob.get(&app, "/").await;
    assert_eq!(res.status(), StatusCode::OK);
    let page = body(res).await;
    assert!(
        page.contains(&format!(r#"href="/projects/{b}">B</a>"#)),
        "{page}"
    );
    assert!(!page.contains(&default), "{page}");
    assert!(!page.contains("Default"), "{page}");

    // His own project, for comparison.
    let res = bob.get(&app, &format!("/projects/{b}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let page = body(res).await;
    assert!(
        page.contains(&b_dev) && !page.contains(&default_dev),
        "{page}"
    );
    assert_eq!(
        bob.get(&app, &format!("/projects/{b}/media"))
            .await
            .status(),
        StatusCode::OK
    );

    // Everything of Default is as absent as something that does not exist.
    let missing = body(bob.get(&app, "/projects/no-such-project").await).await;
    for path in [
        format!("/projects/{default}"),
        format!("/projects/{default}/media"),
        format!("/projects/{default}/events"),
        format!("/assets/{}", asset.id),
        format!("/assets/{}/file", asset.id),
        format!("/assets/{}/file?download=1", asset.id),
    ] {
        let res = bob.get(&app, &path).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        let page = body(res).await;
        assert!(
            !page.contains("secret.mp4") && !page.contains("cam-default"),
            "{path}"
        );
        if path.starts_with("/projects/") {
            assert_eq!(page, missing, "{path} differs from a missing project");
        }
    }

    // Device actions on a Default device, with bob's own valid token.
    for action in ["pause", "unpair", "rename"] {
        let path = format!("/devices/{default_dev}/{action}");
        let res = bob
            .post(&app, &path, &[("csrf", &bob.csrf), ("name", "taken")])
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let dev = device(&app, "cam-default");
    assert_ne!(dev["status"], "paused", "{dev}");
    assert_ne!(dev["status"], "unpaired", "{dev}");
    assert_ne!(dev["name"], "taken", "{dev}");
    // On his own device the same form works.
    let res = bob
        .post(
            &app,
            &format!("/devices/{b_dev}/pause"),
            &[("csrf", &bob.csrf)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), format!("/projects/{b}"));
    assert_eq!(device(&app, "cam-b")["status"], "paused");

    // An administrator sees Default and its clip.
    let alice = sign_in(&app, "alice", &admin_pw).await;
    let res = alice.get(&app, &format!("/projects/{default}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(body(res).await.contains(&default_dev));
    let res = alice.get(&app, &format!("/assets/{}/file", asset.id)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn pairing_offers_only_the_users_projects_and_refuses_a_forged_one() {
    let app = spawn_app().await;
    let bob_pw = app.web_user("bob", false);
    app.cli(&["project", "create", "B"]);
    app.cli(&["project", "add-member", "B", "bob"]);
    let default = app.project_id("Default");
    let b = app.project_id("B");
    let bob = sign_in(&app, "bob", &bob_pw).await;
    let code = app.code("cam-new", SCOPE).await;

    let res = bob.enter_code(&app, &code.user_code).await;
    assert_eq!(res.status(), StatusCode::OK);
    let page = body(res).await;
    assert!(page.contains(CONFIRM_TITLE), "{page}");
    assert!(
        page.contains(&format!(r#"<option value="{b}">B</option>"#)),
        "{page}"
    );
    assert_eq!(page.matches("<option").count(), 1, "{page}");
    assert!(
        !page.contains(&default) && !page.contains("Default"),
        "{page}"
    );

    // A forged form value naming Default.
    let res = bob.decide(&app, &code.user_code, &default, "approve").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(pending_codes(&app), vec![code.user_code.clone()]);

    // His own project works.
    let res = bob.decide(&app, &code.user_code, &b, "approve").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        body(res)
            .await
            .contains("Approved. The device now uploads to B.")
    );
    let res = app.poll("cam-new", &code.device_code).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(device(&app, "cam-new")["project"], "B");
}

#[tokio::test]
async fn a_user_in_no_project_cannot_approve_anything() {
    let app = spawn_app().await;
    let pw = app.web_user("carol", false);
    let carol = sign_in(&app, "carol", &pw).await;
    let page = body(carol.get(&app, "/").await).await;
    assert!(page.contains("not a member of any project"), "{page}");
    let code = app.code("cam-lonely", SCOPE).await;
    let res = carol.enter_code(&app, &code.user_code).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(!body(res).await.contains(CONFIRM_TITLE));
    let res = carol
        .decide(&app, &code.user_code, &app.project_id("Default"), "approve")
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(pending_codes(&app), vec![code.user_code]);
}

// ---------------------------------------------------------------------------------------
// The pairing page
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_pairing_page_prefills_the_code_of_the_complete_uri() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", false);
    let s = sign_in(&app, "alice", &pw).await;
    let code = app.code("cam-uri", SCOPE).await;
    let path = code
        .verification_uri_complete
        .strip_prefix(&code.verification_uri)
        .map(|q| format!("/pair{q}"))
        .expect("the complete URI extends the plain one");
    for (path, want) in [
        ("/pair?code=123456".to_owned(), "123456"),
        (path, code.user_code.as_str()),
    ] {
        let res = s.get(&app, &path).await;
        assert_eq!(res.status(), StatusCode::OK);
        let page = body(res).await;
        assert!(
            page.contains(r#"name="code""#) && page.contains(&format!(r#"value="{want}""#)),
            "{path}: {page}"
        );
    }
    let page = body(s.get(&app, "/pair?code=%22%3E%3Cb%3E").await).await;
    assert!(!page.contains("\"><b>"), "{page}");
}

#[tokio::test]
async fn a_live_code_shows_its_device_and_approving_pairs_it() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", true);
    let s = sign_in(&app, "alice", &pw).await;
    let default = app.project_id("Default");
    let code = named_code(&app, "SN-4711", "A-cam").await;
    let listed = app.cli_json(&["pairing", "list"]);
    let entry = &listed[0];
    assert_eq!(entry["client_version"], "1.2.3", "{entry}");

    let res = s.enter_code(&app, &code.user_code).await;
    assert_eq!(res.status(), StatusCode::OK);
    let page = body(res).await;
    assert!(page.contains(CONFIRM_TITLE), "{page}");
    assert!(
        page.contains(r#"<dd id="device-name">A-cam</dd>"#),
        "{page}"
    );
    assert!(
        page.contains(&format!("<dd>{}</dd>", str_of(entry, "model"))),
        "{page}"
    );
    assert!(page.contains(">SN-4711</dd>"), "{page}");
    assert!(page.contains("<dd>1.2.3</dd>"), "{page}");
    assert!(
        page.contains(&format!(r#"name="code" value="{}""#, code.user_code)),
        "{page}"
    );
    // Codes typed with a space or a dash, as devices often show them, are the same code.
    let spaced = format!("{} {}", &code.user_code[..3], &code.user_code[3..]);
    let dashed = format!("{}-{}", &code.user_code[..3], &code.user_code[3..]);
    for typed in [spaced, dashed] {
        let res = s.enter_code(&app, &typed).await;
        assert_eq!(res.status(), StatusCode::OK, "{typed}");
        assert!(body(res).await.contains("A-cam"), "{typed}");
    }

    let res = s.decide(&app, &code.user_code, &default, "approve").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        body(res)
            .await
            .contains("Approved. The device now uploads to Default.")
    );
    let res = app.poll("SN-4711", &code.device_code).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(pending_codes(&app).is_empty());
    assert_eq!(device(&app, "SN-4711")["project"], "Default");
    // A decided code is no longer waiting.
    let res = s.enter_code(&app, &code.user_code).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deny_tells_the_device_no() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", true);
    let s = sign_in(&app, "alice", &pw).await;
    let code = app.code("cam-deny", SCOPE).await;
    let res = s
        .decide(&app, &code.user_code, &app.project_id("Default"), "deny")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(body(res).await.contains("Denied."));
    let res = app.poll("cam-deny", &code.device_code).await;
    assert_eq!(oauth_error(res).await, "access_denied");
    assert!(pending_codes(&app).is_empty());
}

#[tokio::test]
async fn a_wrong_code_says_so_and_reveals_nothing() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", true);
    let s = sign_in(&app, "alice", &pw).await;
    let code = named_code(&app, "SN-SECRET", "Hidden-cam").await;
    let wrong = wrong_code(&[&code.user_code], 100_000);

    let res = s.enter_code(&app, &wrong).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let page = body(res).await;
    assert!(page.contains(NOT_WAITING), "{page}");
    for secret in [
        code.user_code.as_str(),
        "SN-SECRET",
        "Hidden-cam",
        CONFIRM_TITLE,
    ] {
        assert!(!page.contains(secret), "{secret} revealed: {page}");
    }
    // Not six digits at all.
    let res = s.enter_code(&app, "12345").await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // The live code is still waiting (one wrong guess of five).
    assert_eq!(pending_codes(&app), vec![code.user_code.clone()]);
    let res = s.enter_code(&app, &code.user_code).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_expired_code_says_expired() {
    let app = spawn_app_with(&["--code-lifetime", "1"]).await;
    let pw = app.web_user("alice", true);
    let s = sign_in(&app, "alice", &pw).await;
    let default = app.project_id("Default");
    let code = app.code("cam-late", SCOPE).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let res = s.enter_code(&app, &code.user_code).await;
    assert_eq!(res.status(), StatusCode::GONE);
    let page = body(res).await;
    assert!(page.contains("expired"), "{page}");
    assert!(!page.contains(CONFIRM_TITLE), "{page}");

    let res = s.decide(&app, &code.user_code, &default, "approve").await;
    assert_eq!(res.status(), StatusCode::GONE);
    assert!(body(res).await.contains("expired"));
    let res = app.poll("cam-late", &code.device_code).await;
    assert_eq!(oauth_error(res).await, "expired_token");
}

#[tokio::test]
async fn five_wrong_guesses_by_anyone_burn_a_live_code() {
    let app = spawn_app().await;
    let alice_pw = app.web_user("alice", true);
    let bob_pw = app.web_user("bob", true);
    let alice = sign_in(&app, "alice", &alice_pw).await;
    let bob = sign_in(&app, "bob", &bob_pw).await;
    let default = app.project_id("Default");
    let code = named_code(&app, "cam-burn", "Burn-cam").await;
    let live = [code.user_code.as_str()];

    // Four wrong guesses between two users leave the code alive.
    for (i, who) in [&alice, &bob, &alice, &bob].into_iter().enumerate() {
        let wrong = wrong_code(&live, 200_000 + i as u32 * 7);
        let res = who.enter_code(&app, &wrong).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "guess {}", i + 1);
    }
    assert_eq!(pending_codes(&app), vec![code.user_code.clone()]);

    // The fifth burns it.
    let res = alice.enter_code(&app, &wrong_code(&live, 300_000)).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(
        pending_codes(&app).is_empty(),
        "the code survived 5 wrong guesses"
    );
    let res = app.poll("cam-burn", &code.device_code).await;
    assert_eq!(oauth_error(res).await, "expired_token");

    // The right code is no longer accepted, by anyone.
    for who in [&alice, &bob] {
        let res = who.enter_code(&app, &code.user_code).await;
        assert!(res.status().is_client_error(), "{}", res.status());
        let page = body(res).await;
        assert!(
            !page.contains(CONFIRM_TITLE) && !page.contains("Burn-cam"),
            "{page}"
        );
    }
    let res = bob.decide(&app, &code.user_code, &default, "approve").await;
    assert!(res.status().is_client_error(), "{}", res.status());
    assert!(!body(res).await.contains("Approved"));
    assert_eq!(device(&app, "cam-burn")["project"], Value::Null);
}

#[tokio::test]
async fn code_entry_is_rate_limited_per_user_and_per_address() {
    let app = spawn_app().await;
    let alice_pw = app.web_user("alice", true);
    let bob_pw = app.web_user("bob", true);
    let alice = sign_in(&app, "alice", &alice_pw).await;
    for i in 0..10 {
        let res = alice.enter_code(&app, &format!("{:06}", 400_000 + i)).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "attempt {}", i + 1);
    }
    let res = alice.enter_code(&app, "400010").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let page = body(res).await;
    assert!(page.contains("Too many codes tried"), "{page}");

    // The same user from another address: held back (per user).
    let alice2 = sign_in_from(&app, "alice", &alice_pw, ip("127.0.0.2")).await;
    let res = alice2.enter_code(&app, "400011").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "per user");
    // Another user from the same address: held back (per address).
    let bob = sign_in(&app, "bob", &bob_pw).await;
    let res = bob.enter_code(&app, "400012").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "per address");
    // Another user from another address: free to try.
    let bob3 = sign_in_from(&app, "bob", &bob_pw, ip("127.0.0.3")).await;
    let res = bob3.enter_code(&app, "400013").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------
// Escaping
// ---------------------------------------------------------------------------------------

/// The page with the numeric character references askama writes for `<`, `>`, `"`, `'` and
/// `&` turned into their named forms, so either spelling of an escape is recognised.
fn named_entities(page: &str) -> String {
    page.replace("&#60;", "&lt;")
        .replace("&#62;", "&gt;")
        .replace("&#34;", "&quot;")
        .replace("&#39;", "&#x27;")
        .replace("&#38;", "&amp;")
}

#[tokio::test]
async fn device_and_clip_names_are_escaped_on_every_page() {
    const DEVICE: &str = "<script>alert(1)</script>";
    const CLIP: &str = "<img src=x onerror=alert(1)>.mp4";
    const DEVICE_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";
    const CLIP_ESCAPED: &str = "&lt;img src=x onerror=alert(1)&gt;.mp4";
    let raw = ["<script>alert", "<img src=x", "<b>bold"];

    let app = spawn_app().await;
    let pw = app.web_user("alice", true);
    let s = sign_in(&app, "alice", &pw).await;
    let default = app.project_id("Default");
    let code = named_code(&app, "cam-xss", DEVICE).await;

    let res = s.enter_code(&app, &code.user_code).await;
    assert_eq!(res.status(), StatusCode::OK);
    let page = body(res).await;
    assert!(
        named_entities(&page).contains(DEVICE_ESCAPED),
        "confirm page: {page}"
    );
    for r in raw {
        assert!(!page.contains(r), "confirm page has raw {r}: {page}");
    }
    let res = s.decide(&app, &code.user_code, &default, "approve").await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.poll("cam-xss", &code.device_code).await;
    assert_eq!(res.status(), StatusCode::OK);
    let token = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let data = test_bytes(100, 2);
    let asset = app.create_asset(&token, CLIP, data.len()).await;
    assert_eq!(asset.name, CLIP);
    app.upload(&asset, &data).await;
    app.wait_complete(&token, &asset.id).await;

    for path in [
        format!("/projects/{default}"),
        format!("/projects/{default}/media"),
        format!("/assets/{}", asset.id),
    ] {
        let res = s.get(&app, &path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let raw_page = body(res).await;
        let page = named_entities(&raw_page);
        assert!(page.contains(CLIP_ESCAPED), "{path}: {page}");
        // The device's name (the media tree shows its folder name, `/` replaced).
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;"),
            "{path}: {page}"
        );
        if path.ends_with(&default) {
            assert!(page.contains(DEVICE_ESCAPED), "{path}: {page}");
        }
        for r in raw {
            assert!(!raw_page.contains(r), "{path} has raw {r}: {raw_page}");
        }
    }

    // A name given through the rename form is escaped as well, in text and in attributes.
    let dev = str_of(&device(&app, "cam-xss"), "id");
    let res = s
        .post(
            &app,
            &format!("/devices/{dev}/rename"),
            &[("csrf", &s.csrf), ("name", "\"><b>bold</b>")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let raw_page = body(s.get(&app, &format!("/projects/{default}")).await).await;
    assert!(!raw_page.contains("<b>bold"), "{raw_page}");
    let page = named_entities(&raw_page);
    // In the value attribute the quote must be escaped too.
    assert!(page.contains("&gt;&lt;b&gt;bold&lt;/b&gt;"), "{page}");
    assert!(
        page.contains("value=\"&quot;&gt;&lt;b&gt;bold&lt;/b&gt;\""),
        "{page}"
    );
}

// ---------------------------------------------------------------------------------------
// Clip download
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_clip_downloads_whole_in_ranges_and_as_an_attachment() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", true);
    let s = sign_in(&app, "alice", &pw).await;
    let data = test_bytes(1000, 3);
    let (token, asset) = paired_clip(&app, "cam-dl", "Default", "A001.mp4", &data).await;
    let file = format!("/assets/{}/file", asset.id);

    let res = s.get(&app, &file).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[CONTENT_TYPE], "video/mp4");
    assert_eq!(res.headers().get(CONTENT_DISPOSITION), None);
    assert_eq!(res.bytes().await.unwrap().as_ref(), data.as_slice());

    let res = s
        .client
        .get(app.at(&file))
        .header(RANGE, "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()[CONTENT_RANGE], "bytes 10-19/1000");
    assert_eq!(res.bytes().await.unwrap().as_ref(), &data[10..20]);

    // Resuming from the middle to the end.
    let res = s
        .client
        .get(app.at(&file))
        .header(RANGE, "bytes=990-")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()[CONTENT_RANGE], "bytes 990-999/1000");
    assert_eq!(res.bytes().await.unwrap().as_ref(), &data[990..]);

    let res = s.get(&app, &format!("{file}?download=1")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()[CONTENT_DISPOSITION],
        "attachment; filename=\"A001.mp4\""
    );
    assert_eq!(res.bytes().await.unwrap().as_ref(), data.as_slice());

    // The clip page plays it and links the download.
    let page = body(s.get(&app, &format!("/assets/{}", asset.id)).await).await;
    assert!(page.contains(r#"<video id="player""#), "{page}");
    assert!(
        page.contains(&format!(r#"href="{file}?download=1""#)),
        "{page}"
    );
    assert!(page.contains(&sha256_hex(&data)), "{page}");

    // An upload in progress has no bytes to give yet.
    let partial = app.create_asset(&token, "A002.mp4", 500).await;
    let res = s.get(&app, &format!("/assets/{}/file", partial.id)).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = s.get(&app, &format!("/assets/{}", partial.id)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(body(res).await.contains("still uploading"));
    assert_eq!(
        s.get(&app, "/assets/no-such-asset/file").await.status(),
        StatusCode::NOT_FOUND
    );
}

// ---------------------------------------------------------------------------------------
// Live progress
// ---------------------------------------------------------------------------------------

/// A server-sent event stream read in chunks, with deadlines.
struct EventStream {
    res: Response,
    buf: String,
}

impl EventStream {
    /// The next event (name, data), or None at the deadline or the end of the stream.
    async fn next(&mut self, deadline: Instant) -> Option<(String, String)> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut data) = (String::new(), Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if !event.is_empty() || !data.is_empty() {
                    return Some((event, data.join("\n")));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.res.chunk()).await {
                Ok(Ok(Some(bytes))) => {
                    self.buf
                        .push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n"));
                }
                Ok(Ok(None)) | Err(_) => return None,
                Ok(Err(e)) => panic!("event stream broke: {e}"),
            }
        }
    }

    /// Reads until an event named `name` whose data satisfies `want`; panics at 20 s.
    async fn until(&mut self, name: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            match self.next(deadline).await {
                Some((event, data)) if event == name && want(&data) => return data,
                Some(other) => seen.push(other),
                None => panic!("no {name} event with {what} within 20 s; saw {seen:?}"),
            }
        }
    }
}

/// The received bytes of `asset` in a `progress` event's data, if it lists it.
fn received_of(data: &str, asset: &rushes_proto::asset::Asset) -> Option<(i64, Value)> {
    let items: Value = serde_json::from_str(data).expect("progress data is JSON");
    items.as_array()?.iter().find_map(|i| {
        (i["id"] == asset.id.as_str() && i["path"] == asset.path.as_str()).then(|| {
            (
                i["received"].as_i64().expect("received"),
                i["total"].clone(),
            )
        })
    })
}

#[tokio::test]
async fn the_event_stream_reports_uploads_in_flight_and_new_clips() {
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    let pw = app.web_user("alice", true);
    let s = sign_in(&app, "alice", &pw).await;
    let default = app.project_id("Default");
    let token = app.pair("cam-live").await.access_token;
    let data = test_bytes(10 * MIB + 10, 4);
    let asset = app.create_asset(&token, "LIVE.mp4", data.len()).await;
    assert_eq!(asset.upload_urls.len(), 2);
    let part = data.len().div_ceil(2);

    let res = s.get(&app, &format!("/projects/{default}/events")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{:?}",
        res.headers()
    );
    let mut events = EventStream {
        res,
        buf: String::new(),
    };

    // At first: listed, nothing received.
    let first = events
        .until("progress", "the new asset", |d| {
            received_of(d, &asset).is_some()
        })
        .await;
    let (received, total) = received_of(&first, &asset).expect("listed");
    assert_eq!(received, 0, "{first}");
    assert_eq!(total, data.len() as i64, "{first}");

    // One part in: the stream says so, without being asked again.
    let res = app
        .put_part(&asset.upload_urls[0], data[..part].to_vec())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let moved = events
        .until("progress", "bytes received", |d| {
            received_of(d, &asset).is_some_and(|(r, _)| r > 0)
        })
        .await;
    assert_eq!(received_of(&moved, &asset).expect("listed").0, part as i64);

    // The last part completes the clip: a `media` event, and it leaves the in-flight list.
    let res = app
        .put_part(&asset.upload_urls[1], data[part..].to_vec())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    app.wait_complete(&token, &asset.id).await;
    // Both come from the same poll of the database, in either order.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut media, mut gone, mut seen) = (false, false, Vec::new());
    while !(media && gone) {
        let Some((event, data)) = events.next(deadline).await else {
            panic!("media event {media}, asset gone {gone} within 20 s; saw {seen:?}");
        };
        media |= event == "media";
        gone |= event == "progress" && received_of(&data, &asset).is_none();
        seen.push((event, data));
    }
    let media = body(s.get(&app, &format!("/projects/{default}/media")).await).await;
    assert!(
        media.contains("LIVE.mp4") && media.contains(&asset.id),
        "{media}"
    );
}

// ---------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pages_carry_security_headers() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", true);
    let anonymous = browser(&app);
    let res = anonymous.get(app.at("/login")).send().await.unwrap();
    assert_security_headers(&res, "/login");
    let res = anonymous.get(app.at("/")).send().await.unwrap();
    assert_security_headers(&res, "redirect to /login");

    let s = sign_in(&app, "alice", &pw).await;
    let default = app.project_id("Default");
    for path in [
        "/".to_owned(),
        "/pair".to_owned(),
        "/setup".to_owned(),
        format!("/projects/{default}"),
        "/projects/nothing".to_owned(),
    ] {
        let res = s.get(&app, &path).await;
        assert!(
            res.status() == StatusCode::OK || res.status() == StatusCode::NOT_FOUND,
            "{path}: {}",
            res.status()
        );
        assert_security_headers(&res, &path);
    }
}

// ---------------------------------------------------------------------------------------
// The user administration commands
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_user_name_can_be_added_only_once() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", false);
    let out = app.cli_raw(&["user", "add", "alice"]);
    assert!(!out.status.success(), "a second alice was created");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exists"), "{err}");
    // The first alice keeps her password.
    let res = submit_login(&app, &browser(&app), "alice", &pw, "/").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let out = app.cli_raw(&["user", "add", "--admin", "alice"]);
    assert!(
        !out.status.success(),
        "alice was re-added as an administrator"
    );
}

#[tokio::test]
async fn a_password_reset_gives_a_working_password_and_ends_old_sessions() {
    let app = spawn_app().await;
    let old = app.web_user("alice", false);
    let s = sign_in(&app, "alice", &old).await;

    let out = app.cli(&["user", "password", "alice"]);
    let new = out
        .trim()
        .rsplit(' ')
        .next()
        .expect("a password")
        .to_owned();
    assert!(new.len() >= 12 && new != old, "{out}");

    let res = get_with_cookie(&app, "/", &s.token).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the old session lives on"
    );
    let res = submit_login(&app, &browser(&app), "alice", &old, "/").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = submit_login(&app, &browser(&app), "alice", &new, "/").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    let out = app.cli_raw(&["user", "password", "nobody"]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn add_member_needs_an_existing_user_and_project() {
    let app = spawn_app().await;
    let pw = app.web_user("bob", false);
    app.cli(&["project", "create", "B"]);
    let out = app.cli_raw(&["project", "add-member", "B", "nobody"]);
    assert!(!out.status.success(), "an unknown user became a member");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nobody"), "{err}");
    let out = app.cli_raw(&["project", "add-member", "No such project", "bob"]);
    assert!(!out.status.success(), "a member of an unknown project");

    let b = app.project_id("B");
    let s = sign_in(&app, "bob", &pw).await;
    assert_eq!(
        s.get(&app, &format!("/projects/{b}")).await.status(),
        StatusCode::NOT_FOUND
    );
    app.cli(&["project", "add-member", "B", "bob"]);
    // Adding twice is harmless.
    app.cli(&["project", "add-member", "B", "bob"]);
    assert_eq!(
        s.get(&app, &format!("/projects/{b}")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_event_stream_tells_the_page_when_a_device_changes() {
    let app = spawn_app().await;
    let pw = app.web_user("alice", true);
    let s = sign_in(&app, "alice", &pw).await;
    let default = app.project_id("Default");
    app.pair("cam-watched").await;
    let res = s.get(&app, &format!("/projects/{default}/events")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut events = EventStream {
        res,
        buf: String::new(),
    };
    // The first progress event shows the stream has taken its first look.
    events.until("progress", "a first snapshot", |_| true).await;
    app.cli(&["device", "pause", "cam-watched"]);
    events.until("devices", "the pause", |_| true).await;
    // The fragment the page then fetches shows the new state and escapes nothing raw.
    let fragment = body(s.get(&app, &format!("/projects/{default}/devices")).await).await;
    assert!(
        fragment.contains("paused") && fragment.contains("Resume"),
        "{fragment}"
    );
}
