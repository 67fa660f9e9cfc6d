//! Access tokens (short-lived JWTs) and refresh tokens (opaque, stored hashed).
//!
//! Access tokens are HS256 JWTs verified with an explicit algorithm list of
//! one, so `alg: none` and algorithm-confusion tokens are refused by
//! construction. Refresh tokens are random strings; only their SHA-256 is
//! stored, so a database leak does not leak usable tokens.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{SessionId, TenantId, UserId};

const ISSUER: &str = "relais";
const ACCESS: &str = "access";
const VISITOR: &str = "visitor";

/// Clock skew tolerated when checking an access token's expiry, in seconds.
///
/// A token is refused once its `exp` is more than this far in the past. It
/// stays small on purpose: a socket closed with 4002 at expiry must not be
/// able to reconnect with the same token. Nodes are expected to keep their
/// clocks in sync (NTP); clients count from `expires_in`, not from their own
/// clock, so they need no allowance of their own.
pub const CLOCK_SKEW_LEEWAY_SECS: u64 = 1;

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: UserId,
    /// Tenant of the user: every request is scoped to it.
    pub tid: TenantId,
    /// Session (refresh-token family): revoking it invalidates the token.
    pub sid: SessionId,
    pub iss: String,
    pub typ: String,
    pub iat: u64,
    pub exp: u64,
}

/// Claims of a visitor token: an anonymous visitor of a web page, bound to
/// the page's origin. Its `typ` keeps it from passing as an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VisitorClaims {
    pub sub: UserId,
    pub tid: TenantId,
    /// The visitor session: ending it invalidates the token.
    pub sid: SessionId,
    /// The web origin the token may be used from.
    pub org: String,
    pub iss: String,
    pub typ: String,
    pub iat: u64,
    pub exp: u64,
}

/// Why a token was refused; each maps to a stable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
}

impl TokenError {
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Expired => "token_expired",
            TokenError::Invalid => "invalid_token",
        }
    }
}

/// Signing and verification keys for access tokens.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &SecretString) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = CLOCK_SKEW_LEEWAY_SECS;
        JwtKeys {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
        }
    }

    /// Issues an access token valid for `ttl_secs`; returns it with its expiry (Unix seconds).
    pub fn issue(
        &self,
        tenant: &TenantId,
        user: &UserId,
        session: &SessionId,
        ttl_secs: u64,
    ) -> anyhow::Result<(String, u64)> {
        let exp = unix_secs() + ttl_secs;
        Ok((self.issue_expiring_at(tenant, user, session, exp)?, exp))
    }

    /// Issues an access token that expires at `exp` (Unix seconds), which
    /// may be in the past: for tests and tools that need a token of a given
    /// age. The hub itself issues tokens with [`JwtKeys::issue`].
    pub fn issue_expiring_at(
        &self,
        tenant: &TenantId,
        user: &UserId,
        session: &SessionId,
        exp: u64,
    ) -> anyhow::Result<String> {
        let claims = AccessClaims {
            sub: user.clone(),
            tid: tenant.clone(),
            sid: session.clone(),
            iss: ISSUER.into(),
            typ: ACCESS.into(),
            iat: unix_secs().min(exp),
            exp,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// Issues a visitor token valid for `ttl_secs`, bound to `origin`.
    pub fn issue_visitor(
        &self,
        tenant: &TenantId,
        visitor: &UserId,
        session: &SessionId,
        origin: &str,
        ttl_secs: u64,
    ) -> anyhow::Result<(String, u64)> {
        let now = unix_secs();
        let claims = VisitorClaims {
            sub: visitor.clone(),
            tid: tenant.clone(),
            sid: session.clone(),
            org: origin.to_owned(),
            iss: ISSUER.into(),
            typ: VISITOR.into(),
            iat: now,
            exp: now + ttl_secs,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, claims.exp))
    }

    /// Verifies a visitor token: signature, issuer, expiry and type.
    pub fn verify_visitor(&self, token: &str) -> Result<VisitorClaims, TokenError> {
        let data = jsonwebtoken::decode::<VisitorClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid,
        })?;
        if data.claims.typ != VISITOR {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }

    /// Verifies signature, algorithm, issuer, expiry and token type.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        if data.claims.typ != ACCESS {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

pub use crate::ids::random_token;

/// A new opaque refresh token.
pub fn new_refresh_token() -> String {
    format!("rt_{}", random_token(32))
}

/// Hex SHA-256, the stored form of refresh tokens and API keys.
pub fn sha256_hex(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write;
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    fn keys() -> JwtKeys {
        JwtKeys::new(&SecretString::from(
            "a-test-secret-that-is-long-enough".to_owned(),
        ))
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let k = keys();
        let (token, exp) = k
            .issue(&"t1".into(), &"u1".into(), &"s1".into(), 60)
            .unwrap();
        let claims = k.verify(&token).unwrap();
        assert_eq!(claims.tid.as_str(), "t1");
        assert_eq!(claims.sid.as_str(), "s1");
        assert_eq!(claims.exp, exp);
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let other = JwtKeys::new(&SecretString::from(
            "another-secret-entirely-different".to_owned(),
        ));
        let (token, _) = other
            .issue(&"t1".into(), &"u1".into(), &"s1".into(), 60)
            .unwrap();
        assert_eq!(keys().verify(&token).unwrap_err(), TokenError::Invalid);
    }

    #[test]
    fn an_unsigned_none_token_is_invalid() {
        let (token, _) = keys()
            .issue(&"t1".into(), &"u1".into(), &"s1".into(), 60)
            .unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            keys().verify(&format!("{header}.{payload}.")).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn a_token_past_its_expiry_by_more_than_the_leeway_is_expired() {
        let k = keys();
        let ids = (&"t1".into(), &"u1".into(), &"s1".into());
        let stale = k
            .issue_expiring_at(
                ids.0,
                ids.1,
                ids.2,
                unix_secs() - CLOCK_SKEW_LEEWAY_SECS - 2,
            )
            .unwrap();
        assert_eq!(k.verify(&stale).unwrap_err(), TokenError::Expired);
        let fresh = k
            .issue_expiring_at(ids.0, ids.1, ids.2, unix_secs() + 30)
            .unwrap();
        assert!(k.verify(&fresh).is_ok());
    }

    #[test]
    fn hashes_are_stable_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
