//! First start: with an empty store, create a tenant and its administrator so
//! a newcomer can sign in at once.

use secrecy::ExposeSecret;

use crate::{
    auth::{AuthService, Role, tokens::random_token},
    config::BootstrapConfig,
    error::ApiError,
};

/// What was created; the password is present only when it was generated
/// (it is printed once and never stored in clear).
#[derive(Debug)]
pub struct BootstrapReport {
    pub tenant: String,
    pub email: String,
    pub generated_password: Option<String>,
}

pub async fn ensure(
    auth: &AuthService,
    config: &BootstrapConfig,
) -> anyhow::Result<Option<BootstrapReport>> {
    if auth.tenant_count().await? > 0 {
        return Ok(None);
    }
    let tenant = match auth
        .create_tenant(&config.tenant_slug, "Default tenant")
        .await
    {
        Ok(t) => t,
        // Another node bootstrapped concurrently.
        Err(ApiError::Conflict(..)) => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("creating the bootstrap tenant: {e}")),
    };
    let (password, generated) = match &config.admin_password {
        Some(p) => (p.expose_secret().to_owned(), false),
        None => (random_token(18), true),
    };
    auth.create_user(
        &tenant.id,
        &config.admin_email,
        "Administrator",
        &password,
        &[Role::Admin],
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the bootstrap admin: {e}"))?;
    tracing::info!(tenant = %tenant.slug, email = %config.admin_email, "bootstrapped the first tenant and admin");
    Ok(Some(BootstrapReport {
        tenant: tenant.slug,
        email: config.admin_email.clone(),
        generated_password: generated.then_some(password),
    }))
}
