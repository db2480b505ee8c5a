//! c2c-api.md §1 as real devices meet it: bodies labelled loosely, TLS stacks that offer
//! only `http/1.0` or no SNI, `Expect: 100-continue`, answers a client still sending its
//! body can read, and the same 64 KiB header limit on HTTP/1.1 and HTTP/2. Most of these
//! talk to the server over a TLS connection of their own, to send what HTTP libraries
//! would not.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use reqwest::{Certificate, Client, StatusCode, Version};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

use crate::helpers::*;

fn address(app: &TestServer) -> String {
    app.url.trim_start_matches("https://").to_owned()
}

async fn http11(app: &TestServer) -> TlsStream<tokio::net::TcpStream> {
    http11_connection(app).await
}

/// One HTTP/1.x answer: status line and headers (lower-cased names), body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The detailed error shape's status and detail, checked for shape.
    fn detailed_error(&self) -> (u16, String) {
        let body = self.json();
        assert_eq!(body["code"], self.status, "{body}");
        assert_eq!(body["errors"][0]["status"], self.status, "{body}");
        assert_eq!(body["message"], body["errors"][0]["title"], "{body}");
        let detail = body["errors"][0]["detail"].as_str().unwrap().to_owned();
        (self.status, detail)
    }
}

/// Reads one answer (its head and a `Content-Length` body) from `conn`, with what was
/// already received in `buf`; an interim `1xx` head is an answer too. Leaves what follows
/// in `buf`. Panics on a reset or a close before the answer is whole.
async fn read_answer(conn: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("not an HTTP answer: {head}"));
            buf.drain(..end + 4);
            let mut answer = Answer {
                status,
                head,
                body: Vec::new(),
            };
            let length: usize = answer
                .header("content-length")
                .map_or(0, |l| l.parse().unwrap());
            while buf.len() < length {
                read_more(conn, buf, deadline).await;
            }
            answer.body = buf.drain(..length).collect();
            return answer;
        }
        read_more(conn, buf, deadline).await;
    }
}

