//! Rushes device client: turn any computer, recorder or camera app into a C2C device.
//!
//! It speaks only the public C2C device API (plus the resume extension), so it works
//! against any compatible server. The surface is small:
//!
//! - [`pair`] runs the OAuth device grant (RFC 8628) and returns a paired [`Device`];
//! - [`Device::open`] reopens a paired device from its state directory;
//! - [`Device::enqueue`] + [`Device::upload_queue`] upload files, resuming after a crash
//!   from the last acknowledged part;
//! - [`Device::watch`] uploads every new file of a folder, as a real-time upload while a
//!   file is still being written;
//! - [`Device::events`] is a stream of [`Event`]s for progress displays.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rushes_client::Error> {
//! use rushes_client::{Device, PairOptions};
//! let state = std::path::Path::new("/var/lib/my-recorder/rushes");
//! let device = match Device::open(state).await {
//!     Ok(device) => device,
//!     Err(_) => {
//!         let options = PairOptions::new("https://rushes.local:8443", state);
//!         rushes_client::pair(options, |code| println!("enter {} at {}", code.user_code, code.verification_uri)).await?
//!     }
//! };
//! device.enqueue(&["/media/card/A001C001.MOV".into()]).await?;
//! let summary = device.upload_queue().await?;
//! println!("{} uploaded, {} failed", summary.completed, summary.failed);
//! # Ok(()) }
//! ```

mod api;
mod credentials;
mod error;
mod events;
mod journal;
mod pairing;
mod session;
mod status_socket;
mod upload;
mod watch;

pub use api::ServerOptions;
pub use credentials::DeviceIdentity;
pub use error::Error;
pub use events::{Event, FileState};
pub use pairing::{PairOptions, PairingCode, pair};
pub use status_socket::StatusSocket;
pub use upload::{Device, Enqueued, Status, Summary, UploadOptions};
pub use watch::WatchOptions;

/// The `client_secret` of this software as a device model. Not a secret: it ships in the
/// binary, as camera makers' secrets ship in firmware (RFC 8628 §5.6).
pub const CLIENT_SECRET: &str = "rushes-device-client";
/// What this client reports as `x-client-version`.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");
