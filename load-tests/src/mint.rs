//! Access tokens for seeded users, minted here instead of logging each one in.
//!
//! Logging in 10,000 users would cost the hub 10,000 argon2 verifications
//! (and the seeding 10,000 argon2 hashes), which is not what the notification
//! benchmarks measure. The benchmark scripts insert users and their sessions
//! with SQL instead and start the hub with a known `RELAIS_JWT_SECRET`; this
//! module signs access tokens for them with the same claims, algorithm and
//! library as the hub (`src/auth/tokens.rs`). The hub still checks every
//! token against its `sessions` row, so each seeded user needs one.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Issuer and token type the hub expects.
const ISSUER: &str = "relais";
const ACCESS: &str = "access";

/// Claims of a hub access token (mirror of the hub's `AccessClaims`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Tenant id (the tenant's UUID, not its slug).
    pub tid: String,
    /// Session id: a `sessions` row that must exist and not be revoked.
    pub sid: String,
    pub iss: String,
    pub typ: String,
    pub iat: u64,
    pub exp: u64,
}

/// Signs access tokens for the users of one tenant.
pub struct Minter {
    key: EncodingKey,
    tenant: String,
    ttl_secs: u64,
}

impl Minter {
    pub fn new(secret: &str, tenant: &str, ttl_secs: u64) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            tenant: tenant.to_owned(),
            ttl_secs,
        }
    }

    /// An access token of `user` in session `session`.
    pub fn token(&self, user: &str, session: &str) -> Result<String> {
        let iat = unix_secs();
        let claims = Claims {
            sub: user.to_owned(),
            tid: self.tenant.clone(),
            sid: session.to_owned(),
            iss: ISSUER.to_owned(),
            typ: ACCESS.to_owned(),
            iat,
            exp: iat + self.ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .context("sign access token")
    }
}

/// Verifies a token the hub issued (e.g. the admin's, from a login) with
/// `secret` and returns its claims. This both proves that the secret is the
/// hub's (otherwise every minted token would be refused, far less clearly)
/// and tells the tenant id and the admin's user id.
pub fn verify(secret: &str, token: &str) -> Result<Claims> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[ISSUER]);
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .context(
        "the hub's token does not verify with this JWT secret (is RELAIS_JWT_SECRET the hub's?)",
    )?;
    Ok(data.claims)
}

/// The claims of a token without checking its signature: for reading the
/// tenant and user id out of a token the hub just issued to us.
pub fn unverified_claims(token: &str) -> Result<Claims> {
    jsonwebtoken::dangerous::insecure_decode_claims::<Claims>(token)
        .context("the hub's access token is not a JWT with the expected claims")
}

/// The JWT secret, from the environment variable `name` (never from the
/// command line, where `ps` would show it).
pub fn secret_from_env(name: &str) -> Result<String> {
    let secret = std::env::var(name).with_context(|| {
        format!("environment variable {name} (the hub's JWT secret) is not set")
    })?;
    if secret.is_empty() {
        bail!("environment variable {name} is empty");
    }
    Ok(secret)
}

/// A user seeded for a benchmark, with the session its tokens name.
#[derive(Debug, Clone)]
pub struct SeededUser {
    pub id: String,
    pub session: String,
}

/// Reads a users file: one `USER_ID SESSION_ID` pair per line (separated by
/// a tab or spaces, as `psql -At -F $'\t'` or `sqlite3 -separator` print
/// them); blank lines and lines starting with `#` are skipped.
pub fn read_users(path: &Path) -> Result<Vec<SeededUser>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read users file {}", path.display()))?;
    let mut users = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some(id), Some(session), None) => users.push(SeededUser {
                id: id.to_owned(),
                session: session.to_owned(),
            }),
            _ => bail!(
                "{}:{}: expected `USER_ID SESSION_ID`, got {line:?}",
                path.display(),
                n + 1
            ),
        }
    }
    if users.is_empty() {
        bail!("users file {} lists no user", path.display());
    }
    Ok(users)
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

    #[test]
    fn minted_tokens_verify_with_the_hub_claims() {
        let minter = Minter::new(SECRET, "tenant-1", 60);
        let token = minter.token("user-1", "session-1").unwrap();
        let claims = verify(SECRET, &token).unwrap();
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.tid, "tenant-1");
        assert_eq!(claims.sid, "session-1");
        assert_eq!(claims.typ, "access");
        assert_eq!(claims.exp, claims.iat + 60);
        assert!(verify("another-secret-entirely-different-one", &token).is_err());
    }

    #[test]
    fn users_files_take_tabs_or_spaces_and_refuse_odd_lines() {
        let dir = std::env::temp_dir().join(format!("relais-load-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.tsv");
        std::fs::write(&path, "# header\nu1\ts1\n\nu2   s2\n").unwrap();
        let users = read_users(&path).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(
            (users[1].id.as_str(), users[1].session.as_str()),
            ("u2", "s2")
        );
        std::fs::write(&path, "u1 s1 extra\n").unwrap();
        assert!(read_users(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
