//! The device API's bodies: asset creation (both routes), real-time part registration (all
//! three routes) and the upload status, with a valid token, a wrong one or none.
#![no_main]

use arbitrary::Arbitrary;
use axum::http::Method;
use libfuzzer_sys::fuzz_target;
use rushes_fuzz::{Body, encode_component, harness};

#[derive(Debug, Arbitrary)]
struct Input {
    route: u8,
    /// `None`: the paired device's real-time asset.
    asset: Option<String>,
    /// `None`: the paired device's token.
    token: Option<Option<String>>,
    body: Body,
}

fuzz_target!(|input: Input| {
    let h = harness();
    let asset = input
        .asset
        .as_deref()
        .map_or_else(|| h.asset_id.clone(), encode_component);
    let (method, uri) = match input.route % 6 {
        0 => (Method::POST, "/v2/devices/assets".to_owned()),
        1 => (Method::POST, "/v2/assets".to_owned()),
        2 => (
            Method::POST,
            format!("/v2/devices/assets/{asset}/realtime_upload/parts"),
        ),
        3 => (
            Method::POST,
            format!("/v2/assets/{asset}/realtime_upload/parts"),
        ),
        4 => (
            Method::POST,
            format!("/v2/devices/assets/{asset}/realtime-upload-parts"),
        ),
        _ => (Method::GET, format!("/v2/devices/assets/{asset}/upload")),
    };
    let token = match &input.token {
        None => Some(h.token.as_str()),
        Some(other) => other.as_deref(),
    };
    h.send(method, &uri, token, 1, input.body);
});
