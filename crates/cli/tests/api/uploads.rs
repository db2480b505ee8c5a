//! Uploading an asset's bytes (contract section 4): the part plan, signed and expiring
//! part URLs, part lengths, idempotent and late part PUTs, automatic finalisation, the
//! resume extension, and real-time uploads with their validation.

use reqwest::{Response, StatusCode, Url};
use serde_json::{Value, json};

use crate::helpers::*;

/// The smallest part (all but the last) the contract allows, and our test target size.
const FIVE_MIB: usize = 5 * MIB;
const PART_SIZE_FLAG: &str = "5242880";

// ---------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------

/// The value of query parameter `key` in `url`.
fn query_param(url: &str, key: &str) -> Option<String> {
    let url = Url::parse(url).expect("upload URL parses");
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The `size` a part URL grants.
fn url_size(url: &str) -> usize {
    query_param(url, "size")
        .unwrap_or_else(|| panic!("no size in {url}"))
        .parse()
        .expect("size is a number")
}

/// The path segments of a part URL: `["upload", asset_id, part]`.
fn url_segments(url: &str) -> Vec<String> {
    let url = Url::parse(url).expect("upload URL parses");
    url.path_segments()
        .expect("URL has a path")
        .map(str::to_owned)
        .collect()
}

/// Checks that `url` is the URL of part `number` of `asset_id`, for `size` bytes: on the
/// local store an `/upload/{asset}/{part}` URL with its size, expiry and signature; on S3 a
/// presigned `UploadPart` of an object in the asset's folder that signs the length and the
/// ACL header.
/// Either way the resume extension lists the part as missing with that size (a presigned
/// URL does not show the length it signs, so on S3 that is where the size is checked).
async fn assert_part_url(
    app: &TestServer,
    token: &str,
    url: &str,
    asset_id: &str,
    number: u32,
    size: usize,
) {
    assert_eq!(part_url_number_and_size(url).0, number, "{url}");
    match &app.s3 {
        None => {
            assert_eq!(
                url_segments(url),
                ["upload", asset_id, &number.to_string()],
                "{url}"
            );
            assert_eq!(url_size(url), size, "{url}");
            assert!(query_param(url, "expires").is_some(), "{url}");
            assert!(query_param(url, "sig").is_some(), "{url}");
        }
        Some(s3) => {
            let entry = app.asset_entry(asset_id);
            let object = Url::parse(&format!(
                "{}/{}/{}/{}",
                s3.endpoint,
                s3.bucket,
                entry["project"].as_str().expect("project"),
                entry["path"].as_str().expect("path"),
            ))
            .expect("object URL parses");
            let parsed = Url::parse(url).expect("upload URL parses");
            assert_eq!(parsed.origin(), object.origin(), "{url}");
            // The asset's folder: a real-time asset renamed at its final part keeps the key
            // its multipart upload began with until it completes.
            let folder = |path: &str| path[..path.rfind('/').expect("a key")].to_owned();
            assert_eq!(folder(parsed.path()), folder(object.path()), "{url}");
            let signed = query_param(url, "X-Amz-SignedHeaders").unwrap_or_default();
            let signed: Vec<&str> = signed.split(';').collect();
            for header in ["content-length", "host", "x-amz-acl"] {
                assert!(signed.contains(&header), "{header} is not signed: {url}");
            }
            for key in ["uploadId", "X-Amz-Expires", "X-Amz-Signature"] {
                assert!(query_param(url, key).is_some(), "no {key}: {url}");
            }
        }
    }
    let status = status_json(app, token, asset_id).await;
    let planned = status["missing"]
        .as_array()
        .and_then(|m| m.iter().find(|p| p["number"] == number))
        .unwrap_or_else(|| panic!("part {number} is not listed missing: {status}"));
    assert_eq!(planned["size"], size, "part {number}: {status}");
}

/// The sizes of the parts the resume extension lists as missing, in order.
async fn missing_sizes(app: &TestServer, token: &str, asset_id: &str) -> Vec<usize> {
    let status = status_json(app, token, asset_id).await;
    status["missing"]
        .as_array()
        .unwrap_or_else(|| panic!("no missing list: {status}"))
        .iter()
        .map(|p| p["size"].as_u64().expect("size") as usize)
        .collect()
}

/// `url` with query parameter `key` set to `value` (or removed when `None`).
fn with_param(url: &str, key: &str, value: Option<&str>) -> String {
    let mut parsed = Url::parse(url).expect("upload URL parses");
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (k, v) in &pairs {
            if k != key {
                query.append_pair(k, v);
            } else if let Some(value) = value {
                query.append_pair(k, value);
            }
        }
    }
    parsed.to_string()
}

