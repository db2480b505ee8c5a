//! Domain types that parse rather than validate: once a value of one of these types exists,
//! it is known to be well formed, so handlers and the stores never re-check it.

pub mod names;
mod scopes;
pub mod timecode;

pub use names::{AssetName, MediaType};
pub use scopes::Scopes;
