//! Login throttling: consecutive wrong passwords lock an account, and a
//! source address, out for a while, growing with each further failure.
//!
//! Counters live in the store (`login_throttle`), so every node of a cluster
//! sees the same ones. A row holds the number of consecutive failures of one
//! key and the time of the last; the lock-out is derived from them when a
//! login is checked, so nothing has to expire it. Keys are SHA-256 hashes:
//! no email or address is stored in clear, and any input fits.
//!
//! * Per account (tenant and email, whether or not such a user exists, so
//!   the answer tells nothing about existence): after
//!   [`ACCOUNT_FREE_FAILURES`] consecutive failures, locked for
//!   [`FIRST_LOCKOUT`], doubling with each further failure up to
//!   [`MAX_LOCKOUT`]. A successful sign-in resets it.
//! * Per source address (IPv6 by /64 prefix): the same after
//!   [`ADDRESS_FREE_FAILURES`] failures, against one password tried on many
//!   accounts. A success does not reset it (an attacker could sign in to an
//!   account of their own in between); it is forgotten after
//!   [`FORGET_AFTER`] without failures. Only public addresses are counted:
//!   a peer on a loopback, private, shared (CGNAT) or link-local address is
//!   most likely a reverse proxy or load balancer that every client shares,
//!   and counting it would let anyone lock everyone out.
//!
//! A locked login is refused with 429 `too_many_attempts` and `Retry-After`
//! before the password is looked at, so it reveals nothing, and does not
//! count as a failure. Nobody is locked out for longer than [`MAX_LOCKOUT`]
//! at a time. Logins checked at the same moment on several nodes may each
//! get their verdict before the others' failures are recorded, so a burst
//! can exceed the limits by the number of requests in flight.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use sqlx::Row;

use super::AuthService;
use crate::{
    auth::tokens::sha256_hex,
    error::{ApiError, ApiResult},
    ids::now_millis,
};

/// Consecutive wrong passwords for one account before it is locked.
pub const ACCOUNT_FREE_FAILURES: i64 = 5;
/// Consecutive failed sign-ins from one address before it is locked.
pub const ADDRESS_FREE_FAILURES: i64 = 20;
/// The first lock-out; each further failure doubles it.
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(15);
/// The longest lock-out.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Failures are forgotten after this long without another one.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);

/// A sign-in refused because of earlier failures: 429 `too_many_attempts`
/// with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Seconds until the lock-out ends (at least 1).
    pub retry_after: u64,
}

/// Why a password check (login, password change) was refused.
#[derive(Debug, thiserror::Error)]
pub enum PasswordRefused {
    #[error("too many failed attempts; retry later")]
    Throttled(Throttled),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<sqlx::Error> for PasswordRefused {
    fn from(e: sqlx::Error) -> Self {
        PasswordRefused::Api(e.into())
    }
}

impl From<anyhow::Error> for PasswordRefused {
    fn from(e: anyhow::Error) -> Self {
        PasswordRefused::Api(e.into())
    }
}

impl IntoResponse for PasswordRefused {
    fn into_response(self) -> Response {
        match self {
            PasswordRefused::Api(e) => e.into_response(),
            PasswordRefused::Throttled(t) => {
                let mut response = ApiError::TooManyRequests(
                    "too_many_attempts",
                    format!(
                        "too many failed sign-in attempts; retry in {} s",
                        t.retry_after
                    ),
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(t.retry_after));
                response
            }
        }
    }
}

/// What a counter is kept for.
#[derive(Debug, Clone)]
pub(super) enum ThrottleKey {
    Account { tenant_slug: String, email: String },
    Address(IpAddr),
}

impl ThrottleKey {
    /// The key of a source address, or `None` for one that is not counted
    /// (not a public address).
    pub(super) fn address(ip: IpAddr) -> Option<Self> {
        let ip = address_block(ip);
        let shared = match ip {
            IpAddr::V4(v4) => {
                let [a, b, ..] = v4.octets();
                v4.is_loopback()
                    || v4.is_private()
                    || v4.is_link_local()
                    || v4.is_unspecified()
                    || (a == 100 && (64..128).contains(&b))
            }
            IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    || v6.is_unspecified()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
            }
        };
        (!shared).then_some(ThrottleKey::Address(ip))
    }

    pub(super) fn account(tenant_slug: &str, email: &str) -> Self {
        ThrottleKey::Account {
            tenant_slug: tenant_slug.trim().to_lowercase(),
            email: email.trim().to_lowercase(),
        }
    }

