//! The status socket (c2c-api.md §3, `GET /devices/websocket`) as a camera uses it: a real
//! WebSocket over the server's TLS, both Phoenix serializers, pauses and resumes pushed
//! from the CLI, the web UI and another server, closing on unpair and revoke, the idle
//! timeout, abrupt closes, and the device shown online while its socket is open.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::helpers::*;

pub(crate) type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// How long a change may take to reach a socket (the contract's 2 s).
const PUSH_WITHIN: Duration = Duration::from_secs(2);

/// Opens `/devices/websocket?<query>` over TLS trusting only the server's CA, with an
/// `Authorization: Bearer` header when `header_token` is given.
pub(crate) async fn open(
    app: &TestServer,
    query: &str,
    header_token: Option<&str>,
) -> Result<Ws, WsError> {
    let addr = app.url.trim_start_matches("https://").to_owned();
    let tls = tls_connection(app, &[], ServerName::try_from("localhost").unwrap()).await;
    let url = format!("wss://{addr}/devices/websocket?{query}");
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = header_token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::client_async(request, tls)
        .await
        .map(|(ws, _)| ws)
}

/// The usual camera socket: v1, the token in the query as `Bearer%20<token>`.
pub(crate) async fn open_v1(app: &TestServer, token: &str) -> Ws {
    open(app, &format!("Authorization=Bearer%20{token}"), None)
        .await
        .expect("the socket opens")
}

/// The next frame within `within` (panics when none comes).
async fn next_frame(ws: &mut Ws, within: Duration) -> Message {
    match tokio::time::timeout(within, ws.next()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(other) => panic!("the socket ended: {other:?}"),
        Err(_) => panic!("no frame within {within:?}"),
    }
}

/// The next text frame as JSON, skipping control frames.
pub(crate) async fn next_json(ws: &mut Ws, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_frame(ws, left).await {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

pub(crate) async fn send_json(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// Joins `devices:<id>` (v1), checks the reply, and returns the status pushed on joining.
pub(crate) async fn join_v1(ws: &mut Ws, topic: &str) -> String {
    send_json(
        ws,
        json!({"topic": topic, "event": "phx_join", "payload": {}, "ref": "1"}),
    )
    .await;
    let reply = next_json(ws, Duration::from_secs(5)).await;
    assert_eq!(
        reply,
        json!({"topic": topic, "event": "phx_reply", "payload": {"status": "ok", "response": {}}, "ref": "1"})
    );
    let status = next_json(ws, Duration::from_secs(5)).await;
    assert_eq!(status["event"], "status_updated", "{status}");
    assert_eq!(status["topic"], topic, "{status}");
    status["payload"]["status"].as_str().unwrap().to_owned()
}

/// Waits for a `status_updated` push (v1) and returns its status.
pub(crate) async fn pushed_status(ws: &mut Ws, within: Duration) -> String {
    let msg = next_json(ws, within).await;
    assert_eq!(msg["event"], "status_updated", "{msg}");
    assert_eq!(msg["ref"], Value::Null, "{msg}");
    msg["payload"]["status"].as_str().unwrap().to_owned()
}

/// Waits for the server to close the socket (a close frame or the end of the stream).
async fn closed_within(ws: &mut Ws, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(Message::Text(text)))) => {
                let msg: Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(msg["event"], "status_updated", "{msg}");
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return None,
            Err(_) => panic!("the socket is still open after {within:?}"),
        }
    }
}

pub(crate) fn device_id(app: &TestServer, client_id: &str) -> String {
    let list = app.cli_json(&["device", "list"]);
    list.as_array()
        .and_then(|a| a.iter().find(|d| d["client_id"] == client_id))
        .and_then(|d| d["id"].as_str())
        .unwrap_or_else(|| panic!("{client_id} not listed: {list}"))
        .to_owned()
}

fn device_status(app: &TestServer, client_id: &str) -> String {
    let list = app.cli_json(&["device", "list"]);
    list.as_array()
        .and_then(|a| a.iter().find(|d| d["client_id"] == client_id))
        .and_then(|d| d["status"].as_str())
        .unwrap_or_else(|| panic!("{client_id} not listed: {list}"))
        .to_owned()
}

/// A web client signed in as a new administrator, and its CSRF token.
pub(crate) async fn web_admin(app: &TestServer) -> (reqwest::Client, String) {
    let pw = app.web_user("socket-admin", true);
    let client = app.web_client("socket-admin", &pw).await;
    let page = client.get(app.at("/")).send().await.unwrap();
    let csrf = csrf_of(&page.text().await.unwrap());
    (client, csrf)
}

