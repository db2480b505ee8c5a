//! The web UI's forms (sign-in, sign-out, code entry, the pairing decision, device actions)
//! as urlencoded or multipart bodies, without a session.
#![no_main]

use arbitrary::Arbitrary;
use axum::http::Method;
use libfuzzer_sys::fuzz_target;
use rushes_fuzz::{Body, encode_component, harness};

#[derive(Debug, Arbitrary)]
struct Input {
    route: u8,
    id: String,
    action: String,
    body: Body,
    peer: u32,
}

fuzz_target!(|input: Input| {
    let uri = match input.route % 5 {
        0 => "/login".to_owned(),
        1 => "/logout".to_owned(),
        2 => "/pair".to_owned(),
        3 => "/pair/decide".to_owned(),
        _ => format!(
            "/devices/{}/{}",
            encode_component(&input.id),
            encode_component(&input.action)
        ),
    };
    harness().send(Method::POST, &uri, None, input.peer, input.body);
});
