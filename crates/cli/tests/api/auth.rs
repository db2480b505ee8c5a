//! `/v2/auth/*` against the contract (c2c-api.md §1–2): the device authorization grant
//! (device/code and its errors, polling with `authorization_pending` / `slow_down` /
//! `access_denied` / `expired_token`, single use), the decisions (GET with query parameters,
//! polls without `client_secret`, the misspelt `refresh_tokem`), scopes, refresh rotation
//! with reuse detection, revocation, configurable token lifetimes, and the 401 answer of
//! authenticated endpoints.
//!
//! Sleeps here only let real time pass (poll intervals, code and token lifetimes); nothing
//! waits for the server to get something done.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Response, StatusCode};
use rushes_proto::auth::GRANT_DEVICE_CODE;
use serde_json::{Value, json};

use crate::helpers::*;

const SECRET: &str = "test-model-secret";
const BOTH_SCOPES: &str = "asset_create offline";

// ---------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------

/// `POST /v2/auth/device/code` as multipart with exactly `fields` (to leave some out).
async fn code_with(app: &TestServer, fields: &[(&str, &str)]) -> Response {
    let form = fields
        .iter()
        .fold(reqwest::multipart::Form::new(), |form, (k, v)| {
            form.text(k.to_string(), v.to_string())
        });
    app.client
        .post(app.at("/v2/auth/device/code"))
        .multipart(form)
        .send()
        .await
        .expect("device/code")
}

/// `POST /v2/auth/token` as a urlencoded form with exactly `fields`.
async fn token_with(app: &TestServer, fields: &[(&str, &str)]) -> Response {
    app.client
        .post(app.at("/v2/auth/token"))
        .form(fields)
        .send()
        .await
        .expect("token")
}

/// `POST /v2/auth/revoke` as a urlencoded form.
async fn revoke(app: &TestServer, client_id: &str, token: &str) -> Response {
    app.client
        .post(app.at("/v2/auth/revoke"))
        .form(&[
            ("client_id", client_id),
            ("client_secret", SECRET),
            ("token", token),
        ])
        .send()
        .await
        .expect("revoke")
}

/// `GET /v2/devices/me`, with a bearer token when given one.
async fn me(app: &TestServer, token: Option<&str>) -> Response {
    let req = app.client.get(app.at("/v2/devices/me"));
    let req = match token {
        Some(token) => req.bearer_auth(token),
        None => req,
    };
    req.send().await.expect("devices/me")
}

/// Asserts the contract's 401: detailed shape, title `Not Authorized`, `WWW-Authenticate: Bearer`.
async fn assert_unauthorized(res: Response, what: &str) {
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, title, _) = detailed_error(res).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
    assert_eq!(title, "Not Authorized", "{what}");
    assert!(
        challenge
            .as_deref()
            .is_some_and(|c| c.starts_with("Bearer")),
        "{what}: WWW-Authenticate is {challenge:?}, expected Bearer"
    );
}

/// Asserts `GET /v2/devices/me` with `token` is 200.
async fn assert_authorized(app: &TestServer, token: &str, what: &str) {
    let res = me(app, Some(token)).await;
    let status = res.status();
    assert_eq!(
        status,
        StatusCode::OK,
        "{what}: {}",
        res.text().await.unwrap_or_default()
    );
}

