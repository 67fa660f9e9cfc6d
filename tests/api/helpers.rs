//! `spawn_app` and clients: the real application on a loopback port, a fresh
//! database per test (SQLite file, or a new PostgreSQL database when
//! `RELAIS_TEST_DATABASE_URL` is set), real WebSocket and HTTP clients.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use relais::{
    app::Application,
    channels::{Access, HistoryPolicy, KeyRule, Namespace},
    config::Config,
    gateway::Extensions,
    module::{Context, Module, ModuleFactory},
};
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::oneshot, task::JoinHandle};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest},
};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The `room` namespace, registered by a test module the way a domain
/// module would: members publish, see presence and get join/leave events;
/// short history.
fn room_namespace() -> Namespace {
    Namespace {
        name: "room",
        key: KeyRule::Required,
        subscribe: Access::Members,
        publish: Access::Members,
        presence: Access::Members,
        join_leave: true,
        history: HistoryPolicy {
            size: 5,
            ttl: Duration::from_secs(60),
        },
        hook: None,
        snapshot: None,
    }
}

struct RoomModule;

impl Module for RoomModule {
    fn name(&self) -> &'static str {
        "test-room"
    }
    fn extend(&self, extensions: &mut Extensions) {
        extensions.channels.register(room_namespace());
    }
}

