//! The OAuth endpoints: device code, token (POST and GET), revoke, with any query and body.
#![no_main]

use arbitrary::Arbitrary;
use axum::http::Method;
use libfuzzer_sys::fuzz_target;
use rushes_fuzz::{Body, Key, encode_component, harness};

#[derive(Debug, Arbitrary)]
struct Input {
    endpoint: u8,
    get: bool,
    query: Vec<(Key, String)>,
    body: Body,
    peer: u32,
}

fuzz_target!(|input: Input| {
    let path = ["/v2/auth/device/code", "/v2/auth/token", "/v2/auth/revoke"]
        [usize::from(input.endpoint) % 3];
    let mut uri = path.to_owned();
    for (i, (k, v)) in input.query.iter().enumerate() {
        uri.push(if i == 0 { '?' } else { '&' });
        uri.push_str(&encode_component(&k.name()));
        uri.push('=');
        uri.push_str(&encode_component(v));
    }
    let method = if input.get { Method::GET } else { Method::POST };
    harness().send(method, &uri, None, input.peer, input.body);
});
