//! The S3-compatible media store against a real S3 server (s3s-fs, which checks SigV4
//! signatures itself): part URLs are presigned `UploadPart` URLs the bytes go to directly,
//! S3 refuses what the signature does not allow, the watcher notices parts and completes
//! the multipart upload, resuming, real-time uploads, abandoned uploads, web downloads
//! streamed from the bucket, store outages, several servers, crashes, foreign objects in the
//! bucket, and the device client. Every test starts its servers with `spawn_app_on_s3`, so
//! these run in every pass of the suite whatever `RUSHES_TEST_MEDIA` says.

use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, RANGE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use rushes_proto::asset::Asset;
use serde_json::{Value, json};

use crate::helpers::*;

const FIVE_MIB: usize = 5 * MIB;
const PART_SIZE_FLAG: &str = "5242880";
/// How long the watcher may take to notice parts in ordinary conditions.
const NOTICE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------------------

fn s3_of(app: &TestServer) -> &S3Server {
    app.s3.as_deref().expect("the server runs on S3")
}

/// The value of query parameter `key` in `url`.
fn query_param(url: &str, key: &str) -> Option<String> {
    Url::parse(url)
        .expect("URL parses")
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// `url` with query parameter `key` set to `value`.
fn with_param(url: &str, key: &str, value: &str) -> String {
    let mut parsed = Url::parse(url).expect("URL parses");
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (k, v) in &pairs {
            query.append_pair(k, if k == key { value } else { v });
        }
    }
    parsed.to_string()
}

/// A hex string with its first digit changed.
fn flip_hex_digit(hex: &str) -> String {
    let mut chars: Vec<char> = hex.chars().collect();
    chars[0] = if chars[0] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

/// Percent-decodes a URL path.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(b) = escaped {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("a UTF-8 path")
}

/// The object key a part URL uploads to (its path without the bucket), decoded.
fn url_key(app: &TestServer, url: &str) -> String {
    let path = percent_decode(Url::parse(url).expect("URL parses").path());
    let prefix = format!("/{}/", s3_of(app).bucket);
    path.strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{url} is not in bucket {}", s3_of(app).bucket))
        .to_owned()
}

/// Checks that `url` is a presigned S3 `UploadPart` URL for part `number`, at the S3
/// endpoint (not the Rushes server), signing `x-amz-acl` and `content-length`. Returns the
/// URL's upload id.
fn assert_presigned_part_url(app: &TestServer, url: &str, number: u32) -> String {
    let parsed = Url::parse(url).expect("upload URL parses");
    let endpoint = Url::parse(&s3_of(app).endpoint).expect("endpoint parses");
    let rushes = Url::parse(&app.url).expect("server URL parses");
    assert_eq!(parsed.scheme(), endpoint.scheme(), "{url}");
    assert_eq!(parsed.host_str(), endpoint.host_str(), "{url}");
    assert_eq!(parsed.port(), endpoint.port(), "{url}");
    assert_ne!(parsed.port(), rushes.port(), "{url} points at Rushes");
    assert!(
        !parsed.path().starts_with("/upload/"),
        "{url} is a local-store URL"
    );
    assert_eq!(
        query_param(url, "partNumber").as_deref(),
        Some(number.to_string().as_str()),
        "{url}"
    );
    assert_eq!(
        query_param(url, "X-Amz-Algorithm").as_deref(),
        Some("AWS4-HMAC-SHA256"),
        "{url}"
    );
    assert!(query_param(url, "X-Amz-Signature").is_some(), "{url}");
    assert!(query_param(url, "X-Amz-Expires").is_some(), "{url}");
    let signed = query_param(url, "X-Amz-SignedHeaders").expect("X-Amz-SignedHeaders");
    let signed: Vec<&str> = signed.split(';').collect();
    for header in ["x-amz-acl", "content-length", "host"] {
        assert!(signed.contains(&header), "{url} does not sign {header}");
    }
    query_param(url, "uploadId").unwrap_or_else(|| panic!("no uploadId in {url}"))
}

/// The bytes of 1-based part `number` when `data` is cut into `count` parts, as the
/// contract says: parts of ceil(len / count) bytes, the last one shorter.
fn part_of(data: &[u8], count: usize, number: usize) -> Vec<u8> {
    let len = data.len().div_ceil(count);
    let start = (number - 1) * len;
    data[start..(start + len).min(data.len())].to_vec()
}