/// Presses a device action (`pause`, `resume`, `unpair`) in the web UI.
async fn web_action(app: &TestServer, web: &(reqwest::Client, String), id: &str, action: &str) {
    let res = web
        .0
        .post(app.at(&format!("/devices/{id}/{action}")))
        .form(&[("csrf", web.1.as_str())])
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success() || res.status().is_redirection(),
        "{action}: {}",
        res.status()
    );
}

#[tokio::test]
async fn v1_join_heartbeat_unknown_ping_and_leave() {
    let app = spawn_app().await;
    let token = app.pair("sock-v1").await.access_token;
    let mut ws = open_v1(&app, &token).await;

    assert_eq!(join_v1(&mut ws, "devices:sock-v1").await, "online");

    send_json(
        &mut ws,
        json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "2"}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await,
        json!({"topic": "phoenix", "event": "phx_reply", "payload": {"status": "ok", "response": {}}, "ref": "2"})
    );

    send_json(
        &mut ws,
        json!({"topic": "devices:sock-v1", "event": "battery", "payload": {"level": 3}, "ref": "3"}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await,
        json!({"topic": "devices:sock-v1", "event": "phx_reply",
               "payload": {"status": "error", "response": {"reason": "unmatched topic"}}, "ref": "3"})
    );
    // Not JSON at all: ignored, and the socket carries on.
    ws.send(Message::Text("hello?".into())).await.unwrap();

    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    match next_frame(&mut ws, Duration::from_secs(5)).await {
        Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }

    send_json(
        &mut ws,
        json!({"topic": "devices:sock-v1", "event": "phx_leave", "payload": {}, "ref": "4"}),
    )
    .await;
    let leave = next_json(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(leave["ref"], "4");
    assert_eq!(leave["payload"]["status"], "ok");
    // Left: a pause is no longer pushed, but the socket still answers.
    app.cli(&["device", "pause", &device_id(&app, "sock-v1")]);
    send_json(
        &mut ws,
        json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "5"}),
    )
    .await;
    let beat = next_json(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(beat["ref"], "5", "only the heartbeat's reply: {beat}");
}

#[tokio::test]
async fn v2_arrays_and_every_token_spelling() {
    let app = spawn_app().await;
    let token = app.pair("sock-v2").await.access_token;

    let mut ws = open(&app, &format!("token={token}&vsn=2.0.0"), None)
        .await
        .unwrap();
    send_json(&mut ws, json!(["1", "1", "devices:abc", "phx_join", {}])).await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await,
        json!(["1", "1", "devices:abc", "phx_reply", {"status": "ok", "response": {}}])
    );
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await,
        json!(["1", null, "devices:abc", "status_updated", {"status": "online"}])
    );
    send_json(&mut ws, json!([null, "2", "phoenix", "heartbeat", {}])).await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await,
        json!([null, "2", "phoenix", "phx_reply", {"status": "ok", "response": {}}])
    );
    send_json(&mut ws, json!(["1", "3", "devices:abc", "nonsense", {}])).await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await,
        json!(["1", "3", "devices:abc", "phx_reply", {"status": "error", "response": {"reason": "unmatched topic"}}])
    );
    send_json(&mut ws, json!(["1", "4", "devices:abc", "phx_leave", {}])).await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await,
        json!(["1", "4", "devices:abc", "phx_reply", {"status": "ok", "response": {}}])
    );
    app.cli(&["device", "pause", &device_id(&app, "sock-v2")]);
    send_json(&mut ws, json!([null, "5", "phoenix", "heartbeat", {}])).await;
    assert_eq!(next_json(&mut ws, Duration::from_secs(5)).await[1], "5");

    // `+` for the space, the header, and the alias path's spelling all work too.
    for (query, header) in [
        (format!("Authorization=Bearer+{token}"), None),
        ("vsn=1.0.0".to_owned(), Some(token.as_str())),
    ] {
        let mut ws = open(&app, &query, header).await.unwrap();
        send_json(
            &mut ws,
            json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "9"}),
        )
        .await;
        let reply = next_json(&mut ws, Duration::from_secs(5)).await;
        assert_eq!(reply["payload"]["status"], "ok", "{query}: {reply}");
    }
    let res = app
        .client
        .get(app.at("/v2/devices/websocket"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UPGRADE_REQUIRED,
        "the alias route exists and wants an upgrade"
    );
}

