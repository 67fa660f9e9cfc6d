//! Building and running the application: the caller binds the listener (tests
//! bind port 0) and passes a shutdown future; every background task stops
//! with it.

use std::{future::Future, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Router, extract::DefaultBodyLimit, middleware, routing::get, serve::ListenerExt};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::{
    api::{self, console, cors, idempotency::Idempotency},
    auth::{self, AuthService, key_cache::KeyCache, tokens::JwtKeys},
    bootstrap::{self, BootstrapReport},
    bus::{Broker, ControlRouter, Revocation, memory::MemoryBroker, redis::RedisBroker},
    channels::ChannelRegistry,
    config::Config,
    email::{self, transport::Transport, worker::Mailer},
    error::{self, ApiError},
    gateway::{Extensions, Gateway, hub::Hub, sse, ws},
    metrics::{self, Metrics},
    module::{Context as ModuleContext, Module, ModuleFactory},
    notify::{self, Notify},
    projects,
    store::Store,
};

/// Largest REST request body.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

pub use crate::state::AppState;

pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// The in-process broker, when not in cluster mode (it evicts idle channels).
    memory: Option<Arc<MemoryBroker>>,
    /// Stops the bus's background tasks once the server has drained.
    bus_stop: CancellationToken,
    config: Config,
    bootstrap: Option<BootstrapReport>,
    /// The domain modules, for their routes and workers.
    modules: Vec<Arc<dyn Module>>,
}

/// The store, migrated. Used by `serve` and by the admin commands.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(config.database_url.as_ref(), &config.data_dir).await?;
    store.migrate().await?;
    Ok(store)
}

