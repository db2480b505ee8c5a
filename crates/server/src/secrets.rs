//! Bearer secrets (access tokens, refresh tokens, device codes): generation and hashing.
//!
//! The database only ever sees `hash(secret)`, so a copy of it cannot be replayed against
//! the API. The secrets carry 256 random bits, so a plain SHA-256 (no salt, no stretching)
//! is enough and keeps lookups a single indexed equality.

use rand::{Rng, RngExt};
use sha2::{Digest, Sha256};

/// A new random secret: 32 bytes, hex encoded.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// The stored form of a secret.
pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// A 6-digit user code (RFC 8628 §6.1), leading zeros kept.
pub fn user_code() -> String {
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_and_hash_stably() {
        let a = generate();
        assert_eq!(a.len(), 64);
        assert_ne!(a, generate());
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), a);
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn user_codes_are_six_digits() {
        for _ in 0..1000 {
            let code = user_code();
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
    }
}