fn cache_control(res: &Response) -> String {
    res.headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A successful token response as raw JSON, checked for the fields every one carries.
async fn token_body(res: Response, expires_in: u64) -> Value {
    let status = res.status();
    let no_store = cache_control(&res);
    let body: Value = res.json().await.expect("token body is JSON");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(no_store.contains("no-store"), "Cache-Control: {no_store:?}");
    assert!(
        body["access_token"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert_eq!(body["token_type"], "bearer", "{body}");
    assert_eq!(body["expires_in"], expires_in, "{body}");
    body
}

fn str_field(body: &Value, name: &str) -> String {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} missing in {body}"))
        .to_owned()
}

/// `YYYY-MM-DD` (UTC) of a Unix time, without a date library (H. Hinnant's civil_from_days).
fn utc_date(unix_secs: i64) -> String {
    let z = unix_secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

#[test]
fn utc_date_matches_known_dates() {
    assert_eq!(utc_date(0), "1970-01-01");
    assert_eq!(utc_date(951_782_400), "2000-02-29");
    assert_eq!(utc_date(1_709_251_199), "2024-02-29");
    assert_eq!(utc_date(1_735_689_600), "2025-01-01");
}

// ---------------------------------------------------------------------------------------
// POST /v2/auth/device/code
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn device_code_answers_every_field_with_the_default_timings() {
    let app = spawn_app().await;
    let res = app.request_code("cam-fields", BOTH_SCOPES).await;
    assert_eq!(res.status(), StatusCode::OK);
    let no_store = cache_control(&res);
    assert!(no_store.contains("no-store"), "Cache-Control: {no_store:?}");
    let body: Value = res.json().await.expect("JSON body");

    let device_code = str_field(&body, "device_code");
    assert!(device_code.len() >= 32, "device_code too short: {body}");
    let user_code = str_field(&body, "user_code");
    assert_eq!(user_code.len(), 6, "{body}");
    assert!(user_code.bytes().all(|b| b.is_ascii_digit()), "{body}");
    assert_ne!(device_code, user_code);

    let uri = str_field(&body, "verification_uri");
    assert!(
        uri.starts_with(&app.url),
        "verification_uri {uri} is not on this server ({})",
        app.url
    );
    let complete = str_field(&body, "verification_uri_complete");
    assert!(complete.starts_with(&uri), "{body}");
    assert!(complete.contains(&user_code), "{body}");

    assert_eq!(body["expires_in"], 600, "{body}");
    assert_eq!(body["interval"], 5, "{body}");
    assert!(!str_field(&body, "name").is_empty(), "{body}");

    // The verification page is the server's own and answers.
    let page = app.client.get(&uri).send().await.expect("pairing page");
    assert_eq!(page.status(), StatusCode::OK);
}

#[tokio::test]
async fn device_code_accepts_a_urlencoded_form() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.at("/v2/auth/device/code"))
        .form(&[
            ("client_id", "cam-urlencoded"),
            ("client_secret", SECRET),
            ("scope", BOTH_SCOPES),
        ])
        .send()
        .await
        .expect("device/code");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("JSON body");
    let user_code = str_field(&body, "user_code");
    assert!(
        user_code.len() == 6 && user_code.bytes().all(|b| b.is_ascii_digit()),
        "{body}"
    );
    // And the code it gave works all the way.
    app.approve(&user_code);
    let res = app
        .poll("cam-urlencoded", &str_field(&body, "device_code"))
        .await;
    token_body(res, 28_800).await;
}

#[tokio::test]
async fn live_user_codes_are_all_different() {
    let app = spawn_app().await;
    let mut user_codes = HashSet::new();
    let mut device_codes = HashSet::new();
    for i in 0..8 {
        let code = app.code(&format!("cam-unique-{i}"), BOTH_SCOPES).await;
        user_codes.insert(code.user_code);
        device_codes.insert(code.device_code);
    }
    assert_eq!(user_codes.len(), 8, "{user_codes:?}");
    assert_eq!(device_codes.len(), 8);
}

#[tokio::test]
async fn a_torn_multipart_form_is_invalid_request_and_the_log_says_why() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.at("/v2/auth/device/code"))
        .header("content-type", "multipart/form-data; boundary=torn")
        .body("--torn\r\nContent-Disposition: form-data; name=\"client_id\"\r\n\r\ncam-torn-01")
        .send()
        .await
        .expect("device/code");
    assert_eq!(oauth_error(res).await, "invalid_request");
    // The parser's own reason, not only axum's "Error parsing ... request"; no value.
    let log = app.log();
    assert!(
        log.contains("Error parsing `multipart/form-data` request: "),
        "{log}"
    );
    assert!(
        !log.contains("cam-torn-01"),
        "a field's value is in the log"
    );
}

#[tokio::test]
async fn an_auth_form_over_the_body_limit_is_payload_too_large() {
    let app = spawn_app().await;
    let big = "x".repeat(3 * 1024 * 1024);
    let res = code_with(&app, &[("client_id", &big), ("client_secret", SECRET)]).await;
    let (status, title, _) = detailed_error(res).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(title, "Payload Too Large");
    // The server still answers.
    let res = code_with(&app, &[("client_id", "cam-after-big")]).await;
    assert_eq!(oauth_error(res).await, "invalid_request");
}

#[tokio::test]
async fn device_code_without_a_required_field_is_invalid_request() {
    let app = spawn_app().await;
    let all = [
        ("client_id", "cam-missing"),
        ("client_secret", SECRET),
        ("scope", BOTH_SCOPES),
    ];
    for missing in ["client_id", "client_secret", "scope"] {
        let fields: Vec<(&str, &str)> =
            all.iter().copied().filter(|(k, _)| *k != missing).collect();
        let res = code_with(&app, &fields).await;
        assert_eq!(
            oauth_error(res).await,
            "invalid_request",
            "without {missing}"
        );
    }
}

