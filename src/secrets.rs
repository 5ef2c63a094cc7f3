//! Tokens: generated with a CSPRNG, stored only as SHA-256, compared in constant time.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub type TokenHash = [u8; 32];

/// A freshly issued token: the plaintext goes to the caller once and is never stored.
pub struct IssuedToken {
    pub plaintext: String,
    pub hash: TokenHash,
    /// The first characters, stored so operators can tell tokens apart.
    pub hint: String,
}

pub fn issue() -> IssuedToken {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let plaintext = format!("sl_{}", URL_SAFE_NO_PAD.encode(bytes));
    IssuedToken {
        hash: hash(&plaintext),
        hint: plaintext.chars().take(8).collect(),
        plaintext,
    }
}

pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two hashes.
pub fn hashes_match(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_differ_and_match_only_their_own_hash() {
        let a = issue();
        let b = issue();
        assert_ne!(a.plaintext, b.plaintext);
        assert!(hashes_match(&hash(&a.plaintext), &a.hash));
        assert!(!hashes_match(&hash(&a.plaintext), &b.hash));
        assert!(a.plaintext.starts_with(&a.hint));
    }
}
