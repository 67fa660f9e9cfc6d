//! Minimal REST client for the Relais API on top of hyper's connection-level
//! HTTP/1.1 client.
//!
//! The connection-level API (rather than a pooled client) is used on purpose:
//! the publish scenarios promise "C keep-alive connections", and owning each
//! connection makes that exact and lets a worker reconnect explicitly.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;

use crate::net::{self, Target};

/// Upper bound for one request/response round trip.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One keep-alive HTTP/1.1 connection to the server.
pub struct HttpConn {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

impl HttpConn {
    /// Connects and spawns the hyper connection driver. The driver task ends
    /// when the `HttpConn` (and with it the sender) is dropped.
    pub async fn connect(target: &Target) -> Result<Self> {
        let stream = net::connect(target, None, CONNECT_TIMEOUT).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            // Errors here surface again on the next request; nothing to do.
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            authority: target.authority.clone(),
        })
    }

    /// Whether the connection can still carry requests; a closed one must be
    /// replaced by a new `HttpConn`.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// POSTs a JSON body and returns status and full response body.
    pub async fn post_json(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        self.send(Method::POST, path, bearer, Some(body)).await
    }

    /// PATCHes a JSON body and returns status and full response body.
    pub async fn patch_json(
        &mut self,
        path: &str,
        bearer: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        self.send(Method::PATCH, path, bearer, Some(body)).await
    }

    /// GETs `path` and returns status and full response body.
    pub async fn get(&mut self, path: &str, bearer: Option<&str>) -> Result<(StatusCode, Bytes)> {
        self.send(Method::GET, path, bearer, None).await
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        let what = format!("{method} {path}");
        tokio::time::timeout(REQUEST_TIMEOUT, self.send_inner(method, path, bearer, body))
            .await
            .map_err(|_| anyhow!("{what} timed out"))?
            .with_context(|| what)
    }

    async fn send_inner(
        &mut self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority);
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = bearer {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .context("build request")?;
        self.sender.ready().await.context("connection not ready")?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("read response body")?
            .to_bytes();
        Ok((status, body))
    }
}

#[derive(Deserialize)]
struct LoginResponse {
    access_token: String,
}

#[derive(Deserialize)]
struct ApiKeyResponse {
    key: String,
}

/// Logs in to the `default` tenant and returns the access token.
pub async fn login(target: &Target, email: &str, password: &str) -> Result<String> {
    let mut conn = HttpConn::connect(target).await?;
    let body = json!({"tenant": "default", "email": email, "password": password});
    let (status, bytes) = conn
        .post_json("/api/v1/auth/login", None, Bytes::from(body.to_string()))
        .await?;
    if status != StatusCode::OK {
        bail!("login failed: {status} {}", String::from_utf8_lossy(&bytes));
    }
    let parsed: LoginResponse =
        serde_json::from_slice(&bytes).context("unexpected login response")?;
    Ok(parsed.access_token)
}

/// Creates an API key with the `publish` scope through the admin endpoint.
/// Publishing uses an API key (not the user token) because that is the path
/// backend services take in production.
pub async fn create_publish_key(target: &Target, admin_token: &str) -> Result<String> {
    create_api_key(target, admin_token, "load", "publish").await
}

/// Creates an API key named `name` with one scope through the admin endpoint.
pub async fn create_api_key(
    target: &Target,
    admin_token: &str,
    name: &str,
    scope: &str,
) -> Result<String> {
    let mut conn = HttpConn::connect(target).await?;
    let body = json!({"name": name, "scopes": [scope]});
    let (status, bytes) = conn
        .post_json(
            "/api/v1/admin/api-keys",
            Some(admin_token),
            Bytes::from(body.to_string()),
        )
        .await?;
    if !status.is_success() {
        bail!(
            "creating API key failed: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let parsed: ApiKeyResponse =
        serde_json::from_slice(&bytes).context("unexpected API key response")?;
    Ok(parsed.key)
}

/// Body for `POST /api/v1/publish`; `data` must already be valid JSON.
pub fn publish_body(channel: &str, data: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"channel":{},"data":{data}}}"#,
        serde_json::Value::from(channel)
    ))
}

/// Body for `POST /api/v1/publish/batch` with one publication per `data` item.
pub fn publish_batch_body<'a>(channel: &str, data: impl Iterator<Item = &'a str>) -> Bytes {
    let channel = serde_json::Value::from(channel).to_string();
    let mut out = String::from(r#"{"publications":["#);
    for (i, d) in data.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"channel":"#);
        out.push_str(&channel);
        out.push_str(r#","data":"#);
        out.push_str(d);
        out.push('}');
    }
    out.push_str("]}");
    Bytes::from(out)
}