    fn stored(&self) -> String {
        match self {
            ThrottleKey::Account { tenant_slug, email } => {
                sha256_hex(&format!("account\0{tenant_slug}\0{email}"))
            }
            ThrottleKey::Address(ip) => sha256_hex(&format!("address\0{}", address_block(*ip))),
        }
    }

    fn free_failures(&self) -> i64 {
        match self {
            ThrottleKey::Account { .. } => ACCOUNT_FREE_FAILURES,
            ThrottleKey::Address(_) => ADDRESS_FREE_FAILURES,
        }
    }
}

/// The unit an address is counted by: an IPv4 address, or the /64 of an
/// IPv6 one (one host usually has a whole /64).
fn address_block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// How long `failures` consecutive failures lock a key out that allows
/// `free` of them: nothing below `free`, then [`FIRST_LOCKOUT`] doubling
/// per failure, never more than [`MAX_LOCKOUT`].
pub fn lockout(failures: i64, free: i64) -> Option<Duration> {
    if failures < free {
        return None;
    }
    let doublings = u32::try_from(failures - free).unwrap_or(u32::MAX).min(16);
    Some((FIRST_LOCKOUT * 2u32.pow(doublings)).min(MAX_LOCKOUT))
}

impl AuthService {
    /// Refuses when any of `keys` is locked out now.
    pub(super) async fn check_throttle(&self, keys: &[ThrottleKey]) -> Result<(), PasswordRefused> {
        let now = now_millis();
        let mut retry_after_ms: i64 = 0;
        for key in keys {
            let row =
                sqlx::query("SELECT failures, last_failure_at FROM login_throttle WHERE key = $1")
                    .bind(key.stored())
                    .fetch_optional(&self.store.pool)
                    .await?;
            let Some(row) = row else { continue };
            let failures: i64 = row.try_get("failures")?;
            let last: i64 = row.try_get("last_failure_at")?;
            if let Some(lock) = lockout(failures, key.free_failures()) {
                let until = last + lock.as_millis() as i64;
                retry_after_ms = retry_after_ms.max(until - now);
            }
        }
        if retry_after_ms > 0 {
            self.count_login_throttled();
            let retry_after = (retry_after_ms as u64).div_ceil(1000).max(1);
            return Err(PasswordRefused::Throttled(Throttled { retry_after }));
        }
        Ok(())
    }

    /// Counts one more consecutive failure for each of `keys`.
    pub(super) async fn record_failure(&self, keys: &[ThrottleKey]) -> ApiResult<()> {
        let now = now_millis();
        let forget_before = now - FORGET_AFTER.as_millis() as i64;
        for key in keys {
            sqlx::query(
                "INSERT INTO login_throttle (key, failures, last_failure_at) VALUES ($1, 1, $2)
                 ON CONFLICT (key) DO UPDATE SET
                    failures = CASE WHEN login_throttle.last_failure_at < $3 THEN 1
                                    ELSE login_throttle.failures + 1 END,
                    last_failure_at = $2",
            )
            .bind(key.stored())
            .bind(now)
            .bind(forget_before)
            .execute(&self.store.pool)
            .await?;
        }
        Ok(())
    }

    /// Forgets the failures of `key` after a right password, and the
    /// counters nobody has failed on for [`FORGET_AFTER`].
    pub(super) async fn clear_failures(&self, key: &ThrottleKey) -> ApiResult<()> {
        sqlx::query("DELETE FROM login_throttle WHERE key = $1 OR last_failure_at < $2")
            .bind(key.stored())
            .bind(now_millis() - FORGET_AFTER.as_millis() as i64)
            .execute(&self.store.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lockout_starts_after_the_free_failures_doubles_and_is_capped() {
        assert_eq!(lockout(4, 5), None);
        assert_eq!(lockout(5, 5), Some(Duration::from_secs(15)));
        assert_eq!(lockout(6, 5), Some(Duration::from_secs(30)));
        assert_eq!(lockout(9, 5), Some(Duration::from_secs(240)));
        assert_eq!(lockout(10, 5), Some(Duration::from_secs(480)));
        assert_eq!(lockout(11, 5), Some(MAX_LOCKOUT));
        assert_eq!(lockout(i64::MAX, 5), Some(MAX_LOCKOUT));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_bit_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_block(a), address_block(b));
        assert_ne!(address_block(a), address_block(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            address_block(mapped),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn only_public_addresses_are_counted() {
        for shared in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.9",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(
                ThrottleKey::address(shared.parse().unwrap()).is_none(),
                "{shared}"
            );
        }
        for public in ["203.0.113.9", "2001:db8::1", "::ffff:198.51.100.1"] {
            assert!(
                ThrottleKey::address(public.parse().unwrap()).is_some(),
                "{public}"
            );
        }
    }
}