/// The modules the tests add to the built-in ones: the `room` namespace and
/// the extension-point test module (hooks, snapshots, RPC).
pub fn test_modules() -> Vec<ModuleFactory> {
    vec![
        Arc::new(|_: &Context<'_>| Ok(Arc::new(RoomModule) as Arc<dyn Module>)),
        Arc::new(crate::extensions::module),
    ]
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub http: reqwest::Client,
    pub data_dir: PathBuf,
    vars: HashMap<String, String>,
    stop: Option<oneshot::Sender<()>>,
    pub server: Option<JoinHandle<anyhow::Result<()>>>,
    pub state: relais::app::AppState,
}

async fn fresh_database_url() -> Option<String> {
    let base = std::env::var("RELAIS_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    use sqlx::Connection;
    let name = format!("relais_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .expect("RELAIS_TEST_DATABASE_URL must reach PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let (server, _) = base.rsplit_once('/').expect("URL with a database name");
    Some(format!("{server}/{name}"))
}

/// The first node of a fresh cluster on the test Redis
/// (`RELAIS_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`), with a key
/// prefix of its own; `spawn_peer()` adds nodes.
pub async fn first_cluster_node() -> TestApp {
    first_cluster_node_with(&[]).await
}

/// [`first_cluster_node`] with extra `RELAIS_*` variables (its peers get them too).
pub async fn first_cluster_node_with(extra: &[(&str, &str)]) -> TestApp {
    let prefix = format!("relais-test-{}", uuid::Uuid::new_v4().simple());
    let url =
        std::env::var("RELAIS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut vars = vec![
        ("REDIS_URL", url.as_str()),
        ("RELAIS_REDIS_PREFIX", prefix.as_str()),
        (
            "RELAIS_JWT_SECRET",
            "a-cluster-wide-secret-for-the-tests-0123456789",
        ),
    ];
    vars.extend_from_slice(extra);
    spawn_app_with(&vars).await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the app with extra `RELAIS_*` variables.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let data_dir =
        std::env::temp_dir().join(format!("relais-test-{}", uuid::Uuid::new_v4().simple()));
    let mut vars: HashMap<String, String> = HashMap::from([
        ("RELAIS_DATA_DIR".into(), data_dir.display().to_string()),
        ("RELAIS_BOOTSTRAP_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
        (
            "RELAIS_BOOTSTRAP_ADMIN_PASSWORD".into(),
            ADMIN_PASSWORD.into(),
        ),
        ("RELAIS_LOG".into(), "warn".into()),
    ]);
    if let Some(url) = fresh_database_url().await {
        vars.insert("DATABASE_URL".into(), url);
    }
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    start(vars, data_dir, None).await
}

async fn start(vars: HashMap<String, String>, data_dir: PathBuf, port: Option<u16>) -> TestApp {
    let config = Config::from_vars(vars.clone()).expect("test config");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
        .await
        .expect("bind");
    let app = Application::build_with(config, listener, test_modules())
        .await
        .expect("build app");
    let addr = app.local_addr();
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        http: reqwest::Client::new(),
        data_dir,
        vars,
        stop: Some(stop),
        server: Some(server),
        state,
    }
}

impl TestApp {
    /// Another node sharing this one's store, secrets and Redis (cluster
    /// tests). It does not own the data folder.
    pub async fn spawn_peer(&self) -> TestApp {
        let mut peer = start(self.vars.clone(), self.data_dir.clone(), None).await;
        peer.data_dir = PathBuf::new();
        peer
    }

    /// The environment this node was started with (data folder, database).
    pub fn env(&self) -> &HashMap<String, String> {
        &self.vars
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Triggers graceful shutdown and waits for the server to return.
    /// Starts the graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        match self.server.take() {
            Some(server) => tokio::time::timeout(WAIT, server)
                .await
                .expect("server stops within the wait")?,
            None => Ok(()),
        }
    }

    /// Stops this node and starts a new process-equivalent on the same store and data folder.
    pub async fn restart(mut self) -> TestApp {
        self.shutdown().await.expect("clean shutdown");
        let vars = std::mem::take(&mut self.vars);
        // The new node owns the folder now; the old one must not delete it.
        let data_dir = std::mem::take(&mut self.data_dir);
        start(vars, data_dir, None).await
    }

    pub async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> reqwest::Response {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request")
    }

    pub async fn patch(&self, path: &str, bearer: &str, body: Value) -> reqwest::Response {
        self.http
            .patch(self.url(path))
            .bearer_auth(bearer)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str, bearer: &str) -> reqwest::Response {
        self.http
            .delete(self.url(path))
            .bearer_auth(bearer)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.url(path));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request")
    }

    pub async fn login(&self, email: &str, password: &str) -> Value {
        self.login_in("default", email, password).await
    }

    pub async fn login_in(&self, tenant: &str, email: &str, password: &str) -> Value {
        let res = self
            .post(
                "/api/v1/auth/login",
                None,
                json!({"tenant": tenant, "email": email, "password": password}),
            )
            .await;
        assert_eq!(res.status(), 200, "login of {email}");
        res.json().await.unwrap()
    }

    /// An administrator of a second tenant, `other`: (user id, access token),
    /// to check that nothing crosses tenants.
    pub async fn other_tenant_admin(&self) -> (String, String) {
        let auth = &self.state.auth;
        let other = auth.create_tenant("other", "Other tenant").await.unwrap();
        let user = auth
            .create_user(
                &other.id,
                "out@example.com",
                "",
                "outsider-password",
                &[relais::auth::Role::Admin],
            )
            .await
            .unwrap();
        let login = self
            .login_in("other", "out@example.com", "outsider-password")
            .await;
        (
            user.id.to_string(),
            login["access_token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates a user in the default tenant; returns (user id, access token).
    pub async fn user(&self, email: &str, roles: &[&str]) -> (String, String) {
        let admin = self.admin_token().await;
        let res = self
            .post(
                "/api/v1/admin/users",
                Some(&admin),
                json!({"email": email, "password": "user-password-123", "roles": roles}),
            )
            .await;
        assert_eq!(res.status(), 201);
        let user: Value = res.json().await.unwrap();
        let login = self.login(email, "user-password-123").await;
        (
            user["id"].as_str().unwrap().to_owned(),
            login["access_token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn api_key(&self, scopes: &[&str]) -> String {
        let admin = self.admin_token().await;
        let res = self
            .post(
                "/api/v1/admin/api-keys",
                Some(&admin),
                json!({"name": "test", "scopes": scopes}),
            )
            .await;
        assert_eq!(res.status(), 201);
        res.json::<Value>().await.unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn publish(&self, key: &str, channel: &str, data: Value) -> Value {
        let res = self
            .post(
                "/api/v1/publish",
                Some(key),
                json!({"channel": channel, "data": data}),
            )
            .await;
        assert_eq!(res.status(), 200, "publish to {channel}");
        res.json().await.unwrap()
    }

    /// The OpenAPI document the hub serves.
    pub async fn openapi(&self) -> Value {
        self.get("/api/v1/openapi.json", None)
            .await
            .json()
            .await
            .unwrap()
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics", None).await.text().await.unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("metric {name} not found"))
    }

    pub async fn ws(&self) -> Ws {
        Ws::open(self.addr, None).await
    }

    /// A connection that sent `connect` with `token` and got `connected`.
    pub async fn ws_connected(&self, token: &str) -> Ws {
        let mut ws = self.ws().await;
        let reply = ws.request(json!({"type": "connect", "token": token})).await;
        assert_eq!(reply["type"], "connected", "{reply}");
        ws
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if !self.data_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A WebSocket client speaking the JSON protocol.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Ws {
    pub async fn open(addr: std::net::SocketAddr, origin: Option<&str>) -> Ws {
        Self::try_open(addr, origin)
            .await
            .expect("websocket handshake")
    }

    pub async fn try_open(
        addr: std::net::SocketAddr,
        origin: Option<&str>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Ws { stream, next_id: 1 })
    }

    pub async fn send_json(&mut self, value: Value) {
        self.stream
            .send(Message::text(value.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.stream.send(message).await.expect("send");
    }

    /// Sends a command with a fresh id and returns the reply carrying that id
    /// (frames without it, such as publications, are skipped).
    pub async fn request(&mut self, mut command: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.send_json(command).await;
        loop {
            let frame = self.recv().await;
            if frame["id"] == json!(id) {
                return frame;
            }
        }
    }

    /// The next JSON text frame; panics on close or after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        match self.next_event().await {
            Event::Json(v) => v,
            Event::Closed(code) => {
                panic!("connection closed ({code:?}) while a frame was expected")
            }
        }
    }

    pub async fn next_event(&mut self) -> Event {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a frame within the wait");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Event::Json(serde_json::from_str(&t).expect("JSON frame"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Event::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Event::Closed(None),
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Event::Closed(code) = self.next_event().await {
                return code;
            }
        }
    }

    /// Publications received until `n` have arrived (other frames skipped).
    pub async fn publications(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let frame = self.recv().await;
            if frame["type"] == "pub" {
                out.push(frame);
            }
        }
        out
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        let reply = self
            .request(json!({"type": "subscribe", "channel": channel}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        reply
    }
}

pub enum Event {
    Json(Value),
    Closed(Option<u16>),
}

/// A node run as its own `relais` process, so it can be killed without a
/// goodbye (SIGKILL), as a crash would.
pub struct NodeProcess {
    pub addr: std::net::SocketAddr,
    child: std::process::Child,
}

impl NodeProcess {
    pub fn start(env: &std::collections::HashMap<String, String>) -> NodeProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_relais"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .env("RELAIS_BIND", "127.0.0.1:0")
            .env("RELAIS_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start a relais node");
        // Keep reading the node's output for its whole life: a closed pipe
        // would make its next print fail.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = line.strip_prefix("Relais listening on http://") {
                    let _ = tx.send(addr.trim().parse::<std::net::SocketAddr>().unwrap());
                }
            }
        });
        let addr = rx.recv_timeout(WAIT).expect("the node prints its address");
        NodeProcess { addr, child }
    }

    pub async fn ws_connected(&self, token: &str) -> Ws {
        let mut ws = Ws::open(self.addr, None).await;
        let reply = ws.request(json!({"type": "connect", "token": token})).await;
        assert_eq!(reply["type"], "connected", "{reply}");
        ws
    }

    /// SIGTERM, as an orchestrator stops a node; waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        self.child.wait().expect("wait for the node")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
