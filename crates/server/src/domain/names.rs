//! Names that end up as path components in the media store. A name from the network is a
//! display name, never a path: it can never climb out of the folder it is put in.

use std::fmt;

/// An asset's file name, checked: one path component, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetName(String);

/// Longest accepted asset name, in bytes (common file systems' limit, less room for a
/// clash suffix).
const MAX_NAME_BYTES: usize = 240;

impl AssetName {
    pub fn parse(raw: &str) -> Result<AssetName, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("must not be empty".into());
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(format!("must be at most {MAX_NAME_BYTES} bytes"));
        }
        if name.contains(['/', '\\']) {
            return Err("must be a file name, not a path (no '/' or '\\')".into());
        }
        if name.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        if name.chars().all(|c| c == '.') {
            return Err("must not be '.' or '..'".into());
        }
        Ok(AssetName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The extension with its dot (`.mov`), if any.
    pub fn extension(&self) -> Option<&str> {
        let dot = self.0.rfind('.').filter(|&i| i > 0)?;
        Some(&self.0[dot..])
    }

    /// The name for the `n`th clash in a folder: `clip (2).mov`.
    pub fn with_suffix(&self, n: u32) -> String {
        if n <= 1 {
            return self.0.clone();
        }
        match self.extension() {
            Some(ext) => format!("{} ({n}){ext}", &self.0[..self.0.len() - ext.len()]),
            None => format!("{} ({n})", self.0),
        }
    }
}

impl fmt::Display for AssetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Turns any text (a device or project name) into one safe folder name, replacing what
/// cannot stand in a path component instead of refusing it.
pub fn folder_name(raw: &str) -> String {
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\') {
                '_'
            } else {
                c
            }
        })
        .take(100)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        return "_".to_owned();
    }
    // A leading dot would hide the folder from the operator's file browser.
    match cleaned.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None => cleaned.to_owned(),
    }
}

/// The folder an asset lands in by type: `VIDEO`, `AUDIO` or `DATA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    Video,
    Audio,
    Data,
}

impl MediaType {
    pub fn of_mime(mime: &str) -> MediaType {
        let top = mime.split('/').next().unwrap_or("").to_ascii_lowercase();
        match top.as_str() {
            "video" => MediaType::Video,
            "audio" => MediaType::Audio,
            _ => MediaType::Data,
        }
    }

    pub fn folder(self) -> &'static str {
        match self {
            MediaType::Video => "VIDEO",
            MediaType::Audio => "AUDIO",
            MediaType::Data => "DATA",
        }
    }

    /// The device-level `asset_type` of the API (`video`, `audio`, `data`).
    pub fn api_name(self) -> &'static str {
        match self {
            MediaType::Video => "video",
            MediaType::Audio => "audio",
            MediaType::Data => "data",
        }
    }
}

/// Checks a MIME type as a device sends it (`video/quicktime`): `type/subtype`, printable
/// ASCII, bounded.
pub fn parse_mime(raw: &str) -> Result<String, String> {
    let mime = raw.trim();
    let ok = mime.len() <= 255
        && mime
            .split_once('/')
            .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty())
        && mime.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        Ok(mime.to_ascii_lowercase())
    } else {
        Err("must be a MIME type such as video/mp4".into())
    }
}

/// The MIME type to assume from a file name when the device sent none.
pub fn mime_from_name(name: &str) -> String {
    mime_guess::from_path(name)
        .first_or_octet_stream()
        .essence_str()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_cannot_be_paths() {
        for bad in [
            "",
            "  ",
            ".",
            "..",
            "...",
            "../../etc/passwd",
            "a/b",
            "a\\b",
            "a\0b",
            "a\nb",
        ] {
            assert!(AssetName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(AssetName::parse(&"x".repeat(241)).is_err());
        let name = AssetName::parse(" A001C003.MOV ").unwrap();
        assert_eq!(name.as_str(), "A001C003.MOV");
        assert_eq!(name.extension(), Some(".MOV"));
        assert_eq!(name.with_suffix(1), "A001C003.MOV");
        assert_eq!(name.with_suffix(2), "A001C003 (2).MOV");
        assert_eq!(
            AssetName::parse("README").unwrap().with_suffix(3),
            "README (3)"
        );
        assert_eq!(AssetName::parse(".hidden").unwrap().extension(), None);
    }

    #[test]
    fn folder_names_are_single_safe_components() {
        assert_eq!(folder_name("A-cam"), "A-cam");
        assert_eq!(folder_name("../../etc"), "_._.._etc");
        assert_eq!(folder_name(".."), "_");
        assert_eq!(folder_name(""), "_");
        assert_eq!(folder_name(".cam"), "_cam");
        assert_eq!(folder_name("a\0b/c"), "a_b_c");
        assert_eq!(folder_name(&"é".repeat(300)).chars().count(), 100);
    }

    #[test]
    fn media_types_follow_mime() {
        assert_eq!(MediaType::of_mime("video/mp4").folder(), "VIDEO");
        assert_eq!(MediaType::of_mime("Audio/wav").folder(), "AUDIO");
        assert_eq!(MediaType::of_mime("application/pdf").folder(), "DATA");
        assert_eq!(mime_from_name("x.mov"), "video/quicktime");
        assert_eq!(mime_from_name("x.unknownext"), "application/octet-stream");
        assert!(parse_mime("video/mp4").is_ok());
        assert!(parse_mime("video").is_err());
        assert!(parse_mime("video/\u{0}").is_err());
    }
}