/// `url` with path segment `index` (0 = `upload`, 1 = asset id, 2 = part) replaced.
fn with_segment(url: &str, index: usize, value: &str) -> String {
    let mut parsed = Url::parse(url).expect("upload URL parses");
    let mut segments = url_segments(url);
    segments[index] = value.to_owned();
    parsed.set_path(&format!("/{}", segments.join("/")));
    parsed.to_string()
}

/// `url` with its path replaced (a presigned S3 URL naming another object).
fn with_path(url: &str, path: &str) -> String {
    let mut parsed = Url::parse(url).expect("upload URL parses");
    parsed.set_path(path);
    parsed.to_string()
}

/// The path of `url` (for S3: `/<bucket>/<object key>`).
fn url_path(url: &str) -> String {
    Url::parse(url)
        .expect("upload URL parses")
        .path()
        .to_owned()
}

/// A signature with one hex digit changed.
fn flip_hex_digit(sig: &str) -> String {
    let mut chars: Vec<char> = sig.chars().collect();
    chars[0] = if chars[0] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

/// The bytes of 1-based part `number` when `data` is cut into parts of `part_len` bytes.
fn part_of(data: &[u8], part_len: usize, number: usize) -> Vec<u8> {
    let start = (number - 1) * part_len;
    data[start..(start + part_len).min(data.len())].to_vec()
}

/// PUTs a part and insists on 200.
async fn put_ok(app: &TestServer, url: &str, bytes: Vec<u8>) {
    let res = app.put_part(url, bytes).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "PUT {url}: {}",
        res.text().await.unwrap_or_default()
    );
}

/// PUTs a part as a chunked stream (no Content-Length), so the server must count bytes.
async fn put_streamed(app: &TestServer, url: &str, chunks: Vec<Vec<u8>>) -> Response {
    let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    app.client
        .put(url)
        .header("content-type", "video/mp4")
        .header("x-amz-acl", "private")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("streamed part PUT")
}

/// The resume extension's answer as JSON, insisting on 200.
async fn status_json(app: &TestServer, token: &str, asset_id: &str) -> Value {
    let res = app.upload_status(token, asset_id).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.expect("upload status JSON")
}

fn parts_path(asset_id: &str) -> String {
    format!("/v2/devices/assets/{asset_id}/realtime_upload/parts")
}

