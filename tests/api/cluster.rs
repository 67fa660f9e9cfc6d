//! Cluster mode: several nodes (separate servers on loopback ports) sharing
//! the store and a real Redis. Redis comes from `RELAIS_TEST_REDIS_URL`
//! (default `redis://127.0.0.1:6379`); each test uses its own key prefix.

use serde_json::{Value, json};

use crate::helpers::*;

fn redis_url() -> String {
    std::env::var("RELAIS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Node A of a fresh cluster; `a.spawn_peer()` adds nodes.
async fn first_node() -> TestApp {
    first_cluster_node().await
}

#[tokio::test]
async fn a_publication_on_one_node_reaches_subscribers_on_another() {
    let a = first_node().await;
    let b = a.spawn_peer().await;
    let token = a.admin_token().await;
    let key = a.api_key(&["publish"]).await;
    let mut on_b = b.ws_connected(&token).await;
    let sub = on_b.subscribe("broadcast").await;
    let published = a.publish(&key, "broadcast", json!({"from": "a"})).await;
    let got = on_b.publications(1).await;
    assert_eq!(got[0]["data"]["from"], "a");
    assert_eq!(got[0]["offset"], published["offset"]);
    assert_eq!(published["epoch"], sub["epoch"]);
    let ready: Value = b.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(ready["bus"], true);
}

/// 40 publications sent at once through `node`.
async fn burst(node: &TestApp, key: &str, tag: &str) -> Vec<reqwest::Response> {
    let requests = (0..40).map(|n| {
        node.post(
            "/api/v1/publish",
            Some(key),
            json!({"channel": "broadcast", "data": format!("{tag}{n}")}),
        )
    });
    futures_util::future::join_all(requests).await
}

#[tokio::test]
async fn two_nodes_publishing_concurrently_produce_one_order_everywhere() {
    let a = first_node().await;
    let b = a.spawn_peer().await;
    let token = a.admin_token().await;
    let key = a.api_key(&["publish"]).await;
    let mut on_a = a.ws_connected(&token).await;
    let mut on_b = b.ws_connected(&token).await;
    on_a.subscribe("broadcast").await;
    on_b.subscribe("broadcast").await;
    let (ra, rb) = tokio::join!(burst(&a, &key, "a"), burst(&b, &key, "b"));
    assert!(ra.iter().chain(rb.iter()).all(|r| r.status() == 200));
    let seen_a = on_a.publications(80).await;
    let seen_b = on_b.publications(80).await;
    let offsets: Vec<u64> = seen_a
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (1..=80).collect::<Vec<_>>(), "one gap-free order");
    let data = |seen: &[Value]| seen.iter().map(|p| p["data"].clone()).collect::<Vec<_>>();
    assert_eq!(data(&seen_a), data(&seen_b), "the same order on both nodes");
}

#[tokio::test]
async fn a_client_losing_its_node_recovers_everything_on_another() {
    let mut a = first_node().await;
    let b = a.spawn_peer().await;
    let token = a.admin_token().await;
    let key = a.api_key(&["publish"]).await;
    let mut ws = a.ws_connected(&token).await;
    ws.subscribe("broadcast").await;
    for n in 1..=3 {
        b.publish(&key, "broadcast", json!(n)).await;
    }
    let seen = ws.publications(3).await;
    let last = seen.last().unwrap().clone();
    a.shutdown().await.unwrap();
    assert_eq!(ws.closed().await, Some(4007));
    for n in 4..=6 {
        b.publish(&key, "broadcast", json!(n)).await;
    }
    let mut ws = b.ws_connected(&token).await;
    let reply = ws
        .request(json!({"type": "subscribe", "channel": "broadcast", "recover": {"epoch": last["epoch"], "offset": last["offset"]}}))
        .await;
    assert_eq!(reply["recovered"], true);
    let missed = ws.publications(3).await;
    assert_eq!(
        missed
            .iter()
            .map(|p| p["data"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
}

/// After a node restart every client recovers at once, from different
/// positions; the node shares history reads between them, and each must
/// still get exactly what it missed, then the live stream, each once.
#[tokio::test]
async fn clients_recovering_one_channel_at_once_each_get_exactly_what_they_missed() {
    let a = first_node().await;
    let b = a.spawn_peer().await;
    let token = a.admin_token().await;
    let key = a.api_key(&["publish"]).await;
    let first = a.publish(&key, "broadcast", json!(1)).await;
    for n in 2..=30 {
        a.publish(&key, "broadcast", json!(n)).await;
    }
    let epoch = &first["epoch"];
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(b.ws_connected(&token).await);
    }
    // Client i last saw offset i; all ask at the same moment.
    let recovered =
        futures_util::future::join_all(clients.iter_mut().enumerate().map(|(i, ws)| async move {
            let reply = ws
                .request(json!({"type": "subscribe", "channel": "broadcast",
                    "recover": {"epoch": epoch, "offset": i}}))
                .await;
            assert_eq!(reply["recovered"], true, "client {i}: {reply}");
            let missed = ws.publications(30 - i).await;
            missed
                .iter()
                .map(|p| p["offset"].as_u64().unwrap())
                .collect::<Vec<_>>()
        }))
        .await;
    for (i, offsets) in recovered.iter().enumerate() {
        assert_eq!(
            *offsets,
            (i as u64 + 1..=30).collect::<Vec<_>>(),
            "client {i}"
        );
    }
    a.publish(&key, "broadcast", json!(31)).await;
    for (i, ws) in clients.iter_mut().enumerate() {
        let live = ws.publications(1).await;
        assert_eq!(live[0]["offset"], 31, "client {i}: {}", live[0]);
    }
}

#[tokio::test]
async fn a_revocation_on_one_node_closes_sockets_on_every_node() {
    let a = first_node().await;
    let b = a.spawn_peer().await;
    let (_, token) = a.user("ana@example.com", &["member"]).await;
    let mut on_a = a.ws_connected(&token).await;
    let mut on_b = b.ws_connected(&token).await;
    let res = a.post("/api/v1/auth/logout", Some(&token), json!({})).await;
    assert_eq!(res.status(), 204);
    assert_eq!(on_a.closed().await, Some(4003));
    assert_eq!(on_b.closed().await, Some(4003));
}

#[tokio::test]
async fn presence_and_join_events_span_nodes() {
    let a = first_node().await;
    let b = a.spawn_peer().await;
    let (ana, ana_token) = a.user("ana@example.com", &["member"]).await;
    let (bo, bo_token) = a.user("bo@example.com", &["member"]).await;
    let mut on_a = a.ws_connected(&ana_token).await;
    on_a.subscribe("room:lobby").await;
    assert_eq!(on_a.recv().await["user"], ana.as_str(), "own join");
    let mut on_b = b.ws_connected(&bo_token).await;
    on_b.subscribe("room:lobby").await;
    let join = on_a.recv().await;
    assert_eq!(
        (join["type"].as_str(), join["user"].as_str()),
        (Some("join"), Some(bo.as_str()))
    );
    let presence = on_a
        .request(json!({"type": "presence", "channel": "room:lobby"}))
        .await;
    assert_eq!(presence["users"], 2, "{presence}");
    assert_eq!(presence["clients"], 2);
    drop(on_b);
    let leave = on_a.recv().await;
    assert_eq!(
        (leave["type"].as_str(), leave["user"].as_str()),
        (Some("leave"), Some(bo.as_str()))
    );
    let presence = on_a
        .request(json!({"type": "presence", "channel": "room:lobby"}))
        .await;
    assert_eq!(presence["users"], 1);
}

/// A redis-server of the test's own, on its own port, so restarting it
/// does not disturb the shared one.
struct OwnRedis {
    port: u16,
    child: std::process::Child,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed for the cluster tests");
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        OwnRedis { port, child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ready(node: &TestApp, ready: bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = node.get("/readyz", None).await.status();
        if (status == 200) == ready {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness never became {ready}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn nodes_survive_a_redis_restart_and_clients_never_miss_silently() {
    let port = free_port();
    let mut redis = OwnRedis::start(port);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let a = spawn_app_with(&[
        ("REDIS_URL", url.as_str()),
        (
            "RELAIS_JWT_SECRET",
            "a-cluster-wide-secret-for-the-tests-0123456789",
        ),
    ])
    .await;
    let b = a.spawn_peer().await;
    let token = a.admin_token().await;
    let key = a.api_key(&["publish"]).await;
    let mut ws = b.ws_connected(&token).await;
    ws.subscribe("broadcast").await;
    for n in 1..=3 {
        a.publish(&key, "broadcast", json!(n)).await;
    }
    let seen = ws.publications(3).await;
    let last = seen.last().unwrap().clone();

    // Redis goes away (and with it, as it keeps nothing on disk, the history).
    redis.kill();
    let res = a
        .post(
            "/api/v1/publish",
            Some(&key),
            json!({"channel": "broadcast", "data": "lost?"}),
        )
        .await;
    assert_eq!(
        res.status(),
        503,
        "publishing fails instead of hanging or pretending"
    );
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "unavailable"
    );
    wait_ready(&a, false).await;
    // Local connections stay up.
    assert_eq!(ws.request(json!({"type": "ping"})).await["type"], "pong");

    let _redis = OwnRedis::start(port);
    wait_ready(&a, true).await;
    wait_ready(&b, true).await;
    assert_eq!(a.metric("relais_bus_connections").await, 4.0);
    assert!(a.metric("relais_bus_reconnects_total").await >= 1.0);
    assert!(
        a.metric("relais_bus_errors_total").await >= 1.0,
        "the refused publish was counted"
    );
    let after = a.publish(&key, "broadcast", json!("after")).await;
    assert_ne!(
        after["epoch"], last["epoch"],
        "Redis lost the stream: a new epoch"
    );

    // The subscriber is told to resynchronise; it never receives the new
    // epoch's publications as if nothing had happened.
    let frame = loop {
        let frame = ws.recv().await;
        if frame["type"] == "unsubscribed" || frame["type"] == "pub" {
            break frame;
        }
    };
    assert_eq!(frame["type"], "unsubscribed", "{frame}");
    assert_eq!(frame["reason"], "insufficient_state");
    let reply = ws
        .request(json!({"type": "subscribe", "channel": "broadcast", "recover": {"epoch": last["epoch"], "offset": last["offset"]}}))
        .await;
    assert_eq!(reply["recovered"], false);
    assert_eq!(reply["epoch"], after["epoch"]);
    a.publish(&key, "broadcast", json!("live again")).await;
    assert_eq!(ws.publications(1).await[0]["data"], "live again");
}

#[tokio::test]
async fn a_crashed_node_leaves_no_ghost_presence_beyond_the_ttl() {
    let prefix = format!("relais-test-{}", uuid::Uuid::new_v4().simple());
    let url = redis_url();
    let a = spawn_app_with(&[
        ("REDIS_URL", url.as_str()),
        ("RELAIS_REDIS_PREFIX", prefix.as_str()),
        (
            "RELAIS_JWT_SECRET",
            "a-cluster-wide-secret-for-the-tests-0123456789",
        ),
        ("RELAIS_PRESENCE_TTL_SECS", "1"),
    ])
    .await;
    let (_, ana_token) = a.user("ana@example.com", &["admin"]).await;
    let (bo, bo_token) = a.user("bo@example.com", &["admin"]).await;
    let mut b = NodeProcess::start(a.env());
    let mut on_a = a.ws_connected(&ana_token).await;
    on_a.subscribe("broadcast").await;
    let mut on_b = b.ws_connected(&bo_token).await;
    on_b.subscribe("broadcast").await;
    let presence = on_a
        .request(json!({"type": "presence", "channel": "broadcast"}))
        .await;
    assert_eq!(presence["users"], 2, "{presence}");

    b.kill();
    // No goodbye from B: its entries must expire by themselves.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let presence = on_a
            .request(json!({"type": "presence", "channel": "broadcast"}))
            .await;
        let users: Vec<&str> = presence["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user"].as_str().unwrap())
            .collect();
        if !users.contains(&bo.as_str()) {
            assert_eq!(presence["users"], 1);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ghost presence of the crashed node"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_client_of_a_crashed_node_recovers_every_message_on_another() {
    let a = first_node().await;
    let token = a.admin_token().await;
    let key = a.api_key(&["publish"]).await;
    let mut b = NodeProcess::start(a.env());
    let mut ws = b.ws_connected(&token).await;
    ws.subscribe("broadcast").await;

    // Publications keep flowing through A while B dies.
    let publisher = {
        let http = a.http.clone();
        let url = a.url("/api/v1/publish");
        let key = key.clone();
        tokio::spawn(async move {
            for n in 1..=60u64 {
                let res = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"channel": "broadcast", "data": n}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    };
    let before = ws.publications(10).await;
    b.kill();
    let mut received: Vec<u64> = before.iter().map(|p| p["data"].as_u64().unwrap()).collect();
    let mut last = before.last().unwrap().clone();
    // Whatever was already in flight before the crash still counts.
    loop {
        match ws.next_event().await {
            Event::Json(p) if p["type"] == "pub" => {
                received.push(p["data"].as_u64().unwrap());
                last = p;
            }
            Event::Json(_) => {}
            Event::Closed(_) => break,
        }
    }
    let mut ws = a.ws_connected(&token).await;
    let reply = ws
        .request(json!({"type": "subscribe", "channel": "broadcast", "recover": {"epoch": last["epoch"], "offset": last["offset"]}}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    publisher.await.unwrap();
    let remaining = 60 - received.len();
    received.extend(
        ws.publications(remaining)
            .await
            .iter()
            .map(|p| p["data"].as_u64().unwrap()),
    );
    assert_eq!(
        received,
        (1..=60).collect::<Vec<_>>(),
        "every message exactly once, in order"
    );
}

#[tokio::test]
async fn a_revoked_api_key_is_refused_at_once_by_every_node() {
    let a = first_node().await;
    let b = a.spawn_peer().await;
    let admin = a.admin_token().await;
    let created: Value = a
        .post(
            "/api/v1/admin/api-keys",
            Some(&admin),
            json!({"name": "backend", "scopes": ["publish"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap();
    // B verifies the key once and keeps it in its cache.
    b.publish(key, "broadcast", json!(1)).await;
    let id = created["id"].as_str().unwrap();
    let res = a
        .http
        .delete(a.url(&format!("/api/v1/admin/api-keys/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let res = b
            .post(
                "/api/v1/publish",
                Some(key),
                json!({"channel": "broadcast", "data": 2}),
            )
            .await;
        if res.status() == 401 {
            break;
        }
        // The control message crosses Redis asynchronously; well under the
        // cache's own 30 s lifetime.
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B still trusts a revoked key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The node environment of `compose.yaml` (the `x-relais-node` block), with
/// `${VAR:-default}` resolved to its default and `${VAR:?…}` to `required`.
fn compose_environment(required: &std::collections::HashMap<&str, &str>) -> Vec<(String, String)> {
    let compose =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/compose.yaml")).unwrap();
    let block = compose
        .split("x-relais-node:")
        .nth(1)
        .expect("x-relais-node block");
    let env = block
        .split("  environment:\n")
        .nth(1)
        .expect("environment")
        .split("\n  depends_on:")
        .next()
        .unwrap();
    env.lines()
        .filter_map(|line| line.trim().split_once(": "))
        .map(|(name, value)| {
            let value = value.trim_matches('"');
            let value = match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                Some(expr) => match expr.split_once(":-") {
                    Some((_, default)) => default.to_owned(),
                    None => required
                        .get(expr.split(":?").next().unwrap())
                        .expect("a value for a required variable")
                        .to_string(),
                },
                None => value.to_owned(),
            };
            (name.to_owned(), value)
        })
        .collect()
}

#[tokio::test]
async fn the_binary_runs_with_the_environment_the_compose_file_sets() {
    let required = std::collections::HashMap::from([
        (
            "RELAIS_JWT_SECRET",
            "a-compose-secret-of-at-least-forty-eight-characters!!",
        ),
        ("RELAIS_BOOTSTRAP_ADMIN_PASSWORD", "compose-admin-password"),
    ]);
    let environment = compose_environment(&required);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (name, _) in &environment {
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is set by compose.yaml but not documented"
        );
    }
    // Same variables; only the addresses of the services become this machine's.
    let a = first_node().await;
    let mut env: std::collections::HashMap<String, String> = environment.into_iter().collect();
    env.insert(
        "DATABASE_URL".into(),
        a.env()
            .get("DATABASE_URL")
            .cloned()
            .unwrap_or_else(|| format!("sqlite://{}/relais.db?mode=rwc", a.data_dir.display())),
    );
    env.insert("REDIS_URL".into(), redis_url());
    env.insert(
        "RELAIS_REDIS_PREFIX".into(),
        a.env()["RELAIS_REDIS_PREFIX"].clone(),
    );
    let node = NodeProcess::start(&env);
    let ready: Value = reqwest::get(format!("http://{}/readyz", node.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["bus"], true);
}

#[tokio::test]
async fn a_subscriber_joining_a_channel_with_history_learns_its_position() {
    let a = first_node().await;
    let b = a.spawn_peer().await;
    let token = a.admin_token().await;
    let key = a.api_key(&["publish"]).await;
    for n in 0..3 {
        a.publish(&key, "broadcast", json!({ "n": n })).await;
    }
    // No `recover`: the node reads only the position, with no history.
    let mut on_b = b.ws_connected(&token).await;
    let sub = on_b.subscribe("broadcast").await;
    assert_eq!(sub["offset"], 3, "{sub}");
    a.publish(&key, "broadcast", json!({ "n": 3 })).await;
    assert_eq!(on_b.publications(1).await[0]["offset"], 4);
}

#[tokio::test]
async fn history_pages_forward_through_redis() {
    let a = first_node().await;
    let b = a.spawn_peer().await;
    let token = a.admin_token().await;
    let key = a.api_key(&["publish"]).await;
    let mut epoch = Value::Null;
    for n in 1..=7 {
        epoch = a.publish(&key, "broadcast", json!(n)).await["epoch"].clone();
    }
    let mut on_b = b.ws_connected(&token).await;
    assert_eq!(
        crate::channels::page_forward(&mut on_b, "broadcast", &epoch, 3).await,
        vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]
    );
    let stale = on_b
        .request(json!({"type": "history", "channel": "broadcast",
                        "since": {"epoch": "gone", "offset": 2}}))
        .await;
    assert_eq!(stale["complete"], false, "{stale}");
}

/// A node stopped with SIGTERM in cluster mode tells every client to
/// reconnect elsewhere (4007) before it exits; it used to exit first now and
/// then, and clients saw 1006.
#[tokio::test]
async fn sigterm_closes_every_socket_with_4007_before_the_node_exits() {
    let a = first_node().await;
    let token = a.admin_token().await;
    for _ in 0..5 {
        let mut node = NodeProcess::start(a.env());
        let mut clients = Vec::new();
        for _ in 0..20 {
            let mut ws = node.ws_connected(&token).await;
            ws.subscribe("broadcast").await;
            clients.push(ws);
        }
        // Clients read concurrently, as browsers do, while the node stops.
        let closes = clients
            .into_iter()
            .map(|mut ws| tokio::spawn(async move { ws.closed().await }));
        let closes: Vec<_> = closes.collect();
        let status = tokio::task::spawn_blocking(move || node.terminate())
            .await
            .unwrap();
        assert!(status.success(), "the node exits cleanly: {status}");
        for close in closes {
            assert_eq!(close.await.unwrap(), Some(4007));
        }
    }
}

/// Redis stalls during an idempotent publish (its clients paused for longer
/// than the command timeout): the request fails with 503, and the retry the
/// documents call safe delivers the publication exactly once.
#[tokio::test]
async fn a_retried_publish_after_a_redis_stall_is_delivered_once() {
    let port = free_port();
    let _redis = OwnRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let a = spawn_app_with(&[("REDIS_URL", url.as_str())]).await;
    let token = a.admin_token().await;
    let key = a.api_key(&["publish"]).await;
    let mut ws = a.ws_connected(&token).await;
    ws.subscribe("broadcast").await;
    let publish = |idempotency_key: &'static str| {
        a.http
            .post(a.url("/api/v1/publish"))
            .bearer_auth(&key)
            .header("idempotency-key", idempotency_key)
            .json(&json!({"channel": "broadcast", "data": idempotency_key}))
            .send()
    };

    // Writes wait 3 s; the hub gives up on a command after 2 s.
    let paused = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "CLIENT", "PAUSE", "3000", "WRITE"])
        .output()
        .unwrap();
    assert!(paused.status.success());
    assert_eq!(publish("k1").await.unwrap().status(), 503);
    // Retried until Redis answers again.
    let deadline = tokio::time::Instant::now() + WAIT;
    let retried: Value = loop {
        let retry = publish("k1").await.unwrap();
        if retry.status() == 200 {
            break retry.json().await.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis never came back"
        );
    };

    // The other outcome of a stall: the script ran after the hub gave up (as
    // Redis does when its process resumes). Run it as the stalled request
    // would have, under the id the hub derives from the key, then retry.
    let tenant = a.state.auth.find_tenant("default").await.unwrap().unwrap();
    let (channel, ns) = a.state.gateway.resolve(&tenant.id, "broadcast").unwrap();
    let data = serde_json::value::to_raw_value(&json!("k2")).unwrap();
    let id = relais::api::publish::publication_id(&tenant.id, "publish", "k2");
    let (made, replayed) = a
        .state
        .gateway
        .broker
        .publish_once(&channel, ns.history, &data, &id)
        .await
        .unwrap();
    assert!(!replayed);
    let retry = publish("k2").await.unwrap();
    assert_eq!(retry.status(), 200);
    assert_eq!(
        retry
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    let body: Value = retry.json().await.unwrap();
    assert_eq!(body["offset"], made.offset);

    a.publish(&key, "broadcast", json!("marker")).await;
    let mut seen = Vec::new();
    loop {
        let p = ws.publications(1).await.remove(0);
        if p["data"] == "marker" {
            break;
        }
        seen.push((p["data"].clone(), p["offset"].clone()));
    }
    assert_eq!(
        seen,
        vec![
            (json!("k1"), retried["offset"].clone()),
            (json!("k2"), json!(made.offset))
        ],
        "each publication delivered once"
    );
}