#[tokio::test]
async fn device_code_with_an_unknown_scope_is_invalid_scope() {
    let app = spawn_app().await;
    let res = app.request_code("cam-admin", "asset_create admin").await;
    assert_eq!(oauth_error(res).await, "invalid_scope");
}

#[tokio::test]
async fn strict_clients_refuse_an_unknown_client_secret() {
    let app = spawn_app_with(&["--strict-clients"]).await;
    let res = app.request_code("cam-strict", BOTH_SCOPES).await;
    assert_eq!(oauth_error(res).await, "invalid_client");
}

#[tokio::test]
async fn an_unknown_client_secret_is_accepted_without_strict_mode() {
    let app = spawn_app().await;
    let res = code_with(
        &app,
        &[
            ("client_id", "cam-lenient"),
            ("client_secret", "never-registered-secret"),
            ("scope", BOTH_SCOPES),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// Polling POST /v2/auth/token with a device code
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn polling_slows_down_then_recovers_at_the_new_interval_and_succeeds() {
    let app = spawn_app_with(&["--poll-interval", "1"]).await;
    let code = app.code("cam-poll", BOTH_SCOPES).await;
    assert_eq!(code.interval, 1);

    let res = app.poll("cam-poll", &code.device_code).await;
    assert_eq!(oauth_error(res).await, "authorization_pending");

    // At once again: sooner than `interval` (1 s) → slow_down, interval now 1 + 5 = 6 s.
    let sent = Instant::now();
    let res = app.poll("cam-poll", &code.device_code).await;
    assert_eq!(oauth_error(res).await, "slow_down");

    // A client that keeps to the new interval (measured from its previous request) must
    // get authorization_pending, and again at the next step: never slow_down forever.
    let step = Duration::from_millis(6_200);
    tokio::time::sleep_until((sent + step).into()).await;
    let sent = Instant::now();
    let res = app.poll("cam-poll", &code.device_code).await;
    assert_eq!(
        oauth_error(res).await,
        "authorization_pending",
        "a poll 6 s after slow_down"
    );

    app.approve(&code.user_code);
    tokio::time::sleep_until((sent + step).into()).await;
    let res = app.poll("cam-poll", &code.device_code).await;
    let body = token_body(res, 28_800).await;
    assert!(
        body["refresh_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert_ne!(body["access_token"], body["refresh_token"]);
    assert_authorized(&app, &str_field(&body, "access_token"), "fresh token").await;
}

#[tokio::test]
async fn a_denied_code_answers_access_denied() {
    let app = spawn_app().await;
    let code = app.code("cam-denied", BOTH_SCOPES).await;
    app.cli(&["pairing", "deny", &code.user_code]);
    let res = app.poll("cam-denied", &code.device_code).await;
    assert_eq!(oauth_error(res).await, "access_denied");
}

#[tokio::test]
async fn a_code_past_its_lifetime_answers_expired_token() {
    let app = spawn_app_with(&["--code-lifetime", "1"]).await;
    let code = app.code("cam-expired", BOTH_SCOPES).await;
    assert_eq!(code.expires_in, 1);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let res = app.poll("cam-expired", &code.device_code).await;
    assert_eq!(oauth_error(res).await, "expired_token");
    // Nor can it be approved any more.
    let out = app.cli_raw(&["pairing", "approve", &code.user_code]);
    assert!(!out.status.success(), "an expired code was approved");
}

#[tokio::test]
async fn a_device_code_can_be_exchanged_only_once() {
    let app = spawn_app().await;
    let code = app.code("cam-once", BOTH_SCOPES).await;
    app.approve(&code.user_code);
    let first = app.poll("cam-once", &code.device_code).await;
    let first = token_body(first, 28_800).await;
    let second = app.poll("cam-once", &code.device_code).await;
    assert_eq!(oauth_error(second).await, "invalid_grant");
    // The failed second exchange did not disturb the tokens of the first.
    assert_authorized(&app, &str_field(&first, "access_token"), "first tokens").await;
}

#[tokio::test]
async fn a_device_code_polled_by_another_client_id_is_invalid_grant() {
    let app = spawn_app().await;
    let code = app.code("cam-owner", BOTH_SCOPES).await;
    app.approve(&code.user_code);
    let res = app.poll("cam-thief", &code.device_code).await;
    assert_eq!(oauth_error(res).await, "invalid_grant");
    // The rightful device still gets its tokens.
    let res = app.poll("cam-owner", &code.device_code).await;
    token_body(res, 28_800).await;
}

#[tokio::test]
async fn an_unknown_device_code_is_invalid_grant() {
    let app = spawn_app().await;
    app.code("cam-unknown", BOTH_SCOPES).await;
    let res = app
        .poll(
            "cam-unknown",
            "0000000000000000000000000000000000000000000000000000000000000000",
        )
        .await;
    assert_eq!(oauth_error(res).await, "invalid_grant");
}

#[tokio::test]
async fn another_grant_type_is_unsupported_grant_type() {
    let app = spawn_app().await;
    let res = token_with(
        &app,
        &[
            ("grant_type", "password"),
            ("client_id", "cam-password"),
            ("client_secret", SECRET),
            ("username", "admin"),
            ("password", "hunter2"),
        ],
    )
    .await;
    assert_eq!(oauth_error(res).await, "unsupported_grant_type");
}

#[tokio::test]
async fn a_token_request_without_grant_type_is_invalid_request() {
    let app = spawn_app().await;
    let code = app.code("cam-no-grant", BOTH_SCOPES).await;
    let res = token_with(
        &app,
        &[
            ("client_id", "cam-no-grant"),
            ("client_secret", SECRET),
            ("device_code", &code.device_code),
        ],
    )
    .await;
    assert_eq!(oauth_error(res).await, "invalid_request");
}

// ---------------------------------------------------------------------------------------
// Decisions: GET with query parameters, polls without client_secret
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_token_endpoint_accepts_get_with_query_parameters() {
    let app = spawn_app().await;
    let code = app.code("cam-get", BOTH_SCOPES).await;
    let get = |device_code: String| {
        app.client
            .get(app.at("/v2/auth/token"))
            .query(&[
                ("grant_type", GRANT_DEVICE_CODE),
                ("client_id", "cam-get"),
                ("client_secret", SECRET),
                ("device_code", device_code.as_str()),
            ])
            .send()
    };
    let res = get(code.device_code.clone()).await.expect("GET token");
    assert_eq!(oauth_error(res).await, "authorization_pending");
    app.approve(&code.user_code);
    let res = get(code.device_code.clone()).await.expect("GET token");
    let body = token_body(res, 28_800).await;
    assert_authorized(&app, &str_field(&body, "access_token"), "GET-issued token").await;
}

#[tokio::test]
async fn a_device_code_poll_without_client_secret_succeeds() {
    let app = spawn_app().await;
    let code = app.code("cam-no-secret", BOTH_SCOPES).await;
    app.approve(&code.user_code);
    let res = token_with(
        &app,
        &[
            ("grant_type", GRANT_DEVICE_CODE),
            ("client_id", "cam-no-secret"),
            ("device_code", &code.device_code),
        ],
    )
    .await;
    let body = token_body(res, 28_800).await;
    assert!(body["refresh_token"].is_string(), "{body}");
}

// ---------------------------------------------------------------------------------------
// Scopes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn without_offline_no_refresh_token_is_issued() {
    let app = spawn_app().await;
    let code = app.code("cam-online-only", "asset_create").await;
    app.approve(&code.user_code);
    let res = app.poll("cam-online-only", &code.device_code).await;
    let body = token_body(res, 28_800).await;
    assert!(
        body.get("refresh_token").is_none_or(Value::is_null),
        "a refresh token without offline: {body}"
    );
    // The access token still uploads.
    let res = app
        .create_asset_raw(
            &str_field(&body, "access_token"),
            json!({"name": "A001.mp4", "filesize": 1000, "filetype": "video/mp4"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_device_without_asset_create_cannot_create_assets() {
    let app = spawn_app().await;
    let tokens = app
        .pair_into("cam-offline-only", "offline", "Default")
        .await;
    assert!(
        tokens.refresh_token.is_some(),
        "offline earns a refresh token"
    );
    let res = app
        .create_asset_raw(
            &tokens.access_token,
            json!({"name": "A001.mp4", "filesize": 1000, "filetype": "video/mp4"}),
        )
        .await;
    let (status, title, _) = detailed_error(res).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(title, "Forbidden");
}

// ---------------------------------------------------------------------------------------
// Refresh grant
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn refresh_rotates_both_tokens_and_retires_the_old_access_token() {
    let app = spawn_app().await;
    let first = app.pair("cam-rotate").await;
    let first_refresh = first.refresh_token.clone().expect("refresh token");

    let res = app.refresh("cam-rotate", &first_refresh).await;
    let second = token_body(res, 28_800).await;
    let access = str_field(&second, "access_token");
    let refresh = str_field(&second, "refresh_token");
    assert_ne!(access, first.access_token);
    assert_ne!(refresh, first_refresh);

    assert_unauthorized(me(&app, Some(&first.access_token)).await, "old access").await;
    assert_authorized(&app, &access, "new access").await;

    // And the new refresh token rotates in turn.
    let res = app.refresh("cam-rotate", &refresh).await;
    let third = token_body(res, 28_800).await;
    assert_ne!(str_field(&third, "refresh_token"), refresh);
}

#[tokio::test]
async fn the_misspelt_refresh_tokem_field_is_accepted() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-tokem").await;
    let refresh = tokens.refresh_token.expect("refresh token");
    let res = token_with(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "cam-tokem"),
            ("client_secret", SECRET),
            ("refresh_tokem", &refresh),
        ],
    )
    .await;
    let body = token_body(res, 28_800).await;
    assert_ne!(str_field(&body, "refresh_token"), refresh);
}

#[tokio::test]
async fn reusing_a_retired_refresh_token_revokes_the_whole_grant() {
    let app = spawn_app().await;
    let first = app.pair("cam-reuse").await;
    let stolen = first.refresh_token.expect("refresh token");

    let res = app.refresh("cam-reuse", &stolen).await;
    let newest = token_body(res, 28_800).await;
    let newest_access = str_field(&newest, "access_token");
    let newest_refresh = str_field(&newest, "refresh_token");
    assert_authorized(&app, &newest_access, "newest access before the replay").await;

    let replay = app.refresh("cam-reuse", &stolen).await;
    assert_eq!(oauth_error(replay).await, "invalid_request");

    assert_unauthorized(
        me(&app, Some(&newest_access)).await,
        "newest access after the replay",
    )
    .await;
    let res = app.refresh("cam-reuse", &newest_refresh).await;
    assert_eq!(oauth_error(res).await, "invalid_grant");
}

#[tokio::test]
async fn refresh_by_another_client_id_is_invalid_grant() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-refresh-owner").await;
    app.pair("cam-refresh-other").await;
    let refresh = tokens.refresh_token.expect("refresh token");
    let res = app.refresh("cam-refresh-other", &refresh).await;
    assert_eq!(oauth_error(res).await, "invalid_grant");
    // The attempt did not burn the owner's token.
    let res = app.refresh("cam-refresh-owner", &refresh).await;
    token_body(res, 28_800).await;
}

#[tokio::test]
async fn refresh_of_an_unpaired_device_is_invalid_grant() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-unpaired").await;
    app.cli(&["device", "unpair", "cam-unpaired"]);
    let res = app
        .refresh(
            "cam-unpaired",
            &tokens.refresh_token.expect("refresh token"),
        )
        .await;
    assert_eq!(oauth_error(res).await, "invalid_grant");
    assert_unauthorized(
        me(&app, Some(&tokens.access_token)).await,
        "access of an unpaired device",
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// POST /v2/auth/revoke
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn revoking_the_access_token_ends_it() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-revoke").await;
    assert_authorized(&app, &tokens.access_token, "before revoke").await;

    let res = revoke(&app, "cam-revoke", &tokens.access_token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.expect("JSON"),
        json!({"success": true})
    );

    assert_unauthorized(me(&app, Some(&tokens.access_token)).await, "revoked access").await;
    // The whole grant went: the refresh token is dead too.
    let res = app
        .refresh("cam-revoke", &tokens.refresh_token.expect("refresh token"))
        .await;
    assert_eq!(oauth_error(res).await, "invalid_grant");
}

#[tokio::test]
async fn revoking_an_unknown_token_also_answers_success() {
    let app = spawn_app().await;
    let res = revoke(&app, "cam-nobody", "no-such-token").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.expect("JSON"),
        json!({"success": true})
    );
}

#[tokio::test]
async fn revoking_the_refresh_token_also_ends_the_access_token() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-revoke-refresh").await;
    let refresh = tokens.refresh_token.expect("refresh token");
    let res = revoke(&app, "cam-revoke-refresh", &refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.expect("JSON"),
        json!({"success": true})
    );
    assert_unauthorized(
        me(&app, Some(&tokens.access_token)).await,
        "access after its refresh token was revoked",
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Lifetimes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_expired_access_token_is_refused_but_refresh_still_works() {
    let app = spawn_app_with(&["--access-token-lifetime", "1"]).await;
    let code = app.code("cam-short", BOTH_SCOPES).await;
    app.approve(&code.user_code);
    let res = app.poll("cam-short", &code.device_code).await;
    let body = token_body(res, 1).await;
    let access = str_field(&body, "access_token");
    assert_authorized(&app, &access, "before expiry").await;

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_unauthorized(me(&app, Some(&access)).await, "expired access").await;

    let res = app
        .refresh("cam-short", &str_field(&body, "refresh_token"))
        .await;
    let renewed = token_body(res, 1).await;
    assert_ne!(str_field(&renewed, "access_token"), access);
}

#[tokio::test]
async fn an_expired_refresh_token_is_invalid_grant() {
    let app = spawn_app_with(&["--refresh-token-lifetime", "1"]).await;
    let tokens = app.pair("cam-short-refresh").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let res = app
        .refresh(
            "cam-short-refresh",
            &tokens.refresh_token.expect("refresh token"),
        )
        .await;
    assert_eq!(oauth_error(res).await, "invalid_grant");
}

#[tokio::test]
async fn an_offline_grant_expires_fourteen_days_ahead() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-14d").await;
    let res = me(&app, Some(&tokens.access_token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(
        body["authorization"]["scopes"],
        json!({"asset_create": true, "offline": true}),
        "{body}"
    );
    let expires_at = str_field(&body["authorization"], "expires_at");
    let in_14_days = unix_now() + 14 * 86_400;
    // Either side of a day boundary that falls within a few minutes of now.
    let dates = [utc_date(in_14_days - 300), utc_date(in_14_days + 300)];
    assert!(
        dates.iter().any(|d| expires_at.starts_with(d.as_str())),
        "expires_at {expires_at} is not 14 days ahead ({dates:?})"
    );
}

// ---------------------------------------------------------------------------------------
// 401 on authenticated endpoints
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_request_without_authorization_is_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    assert_unauthorized(me(&app, None).await, "no Authorization").await;
    let res = app
        .client
        .post(app.at("/v2/devices/assets"))
        .json(&json!({"name": "A001.mp4", "filesize": 1000}))
        .send()
        .await
        .expect("create asset");
    assert_unauthorized(res, "asset without Authorization").await;
}

#[tokio::test]
async fn a_garbage_token_is_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    app.pair("cam-garbage").await;
    assert_unauthorized(me(&app, Some("garbage")).await, "garbage token").await;
    let res = app
        .client
        .get(app.at("/v2/devices/me"))
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .send()
        .await
        .expect("devices/me");
    assert_unauthorized(res, "Basic credentials").await;
}

#[tokio::test]
async fn strict_clients_admit_a_model_once_it_is_registered() {
    let app = spawn_app_with(&["--strict-clients"]).await;
    let res = app.request_code("cam-strict", "asset_create offline").await;
    assert_eq!(oauth_error(res).await, "invalid_client");
    app.cli(&[
        "model",
        "register",
        "test-model-secret",
        "--name",
        "Test Cam",
    ]);
    let res = app.request_code("cam-strict", "asset_create offline").await;
    assert_eq!(res.status(), StatusCode::OK);
    let pending = app.cli_json(&["pairing", "list"]);
    assert_eq!(pending[0]["model"], "Test Cam");
    let models = app.cli_json(&["model", "list"]);
    assert_eq!(models[0]["registered"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_twenty_concurrent_refreshes_of_one_token_exactly_one_succeeds() {
    let app = std::sync::Arc::new(spawn_app().await);
    let tokens = app.pair("cam-race").await;
    let refresh = tokens.refresh_token.expect("refresh token");
    let attempts = (0..20).map(|_| {
        let (app, refresh) = (app.clone(), refresh.clone());
        tokio::spawn(async move { app.refresh("cam-race", &refresh).await.status() })
    });
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(won, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::BAD_REQUEST),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approved_device_code_polled_ten_times_at_once_is_exchanged_once() {
    let app = std::sync::Arc::new(spawn_app().await);
    let code = app.code("cam-race-code", BOTH_SCOPES).await;
    app.approve(&code.user_code);
    let polls = (0..10).map(|_| {
        let (app, device_code) = (app.clone(), code.device_code.clone());
        tokio::spawn(async move { app.poll("cam-race-code", &device_code).await.status() })
    });
    let mut statuses = Vec::new();
    for poll in polls {
        statuses.push(poll.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
}
