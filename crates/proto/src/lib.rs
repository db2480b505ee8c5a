//! Wire types of the C2C device API (`shared/c2c-api.md`), shared by the Rushes server and
//! the device client so that both sides agree on field names by construction.
//!
//! Shapes and rules live here: request and response bodies, the two error body shapes,
//! scope names and the part planner both sides must compute alike; plus the one file
//! helper both sides need (atomic replacement of a file).

pub mod asset;
pub mod atomic_file;
pub mod auth;
pub mod device;
pub mod error;
pub mod parts;

/// Header carrying the device's firmware/software version on every call.
pub const CLIENT_VERSION_HEADER: &str = "x-client-version";
/// Version assumed when a device sends no `x-client-version`.
pub const DEFAULT_CLIENT_VERSION: &str = "0.0.0";