impl Application {
    /// Binds `config.bind` and builds the application with its built-in modules.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = bind(config.bind).with_context(|| format!("binding {}", config.bind))?;
        Self::build_with(config, listener, Vec::new()).await
    }

    /// Builds the application on an already bound listener, with the
    /// built-in modules and `extra` ones (tests add theirs this way).
    pub async fn build_with(
        config: Config,
        listener: TcpListener,
        extra: Vec<ModuleFactory>,
    ) -> anyhow::Result<Self> {
        let store = open_store(&config).await?;
        let secret = jwt_secret(&config)?;
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(metrics.clone()));
        let bus_stop = CancellationToken::new();
        let key_cache = Arc::new(KeyCache::default());
        let control = Arc::new(ControlRouter::default());
        {
            let hub = hub.clone();
            let key_cache = key_cache.clone();
            control.on::<Revocation>(move |revocation| match revocation {
                Revocation::Sessions {
                    tenant,
                    user,
                    session,
                } => {
                    let closed = hub.close_sessions(&tenant, &user, session.as_ref());
                    tracing::debug!(closed, %user, "sessions revoked");
                }
                Revocation::ApiKey { key, .. } => key_cache.forget(&key),
            });
        }
        let (broker, memory): (Arc<dyn Broker>, Option<Arc<MemoryBroker>>) = match &config.redis_url
        {
            Some(url) => {
                let redis = RedisBroker::connect(
                    url.expose_secret(),
                    &config.redis_prefix,
                    config.presence_ttl,
                    hub.clone(),
                    control.clone(),
                    metrics.clone(),
                    bus_stop.clone(),
                )
                .await
                .context("connecting to Redis (REDIS_URL)")?;
                if !redis.wait_connected(Duration::from_secs(5)).await {
                    bus_stop.cancel();
                    anyhow::bail!("Redis pub/sub connections did not come up within 5 s");
                }
                tracing::info!("cluster mode: bus on Redis");
                (redis, None)
            }
            None => {
                let memory = Arc::new(MemoryBroker::new(
                    hub.clone(),
                    control.clone(),
                    config.limits.max_channels,
                    metrics.clone(),
                ));
                (memory.clone(), Some(memory))
            }
        };
        let auth = Arc::new(AuthService::new(
            store.clone(),
            JwtKeys::new(&secret),
            config.access_token_ttl,
            config.refresh_token_ttl,
            broker.clone(),
            key_cache,
        ));
        auth.report_to(metrics.clone());
        let gateway = Arc::new(Gateway::new(
            hub,
            broker,
            auth.clone(),
            config.limits.clone(),
            config.allowed_origins.clone(),
            metrics.clone(),
        ));
        let bootstrap = bootstrap::ensure(&auth, &config.bootstrap).await?;
        let idempotency = Arc::new(Idempotency::new(store.clone()));
        let notify = Arc::new(Notify::new(
            store.clone(),
            gateway.clone(),
            config.notify.clone(),
            config.email.clone(),
            config.public_url.clone(),
            metrics.clone(),
            &secret,
        ));
        let transport = Transport::new(&config.email, &config.data_dir)?;
        let mailer = Arc::new(Mailer::new(
            notify.outbox.clone(),
            transport,
            notify::email_guard::guards(&notify),
        )?);
        let state = AppState {
            gateway: gateway.clone(),
            auth: auth.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            idempotency,
            notify,
        };

        // The domain modules: each declares its namespaces and RPC handlers,
        // then the gateway is sealed with them.
        let context = ModuleContext {
            config: &config,
            store,
            gateway: gateway.clone(),
            auth,
            metrics,
            control,
            state: &state,
        };
        let mut extensions = Extensions {
            channels: ChannelRegistry::core(),
            ..Extensions::default()
        };
        let mut modules = Vec::new();
        for factory in builtin_modules(mailer).into_iter().chain(extra) {
            let module = factory(&context)?;
            module.extend(&mut extensions);
            tracing::debug!(module = module.name(), "module ready");
            modules.push(module);
        }
        for (namespace, history) in &config.channel_history {
            if !extensions.channels.set_history(namespace, *history) {
                anyhow::bail!(
                    "RELAIS_CHANNEL_HISTORY names `{namespace}`, which is no channel namespace"
                );
            }
        }
        gateway.seal(extensions);
        Ok(Application {
            listener,
            state,
            modules,
            memory,
            bus_stop,
            config,
            bootstrap,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Credentials created on first start, if this start created them.
    pub fn bootstrap_report(&self) -> Option<&BootstrapReport> {
        self.bootstrap.as_ref()
    }

    /// Serves until `shutdown` resolves, then drains: new connections are
    /// refused, live ones are told to reconnect elsewhere (close 4007), and
    /// the call returns when they are gone or the grace period ends.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            state,
            memory,
            bus_stop,
            config,
            modules,
            ..
        } = self;
        let gateway = state.gateway.clone();
        let stop = gateway.shutdown.clone();

        let eviction = memory.map(|memory| {
            let gateway = gateway.clone();
            tokio::spawn(memory.run_eviction(
                Duration::from_secs(60),
                move |key| {
                    gateway
                        .channels()
                        .resolve(key.name())
                        .ok()
                        .map(|ns| ns.history)
                },
                stop.clone(),
            ))
        });
        let purge = tokio::spawn(purge_idempotency(state.idempotency.clone(), stop.clone()));
        let reports = tokio::spawn(crate::gateway::nodes::run_reports(
            gateway.clone(),
            config.node_report_every,
            stop.clone(),
        ));
        // The modules' background work. It stops when the server begins
        // draining; whatever it leaves (triggers, emails) is picked up after
        // its lease by this node's next start or another node.
        let workers = tokio_util::task::TaskTracker::new();
        for module in &modules {
            for worker in module.workers(&stop) {
                workers.spawn(worker);
            }
        }
        workers.spawn(crate::store::checkpoint::run(
            state.store.clone(),
            stop.clone(),
        ));
        workers.close();

        let app = router(state, &modules);
        // Small frames must leave at once: with Nagle's algorithm a frame can
        // wait for the peer's delayed ACK (tens of milliseconds).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        // The listener keeps accepting while live connections drain, so a
        // load balancer reads `/readyz` 503 and new upgrades get an HTTP
        // 503 `shutting_down` instead of a refused TCP connection. It stops
        // only once the drain is over.
        let drained = CancellationToken::new();
        // The peer address reaches handlers (login throttling per address).
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, app).with_graceful_shutdown({
            let drained = drained.clone();
            async move { drained.cancelled().await }
        });
        let mut server = tokio::spawn(async move { server.await });
        tokio::select! {
            result = &mut server => {
                // The server ended on its own (an accept loop failure).
                stop.cancel();
                bus_stop.cancel();
                result??;
                return Ok(());
            }
            _ = shutdown => {}
        }
        tracing::info!("shutting down: telling clients to reconnect elsewhere and draining");
        gateway.begin_shutdown();
        // Every connection task ends once its client has the close (4007),
        // or the grace period does: the process never exits under live
        // sockets that were not told.
        if tokio::time::timeout(config.limits.shutdown_grace, gateway.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = gateway.hub.connection_count(),
                "grace period over; dropping remaining connections"
            );
        }
        drained.cancel();
        // In-flight HTTP requests finish; upgraded sockets are gone already.
        if tokio::time::timeout(Duration::from_secs(5), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        stop.cancel();
        bus_stop.cancel();
        if let Some(eviction) = eviction {
            let _ = eviction.await;
        }
        let _ = purge.await;
        let _ = reports.await;
        workers.wait().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Pending connections the kernel may queue before `accept`. The default of
/// 128 overflows when thousands of clients reconnect at once (after a node
/// restart), and each dropped SYN costs its client a one-second retry.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with [`LISTEN_BACKLOG`].
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The modules built into the hub, in the order they are built.
fn builtin_modules(mailer: Arc<Mailer>) -> Vec<ModuleFactory> {
    vec![
        Arc::new(|ctx: &ModuleContext<'_>| {
            Ok(Arc::new(NotifyModule(ctx.state.notify.clone())) as Arc<dyn Module>)
        }),
        Arc::new(move |_: &ModuleContext<'_>| {
            Ok(Arc::new(EmailModule(mailer.clone())) as Arc<dyn Module>)
        }),
        Arc::new(projects::module),
        Arc::new(crate::queues::module),
        Arc::new(crate::planning::module),
        Arc::new(crate::chat::module),
        Arc::new(crate::assistant::module),
    ]
}

