//! The Rushes server: the C2C device API over HTTPS, backed by a metadata store (SQL) and a
//! media store (files). See ARCHITECTURE.md at the repository root for the map.
//!
//! The `rushes` binary (crate `rushes`) drives this library: `serve` builds an
//! [`startup::Application`], the admin commands call [`admin::Admin`].

pub mod admin;
pub mod capture;
pub mod clock;
pub mod config;
pub mod db;
pub mod domain;
mod error;
mod extract;
mod finalise;
pub mod media;
mod part_watch;
pub mod passwords;
mod phoenix;
mod routes;
pub mod scrub;
pub mod secrets;
mod signing;
pub mod startup;
mod state;
mod status_feed;
mod throttle;
pub mod tls;
mod transport;
mod web;

pub use config::Config;
pub use startup::Application;
