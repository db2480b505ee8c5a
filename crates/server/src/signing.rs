//! Signed, expiring part-upload URLs for the local store: the local counterpart of S3's
//! presigned `UploadPart` URLs. A URL names one part of one asset and its exact size, and
//! carries an HMAC-SHA256 over those and its expiry; nothing else authenticates the PUT.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::clock::Millis;
use crate::secrets::{hex, unhex};

/// What a part URL grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartGrant {
    pub asset_id: String,
    pub number: u32,
    pub size: u64,
    /// Unix seconds.
    pub expires: i64,
}

#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    Invalid,
    Expired,
}

impl UrlSigner {
    pub fn new(key: Vec<u8>) -> UrlSigner {
        UrlSigner { key }
    }

    fn mac(&self, grant: &PartGrant) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        let message = format!(
            "PUT\n{}\n{}\n{}\n{}",
            grant.asset_id, grant.number, grant.size, grant.expires
        );
        mac.update(message.as_bytes());
        mac
    }

    /// The query string (`size=..&expires=..&sig=..`) that authorises `grant`.
    pub fn query(&self, grant: &PartGrant) -> String {
        let sig = hex(&self.mac(grant).finalize().into_bytes());
        format!("size={}&expires={}&sig={sig}", grant.size, grant.expires)
    }

    /// Checks a signature in constant time, then the expiry.
    pub fn verify(&self, grant: &PartGrant, sig: &str, now: Millis) -> Result<(), SignatureError> {
        let sig = unhex(sig).ok_or(SignatureError::Invalid)?;
        self.mac(grant)
            .verify_slice(&sig)
            .map_err(|_| SignatureError::Invalid)?;
        if grant.expires.saturating_mul(1000) <= now {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> PartGrant {
        PartGrant {
            asset_id: "a1".into(),
            number: 3,
            size: 5_242_880,
            expires: 2_000_000_000,
        }
    }

    fn sig_of(query: &str) -> &str {
        query.rsplit_once("sig=").map(|(_, s)| s).unwrap()
    }

    #[test]
    fn signatures_bind_every_field_and_expire() {
        let signer = UrlSigner::new(b"k".to_vec());
        let q = signer.query(&grant());
        let sig = sig_of(&q);
        assert_eq!(signer.verify(&grant(), sig, 0), Ok(()));
        for tampered in [
            PartGrant {
                number: 4,
                ..grant()
            },
            PartGrant { size: 1, ..grant() },
            PartGrant {
                asset_id: "a2".into(),
                ..grant()
            },
            PartGrant {
                expires: 2_000_000_001,
                ..grant()
            },
        ] {
            assert_eq!(
                signer.verify(&tampered, sig, 0),
                Err(SignatureError::Invalid)
            );
        }
        assert_eq!(
            signer.verify(&grant(), "zz", 0),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            UrlSigner::new(b"other".to_vec()).verify(&grant(), sig, 0),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            signer.verify(&grant(), sig, 2_000_000_000_000),
            Err(SignatureError::Expired)
        );
    }
}
