//! The `relais` binary: first start and the admin subcommands, run as real processes.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::helpers::*;

fn relais() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relais"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RELAIS_LOG", "warn");
    cmd
}

/// Runs a subcommand with the store of `app`; returns its standard output.
fn run(app: &TestApp, args: &[&str]) -> String {
    let out = relais()
        .envs(app.env())
        .args(args)
        .output()
        .expect("run relais");
    assert!(
        out.status.success(),
        "relais {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn after<'a>(output: &'a str, marker: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.split_once(marker).map(|(_, v)| v.trim()))
        .unwrap_or_else(|| panic!("`{marker}` in {output}"))
}

#[tokio::test]
async fn admin_commands_create_a_tenant_a_user_and_an_api_key_that_work() {
    let app = spawn_app().await;
    assert!(run(&app, &["migrate"]).contains("migrations applied"));
    assert!(run(&app, &["tenant", "create", "acme", "--name", "Acme"]).contains("slug=acme"));
    let user = run(
        &app,
        &[
            "user",
            "create",
            "--tenant",
            "acme",
            "--email",
            "ops@acme.test",
            "--roles",
            "admin,member",
        ],
    );
    let password = after(&user, "password (shown once):").to_owned();
    let key_out = run(
        &app,
        &[
            "api-key", "create", "--tenant", "acme", "--name", "backend", "--scopes", "publish",
        ],
    );
    let key = after(&key_out, "key (shown once):").to_owned();

    let login = app.login_in("acme", "ops@acme.test", &password).await;
    let mut ws = app
        .ws_connected(login["access_token"].as_str().unwrap())
        .await;
    ws.subscribe("broadcast").await;
    app.publish(&key, "broadcast", json!("from the acme backend"))
        .await;
    assert_eq!(ws.publications(1).await[0]["data"], "from the acme backend");

    // Errors are reported, not panicked, and exit non-zero.
    let out = relais()
        .envs(app.env())
        .args(["user", "create", "--tenant", "nope", "--email", "a@b.c"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tenant `nope`"));
    let out = relais()
        .envs(app.env())
        .args([
            "api-key", "create", "--tenant", "acme", "--name", "x", "--scopes", "root",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn first_start_prints_where_to_connect_and_the_bootstrap_credentials() {
    let data = std::env::temp_dir().join(format!("relais-cli-{}", uuid::Uuid::new_v4().simple()));
    let mut child = relais()
        .env("RELAIS_DATA_DIR", &data)
        .env("RELAIS_BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start relais");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline && !seen.iter().any(|l: &String| l.contains("admin password")) {
        match lines.next() {
            Some(Ok(line)) => seen.push(line),
            _ => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);
    let text = seen.join("\n");
    assert!(
        text.contains("Relais listening on http://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("ws://127.0.0.1:"), "{text}");
    assert!(
        text.contains("Bootstrap: tenant `default`, admin admin@localhost"),
        "{text}"
    );
    let password = after(&text, "admin password (shown once, change it):");
    assert!(password.len() >= 20, "a generated password: {password}");
}

#[tokio::test]
async fn set_password_replaces_the_password_and_ends_the_users_sessions() {
    let app = spawn_app().await;
    let (_, token) = app.user("dee@example.com", &["member"]).await;
    let out = run(
        &app,
        &[
            "user",
            "set-password",
            "--tenant",
            "default",
            "--email",
            "DEE@example.com",
        ],
    );
    assert!(out.contains("password set:"), "{out}");
    let password = after(&out, "password (shown once):").to_owned();
    assert!(password.len() >= 20, "a generated password: {password}");
    // The old session is over; only the new password signs in.
    assert_eq!(app.get("/api/v1/me", Some(&token)).await.status(), 401);
    let res = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"tenant": "default", "email": "dee@example.com", "password": "user-password-123"}),
        )
        .await;
    assert_eq!(res.status(), 401);
    app.login("dee@example.com", &password).await;

    // A chosen password follows the password rules; an unknown user is an error.
    let out = run(
        &app,
        &[
            "user",
            "set-password",
            "--tenant",
            "default",
            "--email",
            "dee@example.com",
            "--password",
            "a-chosen-password-1",
        ],
    );
    assert!(!out.contains("shown once"), "{out}");
    app.login("dee@example.com", "a-chosen-password-1").await;
    for (email, password, error) in [
        ("dee@example.com", "short", "at least 10 characters"),
        (
            "nobody@example.com",
            "a-chosen-password-2",
            "no user `nobody@example.com`",
        ),
    ] {
        let out = relais()
            .envs(app.env())
            .args([
                "user",
                "set-password",
                "--tenant",
                "default",
                "--email",
                email,
                "--password",
                password,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(error), "{stderr}");
    }
}

/// In cluster mode an admin command's revocation reaches the running nodes:
/// the user's live sockets close at once, not when their tokens expire.
#[tokio::test]
async fn set_password_in_cluster_mode_closes_the_users_live_sockets() {
    let a = first_cluster_node().await;
    let b = a.spawn_peer().await;
    let (_, token) = a.user("eve@example.com", &["member"]).await;
    let mut on_a = a.ws_connected(&token).await;
    let mut on_b = b.ws_connected(&token).await;
    let out = run(
        &a,
        &[
            "user",
            "set-password",
            "--tenant",
            "default",
            "--email",
            "eve@example.com",
        ],
    );
    assert!(out.contains("password set:"), "{out}");
    assert_eq!(on_a.closed().await, Some(4003));
    assert_eq!(on_b.closed().await, Some(4003));
}
