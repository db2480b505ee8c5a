//! The local store's signed part URLs: any asset, part number and query (`size`, `expires`,
//! `sig`, repeated, missing or garbage), with a small body.
#![no_main]

use arbitrary::Arbitrary;
use axum::http::Method;
use libfuzzer_sys::fuzz_target;
use rushes_fuzz::{Body, encode_component, harness};

#[derive(Debug, Arbitrary)]
struct Input {
    /// `None`: the paired device's real-time asset.
    asset: Option<String>,
    number: String,
    query: Vec<(u8, String)>,
    raw_query: Option<String>,
    body: Vec<u8>,
}

const QUERY_KEYS: &[&str] = &["size", "expires", "sig", "X-Amz-Signature", "partNumber"];

fuzz_target!(|input: Input| {
    let h = harness();
    let asset = input
        .asset
        .as_deref()
        .map_or_else(|| h.asset_id.clone(), encode_component);
    let mut uri = format!("/upload/{asset}/{}", encode_component(&input.number));
    match &input.raw_query {
        Some(raw) => {
            uri.push('?');
            uri.push_str(raw);
        }
        None => {
            for (i, (k, v)) in input.query.iter().enumerate() {
                uri.push(if i == 0 { '?' } else { '&' });
                uri.push_str(QUERY_KEYS[usize::from(*k) % QUERY_KEYS.len()]);
                uri.push('=');
                uri.push_str(&encode_component(v));
            }
        }
    }
    let mut body = input.body;
    body.truncate(64 * 1024);
    h.send(
        Method::PUT,
        &uri,
        None,
        1,
        Body::Raw(Some("video/mp4".into()), body),
    );
});