/// Creates a real-time asset and returns its id.
async fn create_realtime(app: &TestServer, token: &str) -> String {
    let res = app
        .create_asset_raw(
            token,
            json!({"is_realtime_upload": true, "filetype": "video/mp4", "extension": ".mp4"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("realtime asset JSON");
    body["id"].as_str().expect("id").to_owned()
}

/// Asserts a 403 in the detailed shape; returns its detail.
async fn assert_forbidden(res: Response, what: &str) -> String {
    let (status, title, detail) = detailed_error(res).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {detail}");
    assert_eq!(title, "Forbidden", "{what}");
    detail
}

/// Asserts that S3 answers a part PUT 403 (in its own XML shape); returns the answer.
async fn assert_s3_forbidden(url: &str, body: RawBody<'_>, what: &str) -> String {
    let (status, answer) = put_part_expecting_continue(url, body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {answer}");
    answer
}

/// PUTs `bytes` to `url` and asserts a 403 from whichever store the URL points at; returns
/// the detail (the local store's) or the answer (S3's).
async fn assert_put_refused(app: &TestServer, url: &str, bytes: Vec<u8>, what: &str) -> String {
    if app.s3.is_some() {
        assert_s3_forbidden(url, RawBody::Sized(&bytes), what).await
    } else {
        assert_forbidden(app.put_part(url, bytes).await, what).await
    }
}

/// Asserts a 422 in the detailed shape whose detail names `field`.
async fn assert_invalid(res: Response, field: &str, what: &str) {
    let (status, _, detail) = detailed_error(res).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {detail}");
    assert!(
        detail.contains(field),
        "{what}: the detail does not name {field}: {detail}"
    );
}

// ---------------------------------------------------------------------------------------
// 1. The part plan
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn part_plan_cuts_a_file_into_equal_parts_of_at_least_5_mib_but_the_last() {
    let app = spawn_app_with(&["--part-size", PART_SIZE_FLAG]).await;
    let tokens = app.pair("cam-plan").await;
    let token = &tokens.access_token;
    let size = 12 * MIB + 7;
    let asset = app
        .create_asset(&tokens.access_token, "plan.mp4", size)
        .await;
    assert_eq!(asset.filesize, size as u64);
    let n = asset.upload_urls.len();
    // At a 5 MiB target only two parts of at least 5 MiB fit into 12 MiB + 7.
    assert_eq!(n, 2, "{:?}", asset.upload_urls);
    assert!(n <= 10_000);
    let part = size.div_ceil(n);
    assert_eq!(part, 6 * MIB + 4);
    for (i, url) in asset.upload_urls.iter().enumerate() {
        let number = i as u32 + 1;
        let expected = if i + 1 < n {
            part
        } else {
            size - (n - 1) * part
        };
        assert_part_url(&app, token, url, &asset.id, number, expected).await;
        // A presigned S3 URL does not show its size; the plan below is checked on both.
        if app.s3.is_none() && i + 1 < n {
            assert!(url_size(url) >= FIVE_MIB, "part {number} under 5 MiB");
        }
    }
    let planned = missing_sizes(&app, token, &asset.id).await;
    assert_eq!(planned, [6 * MIB + 4, 6 * MIB + 3]);
    assert!(
        planned[..n - 1].iter().all(|&s| s >= FIVE_MIB),
        "{planned:?}"
    );
    assert_eq!(planned.iter().sum::<usize>(), size);
    if app.s3.is_none() {
        assert_eq!(url_size(&asset.upload_urls[1]), 6 * MIB + 3);
        let total: usize = asset.upload_urls.iter().map(|u| url_size(u)).sum();
        assert_eq!(total, size);
    }
}

#[tokio::test]
async fn part_plan_never_exceeds_max_parts() {
    let app = spawn_app_with(&["--part-size", PART_SIZE_FLAG, "--max-parts", "2"]).await;
    let tokens = app.pair("cam-max-parts").await;
    let size = 30 * MIB;
    let asset = app
        .create_asset(&tokens.access_token, "long.mp4", size)
        .await;
    assert_eq!(asset.upload_urls.len(), 2, "{:?}", asset.upload_urls);
    let token = &tokens.access_token;
    assert_part_url(&app, token, &asset.upload_urls[0], &asset.id, 1, 15 * MIB).await;
    assert_part_url(&app, token, &asset.upload_urls[1], &asset.id, 2, 15 * MIB).await;
}

#[tokio::test]
async fn part_plan_gives_a_file_under_5_mib_a_single_url() {
    let app = spawn_app_with(&["--part-size", PART_SIZE_FLAG]).await;
    let tokens = app.pair("cam-small").await;
    let size = FIVE_MIB - 1;
    let asset = app
        .create_asset(&tokens.access_token, "small.mp4", size)
        .await;
    assert_eq!(asset.upload_urls.len(), 1, "{:?}", asset.upload_urls);
    let token = &tokens.access_token;
    assert_part_url(&app, token, &asset.upload_urls[0], &asset.id, 1, size).await;
}

// ---------------------------------------------------------------------------------------
// 2. Tampered and expired URLs
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn tampered_upload_urls_are_403_and_the_genuine_url_still_works() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-tamper").await;
    let data = test_bytes(1000, 21);
    let asset = app
        .create_asset(&tokens.access_token, "tamper.mp4", data.len())
        .await;
    // A second genuine asset of the same size: its id is a real one, but not this URL's.
    let other = app
        .create_asset(&tokens.access_token, "other.mp4", data.len())
        .await;
    assert_eq!(asset.upload_urls.len(), 1);
    let url = &asset.upload_urls[0];
    if app.s3.is_some() {
        refuse_tampered_presigned_urls(url, &other.upload_urls[0]).await;
    } else {
        refuse_tampered_local_urls(&app, url, &other.id).await;
    }
    // Nothing was stored by the refused PUTs, and the real URL is good.
    let status = status_json(&app, &tokens.access_token, &asset.id).await;
    assert_eq!(status["received_parts"], json!([]), "{status}");
    let status = status_json(&app, &tokens.access_token, &other.id).await;
    assert_eq!(status["received_parts"], json!([]), "{status}");
    put_ok(&app, url, data.clone()).await;
    app.wait_complete(&tokens.access_token, &asset.id).await;
    assert_complete_with(&app, &asset.id, &data);
}

/// Tampered local-store URLs (for 1000 bytes) are 403 in the detailed shape.
async fn refuse_tampered_local_urls(app: &TestServer, url: &str, other_id: &str) {
    let sig = query_param(url, "sig").expect("sig");
    let expires: i64 = query_param(url, "expires")
        .expect("expires")
        .parse()
        .expect("expires is a number");

    let cases: Vec<(&str, String, usize)> = vec![
        (
            "one hex digit of sig changed",
            with_param(url, "sig", Some(&flip_hex_digit(&sig))),
            1000,
        ),
        ("size changed", with_param(url, "size", Some("1001")), 1001),
        ("size lowered", with_param(url, "size", Some("999")), 999),
        ("part number changed", with_segment(url, 2, "2"), 1000),
        ("asset id changed", with_segment(url, 1, other_id), 1000),
        ("sig dropped", with_param(url, "sig", None), 1000),
        ("sig empty", with_param(url, "sig", Some("")), 1000),
        (
            "expiry pushed later",
            with_param(url, "expires", Some(&(expires + 3600).to_string())),
            1000,
        ),
    ];
    for (what, tampered, len) in cases {
        assert_ne!(tampered, url, "{what}: the URL was not changed");
        let res = app.put_part(&tampered, test_bytes(len, 22)).await;
        assert_forbidden(res, what).await;
    }
}

/// Tampered presigned S3 URLs (signed for 1000 bytes), and the genuine one with a body of
/// another length, are 403 from S3.
async fn refuse_tampered_presigned_urls(url: &str, other_url: &str) {
    let param = |key: &str| query_param(url, key).unwrap_or_else(|| panic!("no {key}: {url}"));
    let sig = param("X-Amz-Signature");
    let expires: i64 = param("X-Amz-Expires").parse().expect("X-Amz-Expires");
    let other_upload = query_param(other_url, "uploadId").expect("uploadId");
    let cases: Vec<(&str, String)> = vec![
        (
            "one hex digit of the signature changed",
            with_param(url, "X-Amz-Signature", Some(&flip_hex_digit(&sig))),
        ),
        (
            "part number changed",
            with_param(url, "partNumber", Some("2")),
        ),
        (
            "object key changed to the other asset's",
            with_path(url, &url_path(other_url)),
        ),
        (
            "upload id changed to the other asset's",
            with_param(url, "uploadId", Some(&other_upload)),
        ),
        (
            "signature dropped",
            with_param(url, "X-Amz-Signature", None),
        ),
        (
            "expiry pushed later",
            with_param(url, "X-Amz-Expires", Some(&(expires + 3600).to_string())),
        ),
        (
            "length and ACL no longer signed",
            with_param(url, "X-Amz-SignedHeaders", Some("host")),
        ),
    ];
    for (what, tampered) in cases {
        assert_ne!(tampered, url, "{what}: the URL was not changed");
        assert_s3_forbidden(&tampered, RawBody::Sized(&test_bytes(1000, 22)), what).await;
    }
    // An empty signature makes the URL malformed rather than wrong: refused all the same.
    let empty = with_param(url, "X-Amz-Signature", Some(""));
    let (status, answer) =
        put_part_expecting_continue(&empty, RawBody::Sized(&test_bytes(1000, 22))).await;
    assert!(
        [StatusCode::BAD_REQUEST, StatusCode::FORBIDDEN].contains(&status),
        "signature empty: {answer}"
    );
    // The URL signs the length: the genuine URL refuses any other.
    for len in [1001, 999] {
        let what = format!("{len} bytes for a 1000-byte part");
        assert_s3_forbidden(url, RawBody::Sized(&test_bytes(len, 22)), &what).await;
    }
}

#[tokio::test]
async fn an_expired_upload_url_is_403_saying_it_expired() {
    let app = spawn_app_with(&["--upload-url-lifetime", "1"]).await;
    let tokens = app.pair("cam-expiry").await;
    let data = test_bytes(1000, 23);
    let asset = app
        .create_asset(&tokens.access_token, "late.mp4", data.len())
        .await;
    // Real time must pass for a URL to expire; this is the one wait that is not a sync.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    // On S3 the detail is the XML error's `<Message>Request has expired</Message>`.
    let detail = assert_put_refused(&app, &asset.upload_urls[0], data, "expired URL").await;
    assert!(
        detail.to_lowercase().contains("expired"),
        "the detail does not say the URL expired: {detail}"
    );
    let status = status_json(&app, &tokens.access_token, &asset.id).await;
    assert_eq!(status["received_parts"], json!([]), "{status}");
}

#[tokio::test]
async fn a_url_for_an_unknown_asset_id_is_403() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-unknown").await;
    let asset = app
        .create_asset(&tokens.access_token, "known.mp4", 1000)
        .await;
    let url = &asset.upload_urls[0];
    // A well-formed id no asset has, with the genuine query of a real URL ...
    let unknown = uuid::Uuid::now_v7().to_string();
    let (elsewhere, sig) = if app.s3.is_some() {
        // A presigned URL names an object, not an asset: one no asset has, in the same folder.
        let path = url_path(url);
        let folder = &path[..path.rfind('/').expect("a key in a folder")];
        (
            with_path(url, &format!("{folder}/{unknown}.mp4")),
            "X-Amz-Signature",
        )
    } else {
        (with_segment(url, 1, &unknown), "sig")
    };
    let bytes = test_bytes(1000, 24);
    assert_put_refused(
        &app,
        &elsewhere,
        bytes.clone(),
        "unknown asset id, real query",
    )
    .await;
    // ... and with a signature of the right length and alphabet.
    let forged = with_param(&elsewhere, sig, Some(&"ab".repeat(32)));
    assert_put_refused(&app, &forged, bytes, "unknown asset id, forged sig").await;
}

// ---------------------------------------------------------------------------------------
// 3. and 4. Part lengths and device headers
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_part_of_the_wrong_length_is_400_and_the_right_bytes_still_complete_the_asset() {
    let app = spawn_app_with(&["--part-size", PART_SIZE_FLAG]).await;
    let tokens = app.pair("cam-length").await;
    let data = test_bytes(10 * MIB + 10, 31);
    let asset = app
        .create_asset(&tokens.access_token, "length.mp4", data.len())
        .await;
    assert_eq!(asset.upload_urls.len(), 2);
    let part_len = data.len().div_ceil(2);
    let first = part_of(&data, part_len, 1);
    let url = &asset.upload_urls[0];
    put_ok(&app, &asset.upload_urls[1], part_of(&data, part_len, 2)).await;

    let short = first[..first.len() - 1].to_vec();
    let mut long = first.clone();
    long.push(0xAA);
    if app.s3.is_some() {
        // The presigned URL signs the exact Content-Length: S3 refuses any other length, and
        // a chunked body without one, as a signature mismatch.
        let short_chunks: [&[u8]; 2] = [&short[..MIB], &short[MIB..]];
        let long_chunks: [&[u8]; 2] = [&long[..MIB], &long[MIB..]];
        for (what, body) in [
            ("one byte short", RawBody::Sized(&short)),
            ("one byte long", RawBody::Sized(&long)),
            ("one byte short, chunked", RawBody::Chunked(&short_chunks)),
            ("one byte long, chunked", RawBody::Chunked(&long_chunks)),
        ] {
            assert_s3_forbidden(url, body, what).await;
        }
    } else {
        refuse_wrong_lengths_locally(&app, url, &short, &long).await;
    }
    let status = status_json(&app, &tokens.access_token, &asset.id).await;
    assert_eq!(status["state"], "uploading", "{status}");
    assert_eq!(status["received_parts"], json!([2]), "{status}");

    put_ok(&app, url, first).await;
    app.wait_complete(&tokens.access_token, &asset.id).await;
    assert_complete_with(&app, &asset.id, &data);
}

/// The local store answers 400 to a part one byte short or long, sized or chunked.
async fn refuse_wrong_lengths_locally(app: &TestServer, url: &str, short: &[u8], long: &[u8]) {
    for (what, res) in [
        ("one byte short", app.put_part(url, short.to_vec()).await),
        ("one byte long", app.put_part(url, long.to_vec()).await),
        (
            "one byte short, chunked",
            put_streamed(app, url, vec![short[..MIB].to_vec(), short[MIB..].to_vec()]).await,
        ),
        (
            "one byte long, chunked",
            put_streamed(app, url, vec![long[..MIB].to_vec(), long[MIB..].to_vec()]).await,
        ),
    ] {
        let (status, title, detail) = detailed_error(res).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {detail}");
        assert_eq!(title, "Bad Request", "{what}");
    }
}

#[tokio::test]
async fn parts_sent_with_the_filetype_and_a_private_acl_header_are_accepted() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-headers").await;
    let data = test_bytes(4096, 41);
    let res = app
        .create_asset_raw(
            &tokens.access_token,
            json!({"name": "sound.wav", "filesize": data.len(), "filetype": "audio/x-wav"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let asset: rushes_proto::asset::Asset = res.json().await.expect("asset body");
    assert_eq!(asset.upload_urls.len(), 1);
    let res = app
        .client
        .put(&asset.upload_urls[0])
        .header("content-type", "audio/x-wav")
        .header("x-amz-acl", "private")
        .body(data.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(res.status(), StatusCode::OK);
    app.wait_complete(&tokens.access_token, &asset.id).await;
    assert_complete_with(&app, &asset.id, &data);

    // The helper sends `video/mp4` + `x-amz-acl: private`, like cameras, to a video asset.
    let data = test_bytes(4096, 42);
    let asset = app
        .create_asset(&tokens.access_token, "clip.mp4", data.len())
        .await;
    put_ok(&app, &asset.upload_urls[0], data.clone()).await;
    app.wait_complete(&tokens.access_token, &asset.id).await;
    assert_complete_with(&app, &asset.id, &data);
}

// ---------------------------------------------------------------------------------------
// 5. and 6. Repeated PUTs
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_part_put_twice_keeps_the_second_copy() {
    let app = spawn_app_with(&["--part-size", PART_SIZE_FLAG]).await;
    let tokens = app.pair("cam-again").await;
    let size = 10 * MIB + 10;
    let asset = app
        .create_asset(&tokens.access_token, "again.mp4", size)
        .await;
    assert_eq!(asset.upload_urls.len(), 2);
    let part_len = size.div_ceil(2);
    let a = test_bytes(part_len, 51);
    let b = test_bytes(part_len, 52);
    let second = test_bytes(size - part_len, 53);
    assert_ne!(a, b);
    put_ok(&app, &asset.upload_urls[0], a).await;
    put_ok(&app, &asset.upload_urls[0], b.clone()).await;
    let status = status_json(&app, &tokens.access_token, &asset.id).await;
    assert_eq!(status["state"], "uploading", "{status}");
    assert_eq!(status["received_parts"], json!([1]), "{status}");
    put_ok(&app, &asset.upload_urls[1], second.clone()).await;
    app.wait_complete(&tokens.access_token, &asset.id).await;
    let expected = [b, second].concat();
    assert_complete_with(&app, &asset.id, &expected);
}

#[tokio::test]
async fn a_late_part_put_after_completion_is_200_and_changes_nothing() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-late").await;
    let data = test_bytes(100_000, 61);
    let asset = app
        .create_asset(&tokens.access_token, "late.mp4", data.len())
        .await;
    assert_eq!(asset.upload_urls.len(), 1);
    put_ok(&app, &asset.upload_urls[0], data.clone()).await;
    app.wait_complete(&tokens.access_token, &asset.id).await;
    let before = assert_complete_with(&app, &asset.id, &data);

    let late = test_bytes(data.len(), 62);
    if app.s3.is_some() {
        // Completion ended the multipart upload, so S3 refuses the part (as S3 and Frame.io
        // do); the local store drains it and answers 200. Either way nothing changes.
        let (status, answer) =
            put_part_expecting_continue(&asset.upload_urls[0], RawBody::Sized(&late)).await;
        assert!(status.is_client_error(), "a late part PUT to S3: {answer}");
    } else {
        let res = app.put_part(&asset.upload_urls[0], late).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let after = assert_complete_with(&app, &asset.id, &data);
    assert_eq!(after["path"], before["path"]);
    let status = status_json(&app, &tokens.access_token, &asset.id).await;
    assert_eq!(status["state"], "complete", "{status}");
    assert_eq!(status["missing"], json!([]), "{status}");
}

// ---------------------------------------------------------------------------------------
// 7. Automatic finalisation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn parts_put_in_reverse_order_are_joined_in_part_order_without_a_complete_call() {
    let app = spawn_app_with(&["--part-size", PART_SIZE_FLAG]).await;
    let tokens = app.pair("cam-reverse").await;
    let data = test_bytes(15 * MIB + 10, 71);
    let asset = app
        .create_asset(&tokens.access_token, "reverse.mp4", data.len())
        .await;
    assert_eq!(asset.upload_urls.len(), 3);
    let part_len = data.len().div_ceil(3);
    for number in [3, 2] {
        put_ok(
            &app,
            &asset.upload_urls[number - 1],
            part_of(&data, part_len, number),
        )
        .await;
    }
    let entry = app.asset_entry(&asset.id);
    assert_eq!(entry["state"], "uploading", "{entry}");
    assert_eq!(entry["sha256"], Value::Null, "{entry}");

    put_ok(&app, &asset.upload_urls[0], part_of(&data, part_len, 1)).await;
    app.wait_complete(&tokens.access_token, &asset.id).await;
    assert_complete_with(&app, &asset.id, &data);
}

// ---------------------------------------------------------------------------------------
// 8. The resume extension
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn resume_lists_received_parts_and_fresh_urls_for_the_missing_ones() {
    let app = spawn_app_with(&["--part-size", PART_SIZE_FLAG]).await;
    let tokens = app.pair("cam-resume").await;
    let data = test_bytes(20 * MIB + 3, 81);
    let asset = app
        .create_asset(&tokens.access_token, "resume.mp4", data.len())
        .await;
    assert_eq!(asset.upload_urls.len(), 4);
    let part_len = data.len().div_ceil(4);
    assert_eq!(part_len, 5 * MIB + 1);
    for number in [1, 3] {
        put_ok(
            &app,
            &asset.upload_urls[number - 1],
            part_of(&data, part_len, number),
        )
        .await;
    }

    let status = status_json(&app, &tokens.access_token, &asset.id).await;
    assert_eq!(status["id"], asset.id.as_str(), "{status}");
    assert_eq!(status["state"], "uploading", "{status}");
    assert_eq!(status["part_count"], 4, "{status}");
    assert_eq!(status["part_size"], part_len, "{status}");
    assert_eq!(status["received_parts"], json!([1, 3]), "{status}");
    let missing = status["missing"].as_array().expect("missing list");
    assert_eq!(missing.len(), 2, "{status}");
    assert_eq!(missing[0]["number"], 2, "{status}");
    assert_eq!(missing[0]["size"], part_len, "{status}");
    assert_eq!(missing[1]["number"], 4, "{status}");
    assert_eq!(missing[1]["size"], data.len() - 3 * part_len, "{status}");
    let fresh: Vec<String> = missing
        .iter()
        .map(|m| m["url"].as_str().expect("url").to_owned())
        .collect();
    let token = &tokens.access_token;
    assert_part_url(&app, token, &fresh[0], &asset.id, 2, part_len).await;
    assert_part_url(
        &app,
        token,
        &fresh[1],
        &asset.id,
        4,
        data.len() - 3 * part_len,
    )
    .await;

    put_ok(&app, &fresh[0], part_of(&data, part_len, 2)).await;
    put_ok(&app, &fresh[1], part_of(&data, part_len, 4)).await;
    app.wait_complete(&tokens.access_token, &asset.id).await;
    assert_complete_with(&app, &asset.id, &data);
    let status = status_json(&app, &tokens.access_token, &asset.id).await;
    assert_eq!(status["state"], "complete", "{status}");
    assert_eq!(status["missing"], json!([]), "{status}");
}

#[tokio::test]
async fn resume_of_another_devices_asset_is_404() {
    let app = spawn_app().await;
    let owner = app.pair("cam-owner").await;
    let stranger = app.pair("cam-stranger").await;
    let asset = app
        .create_asset(&owner.access_token, "mine.mp4", 1000)
        .await;
    let res = app.upload_status(&stranger.access_token, &asset.id).await;
    let (status, _, _) = detailed_error(res).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The owner does see it: the 404 is about ownership, not a broken route.
    let status = status_json(&app, &owner.access_token, &asset.id).await;
    assert_eq!(status["state"], "uploading", "{status}");
}

// ---------------------------------------------------------------------------------------
// 9. Real-time uploads
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_realtime_upload_with_gaps_and_out_of_order_parts_is_joined_in_ascending_order() {
    if local_store_only(
        "s3s-fs's CompleteMultipartUpload refuses part numbers with gaps (1, 3, 7), \
         which real S3 accepts",
    ) {
        return;
    }
    let app = spawn_app().await;
    let tokens = app.pair("cam-realtime").await;
    let token = &tokens.access_token;
    let res = app
        .create_asset_raw(
            token,
            json!({"is_realtime_upload": true, "filetype": "video/mp4", "extension": ".mp4"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("realtime asset JSON");
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 2, "{body}");
    assert!(keys.contains(&"id") && keys.contains(&"name"), "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    assert!(
        body["name"].as_str().expect("name").ends_with(".mp4"),
        "{body}"
    );

    let urls = register_ok(
        &app,
        token,
        &parts_path(&id),
        json!({"parts": [
            {"number": 3, "size": FIVE_MIB, "is_final": false},
            {"number": 1, "size": FIVE_MIB, "is_final": false},
        ]}),
    )
    .await;
    assert_eq!(urls.len(), 2);
    assert_part_url(&app, token, &urls[0], &id, 3, FIVE_MIB).await;
    assert_part_url(&app, token, &urls[1], &id, 1, FIVE_MIB).await;
    let total = 2 * FIVE_MIB + 1000;
    let last = register_ok(
        &app,
        token,
        &parts_path(&id),
        json!({
            "parts": [{"number": 7, "size": 1000, "is_final": true}],
            "asset_filesize": total,
            "asset_name": "take1.mp4",
        }),
    )
    .await;
    assert_eq!(last.len(), 1);
    assert_part_url(&app, token, &last[0], &id, 7, 1000).await;

    let part1 = test_bytes(FIVE_MIB, 91);
    let part3 = test_bytes(FIVE_MIB, 93);
    let part7 = test_bytes(1000, 97);
    put_ok(&app, &last[0], part7.clone()).await;
    put_ok(&app, &urls[0], part3.clone()).await;
    let entry = app.asset_entry(&id);
    assert_eq!(entry["state"], "uploading", "{entry}");
    put_ok(&app, &urls[1], part1.clone()).await;
    app.wait_complete(token, &id).await;

    let expected = [part1, part3, part7].concat();
    assert_eq!(expected.len(), total);
    let entry = assert_complete_with(&app, &id, &expected);
    let path = entry["path"].as_str().expect("path");
    assert!(path.ends_with("/take1.mp4"), "{entry}");
}

#[tokio::test]
async fn realtime_part_registration_answers_on_every_alias_route() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-aliases").await;
    let token = &tokens.access_token;
    let id = create_realtime(&app, token).await;

    let first = register_ok(
        &app,
        token,
        &format!("/v2/assets/{id}/realtime_upload/parts"),
        json!({"parts": [{"number": 1, "size": FIVE_MIB, "is_final": false}]}),
    )
    .await;
    assert_eq!(first.len(), 1);
    assert_part_url(&app, token, &first[0], &id, 1, FIVE_MIB).await;
    let second = register_ok(
        &app,
        token,
        &format!("/v2/devices/assets/{id}/realtime-upload-parts"),
        json!({
            "parts": [{"number": 2, "size": 10, "is_final": true}],
            "asset_filesize": FIVE_MIB + 10,
        }),
    )
    .await;
    assert_eq!(second.len(), 1);
    assert_part_url(&app, token, &second[0], &id, 2, 10).await;

    // Both registrations landed on the same asset: its bytes complete it.
    let data = test_bytes(FIVE_MIB + 10, 99);
    put_ok(&app, &first[0], data[..FIVE_MIB].to_vec()).await;
    put_ok(&app, &second[0], data[FIVE_MIB..].to_vec()).await;
    app.wait_complete(token, &id).await;
    assert_complete_with(&app, &id, &data);
}

// ---------------------------------------------------------------------------------------
// 10. Real-time validation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn realtime_parts_that_break_the_rules_are_422() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-rt-rules").await;
    let token = &tokens.access_token;
    let id = create_realtime(&app, token).await;
    let path = parts_path(&id);

    let too_many: Vec<Value> = (1..=10_001u32)
        .map(|n| json!({"number": n, "size": FIVE_MIB, "is_final": false}))
        .collect();
    let cases: Vec<(&str, &str, Value)> = vec![
        (
            "non-final part under 5 MiB",
            "parts",
            json!({"parts": [{"number": 1, "size": FIVE_MIB - 1, "is_final": false}]}),
        ),
        (
            "part number 0",
            "parts",
            json!({"parts": [{"number": 0, "size": FIVE_MIB, "is_final": false}]}),
        ),
        (
            "part number 10001",
            "parts",
            json!({"parts": [{"number": 10_001, "size": FIVE_MIB, "is_final": false}]}),
        ),
        (
            "final part without asset_filesize",
            "asset_filesize",
            json!({"parts": [{"number": 1, "size": 1000, "is_final": true}]}),
        ),
        (
            "10,001 parts in one list",
            "parts",
            json!({ "parts": too_many }),
        ),
        (
            "two final parts in one list",
            "parts",
            json!({
                "parts": [
                    {"number": 1, "size": FIVE_MIB, "is_final": true},
                    {"number": 2, "size": 1000, "is_final": true},
                ],
                "asset_filesize": FIVE_MIB + 1000,
            }),
        ),
    ];
    for (what, field, body) in &cases {
        let res = post_json(&app, token, &path, body).await;
        assert_invalid(res, field, what).await;
    }

    // None of that registered anything: a valid plan is still accepted.
    let urls = register_ok(
        &app,
        token,
        &path,
        json!({
            "parts": [
                {"number": 1, "size": FIVE_MIB, "is_final": false},
                {"number": 2, "size": 1000, "is_final": true},
            ],
            "asset_filesize": FIVE_MIB + 1000,
        }),
    )
    .await;
    assert_eq!(urls.len(), 2);
    let status = status_json(&app, token, &id).await;
    let numbers: Vec<&Value> = status["missing"]
        .as_array()
        .expect("missing")
        .iter()
        .map(|m| &m["number"])
        .collect();
    assert_eq!(numbers, [&json!(1), &json!(2)], "{status}");

    // With part 2 final, a second final part and a part after it are refused.
    let res = post_json(
        &app,
        token,
        &path,
        &json!({"parts": [{"number": 3, "size": 1000, "is_final": true}]}),
    )
    .await;
    assert_invalid(res, "parts", "a second final part").await;
    let res = post_json(
        &app,
        token,
        &path,
        &json!({"parts": [{"number": 3, "size": FIVE_MIB, "is_final": false}]}),
    )
    .await;
    assert_invalid(res, "parts", "a part after the final one").await;
    let status = status_json(&app, token, &id).await;
    assert_eq!(
        status["missing"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );

    // And the registered parts still complete the asset.
    let data = test_bytes(FIVE_MIB + 1000, 101);
    put_ok(&app, &urls[0], data[..FIVE_MIB].to_vec()).await;
    put_ok(&app, &urls[1], data[FIVE_MIB..].to_vec()).await;
    app.wait_complete(token, &id).await;
    assert_complete_with(&app, &id, &data);
}

#[tokio::test]
async fn realtime_registration_for_a_non_realtime_asset_is_422() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-rt-planned").await;
    let asset = app
        .create_asset(&tokens.access_token, "planned.mp4", 1000)
        .await;
    let res = post_json(
        &app,
        &tokens.access_token,
        &parts_path(&asset.id),
        &json!({"parts": [{"number": 1, "size": 1000, "is_final": true}], "asset_filesize": 1000}),
    )
    .await;
    let (status, _, detail) = detailed_error(res).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{detail}");
}

#[tokio::test]
async fn realtime_registration_for_another_devices_asset_is_404() {
    let app = spawn_app().await;
    let owner = app.pair("cam-rt-owner").await;
    let stranger = app.pair("cam-rt-stranger").await;
    let id = create_realtime(&app, &owner.access_token).await;
    let body = json!({"parts": [{"number": 1, "size": FIVE_MIB, "is_final": false}]});
    let res = post_json(&app, &stranger.access_token, &parts_path(&id), &body).await;
    let (status, _, detail) = detailed_error(res).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{detail}");
    // The owner may register the very same body.
    let urls = register_ok(&app, &owner.access_token, &parts_path(&id), body).await;
    assert_eq!(urls.len(), 1);
}