async fn read_more(conn: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>, deadline: Instant) {
    let mut chunk = vec![0u8; 64 * 1024];
    let n = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        conn.read(&mut chunk),
    )
    .await
    .expect("an answer within 30 s")
    .expect("reading the answer (no reset)");
    assert!(
        n > 0,
        "the connection closed before the answer was whole: {}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

#[tokio::test]
async fn v2_health_answers_ok_without_a_token() {
    let app = spawn_app().await;
    for path in ["/health", "/v2/health"] {
        let res = app.client.get(app.at(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(
            res.json::<Value>().await.unwrap(),
            json!({"status": "ok"}),
            "{path}"
        );
    }
}

/// The labels a JSON body arrives with from devices (`None`: no `Content-Type` at all).
const JSON_LABELS: [Option<&str>; 6] = [
    None,
    Some("text/plain"),
    Some("application/json; charset=UTF-8"),
    Some("APPLICATION/JSON"),
    Some("application/octet-stream"),
    Some("application/x-www-form-urlencoded"),
];

async fn post_labelled(
    app: &TestServer,
    token: &str,
    path: &str,
    label: Option<&str>,
    body: String,
) -> reqwest::Response {
    let mut req = app.client.post(app.at(path)).bearer_auth(token).body(body);
    if let Some(label) = label {
        req = req.header("content-type", label);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_json_asset_body_is_json_whatever_its_content_type_on_every_create_spelling() {
    let app = spawn_app().await;
    let token = app.pair("cam-json-labels").await.access_token;
    for path in ["/v2/devices/assets", "/v2/assets"] {
        for (i, label) in JSON_LABELS.iter().enumerate() {
            // Numbers as strings, an unknown field, null for optional ones.
            let name = format!("C{i}{}.MP4", path.len());
            let body = json!({
                "name": name, "filesize": "24638557", "filetype": "video/mp4",
                "offset": null, "channel": "0", "auto_version_id": null,
                "camera_specific_field": {"lens": "35mm"}, "is_realtime_upload": "false",
            });
            let res = post_labelled(&app, &token, path, *label, body.to_string()).await;
            let status = res.status();
            let text = res.text().await.unwrap();
            assert_eq!(status, StatusCode::OK, "{path} {label:?}: {text}");
            let asset: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(asset["name"], name, "{path} {label:?}: {asset}");
            assert_eq!(asset["filesize"], 24638557, "{path} {label:?}: {asset}");
            assert!(
                !asset["upload_urls"].as_array().unwrap().is_empty(),
                "{asset}"
            );
        }
    }
}

#[tokio::test]
async fn realtime_bodies_are_json_whatever_their_content_type_on_every_parts_spelling() {
    let app = spawn_app().await;
    let token = app.pair("cam-realtime-labels").await.access_token;
    for label in JSON_LABELS {
        // A real-time create must be JSON: a JSON body labelled otherwise is one.
        let res = post_labelled(
            &app,
            &token,
            "/v2/devices/assets",
            label,
            json!({"is_realtime_upload": "true", "filetype": "video/mp4", "extension": ".mp4",
                   "name": null})
            .to_string(),
        )
        .await;
        let status = res.status();
        let text = res.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "realtime create {label:?}: {text}");
        let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let spellings = [
            format!("/v2/devices/assets/{id}/realtime_upload/parts"),
            format!("/v2/assets/{id}/realtime_upload/parts"),
            format!("/v2/devices/assets/{id}/realtime-upload-parts"),
        ];
        for (n, path) in spellings.iter().enumerate() {
            let body = json!({
                "parts": [{"number": (n + 1).to_string(), "size": "5242880", "is_final": "false",
                           "checksum": null}],
                "asset_filesize": null, "asset_name": null, "unknown": [1, 2],
            });
            let res = post_labelled(&app, &token, path, label, body.to_string()).await;
            let status = res.status();
            let text = res.text().await.unwrap();
            assert_eq!(status, StatusCode::OK, "{path} {label:?}: {text}");
            let urls: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(urls["upload_urls"].as_array().unwrap().len(), 1, "{urls}");
        }
    }
}

#[tokio::test]
async fn urlencoded_asset_forms_still_work_labelled_or_not() {
    let app = spawn_app().await;
    let token = app.pair("cam-forms").await.access_token;
    for (i, label) in [
        Some("application/x-www-form-urlencoded"),
        Some("application/x-www-form-urlencoded; charset=utf-8"),
        None,
        Some("text/plain"),
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!("name=F{i}.MOV&filesize=1000&filetype=video%2Fquicktime&extra=1");
        for path in ["/v2/devices/assets", "/v2/assets"] {
            let res = post_labelled(&app, &token, path, label, body.clone()).await;
            let status = res.status();
            let text = res.text().await.unwrap();
            assert_eq!(status, StatusCode::OK, "{path} {label:?}: {text}");
            let asset: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(asset["filetype"], "video/quicktime", "{asset}");
        }
    }
}

#[tokio::test]
async fn a_body_that_is_neither_json_nor_a_form_is_a_clear_400_or_415() {
    let app = spawn_app().await;
    let token = app.pair("cam-garbage").await.access_token;
    let cases: [(Option<&str>, &str, StatusCode); 6] = [
        (None, "{\"name\": \"A.MP4\", ", StatusCode::BAD_REQUEST),
        (None, "", StatusCode::BAD_REQUEST),
        (
            Some("application/json"),
            "not json",
            StatusCode::BAD_REQUEST,
        ),
        (Some("text/plain"), "hello camera", StatusCode::BAD_REQUEST),
        (Some("application/json"), "[1, 2]", StatusCode::BAD_REQUEST),
        (
            Some("application/xml"),
            "<asset name=\"A.MP4\"/>",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for path in ["/v2/devices/assets", "/v2/assets"] {
        for (label, body, expected) in cases {
            let res = post_labelled(&app, &token, path, label, body.to_owned()).await;
            let (status, _, detail) = detailed_error(res).await;
            assert_eq!(status, expected, "{path} {label:?} {body:?}: {detail}");
            assert!(!detail.is_empty(), "{path} {label:?} {body:?}");
        }
    }
    assert!(
        app.cli_json(&["asset", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn heartbeat_is_204_with_or_without_a_content_type_or_a_body() {
    let app = spawn_app().await;
    let token = app.pair("cam-heartbeat").await.access_token;
    let cases: [(Option<&str>, &str); 5] = [
        (None, ""),
        (Some("application/json"), ""),
        (Some("application/json"), "{}"),
        (Some("text/plain"), "{\"status\": \"ok\"}"),
        (Some("application/x-www-form-urlencoded"), ""),
    ];
    for (label, body) in cases {
        let res = post_labelled(
            &app,
            &token,
            "/v2/devices/heartbeat",
            label,
            body.to_owned(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "{label:?} {body:?}");
    }
}

#[tokio::test]
async fn a_client_offering_only_http_1_0_by_alpn_is_served_http_1() {
    let app = spawn_app().await;
    let mut conn = tls_connection(
        &app,
        &[b"http/1.0"],
        ServerName::try_from("localhost").unwrap(),
    )
    .await;
    assert_eq!(
        conn.get_ref().1.alpn_protocol(),
        None,
        "no protocol selected"
    );
    conn.write_all(b"GET /v2/health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut conn, &mut buf).await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert!(answer.head.starts_with("HTTP/1."), "{}", answer.head);
    assert_eq!(answer.json(), json!({"status": "ok"}));

    // And HTTP/1.1 on the same kind of connection.
    let mut conn = tls_connection(
        &app,
        &[b"http/1.0", b"spdy/3"],
        ServerName::try_from("localhost").unwrap(),
    )
    .await;
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut conn, &mut Vec::new()).await;
    assert_eq!(answer.status, 200, "{}", answer.head);

    // A client that offers what we serve still gets it.
    let conn = tls_connection(
        &app,
        &[b"h2", b"http/1.1"],
        ServerName::try_from("localhost").unwrap(),
    )
    .await;
    assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn a_client_sending_no_sni_gets_the_default_certificate() {
    let app = spawn_app().await;
    // rustls sends no SNI for an IP address; the certificate must still verify for it.
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let mut conn = tls_connection(&app, &[b"http/1.1"], name).await;
    conn.write_all(b"GET /v2/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut conn, &mut Vec::new()).await;
    assert_eq!(answer.status, 200, "{}", answer.head);
}

#[tokio::test]
async fn expect_100_continue_is_honoured() {
    let app = spawn_app().await;
    let token = app.pair("cam-expect").await.access_token;
    let body = json!({"name": "E.MP4", "filesize": 10, "filetype": "video/mp4"}).to_string();
    let mut conn = http11(&app).await;
    let head = format!(
        "POST /v2/devices/assets HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let interim = read_answer(&mut conn, &mut buf).await;
    assert_eq!(interim.status, 100, "{}", interim.head);
    conn.write_all(body.as_bytes()).await.unwrap();
    let answer = read_answer(&mut conn, &mut buf).await;
    assert_eq!(
        answer.status,
        200,
        "{} {}",
        answer.head,
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["name"], "E.MP4");
}

const TWENTY_MB: usize = 20_000_000;

/// The head of a `POST /v2/devices/assets` announcing a 20 MB JSON body.
fn oversized_create_head(token: &str, expect: bool) -> String {
    oversized_head("/v2/devices/assets", token, expect)
}

/// The head of a `POST {path}` announcing a 20 MB JSON body.
fn oversized_head(path: &str, token: &str, expect: bool) -> String {
    let expect = if expect {
        "Expect: 100-continue\r\n"
    } else {
        ""
    };
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {TWENTY_MB}\r\n{expect}\r\n"
    )
}

/// 20 MB of (the start of) a JSON object.
fn big_json() -> Vec<u8> {
    let mut body = b"{\"name\": \"A.MP4\", \"padding\": \"".to_vec();
    body.resize(TWENTY_MB, b'x');
    body
}

#[tokio::test]
async fn a_20_mb_body_is_answered_413_before_the_client_sends_the_rest() {
    let app = spawn_app().await;
    let token = app.pair("cam-big-body").await.access_token;
    let res = app
        .create_asset_raw(
            &token,
            json!({"is_realtime_upload": true, "filetype": "video/mp4", "extension": ".mp4"}),
        )
        .await;
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = big_json();
    for path in [
        "/v2/devices/assets".to_owned(),
        "/v2/assets".to_owned(),
        format!("/v2/devices/assets/{id}/realtime_upload/parts"),
        format!("/v2/assets/{id}/realtime_upload/parts"),
        format!("/v2/devices/assets/{id}/realtime-upload-parts"),
    ] {
        let mut conn = http11(&app).await;
        conn.write_all(oversized_head(&path, &token, false).as_bytes())
            .await
            .unwrap();
        conn.write_all(&body[..MIB]).await.unwrap();
        conn.flush().await.unwrap();
        let answer = read_answer(&mut conn, &mut Vec::new()).await;
        let (status, detail) = answer.detailed_error();
        assert_eq!(status, 413, "{path}: {detail}");
        assert!(detail.contains("too large"), "{path}: {detail}");
    }
}

#[tokio::test]
async fn with_expect_100_continue_the_refusal_comes_instead_of_100_continue() {
    let app = spawn_app().await;
    let token = app.pair("cam-big-expect").await.access_token;
    let mut conn = http11(&app).await;
    conn.write_all(oversized_create_head(&token, true).as_bytes())
        .await
        .unwrap();
    let answer = read_answer(&mut conn, &mut Vec::new()).await;
    assert_eq!(
        answer.status, 413,
        "the first answer is the refusal: {}",
        answer.head
    );
    assert_eq!(answer.header("connection").as_deref(), Some("close"));
    answer.detailed_error();

    // No token: refused from the headers alone, before 100 Continue, as well.
    let mut conn = http11(&app).await;
    conn.write_all(
        b"POST /v2/devices/assets HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_answer(&mut conn, &mut Vec::new()).await;
    assert_eq!(answer.status, 401, "{}", answer.head);
    answer.detailed_error();
}

#[tokio::test]
async fn a_client_sending_the_whole_20_mb_after_the_answer_reads_it_without_a_reset() {
    let app = spawn_app().await;
    let token = app.pair("cam-big-whole").await.access_token;
    let body = big_json();
    let mut conn = http11(&app).await;
    conn.write_all(oversized_create_head(&token, false).as_bytes())
        .await
        .unwrap();
    // The whole body first, as a simple client does, and only then the answer.
    tokio::time::timeout(Duration::from_secs(60), conn.write_all(&body))
        .await
        .expect("the server goes on reading")
        .expect("the body is sent without a reset");
    conn.flush().await.unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut conn, &mut buf).await;
    assert_eq!(answer.status, 413, "{}", answer.head);
    answer.detailed_error();
    // The body was read to its end, so the connection is still good for another request.
    conn.write_all(b"GET /v2/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut conn, &mut buf).await;
    assert_eq!(answer.status, 200, "{}", answer.head);
}

#[tokio::test]
async fn reqwest_sending_a_20_mb_body_gets_the_413_on_both_http_versions() {
    let app = spawn_app().await;
    let token = app.pair("cam-big-reqwest").await.access_token;
    for client in [app.client.clone(), version_client(&app, Version::HTTP_11)] {
        let res = client
            .post(app.at("/v2/devices/assets"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(big_json())
            .send()
            .await
            .expect("an answer, not a connection error");
        let version = res.version();
        let (status, _, detail) = detailed_error(res).await;
        assert_eq!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{version:?}: {detail}"
        );
    }
}

#[tokio::test]
async fn a_part_of_the_wrong_length_is_answered_400_before_the_client_sends_the_rest() {
    if local_store_only("it is about the local store's own part route") {
        return;
    }
    let app = spawn_app().await;
    let token = app.pair("cam-wrong-part").await.access_token;
    let asset = app.create_asset(&token, "W.MP4", 1000).await;
    let url = reqwest::Url::parse(&asset.upload_urls[0]).unwrap();
    let target = format!("{}?{}", url.path(), url.query().unwrap());
    let announced = 8 * MIB;
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: video/mp4\r\n\
         x-amz-acl: private\r\nContent-Length: {announced}\r\n\r\n"
    );
    let mut conn = http11(&app).await;
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&vec![7u8; MIB]).await.unwrap();
    conn.flush().await.unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut conn, &mut buf).await;
    let (status, detail) = answer.detailed_error();
    assert_eq!(status, 400, "{detail}");

    // Sent whole, the answer is read after it, without a reset, and the asset is untouched.
    let mut conn = http11(&app).await;
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&vec![7u8; announced]).await.unwrap();
    conn.flush().await.unwrap();
    let answer = read_answer(&mut conn, &mut Vec::new()).await;
    assert_eq!(answer.status, 400, "{}", answer.head);
    let data = test_bytes(1000, 3);
    app.upload(&asset, &data).await;
    app.wait_complete(&token, &asset.id).await;
    assert_complete_with(&app, &asset.id, &data);

    // A tampered signature is refused from the headers too.
    let tampered = target.replace("sig=", "sig=00");
    let mut conn = http11(&app).await;
    conn.write_all(
        format!(
            "PUT {tampered} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {announced}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    conn.write_all(&vec![7u8; MIB]).await.unwrap();
    let answer = read_answer(&mut conn, &mut Vec::new()).await;
    assert_eq!(answer.status, 403, "{}", answer.head);
}

/// A client of the test server that speaks only `version`.
fn version_client(app: &TestServer, version: Version) -> Client {
    let pem = std::fs::read(app.data.join("tls/ca.crt")).unwrap();
    let builder = Client::builder()
        .tls_certs_only([Certificate::from_pem(&pem).unwrap()])
        .timeout(Duration::from_secs(60));
    let builder = if version == Version::HTTP_2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    builder.build().unwrap()
}

#[tokio::test]
async fn request_headers_over_64_kib_are_431_on_http_1_1_and_http_2_alike() {
    let app = spawn_app().await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let client = version_client(&app, version);
        // About 60 KiB of headers, in a few fields: accepted.
        let mut req = client.get(app.at("/v2/health"));
        for i in 0..4 {
            req = req.header(format!("x-camera-{i}"), "a".repeat(15 * 1024));
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.version(), version);
        assert_eq!(res.status(), StatusCode::OK, "{version:?}: 60 KiB");

        // About 70 KiB: refused, in the detailed shape, on the same connection kind.
        let mut req = client.get(app.at("/v2/health"));
        for i in 0..5 {
            req = req.header(format!("x-camera-{i}"), "a".repeat(14 * 1024));
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.version(), version);
        let (status, _, detail) = detailed_error(res).await;
        assert_eq!(
            status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "{version:?}: 70 KiB: {detail}"
        );
    }
}
