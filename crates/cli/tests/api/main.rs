//! Black-box tests of `rushes serve`: the real binary, HTTPS, a temporary data directory.
#![allow(dead_code)] // Not every test file uses every helper.

mod helpers;

mod auth;
mod basics;
mod concurrency;
mod devices_and_assets;
mod durability;
mod operations;
mod uploads;
