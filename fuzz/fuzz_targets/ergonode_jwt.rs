//! The Ergonode route's `X-APP-TOKEN` check. Even first byte: the rest is a token, which
//! must never panic the verifier. Odd first byte: the rest is a claims object we sign;
//! our own algorithm and signature must always pass, whatever the claims say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncline::app_token::{self, TokenError};

const SECRET: &[u8] = b"syncline-fuzz-ergonode-secret";
const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(token) = std::str::from_utf8(rest) {
            let _ = app_token::verify(token, SECRET, NOW);
        }
        return;
    }
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let token = app_token::sign(&claims, SECRET);
    let verdict = app_token::verify(&token, SECRET, NOW);
    assert!(
        !matches!(verdict, Err(TokenError::Algorithm | TokenError::Signature)),
        "our own token was refused ({verdict:?}): {token}"
    );
});
