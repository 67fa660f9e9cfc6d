//! The `relais` binary: configuration, telemetry, and the subcommands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use relais::{
    app::{self, Application},
    auth::{
        AuthService, Role, Scope,
        service::UserChanges,
        tokens::{JwtKeys, random_token},
    },
    bus::memory::MemoryBroker,
    config::Config,
    gateway::hub::Hub,
    metrics::Metrics,
};
use secrecy::SecretString;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "relais",
    version,
    about = "Self-hosted real-time collaboration and notification hub"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage API keys.
    ApiKey {
        #[command(subcommand)]
        action: ApiKeyAction,
    },
}

#[derive(Subcommand)]
enum TenantAction {
    /// Create a tenant.
    Create {
        /// Short identifier used at login (a-z, 0-9, -, _).
        slug: String,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a user; prints a generated password if none is given.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        /// Comma-separated: admin, moderator, broadcaster, editor, member, client.
        #[arg(long, default_value = "member")]
        roles: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Read from RELAIS_NEW_USER_PASSWORD if set; generated otherwise.
        #[arg(long, env = "RELAIS_NEW_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Set a user's password and end every session of the user; prints a
    /// generated password if none is given.
    SetPassword {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        /// Read from RELAIS_NEW_USER_PASSWORD if set; generated otherwise.
        #[arg(long, env = "RELAIS_NEW_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
}

#[derive(Subcommand)]
enum ApiKeyAction {
    /// Create an API key and print it once.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// Comma-separated: publish, notify, projects, admin.
        #[arg(long, default_value = "publish")]
        scopes: String,
    },
}

/// Makes the allocator give large blocks back to the system when freed.
///
/// glibc serves an allocation above a threshold with its own mapping and
/// unmaps it on free, but it raises that threshold to the size of each
/// such block freed, so from the second one on, large blocks come from the
/// per-thread arenas and stay resident. Each password hash takes 19 MiB:
/// ten sign-ins in a row left the hub at 231 MB resident instead of 36 MB
/// (measured). A fixed threshold keeps the first behaviour; at 1 MiB it
/// concerns only rare, large, short-lived blocks.
fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tuning parameter of the allocator; it
    // is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    return_large_allocations();
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("relais: {e}");
            return ExitCode::from(2);
        }
    };
    relais::telemetry::init(&config.log_filter, config.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relais: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relais: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            app::open_store(&config).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Tenant {
            action: TenantAction::Create { slug, name },
        } => {
            let auth = admin_service(&config).await?;
            let tenant = auth
                .create_tenant(&slug, name.as_deref().unwrap_or(&slug))
                .await?;
            println!("tenant created: slug={} id={}", tenant.slug, tenant.id);
            Ok(())
        }
        Command::User {
            action:
                UserAction::Create {
                    tenant,
                    email,
                    roles,
                    name,
                    password,
                },
        } => {
            let auth = admin_service(&config).await?;
            let tenant = existing_tenant(&auth, &tenant).await?;
            let roles = roles
                .split(',')
                .map(|r| r.trim().parse::<Role>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let generated = password.is_none();
            let password = password.unwrap_or_else(|| random_token(18));
            let user = auth
                .create_user(&tenant.id, &email, &name, &password, &roles)
                .await?;
            println!(
                "user created: id={} email={} roles={}",
                user.id,
                user.email,
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            if generated {
                println!("password (shown once): {password}");
            }
            Ok(())
        }
        Command::User {
            action:
                UserAction::SetPassword {
                    tenant,
                    email,
                    password,
                },
        } => {
            let auth = admin_service(&config).await?;
            let tenant = existing_tenant(&auth, &tenant).await?;
            let user = auth
                .find_user_by_email(&tenant.id, &email)
                .await
                .map_err(|e| match e {
                    relais::error::ApiError::NotFound(_) => {
                        anyhow::anyhow!("no user `{email}` in tenant `{}`", tenant.slug)
                    }
                    e => e.into(),
                })?;
            let generated = password.is_none();
            let password = password.unwrap_or_else(|| random_token(18));
            auth.update_user(
                &tenant.id,
                &user.id,
                UserChanges {
                    password: Some(password.clone()),
                    ..UserChanges::default()
                },
            )
            .await?;
            println!(
                "password set: id={} email={} (every session of the user ended)",
                user.id, user.email
            );
            if generated {
                println!("password (shown once): {password}");
            }
            Ok(())
        }
        Command::ApiKey {
            action:
                ApiKeyAction::Create {
                    tenant,
                    name,
                    scopes,
                },
        } => {
            let auth = admin_service(&config).await?;
            let tenant = existing_tenant(&auth, &tenant).await?;
            let scopes = scopes
                .split(',')
                .map(|s| {
                    Scope::parse(s.trim()).ok_or_else(|| {
                        anyhow::anyhow!("unknown scope `{s}` (publish, notify, projects, admin)")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let key = auth.create_api_key(&tenant.id, &name, &scopes).await?;
            println!("api key created: id={} name={}", key.view.id, key.view.name);
            println!("key (shown once): {}", key.key);
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
    let app = Application::build(config).await?;
    let addr = app.local_addr();
    println!("Relais listening on http://{addr}");
    println!(
        "  WebSocket: ws://{addr}/ws    REST: http://{addr}/api/v1/    OpenAPI: http://{addr}/api/v1/openapi.json"
    );
    if let Some(report) = app.bootstrap_report() {
        println!(
            "Bootstrap: tenant `{}`, admin {}",
            report.tenant, report.email
        );
        match &report.generated_password {
            Some(p) => {
                println!("  admin password (shown once, change it): {p}");
                println!(
                    "  to change it: PATCH /api/v1/me/password, or `relais user set-password --tenant {} --email {}`",
                    report.tenant, report.email
                );
            }
            None => println!("  admin password: from RELAIS_BOOTSTRAP_ADMIN_PASSWORD"),
        }
    }
    app.run_until_stopped(shutdown_signal()).await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
}

async fn existing_tenant(
    auth: &AuthService,
    slug: &str,
) -> anyhow::Result<relais::auth::service::TenantView> {
    auth.find_tenant(slug)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant `{slug}`"))
}

/// The auth service for one-shot admin commands. It holds no connections;
/// in cluster mode (`REDIS_URL` set) its revocations still reach every
/// running node through Redis, so a password set here closes the user's
/// live sockets at once.
async fn admin_service(config: &Config) -> anyhow::Result<AuthService> {
    let store = app::open_store(config).await?;
    let metrics = Arc::new(Metrics::default());
    let hub = Arc::new(Hub::new(metrics.clone()));
    let control = Arc::new(relais::bus::ControlRouter::default());
    let broker: Arc<dyn relais::bus::Broker> = match &config.redis_url {
        // Its tasks end with the process: the command is one-shot.
        Some(url) => relais::bus::redis::RedisBroker::connect(
            secrecy::ExposeSecret::expose_secret(url),
            &config.redis_prefix,
            config.presence_ttl,
            hub,
            control,
            metrics,
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .map_err(|e| e.context("connecting to Redis (REDIS_URL)"))?,
        None => Arc::new(MemoryBroker::new(hub, control, 1, metrics)),
    };
    // Tokens are not issued by admin commands; any key will do.
    let keys = JwtKeys::new(&SecretString::from(random_token(32)));
    Ok(AuthService::new(
        store,
        keys,
        config.access_token_ttl,
        config.refresh_token_ttl,
        broker,
        Arc::default(),
    ))
}