/// Triggers fanned out at once by one node.
const FANOUT_WORKERS: usize = 2;

/// Notifications: the inbox routes, the fan-out workers and digests.
struct NotifyModule(Arc<Notify>);

impl Module for NotifyModule {
    fn name(&self) -> &'static str {
        "notify"
    }
    fn router(&self) -> Router<AppState> {
        notify::routes::router()
    }
    fn workers(&self, stop: &CancellationToken) -> Vec<crate::module::Worker> {
        let mut workers: Vec<crate::module::Worker> = (0..FANOUT_WORKERS)
            .map(|_| {
                Box::pin(notify::fanout::run(self.0.clone(), stop.clone())) as crate::module::Worker
            })
            .collect();
        workers.push(Box::pin(notify::digest::run(self.0.clone(), stop.clone())));
        workers
    }
}

/// The email outbox: its admin routes and its worker.
struct EmailModule(Arc<Mailer>);

impl Module for EmailModule {
    fn name(&self) -> &'static str {
        "email"
    }
    fn router(&self) -> Router<AppState> {
        email::routes::router()
    }
    fn workers(&self, stop: &CancellationToken) -> Vec<crate::module::Worker> {
        vec![Box::pin(email::worker::run(self.0.clone(), stop.clone()))]
    }
}

/// All routes of the hub: the core's, then each module's.
pub fn router(state: AppState, modules: &[Arc<dyn Module>]) -> Router {
    let mut router = Router::new()
        .merge(auth::routes::router())
        .merge(api::publish::router())
        .merge(api::ops::router())
        .merge(console::router());
    for module in modules {
        router = router.merge(module.router());
    }
    router
        .route("/ws", get(ws::upgrade))
        .route("/api/v1/sse", get(sse::stream))
        // After every route: it applies to the routes present.
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(|| async { ApiError::NotFound("route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Errors the framework makes itself get our JSON body too.
        .layer(middleware::map_response(error::json_errors))
        .layer(cors::layer(&state.gateway.origins))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::record_http,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                // `tenant` and `user` are filled in by the auth extractors.
                // Unsubscribe links carry a token in the path: not logged.
                let path = req.uri().path();
                let path = if path.starts_with("/api/v1/unsubscribe/") {
                    "/api/v1/unsubscribe/…"
                } else {
                    path
                };
                tracing::info_span!(
                    "http",
                    method = %req.method(),
                    path = %path,
                    tenant = tracing::field::Empty,
                    user = tracing::field::Empty,
                )
            }),
        )
        .with_state(state)
}

async fn purge_idempotency(
    idempotency: Arc<Idempotency>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = idempotency.purge().await {
                    tracing::warn!(error = %e, "purging idempotency keys failed");
                }
            }
        }
    }
}

/// The JWT signing secret: from the environment, or generated once and kept
/// in the data folder so restarts keep sessions valid.
fn jwt_secret(config: &Config) -> anyhow::Result<SecretString> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(secret.clone());
    }
    let path = config.data_dir.join("jwt-secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if existing.len() >= 32 {
            return Ok(SecretString::from(existing.to_owned()));
        }
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let secret = auth::tokens::random_token(48);
    write_private(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a JWT signing secret");
    Ok(SecretString::from(secret))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}