#[tokio::test]
async fn a_missing_or_bad_token_is_401_before_the_upgrade() {
    let app = spawn_app().await;
    let token = app.pair("sock-401").await.access_token;
    for (query, header) in [
        ("vsn=2.0.0".to_owned(), None),
        ("Authorization=Bearer%20not-a-token".to_owned(), None),
        ("token=".to_owned(), None),
        ("Authorization=Basic%20abc".to_owned(), None),
        (String::new(), Some("forged")),
    ] {
        match open(&app, &query, header).await {
            Err(WsError::Http(res)) => {
                assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{query} {header:?}");
                let body: Value = serde_json::from_slice(res.body().as_deref().unwrap()).unwrap();
                assert_eq!(body["errors"][0]["status"], 401, "{body}");
                assert_eq!(body["errors"][0]["title"], "Not Authorized", "{body}");
            }
            Err(e) => panic!("{query}: {e}"),
            Ok(_) => panic!("{query} {header:?}: upgraded without a good token"),
        }
    }
    // And the good token still upgrades.
    open_v1(&app, &token).await;
}

#[tokio::test]
async fn one_device_holds_at_most_32_sockets_and_gets_its_places_back() {
    let app = spawn_app().await;
    let token = app.pair("sock-greedy").await.access_token;
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(open_v1(&app, &token).await);
    }
    match open(&app, &format!("token={token}"), None).await {
        Err(WsError::Http(res)) => {
            assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
            let body: Value = serde_json::from_slice(res.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["errors"][0]["status"], 429, "{body}");
            // The cap, not the request rate limit.
            let detail = body["errors"][0]["detail"].as_str().unwrap();
            assert!(detail.contains("status sockets open"), "{body}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a 33rd socket was opened"),
    }
    // Another device is not affected.
    let other = app.pair("sock-modest").await.access_token;
    open_v1(&app, &other).await;
    // A socket that ends gives its place back (the server notices the close first).
    let mut first = held.remove(0);
    first.close(None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match open(&app, &format!("token={token}"), None).await {
            Ok(ws) => {
                held.push(ws);
                break;
            }
            Err(WsError::Http(res)) if res.status() == StatusCode::TOO_MANY_REQUESTS => {
                assert!(
                    Instant::now() < deadline,
                    "the closed socket's place never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn pause_and_resume_from_the_cli_and_the_web_ui_are_pushed() {
    let app = spawn_app().await;
    let token = app.pair("sock-pause").await.access_token;
    let id = device_id(&app, "sock-pause");
    let mut ws = open_v1(&app, &token).await;
    assert_eq!(join_v1(&mut ws, "devices:sock-pause").await, "online");

    // The CLI is a process of its own that writes the database.
    app.cli(&["device", "pause", &id]);
    assert_eq!(pushed_status(&mut ws, PUSH_WITHIN).await, "paused");
    app.cli(&["device", "resume", &id]);
    assert_eq!(pushed_status(&mut ws, PUSH_WITHIN).await, "online");

    let web = web_admin(&app).await;
    web_action(&app, &web, &id, "pause").await;
    assert_eq!(pushed_status(&mut ws, PUSH_WITHIN).await, "paused");
    // A socket opened while paused learns it on joining.
    let mut late = open_v1(&app, &token).await;
    assert_eq!(join_v1(&mut late, "devices:other-name").await, "paused");
    web_action(&app, &web, &id, "resume").await;
    assert_eq!(pushed_status(&mut ws, PUSH_WITHIN).await, "online");
    assert_eq!(pushed_status(&mut late, PUSH_WITHIN).await, "online");
}

#[tokio::test]
async fn a_pause_on_one_server_reaches_a_socket_on_another() {
    let first = spawn_app().await;
    let second = first.peer();
    let token = first.pair("sock-peer").await.access_token;
    let id = device_id(&first, "sock-peer");
    let mut ws = open_v1(&second, &token).await;
    assert_eq!(join_v1(&mut ws, "devices:sock-peer").await, "online");

    let web = web_admin(&first).await;
    let pressed = Instant::now();
    web_action(&first, &web, &id, "pause").await;
    assert_eq!(pushed_status(&mut ws, PUSH_WITHIN).await, "paused");
    assert!(pressed.elapsed() < PUSH_WITHIN, "{:?}", pressed.elapsed());
    web_action(&first, &web, &id, "resume").await;
    assert_eq!(pushed_status(&mut ws, PUSH_WITHIN).await, "online");
}

#[tokio::test]
async fn unpairing_and_revoking_close_the_socket() {
    let app = spawn_app().await;

    // Unpaired through the CLI.
    let token = app.pair("sock-unpair").await.access_token;
    let mut ws = open_v1(&app, &token).await;
    join_v1(&mut ws, "devices:x").await;
    app.cli(&["device", "unpair", &device_id(&app, "sock-unpair")]);
    assert_eq!(
        closed_within(&mut ws, Duration::from_secs(5)).await,
        Some(1008)
    );

    // The device revokes its own grant.
    let tokens = app.pair("sock-revoke").await;
    let mut ws = open_v1(&app, &tokens.access_token).await;
    join_v1(&mut ws, "devices:x").await;
    let res = app
        .client
        .post(app.at("/v2/auth/revoke"))
        .form(&[
            ("client_id", "sock-revoke"),
            ("token", tokens.refresh_token.as_deref().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        closed_within(&mut ws, Duration::from_secs(5)).await,
        Some(1008)
    );

    // A refresh token presented twice revokes the grant (reuse detection).
    let tokens = app.pair("sock-reuse").await;
    let refresh = tokens.refresh_token.as_deref().unwrap();
    let res = app.refresh("sock-reuse", refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    let fresh: rushes_proto::auth::TokenResponse = res.json().await.unwrap();
    let mut ws = open_v1(&app, &fresh.access_token).await;
    join_v1(&mut ws, "devices:x").await;
    let res = app.refresh("sock-reuse", refresh).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        closed_within(&mut ws, Duration::from_secs(5)).await,
        Some(1008)
    );
}

#[tokio::test]
async fn a_silent_socket_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(&["--socket-idle-timeout", "2"]).await;
    let token = app.pair("sock-idle").await.access_token;
    let mut silent = open_v1(&app, &token).await;
    join_v1(&mut silent, "devices:x").await;
    let last_frame = Instant::now();
    let mut chatty = open_v1(&app, &token).await;

    // The chatty one heartbeats every 500 ms for longer than the timeout and stays open.
    let mut n = 0;
    while last_frame.elapsed() < Duration::from_millis(3500) {
        n += 1;
        send_json(
            &mut chatty,
            json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": n.to_string()}),
        )
        .await;
        let reply = next_json(&mut chatty, Duration::from_secs(5)).await;
        assert_eq!(reply["ref"], n.to_string(), "{reply}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The silent one was closed once 2 s passed without a frame from it.
    assert_eq!(
        closed_within(&mut silent, Duration::from_secs(1)).await,
        Some(1000)
    );
}

#[tokio::test]
async fn abrupt_closes_leave_the_server_healthy_and_quiet() {
    let app = spawn_app().await;
    let token = app.pair("sock-abrupt").await.access_token;
    for _ in 0..5 {
        let mut ws = open_v1(&app, &token).await;
        join_v1(&mut ws, "devices:x").await;
        // A camera switched off: the TCP connection goes, no close frame.
        drop(ws);
    }
    let res = app.client.get(app.at("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut ws = open_v1(&app, &token).await;
    assert_eq!(join_v1(&mut ws, "devices:x").await, "online");
    let log = app.log();
    let noisy: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(noisy.is_empty(), "{noisy:#?}");
}

#[tokio::test]
async fn a_device_with_an_open_socket_is_online() {
    let app = spawn_app().await;
    let token = app.pair("sock-online").await.access_token;
    // Last seen long ago: offline.
    app.sql("UPDATE devices SET last_seen_at = 1 WHERE client_id = 'sock-online'");
    assert_eq!(device_status(&app, "sock-online"), "offline");
    let mut ws = open_v1(&app, &token).await;
    join_v1(&mut ws, "devices:x").await;
    assert_eq!(device_status(&app, "sock-online"), "online");
}

/// `rushes device watch --json` with its stdout lines handed over as they come.
struct Watching {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watching {
    /// The next JSON event whose `event` is `name`, within `within`.
    fn expect(&self, name: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {name:?} event within {within:?}"));
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && event["event"] == name
            {
                return event;
            }
        }
    }
}

#[tokio::test]
async fn the_device_client_reports_a_pause_at_once_while_it_uploads() {
    use std::io::{BufRead, BufReader};
    let app = spawn_app().await;
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "watching-cam", None);
    let child = device_command(
        state.path(),
        &[
            "watch",
            dir.path().to_str().unwrap(),
            "--json",
            "--settle",
            "1",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let mut watching = Watching {
        child,
        lines: std::sync::mpsc::channel().1,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let out = watching.child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    watching.lines = rx;

    // Uploads go on beside the socket.
    std::fs::write(dir.path().join("A001.MOV"), test_bytes(300_000, 5)).unwrap();
    watching.expect("completed", Duration::from_secs(30));

    let list = app.cli_json(&["device", "list"]);
    let id = list
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == "watching-cam"))
        .and_then(|d| d["id"].as_str())
        .unwrap_or_else(|| panic!("not listed: {list}"))
        .to_owned();
    app.cli(&["device", "pause", &id]);
    // At most a reconnect (the socket opens beside the first upload) plus the push.
    watching.expect("paused", Duration::from_secs(5));
    app.cli(&["device", "resume", &id]);
    watching.expect("resumed", PUSH_WITHIN + Duration::from_secs(1));
}
