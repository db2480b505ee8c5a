//! Black-box tests of `rushes serve` and `rushes device`: the real binary, HTTPS, temporary
//! data and state directories.
#![allow(dead_code)] // Not every test file uses every helper.
#![allow(clippy::unwrap_used)] // A test that cannot go on should panic.

mod helpers;

mod attacks;
mod auth;
mod basics;
mod browser;
mod browser_clip;
mod browser_scrub;
mod browser_socket;
mod camera_uploads;
mod capture;
mod channels;
mod client_basics;
mod client_faults;
mod client_resilience;
mod client_watch;
mod clock_skew;
mod concurrency;
mod devices_and_assets;
mod disk_full;
mod durability;
mod fault_proxy;
mod integrity;
mod limits;
mod operations;
mod s3;
mod scale_out;
mod scrub;
mod socket;
mod tolerance;
mod uploads;
mod web;
