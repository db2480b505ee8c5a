//! OAuth scopes a device can hold.

use std::fmt;
use std::str::FromStr;

use rushes_proto::auth::{SCOPE_ASSET_CREATE, SCOPE_OFFLINE};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes {
    asset_create: bool,
    offline: bool,
}

impl Scopes {
    pub fn asset_create(&self) -> bool {
        self.asset_create
    }

    pub fn offline(&self) -> bool {
        self.offline
    }

    pub fn is_empty(&self) -> bool {
        !self.asset_create && !self.offline
    }

    /// `{"asset_create": true, "offline": true}` as `GET /v2/devices/me` shows it.
    pub fn as_map(&self) -> std::collections::BTreeMap<String, bool> {
        [
            (SCOPE_ASSET_CREATE, self.asset_create),
            (SCOPE_OFFLINE, self.offline),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// A space-separated scope list (RFC 6749 §3.3); any unknown scope is an error.
impl FromStr for Scopes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut scopes = Scopes::default();
        for word in s.split_ascii_whitespace() {
            match word {
                SCOPE_ASSET_CREATE => scopes.asset_create = true,
                SCOPE_OFFLINE => scopes.offline = true,
                other => return Err(other.to_owned()),
            }
        }
        Ok(scopes)
    }
}

impl TryFrom<String> for Scopes {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = [
            (SCOPE_ASSET_CREATE, self.asset_create),
            (SCOPE_OFFLINE, self.offline),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        f.write_str(&words.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_scopes_only() {
        let s: Scopes = "asset_create  offline".parse().unwrap();
        assert!(s.asset_create() && s.offline());
        assert_eq!(s.to_string(), "asset_create offline");
        assert_eq!("offline".parse::<Scopes>().unwrap().to_string(), "offline");
        assert_eq!(
            "asset_create admin".parse::<Scopes>(),
            Err("admin".to_owned())
        );
        assert!("".parse::<Scopes>().unwrap().is_empty());
    }
}
