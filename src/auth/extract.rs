//! Extractors that establish who calls a REST endpoint.
//!
//! A missing or bad credential is an error, never an anonymous caller:
//! endpoints that accept anonymous requests simply do not use these.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, FromRef, FromRequestParts},
    http::{HeaderMap, header, request::Parts},
};

use super::{AuthService, Caller, Permission, Principal};
use crate::{error::ApiError, ids::TenantId};

/// A signed-in user (access token in `Authorization: Bearer …`).
pub struct AuthUser(pub Principal);

/// A user or an API key (`Authorization: Bearer rls_…` or `X-Api-Key: rls_…`).
pub struct AnyCaller(pub Caller);

/// A tenant administrator: a user with `manage_tenant`, or a key with the `admin` scope.
pub struct TenantAdmin(pub Caller);

/// The address the request came from, when the server is run with connect
/// information (`into_make_service_with_connect_info::<SocketAddr>()`);
/// `None` otherwise. It is the TCP peer: behind a reverse proxy, the proxy.
/// Forwarding headers are not trusted.
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

/// API keys are recognisable by their prefix, so one header serves both kinds.
pub const API_KEY_PREFIX: &str = "rls_";

/// The credential of an `Authorization: Bearer <token>` header, trimmed.
///
/// The scheme is matched case-insensitively. `None` when the header is
/// missing, is not ASCII text, or names another scheme. The token itself is
/// not checked here: it may be an access token or an API key (see
/// [`API_KEY_PREFIX`]). Public so that every endpoint reading a bearer
/// credential (the REST extractors below, the streaming endpoints) parses it
/// the same way.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn api_key_header(parts: &Parts) -> Option<&str> {
    parts.headers.get("x-api-key")?.to_str().ok().map(str::trim)
}

/// Resolves a bearer credential of either kind. A refused one is counted
/// in `relais_auth_failures_total`.
pub async fn caller_from_credential(
    auth: &AuthService,
    credential: &str,
) -> Result<Caller, ApiError> {
    let caller = if credential.starts_with(API_KEY_PREFIX) {
        Caller::Key(counted(auth, auth.authenticate_key(credential).await)?)
    } else {
        Caller::User(counted(auth, auth.authenticate(credential).await)?)
    };
    match &caller {
        Caller::User(p) => record_caller(&p.tenant, &p.user),
        Caller::Key(k) => record_caller(&k.tenant, format_args!("key:{}", k.key)),
    }
    Ok(caller)
}

/// Counts a refused credential (a 401, not a store failure) as an
/// authentication failure, as the WebSocket and SSE endpoints do.
fn counted<T>(auth: &AuthService, result: Result<T, ApiError>) -> Result<T, ApiError> {
    if let Err(ApiError::Unauthorized(..)) = &result {
        auth.count_auth_failure();
    }
    result
}

/// Fills the `tenant` and `user` fields of the request's span (declared by
/// the trace layer in `app.rs`).
fn record_caller(tenant: &TenantId, who: impl std::fmt::Display) {
    let span = tracing::Span::current();
    span.record("tenant", tracing::field::display(tenant));
    span.record("user", tracing::field::display(who));
}

impl<S> FromRequestParts<S> for AuthUser
where
    Arc<AuthService>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers).ok_or(ApiError::Unauthenticated)?;
        if token.starts_with(API_KEY_PREFIX) {
            return Err(ApiError::forbidden(
                "this endpoint needs a user's access token, not an API key",
            ));
        }
        let auth = Arc::<AuthService>::from_ref(state);
        let principal = counted(&auth, auth.authenticate(token).await)?;
        record_caller(&principal.tenant, &principal.user);
        Ok(AuthUser(principal))
    }
}

impl<S> FromRequestParts<S> for AnyCaller
where
    Arc<AuthService>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let credential = api_key_header(parts)
            .or_else(|| bearer_token(&parts.headers))
            .ok_or(ApiError::Unauthenticated)?;
        let auth = Arc::<AuthService>::from_ref(state);
        Ok(AnyCaller(caller_from_credential(&auth, credential).await?))
    }
}

impl<S> FromRequestParts<S> for TenantAdmin
where
    Arc<AuthService>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let AnyCaller(caller) = AnyCaller::from_request_parts(parts, state).await?;
        if !caller.allowed(Permission::ManageTenant, super::Scope::Admin) {
            return Err(ApiError::forbidden(
                "tenant administration requires the admin role or an API key with the admin scope",
            ));
        }
        Ok(TenantAdmin(caller))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::bearer_token;

    fn with_authorization(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn bearer_token_reads_the_bearer_scheme_only() {
        assert_eq!(bearer_token(&HeaderMap::new()), None);
        assert_eq!(bearer_token(&with_authorization("Bearer abc")), Some("abc"));
        assert_eq!(
            bearer_token(&with_authorization("bearer  rls_x_y ")),
            Some("rls_x_y")
        );
        assert_eq!(bearer_token(&with_authorization("Basic dTpw")), None);
        assert_eq!(bearer_token(&with_authorization("Bearer")), None);
    }
}