/// PUTs a part to S3 and insists on 200.
async fn put_ok(app: &TestServer, url: &str, bytes: Vec<u8>) {
    let res = app.put_part(url, bytes).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "PUT {url}: {}",
        res.text().await.unwrap_or_default()
    );
}

/// A part PUT that reports S3's refusal (see [`put_part_raw`]).
async fn put_expecting(url: &str, acl: bool, body: &[u8]) -> (StatusCode, String) {
    put_part_raw(url, RawBody::Sized(body), acl).await
}

/// The resume extension's answer as JSON, insisting on 200.
async fn status_json(app: &TestServer, token: &str, asset_id: &str) -> Value {
    let res = app.upload_status(token, asset_id).await;
    assert_eq!(res.status(), StatusCode::OK, "resume of {asset_id}");
    res.json().await.expect("upload status JSON")
}

/// Waits (polling `rushes asset list`, which never asks the store anything) until the
/// asset is listed in `state`.
async fn wait_listed(app: &TestServer, asset_id: &str, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let entry = app.asset_entry(asset_id);
        if entry["state"] == state {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "asset {asset_id} was not listed {state} within {within:?}: {entry}\nlog: {}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a line of the server log contains every one of `needles`; returns it.
async fn wait_log_line(app: &TestServer, needles: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(line) = app
            .log()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?} within {within:?}; log: {}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The (method, route) of every per-request line of the server's JSON log.
fn logged_requests(app: &TestServer) -> Vec<(String, String)> {
    app.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|line| {
            // `flatten_event` puts the fields at the top; tolerate them nested as well.
            let fields = if line.get("message").is_some() {
                line
            } else {
                line.get("fields").cloned()?
            };
            (fields["message"] == "request").then(|| {
                (
                    fields["method"].as_str().unwrap_or_default().to_owned(),
                    fields["route"].as_str().unwrap_or_default().to_owned(),
                )
            })
        })
        .collect()
}

/// Asserts that the server's request log shows asset creation but no request to an upload
/// route (the local store's part PUT): the bytes went to S3 only.
fn assert_no_part_through_rushes(app: &TestServer) {
    let requests = logged_requests(app);
    assert!(
        requests
            .iter()
            .any(|(m, r)| m == "POST" && r == "/v2/devices/assets"),
        "the request log is not where it was expected: {requests:?}"
    );
    let through_rushes: Vec<_> = requests
        .iter()
        .filter(|(_, route)| route.contains("/upload/"))
        .collect();
    assert!(
        through_rushes.is_empty(),
        "requests reached an upload route of Rushes: {through_rushes:?}"
    );
}

/// Creates an asset and insists on 200 and one presigned S3 URL per part.
async fn create_on_s3(app: &TestServer, token: &str, name: &str, size: usize) -> Asset {
    let asset = app.create_asset(token, name, size).await;
    for (i, url) in asset.upload_urls.iter().enumerate() {
        assert_presigned_part_url(app, url, i as u32 + 1);
    }
    asset
}

/// A complete upload of `data` as asset `name`: create, PUT every part, wait for the
/// asset to complete.
async fn upload_whole(app: &TestServer, token: &str, name: &str, data: &[u8]) -> Asset {
    let asset = create_on_s3(app, token, name, data.len()).await;
    app.upload(&asset, data).await;
    wait_listed(app, &asset.id, "complete", NOTICE).await;
    asset
}

// ---------------------------------------------------------------------------------------
// 1. Bytes go straight to the bucket
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn s3_parts_go_straight_to_the_bucket_and_the_asset_completes_with_its_sha256() {
    let app = spawn_app_on_s3(&["--part-size", PART_SIZE_FLAG]).await;
    let tokens = app.pair("cam-s3-direct").await;
    let data = test_bytes(3 * FIVE_MIB + 1234, 301);
    let asset = app
        .create_asset(&tokens.access_token, "direct.mp4", data.len())
        .await;
    assert_eq!(asset.upload_urls.len(), 3, "{:?}", asset.upload_urls);
    let mut upload_ids = Vec::new();
    for (i, url) in asset.upload_urls.iter().enumerate() {
        upload_ids.push(assert_presigned_part_url(&app, url, i as u32 + 1));
        // The URL uploads to the asset's object: `<project>/<asset path>`.
        assert_eq!(
            url_key(&app, url),
            format!("Default/{}", asset.path),
            "{url}"
        );
    }
    upload_ids.dedup();
    assert_eq!(upload_ids.len(), 1, "one multipart upload per asset");

    // The parts go to S3 directly, in the contract's cut.
    for (i, url) in asset.upload_urls.iter().enumerate() {
        put_ok(&app, url, part_of(&data, 3, i + 1)).await;
    }
    // Nobody asks the server: the watcher notices the parts by itself.
    let entry = wait_listed(&app, &asset.id, "complete", NOTICE).await;
    assert_eq!(entry["sha256"], sha256_hex(&data), "{entry}");
    assert_complete_with(&app, &asset.id, &data);
    assert_eq!(
        app.asset_file(&entry),
        s3_of(&app).object_path(&format!("Default/{}", asset.path))
    );

    // The bytes never passed through Rushes.
    assert_no_part_through_rushes(&app);
}

// ---------------------------------------------------------------------------------------
// 2. S3 checks what the URL signs
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn s3_refuses_part_puts_without_acl_of_the_wrong_length_or_with_a_tampered_signature() {
    let app = spawn_app_on_s3(&["--part-size", PART_SIZE_FLAG]).await;
    let tokens = app.pair("cam-s3-refused").await;
    let token = &tokens.access_token;
    let data = test_bytes(100_000, 302);
    let asset = create_on_s3(&app, token, "refused.mp4", data.len()).await;
    assert_eq!(asset.upload_urls.len(), 1);
    let url = &asset.upload_urls[0];

    // Each refused by S3 itself: no x-amz-acl (a signed header is missing), one byte too
    // many or too few (the signed content-length differs), a tampered signature, and the
    // signature moved to another part number.
    let sig = query_param(url, "X-Amz-Signature").expect("signature");
    let tampered = with_param(url, "X-Amz-Signature", &flip_hex_digit(&sig));
    let moved = with_param(url, "partNumber", "2");
    assert_ne!(&tampered, url);
    assert_ne!(&moved, url);
    let mut longer = data.clone();
    longer.push(0);
    let cases: Vec<(&str, &str, bool, &[u8])> = vec![
        ("without x-amz-acl", url, false, &data),
        ("one byte too many", url, true, &longer),
        ("one byte too few", url, true, &data[..data.len() - 1]),
        ("tampered signature", &tampered, true, &data),
        ("another part number", &moved, true, &data),
    ];
    for (what, target, acl, bytes) in cases {
        let (status, answer) = put_expecting(target, acl, bytes).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {answer}");
        // Refused for its signature (not, say, for a missing upload).
        assert!(
            answer.contains("<Code>SignatureDoesNotMatch</Code>"),
            "{what}: {answer}"
        );
    }

    // Nothing was stored: S3 lists no part (the resume extension asks it at once).
    let status = status_json(&app, token, &asset.id).await;
    assert_eq!(status["state"], "uploading", "{status}");
    assert_eq!(status["received_parts"], json!([]), "{status}");
    assert_eq!(app.asset_entry(&asset.id)["state"], "uploading");

    // The genuine PUT (sent the same way) completes the asset.
    let (status, answer) = put_expecting(url, true, &data).await;
    assert_eq!(status, StatusCode::OK, "the genuine PUT: {answer}");
    wait_listed(&app, &asset.id, "complete", NOTICE).await;
    assert_complete_with(&app, &asset.id, &data);
}

// ---------------------------------------------------------------------------------------
// 3. The part plan under a store's part cap
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn s3_max_parts_caps_the_plan_of_a_100_gib_file_and_small_files_still_work() {
    let app = spawn_app_on_s3(&["--s3-max-parts", "1000"]).await;
    let tokens = app.pair("cam-s3-plan").await;
    let token = &tokens.access_token;
    let filesize: u64 = 100 * 1024 * 1024 * 1024;
    let res = app
        .create_asset_raw(
            token,
            json!({"name": "huge.mp4", "filesize": filesize, "filetype": "video/mp4"}),
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let asset: Asset = res.json().await.expect("asset body");
    let n = asset.upload_urls.len();
    assert!((1..=1000).contains(&n), "{n} upload URLs");
    for (i, url) in asset.upload_urls.iter().enumerate() {
        assert_presigned_part_url(&app, url, i as u32 + 1);
    }

    // The sizes follow from n (the signed content-length is not readable from the URL).
    let part_size = filesize.div_ceil(n as u64);
    let sizes: Vec<u64> = (0..n as u64)
        .map(|i| part_size.min(filesize - i * part_size))
        .collect();
    assert!(
        sizes[..n - 1].iter().all(|&s| s >= FIVE_MIB as u64),
        "a non-final part under 5 MiB: part size {part_size}"
    );
    assert!(sizes[n - 1] >= 1 && sizes[n - 1] <= part_size);
    assert_eq!(sizes.iter().sum::<u64>(), filesize);

    // The server's own plan (the resume extension lists every missing part with its size
    // and a URL) agrees with the one derived from n.
    let status = status_json(&app, token, &asset.id).await;
    assert_eq!(status["part_count"], n, "{}", status["part_count"]);
    assert_eq!(status["part_size"], part_size);
    let missing = status["missing"].as_array().expect("missing parts");
    assert_eq!(missing.len(), n);
    for (i, part) in missing.iter().enumerate() {
        assert_eq!(part["number"], i + 1);
        assert_eq!(part["size"], sizes[i], "part {}", i + 1);
        assert_presigned_part_url(&app, part["url"].as_str().expect("url"), i as u32 + 1);
    }

    // A small file on the same server: one part, uploaded and complete.
    let data = test_bytes(4321, 303);
    let small = upload_whole(&app, token, "small.mp4", &data).await;
    assert_eq!(small.upload_urls.len(), 1);
    assert_complete_with(&app, &small.id, &data);
}

// ---------------------------------------------------------------------------------------
// 4. Real-time uploads
// ---------------------------------------------------------------------------------------

/// Registers real-time parts and returns their URLs, insisting on 200.
async fn register_parts(app: &TestServer, token: &str, asset_id: &str, body: Value) -> Vec<String> {
    let path = format!("/v2/devices/assets/{asset_id}/realtime_upload/parts");
    register_ok(app, token, &path, body).await
}

/// Creates a real-time asset (JSON) and returns its id and name.
async fn create_realtime(app: &TestServer, token: &str) -> (String, String) {
    let res = app
        .create_asset_raw(
            token,
            json!({"is_realtime_upload": true, "filetype": "video/mp4", "extension": ".mp4"}),
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let body: Value = res.json().await.expect("realtime asset JSON");
    (
        body["id"].as_str().expect("id").to_owned(),
        body["name"].as_str().expect("name").to_owned(),
    )
}

#[tokio::test]
async fn s3_realtime_upload_completes_with_its_sha256() {
    let app = spawn_app_on_s3(&[]).await;
    let tokens = app.pair("cam-s3-realtime").await;
    let token = &tokens.access_token;
    let (id, name) = create_realtime(&app, token).await;
    assert!(name.ends_with(".mp4"), "{name}");

    let first = test_bytes(FIVE_MIB, 304);
    let last = test_bytes(1000, 305);
    let urls = register_parts(
        &app,
        token,
        &id,
        json!({"parts": [{"number": 1, "size": FIVE_MIB, "is_final": false}]}),
    )
    .await;
    assert_eq!(urls.len(), 1);
    let upload_id = assert_presigned_part_url(&app, &urls[0], 1);
    put_ok(&app, &urls[0], first.clone()).await;

    let total = first.len() + last.len();
    let final_urls = register_parts(
        &app,
        token,
        &id,
        json!({
            "parts": [{"number": 2, "size": last.len(), "is_final": true}],
            "asset_filesize": total,
        }),
    )
    .await;
    assert_eq!(final_urls.len(), 1);
    assert_eq!(
        assert_presigned_part_url(&app, &final_urls[0], 2),
        upload_id
    );
    put_ok(&app, &final_urls[0], last.clone()).await;

    wait_listed(&app, &id, "complete", NOTICE).await;
    let entry = assert_complete_with(&app, &id, &[first, last].concat());
    assert!(
        entry["path"].as_str().expect("path").ends_with(&name),
        "{entry}"
    );
}

#[tokio::test]
async fn s3_a_realtime_upload_renamed_at_its_final_part_keeps_its_first_key_reserved() {
    let app = spawn_app_on_s3(&[]).await;
    let tokens = app.pair("cam-s3-rt-rename").await;
    let token = &tokens.access_token;
    let (id, first_name) = create_realtime(&app, token).await;
    let first = test_bytes(FIVE_MIB, 306);
    let last = test_bytes(2000, 307);
    let urls = register_parts(
        &app,
        token,
        &id,
        json!({
            "parts": [
                {"number": 1, "size": FIVE_MIB, "is_final": false},
                {"number": 2, "size": last.len(), "is_final": true},
            ],
            "asset_filesize": first.len() + last.len(),
            "asset_name": "take1.mp4",
        }),
    )
    .await;
    put_ok(&app, &urls[0], first.clone()).await;
    put_ok(&app, &urls[1], last.clone()).await;
    let data = [first, last].concat();
    let entry = wait_listed(&app, &id, "complete", NOTICE).await;
    let path = entry["path"].as_str().expect("path");
    assert!(path.ends_with("/take1.mp4"), "{entry}");
    assert_eq!(entry["sha256"], sha256_hex(&data), "{entry}");

    // Documented limit: the multipart upload's key was fixed at creation, so the bytes
    // stay under the first name in the bucket.
    let folder = path.rsplit_once('/').expect("a folder").0;
    let first_key = format!("Default/{folder}/{first_name}");
    assert_eq!(
        std::fs::read(app.s3.as_ref().expect("on S3").object_path(&first_key))
            .expect("the object under its first key"),
        data
    );

    // That key stays taken: a new asset of the same name gets the next one and never
    // overwrites the renamed clip.
    let twin = test_bytes(1000, 308);
    let asset = app.create_asset(token, &first_name, twin.len()).await;
    app.upload(&asset, &twin).await;
    let twin_entry = wait_listed(&app, &asset.id, "complete", NOTICE).await;
    let stem = first_name.trim_end_matches(".mp4");
    assert!(
        twin_entry["path"]
            .as_str()
            .expect("path")
            .ends_with(&format!("/{stem} (2).mp4")),
        "{twin_entry}"
    );
    assert_complete_with(&app, &asset.id, &twin);
    assert_eq!(
        std::fs::read(app.s3.as_ref().expect("on S3").object_path(&first_key))
            .expect("the renamed clip's object"),
        data
    );
}

// ---------------------------------------------------------------------------------------
// 5. Resuming
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn s3_resume_lists_received_parts_at_once_and_fresh_urls_complete_the_asset() {
    let app = spawn_app_on_s3(&["--part-size", PART_SIZE_FLAG]).await;
    let tokens = app.pair("cam-s3-resume").await;
    let token = &tokens.access_token;
    let data = test_bytes(4 * FIVE_MIB + 321, 308);
    let asset = create_on_s3(&app, token, "resume.mp4", data.len()).await;
    assert_eq!(asset.upload_urls.len(), 4);
    put_ok(&app, &asset.upload_urls[0], part_of(&data, 4, 1)).await;
    put_ok(&app, &asset.upload_urls[1], part_of(&data, 4, 2)).await;

    // Asked at once (no waiting for the watcher): the server lists the parts first.
    let status = status_json(&app, token, &asset.id).await;
    assert_eq!(status["state"], "uploading", "{status}");
    assert_eq!(status["received_parts"], json!([1, 2]), "{status}");
    assert_eq!(status["part_count"], 4, "{status}");
    let missing = status["missing"].as_array().expect("missing");
    let numbers: Vec<u64> = missing
        .iter()
        .map(|m| m["number"].as_u64().expect("number"))
        .collect();
    assert_eq!(numbers, [3, 4], "{status}");
    for part in missing {
        let number = part["number"].as_u64().expect("number") as usize;
        let url = part["url"].as_str().expect("url");
        assert_presigned_part_url(&app, url, number as u32);
        let bytes = part_of(&data, 4, number);
        assert_eq!(part["size"], bytes.len(), "{status}");
        put_ok(&app, url, bytes).await;
    }
    app.wait_complete(token, &asset.id).await;
    assert_complete_with(&app, &asset.id, &data);
    let status = status_json(&app, token, &asset.id).await;
    assert_eq!(status["missing"], json!([]), "{status}");
}

// ---------------------------------------------------------------------------------------
// 6. Abandoned uploads
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn s3_an_idle_upload_is_abandoned_and_aborted_in_the_store() {
    let app = spawn_app_on_s3(&["--part-size", PART_SIZE_FLAG, "--s3-abandon-after", "2"]).await;
    let tokens = app.pair("cam-s3-idle").await;
    let token = &tokens.access_token;
    let data = test_bytes(2 * FIVE_MIB + 100, 309);
    let asset = create_on_s3(&app, token, "idle.mp4", data.len()).await;
    assert_eq!(asset.upload_urls.len(), 2);
    // Sent the way the refused PUT below is sent, so that one fails for its own reason.
    let (status, answer) = put_expecting(&asset.upload_urls[0], true, &part_of(&data, 2, 1)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let part_sent = Instant::now();
    let status = status_json(&app, token, &asset.id).await;
    assert_eq!(status["received_parts"], json!([1]), "{status}");

    // No more parts: within a few sweeps the upload is abandoned, but not before 2 s.
    let deadline = Instant::now() + NOTICE;
    let status = loop {
        let status = status_json(&app, token, &asset.id).await;
        if status["state"] == "abandoned" {
            break status;
        }
        assert_eq!(status["state"], "uploading", "{status}");
        assert!(
            Instant::now() < deadline,
            "never abandoned: {status}\nlog: {}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        part_sent.elapsed() >= Duration::from_secs(2),
        "abandoned {:?} after its last part",
        part_sent.elapsed()
    );
    assert_eq!(
        status["missing"],
        json!([]),
        "nothing more to send: {status}"
    );

    // The store's upload is aborted: the second part's URL is refused by S3 itself.
    wait_log_line(&app, &["aborted an upload abandoned", &asset.id], NOTICE).await;
    let (status, answer) = put_expecting(&asset.upload_urls[1], true, &part_of(&data, 2, 2)).await;
    // (S3 says NoSuchUpload, s3s-fs AccessDenied; either way not a signature problem: the
    // URL is as good as part 1's was.)
    assert!(
        status.is_client_error()
            && answer.contains("<Error>")
            && !answer.contains("SignatureDoesNotMatch"),
        "a part for an aborted upload: {answer}"
    );
    let status = status_json(&app, token, &asset.id).await;
    assert_eq!(status["state"], "abandoned", "{status}");
    assert!(
        !s3_of(&app)
            .object_path(&format!("Default/{}", asset.path))
            .exists()
    );
    // The admin listing says so too.
    let entry = app.asset_entry(&asset.id);
    assert_eq!(
        entry["state"], "abandoned",
        "`rushes asset list --json` while the resume extension says abandoned: {entry}"
    );
}

// ---------------------------------------------------------------------------------------
// 7. Web downloads
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn s3_web_download_streams_the_object_whole_and_in_ranges() {
    let app = spawn_app_on_s3(&[]).await;
    let tokens = app.pair("cam-s3-web").await;
    let data = test_bytes(64 * 1024 + 7, 310);
    let asset = upload_whole(&app, &tokens.access_token, "web.mp4", &data).await;
    let password = app.web_user("alice", true);
    let browser = app.web_client("alice", &password).await;
    let file = app.at(&format!("/assets/{}/file", asset.id));

    let res = browser.get(&file).send().await.expect("GET file");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[CONTENT_TYPE], "video/mp4");
    assert_eq!(res.bytes().await.expect("body").as_ref(), data.as_slice());

    let res = browser
        .get(&file)
        .header(RANGE, "bytes=100-199")
        .send()
        .await
        .expect("ranged GET");
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        res.headers()
            .get(CONTENT_RANGE)
            .expect("Content-Range")
            .to_str()
            .expect("text"),
        format!("bytes 100-199/{}", data.len())
    );
    assert_eq!(res.bytes().await.expect("body").as_ref(), &data[100..200]);
}

// ---------------------------------------------------------------------------------------
// 8. The store goes down
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn serve_refuses_to_start_on_a_bucket_that_does_not_exist() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = S3Server::start(&dir.path().join("s3"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rushes"))
        .arg("serve")
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .args([
            "--s3-endpoint",
            &s3.endpoint,
            "--s3-bucket",
            "no-such-bucket",
        ])
        .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start rushes serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rushes serve kept running on a missing bucket");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("no-such-bucket"), "{stderr}");
    assert!(stderr.contains(&s3.endpoint), "{stderr}");
}

#[tokio::test]
async fn s3_down_makes_creation_503_with_retry_after_and_the_watcher_survives_an_outage() {
    let app = spawn_app_on_s3(&["--part-size", PART_SIZE_FLAG, "--s3-max-check-pause", "2"]).await;
    let s3 = s3_of(&app);
    let tokens = app.pair("cam-s3-down").await;
    let token = &tokens.access_token;

    s3.stop();
    let res = app
        .create_asset_raw(
            token,
            json!({"name": "clip.mp4", "filesize": 1000, "filetype": "video/mp4"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.headers()
            .get(RETRY_AFTER)
            .expect("Retry-After")
            .to_str()
            .expect("text"),
        "5"
    );
    let (_, title, _) = detailed_error(res).await;
    assert_eq!(title, "Service Unavailable");
    // The refused creation left nothing behind, not even its name.
    assert_eq!(app.cli_json(&["asset", "list"]), json!([]));

    s3.restart();
    let data = test_bytes(1000, 311);
    let asset = upload_whole(&app, token, "clip.mp4", &data).await;
    assert!(asset.path.ends_with("/clip.mp4"), "{}", asset.path);
    assert_complete_with(&app, &asset.id, &data);

    // An outage in the middle of an upload: the watcher fails to list, and carries on.
    let data = test_bytes(2 * FIVE_MIB + 5, 312);
    let asset = create_on_s3(&app, token, "outage.mp4", data.len()).await;
    s3.stop();
    wait_log_line(
        &app,
        &["listing an upload's parts failed", &asset.id],
        NOTICE,
    )
    .await;
    s3.restart();
    app.upload(&asset, &data).await;
    // Polled through the admin listing, which never asks the store: the watcher did it.
    wait_listed(&app, &asset.id, "complete", NOTICE).await;
    assert_complete_with(&app, &asset.id, &data);
}

// ---------------------------------------------------------------------------------------
// 9. Two servers, one database, one bucket
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn s3_two_servers_share_one_upload() {
    let first = spawn_app_on_s3(&["--part-size", PART_SIZE_FLAG]).await;
    let second = first.peer();
    let tokens = first.pair("cam-s3-roaming").await;
    let res = second
        .refresh(
            "cam-s3-roaming",
            tokens.refresh_token.as_deref().expect("refresh token"),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let tokens: rushes_proto::auth::TokenResponse = res.json().await.expect("tokens");
    let token = &tokens.access_token;

    let data = test_bytes(4 * FIVE_MIB + 77, 313);
    let asset = create_on_s3(&first, token, "roaming.mp4", data.len()).await;
    assert_eq!(asset.upload_urls.len(), 4);
    put_ok(&first, &asset.upload_urls[0], part_of(&data, 4, 1)).await;
    put_ok(&first, &asset.upload_urls[1], part_of(&data, 4, 2)).await;

    // The second server knows the upload and hands out URLs for the rest.
    let status = status_json(&second, token, &asset.id).await;
    assert_eq!(status["received_parts"], json!([1, 2]), "{status}");
    let missing = status["missing"].as_array().expect("missing").clone();
    assert_eq!(missing.len(), 2, "{status}");
    for part in &missing {
        let number = part["number"].as_u64().expect("number") as usize;
        let url = part["url"].as_str().expect("url");
        assert_presigned_part_url(&second, url, number as u32);
        put_ok(&second, url, part_of(&data, 4, number)).await;
    }
    wait_listed(&first, &asset.id, "complete", NOTICE).await;
    first.wait_complete(token, &asset.id).await;
    second.wait_complete(token, &asset.id).await;
    assert_complete_with(&first, &asset.id, &data);
    assert_eq!(second.asset_entry(&asset.id)["sha256"], sha256_hex(&data));
}

// ---------------------------------------------------------------------------------------
// 10. A crash between the last part and completion
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn s3_an_upload_whose_server_was_killed_after_the_last_part_completes_after_restart() {
    let mut app = spawn_app_on_s3(&["--part-size", PART_SIZE_FLAG]).await;
    let tokens = app.pair("cam-s3-crash").await;
    let data = test_bytes(3 * FIVE_MIB + 99, 314);
    let asset = create_on_s3(&app, &tokens.access_token, "crash.mp4", data.len()).await;
    assert_eq!(asset.upload_urls.len(), 3);
    app.upload(&asset, &data).await;
    app.kill();
    app.restart();
    // Polled through the admin listing, which never asks the store, so the restarted
    // server must notice the parts by itself (a check leased by the killed process is
    // taken over after its 60 s lease, hence the long deadline).
    wait_listed(&app, &asset.id, "complete", Duration::from_secs(90)).await;
    assert_complete_with(&app, &asset.id, &data);
}

// ---------------------------------------------------------------------------------------
// 11. A foreign object at the asset's key
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn s3_a_foreign_object_at_the_key_makes_the_asset_take_the_next_name() {
    let app = spawn_app_on_s3(&[]).await;
    let tokens = app.pair("cam-s3-foreign").await;
    let token = &tokens.access_token;
    // A first asset tells where this device's clips go today.
    let scout = create_on_s3(&app, token, "scout.mp4", 1000).await;
    let folder = scout
        .path
        .rsplit_once('/')
        .map(|(folder, _)| folder.to_owned())
        .expect("a folder");
    let foreign = s3_of(&app).object_path(&format!("Default/{folder}/clip.mp4"));
    std::fs::create_dir_all(foreign.parent().expect("parent")).expect("folder");
    let foreign_bytes = b"someone else's file".to_vec();
    std::fs::write(&foreign, &foreign_bytes).expect("foreign object");

    let data = test_bytes(2000, 315);
    let asset = create_on_s3(&app, token, "clip.mp4", data.len()).await;
    assert_eq!(asset.path, format!("{folder}/clip (2).mp4"));
    assert_eq!(
        url_key(&app, &asset.upload_urls[0]),
        format!("Default/{folder}/clip (2).mp4")
    );
    app.upload(&asset, &data).await;
    let entry = wait_listed(&app, &asset.id, "complete", NOTICE).await;
    assert_eq!(entry["path"], format!("{folder}/clip (2).mp4"));
    assert_complete_with(&app, &asset.id, &data);
    assert_eq!(
        std::fs::read(&foreign).expect("foreign object"),
        foreign_bytes
    );
}

// ---------------------------------------------------------------------------------------
// 12. The device client
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn s3_the_device_client_uploads_a_file_with_its_sha256_intact() {
    let app = spawn_app_on_s3(&["--part-size", PART_SIZE_FLAG]).await;
    let state = tempfile::tempdir().expect("state dir");
    app.pair_device_cli(state.path(), "Laptop", None);
    let files = tempfile::tempdir().expect("files dir");
    let data = test_bytes(11 * MIB + 5, 316);
    let clip = files.path().join("A001C001.mov");
    std::fs::write(&clip, &data).expect("clip");

    let out = device_command(
        state.path(),
        &["upload", clip.to_str().expect("path"), "--json"],
    )
    .output()
    .expect("rushes device upload");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = json_events(&out.stdout);
    let completed = events
        .iter()
        .find(|e| e["event"] == "completed")
        .unwrap_or_else(|| panic!("no completed event: {events:?}"));
    let asset_id = completed["asset_id"].as_str().expect("asset_id").to_owned();
    let entry = wait_listed(&app, &asset_id, "complete", NOTICE).await;
    assert!(
        entry["path"]
            .as_str()
            .expect("path")
            .ends_with("/VIDEO/Laptop/A001C001.mov"),
        "{entry}"
    );
    assert_complete_with(&app, &asset_id, &data);
    // The client sent its parts to S3, never to Rushes.
    assert_no_part_through_rushes(&app);
}
