//! Ergonode's `X-APP-TOKEN`: a JWT signed with HS256 and the App's shared secret. Only
//! HS256 is accepted (never `none`, RS*, ES*); the signature is checked in constant
//! time; `exp` is required and `nbf` honoured, both with a small leeway; the
//! `synchronization_id` claim must be a UUID.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use uuid::Uuid;

/// Clock difference tolerated between Ergonode and us.
pub const LEEWAY_SECS: i64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a JWT")]
    Malformed,
    #[error("only HS256 tokens are accepted")]
    Algorithm,
    #[error("the token's signature is wrong")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token lacks a valid `{0}` claim")]
    Claim(&'static str),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    exp: Option<i64>,
    nbf: Option<i64>,
    synchronization_id: Option<String>,
}

/// Verifies `token` against `secret` at time `now` (Unix seconds); returns the
/// synchronization id.
pub fn verify(token: &str, secret: &[u8], now: i64) -> Result<Uuid, TokenError> {
    let token = token.trim();
    let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (header, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
    if payload.contains('.') {
        return Err(TokenError::Malformed);
    }
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| TokenError::Malformed)
    };
    let header: Header =
        serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| TokenError::Signature)?;
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&decode(signature)?)
        .map_err(|_| TokenError::Signature)?;
    let claims: Claims =
        serde_json::from_slice(&decode(payload)?).map_err(|_| TokenError::Malformed)?;
    match claims.exp {
        None => return Err(TokenError::Claim("exp")),
        Some(exp) if now > exp.saturating_add(LEEWAY_SECS) => return Err(TokenError::Expired),
        Some(_) => {}
    }
    if claims
        .nbf
        .is_some_and(|nbf| now.saturating_add(LEEWAY_SECS) < nbf)
    {
        return Err(TokenError::NotYetValid);
    }
    claims
        .synchronization_id
        .and_then(|id| Uuid::parse_str(&id).ok())
        .ok_or(TokenError::Claim("synchronization_id"))
}

/// Signs claims with HS256 (Ergonode's side of the exchange: tests and simulators).
pub fn sign(claims: &serde_json::Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"a-shared-secret-of-the-ergonode-app";
    const NOW: i64 = 1_800_000_000;

    fn claims(exp: i64) -> serde_json::Value {
        json!({ "exp": exp, "synchronization_id": "2f7a4c1e-0b3d-4e5f-9a8b-7c6d5e4f3a2b" })
    }

    #[test]
    fn a_good_token_yields_its_synchronization_id() {
        let token = sign(&claims(NOW + 60), SECRET);
        assert_eq!(
            verify(&token, SECRET, NOW).unwrap().to_string(),
            "2f7a4c1e-0b3d-4e5f-9a8b-7c6d5e4f3a2b"
        );
    }

    #[test]
    fn wrong_secret_alg_none_expiry_and_missing_claims_are_rejected() {
        let token = sign(&claims(NOW + 60), SECRET);
        assert_eq!(
            verify(&token, b"another-secret", NOW),
            Err(TokenError::Signature)
        );
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims(NOW + 60).to_string())
        );
        assert_eq!(verify(&unsigned, SECRET, NOW), Err(TokenError::Algorithm));
        let rs = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode("{}")
        );
        assert_eq!(verify(&rs, SECRET, NOW), Err(TokenError::Algorithm));
        assert_eq!(
            verify(&sign(&claims(NOW - 31), SECRET), SECRET, NOW),
            Err(TokenError::Expired)
        );
        assert!(
            verify(&sign(&claims(NOW - 29), SECRET), SECRET, NOW).is_ok(),
            "within the leeway"
        );
        let no_sync = sign(&json!({ "exp": NOW + 60 }), SECRET);
        assert_eq!(
            verify(&no_sync, SECRET, NOW),
            Err(TokenError::Claim("synchronization_id"))
        );
        let no_exp = sign(
            &json!({ "synchronization_id": "2f7a4c1e-0b3d-4e5f-9a8b-7c6d5e4f3a2b" }),
            SECRET,
        );
        assert_eq!(verify(&no_exp, SECRET, NOW), Err(TokenError::Claim("exp")));
        let early = sign(
            &json!({ "exp": NOW + 600, "nbf": NOW + 300, "synchronization_id": "2f7a4c1e-0b3d-4e5f-9a8b-7c6d5e4f3a2b" }),
            SECRET,
        );
        assert_eq!(verify(&early, SECRET, NOW), Err(TokenError::NotYetValid));
        assert_eq!(verify("not.a-jwt", SECRET, NOW), Err(TokenError::Malformed));
        assert_eq!(verify("", SECRET, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn extreme_exp_and_nbf_claims_do_not_overflow() {
        let far = |exp: i64, nbf: i64| json!({ "exp": exp, "nbf": nbf, "synchronization_id": "2f7a4c1e-0b3d-4e5f-9a8b-7c6d5e4f3a2b" });
        assert!(verify(&sign(&far(i64::MAX, i64::MIN), SECRET), SECRET, NOW).is_ok());
        assert_eq!(
            verify(&sign(&far(i64::MIN, i64::MIN), SECRET), SECRET, NOW),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(&sign(&far(i64::MAX, i64::MAX), SECRET), SECRET, NOW),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn a_tampered_payload_fails_the_signature() {
        let token = sign(&claims(NOW + 60), SECRET);
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(claims(NOW + 6000).to_string());
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), SECRET, NOW),
            Err(TokenError::Signature)
        );
    }
}
