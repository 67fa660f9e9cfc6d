//! Login, refresh rotation and reuse detection, logout, revocation of live
//! sockets, tenant administration and API keys.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn login_returns_tokens_and_me_describes_the_user() {
    let app = spawn_app().await;
    let login = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["expires_in"], 1800);
    assert_eq!(login["refresh_expires_in"], 7 * 24 * 3600);
    let me: Value = app
        .get("/api/v1/me", login["access_token"].as_str())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], ADMIN_EMAIL);
    assert_eq!(me["roles"], json!(["admin"]));
    assert!(
        me["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("manage_tenant"))
    );
}

#[tokio::test]
async fn login_is_refused_with_a_wrong_password_email_or_tenant() {
    let app = spawn_app().await;
    for (tenant, email, password) in [
        ("default", ADMIN_EMAIL, "wrong-password"),
        ("default", "nobody@example.com", ADMIN_PASSWORD),
        ("other", ADMIN_EMAIL, ADMIN_PASSWORD),
    ] {
        let res = app
            .post(
                "/api/v1/auth/login",
                None,
                json!({"tenant": tenant, "email": email, "password": password}),
            )
            .await;
        assert_eq!(res.status(), 401);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_credentials");
    }
}

#[tokio::test]
async fn login_email_is_case_insensitive() {
    let app = spawn_app().await;
    app.login(&ADMIN_EMAIL.to_uppercase(), ADMIN_PASSWORD).await;
}

#[tokio::test]
async fn refresh_rotates_the_token_and_a_reused_token_revokes_the_family() {
    let app = spawn_app().await;
    let first = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let r1 = first["refresh_token"].as_str().unwrap();

    let res = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": r1}))
        .await;
    assert_eq!(res.status(), 200);
    let second: Value = res.json().await.unwrap();
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2);
    let access2 = second["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/me", Some(access2)).await.status(), 200);

    // Replaying the first token: refused, and the whole family is revoked.
    let res = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": r1}))
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "refresh_token_reused"
    );
    let res = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": r2}))
        .await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "session_revoked"
    );
    let res = app.get("/api/v1/me", Some(access2)).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "session_revoked"
    );

    // Another session of the same user is untouched.
    let other = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(
        app.get("/api/v1/me", other["access_token"].as_str())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn an_unknown_refresh_token_is_refused() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": "rt_made_up"}),
        )
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_refresh_token"
    );
}

#[tokio::test]
async fn logout_ends_the_session_and_closes_its_live_socket_only() {
    let app = spawn_app().await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let other = app.login("ana@example.com", "user-password-123").await;
    let other_token = other["access_token"].as_str().unwrap();
    let mut ws = app.ws_connected(&token).await;
    let mut ws_other = app.ws_connected(other_token).await;

    let res = app
        .post("/api/v1/auth/logout", Some(&token), json!({}))
        .await;
    assert_eq!(res.status(), 204);
    assert_eq!(ws.closed().await, Some(4003));
    assert_eq!(app.get("/api/v1/me", Some(&token)).await.status(), 401);
    // The other session keeps its socket.
    assert_eq!(
        ws_other.request(json!({"type": "ping"})).await["type"],
        "pong"
    );

    let res = app
        .post(
            "/api/v1/auth/logout",
            Some(other_token),
            json!({"all": true}),
        )
        .await;
    assert_eq!(res.status(), 204);
    assert_eq!(ws_other.closed().await, Some(4003));
}

#[tokio::test]
async fn disabling_a_user_closes_their_sockets_and_blocks_login() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (id, token) = app.user("bo@example.com", &["member"]).await;
    let mut ws = app.ws_connected(&token).await;
    let res = app
        .http
        .patch(app.url(&format!("/api/v1/admin/users/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(ws.closed().await, Some(4003));
    let res = app.post("/api/v1/auth/login", None, json!({"tenant": "default", "email": "bo@example.com", "password": "user-password-123"})).await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "user_disabled"
    );
}

#[tokio::test]
async fn a_role_change_closes_the_users_sockets() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (id, token) = app.user("cy@example.com", &["member"]).await;
    let mut ws = app.ws_connected(&token).await;
    ws.subscribe("role:member").await;
    let res = app
        .http
        .patch(app.url(&format!("/api/v1/admin/users/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"roles": ["moderator"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["roles"],
        json!(["moderator"])
    );
    assert_eq!(ws.closed().await, Some(4003));
    // Signing in again yields the new role's rights.
    let token = app.login("cy@example.com", "user-password-123").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = app.ws_connected(&token).await;
    assert_eq!(
        ws.request(json!({"type": "subscribe", "channel": "role:member"}))
            .await["code"],
        "forbidden"
    );
    ws.subscribe("role:moderator").await;
}

#[tokio::test]
async fn admin_revoke_sessions_closes_every_socket_of_the_user() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (id, token) = app.user("di@example.com", &["member"]).await;
    let mut a = app.ws_connected(&token).await;
    let mut b = app.ws_connected(&token).await;
    let res = app
        .post(
            &format!("/api/v1/admin/users/{id}/revoke-sessions"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(res.status(), 204);
    assert_eq!(a.closed().await, Some(4003));
    assert_eq!(b.closed().await, Some(4003));
}

#[tokio::test]
async fn tenant_administration_needs_the_admin_role() {
    let app = spawn_app().await;
    let (_, member) = app.user("ed@example.com", &["member"]).await;
    for path in [
        "/api/v1/admin/users",
        "/api/v1/admin/api-keys",
        "/api/v1/admin/roles",
    ] {
        let res = app.get(path, Some(&member)).await;
        assert_eq!(res.status(), 403, "{path}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"]["code"],
            "forbidden"
        );
        assert_eq!(app.get(path, None).await.status(), 401, "{path}");
    }
    let admin = app.admin_token().await;
    let roles: Value = app
        .get("/api/v1/admin/roles", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<_> = roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "admin",
            "moderator",
            "broadcaster",
            "editor",
            "member",
            "client"
        ]
    );
}

#[tokio::test]
async fn creating_users_validates_input() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": "long-enough-pw", "roles": ["member"]}),
            422,
            "invalid_email",
        ),
        (
            json!({"email": "x@example.com", "password": "short", "roles": ["member"]}),
            422,
            "weak_password",
        ),
        (
            json!({"email": "x@example.com", "password": "long-enough-pw", "roles": []}),
            422,
            "invalid_roles",
        ),
        (
            json!({"email": "x@example.com", "password": "long-enough-pw", "roles": ["emperor"]}),
            422,
            "invalid_body",
        ),
        (
            json!({"email": ADMIN_EMAIL, "password": "long-enough-pw", "roles": ["member"]}),
            409,
            "user_exists",
        ),
    ];
    for (body, status, code) in cases {
        let res = app
            .post("/api/v1/admin/users", Some(&admin), body.clone())
            .await;
        assert_eq!(res.status(), status, "{body}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"]["code"],
            code,
            "{body}"
        );
    }
}

#[tokio::test]
async fn api_keys_are_shown_once_scoped_and_revocable() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let res = app
        .post(
            "/api/v1/admin/api-keys",
            Some(&admin),
            json!({"name": "backend", "scopes": ["publish"]}),
        )
        .await;
    let created: Value = res.json().await.unwrap();
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("rls_"));
    let listed: Value = app
        .get("/api/v1/admin/api-keys", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        !listed.to_string().contains(key),
        "the key is never listed again"
    );
    assert_eq!(listed["items"][0]["prefix"], created["prefix"]);

    // A publish-only key cannot administer.
    assert_eq!(
        app.get("/api/v1/admin/users", Some(key)).await.status(),
        403
    );
    app.publish(key, "broadcast", json!({"n": 1})).await;

    let id = created["id"].as_str().unwrap();
    let res = app
        .http
        .delete(app.url(&format!("/api/v1/admin/api-keys/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = app
        .post(
            "/api/v1/publish",
            Some(key),
            json!({"channel": "broadcast", "data": 1}),
        )
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_api_key"
    );
}

#[tokio::test]
async fn an_admin_scoped_key_manages_users() {
    let app = spawn_app().await;
    let key = app.api_key(&["admin"]).await;
    let res = app
        .post(
            "/api/v1/admin/users",
            Some(&key),
            json!({"email": "fi@example.com", "password": "long-enough-pw", "roles": ["client"]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let res = app
        .http
        .get(app.url("/api/v1/admin/users"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn the_signing_secret_survives_a_restart_so_sessions_do_too() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let app = app.restart().await;
    assert_eq!(app.get("/api/v1/me", Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn refused_rest_credentials_count_as_authentication_failures() {
    let app = spawn_app().await;
    let before = app.metric("relais_auth_failures_total").await;
    // A bad access token, an unknown API key (both headers), and a token
    // that is not a JWT at all: each is a refused credential.
    for (path, bearer) in [
        ("/api/v1/me", "not-a-token"),
        ("/api/v1/admin/users", "rls_unknown_key"),
        ("/api/v1/inbox", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"),
    ] {
        let res = app.get(path, Some(bearer)).await;
        assert_eq!(res.status(), 401, "{path}");
    }
    let res = app
        .http
        .post(app.url("/api/v1/publish"))
        .header("x-api-key", "rls_unknown_key")
        .json(&json!({"channel": "broadcast", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // No credential at all is not a refused one.
    assert_eq!(app.get("/api/v1/me", None).await.status(), 401);
    assert_eq!(app.metric("relais_auth_failures_total").await, before + 4.0);
}

#[tokio::test]
async fn a_user_changes_their_password_and_their_other_sessions_end() {
    let app = spawn_app().await;
    let (_, token) = app.user("cy@example.com", &["member"]).await;
    let other = app.login("cy@example.com", "user-password-123").await;
    let other_token = other["access_token"].as_str().unwrap();
    let mut ws = app.ws_connected(&token).await;
    let mut ws_other = app.ws_connected(other_token).await;
    let change = |token: String, body: Value| {
        app.http
            .patch(app.url("/api/v1/me/password"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };

    // A wrong current password, a weak new one, an unknown field.
    let res = change(
        token.clone(),
        json!({"current_password": "not-my-password", "new_password": "a-new-password-456"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "forbidden"
    );
    let res = change(
        token.clone(),
        json!({"current_password": "user-password-123", "new_password": "short"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "weak_password"
    );
    let res = change(token.clone(), json!({"new_password": "a-new-password-456"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    // Nothing changed so far.
    app.login("cy@example.com", "user-password-123").await;

    let res = change(
        token.clone(),
        json!({"current_password": "user-password-123", "new_password": "a-new-password-456"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    // The other sessions end and their sockets close; this one stays.
    assert_eq!(ws_other.closed().await, Some(4003));
    assert_eq!(app.get("/api/v1/me", Some(other_token)).await.status(), 401);
    let res = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": other["refresh_token"]}),
        )
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(app.get("/api/v1/me", Some(&token)).await.status(), 200);
    assert_eq!(ws.request(json!({"type": "ping"})).await["type"], "pong");
    // Only the new password signs in.
    let res = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"tenant": "default", "email": "cy@example.com", "password": "user-password-123"}),
        )
        .await;
    assert_eq!(res.status(), 401);
    app.login("cy@example.com", "a-new-password-456").await;
    // An API key has no password to change.
    let key = app.api_key(&["admin"]).await;
    let res = change(
        key,
        json!({"current_password": "x", "new_password": "a-new-password-789"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn the_openapi_document_describes_the_password_change() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let op = &doc["paths"]["/api/v1/me/password"]["patch"];
    for status in ["204", "401", "403", "422"] {
        assert!(op["responses"].get(status).is_some(), "{status}");
    }
}

async fn login_attempt(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"tenant": "default", "email": email, "password": password}),
    )
    .await
}

#[tokio::test]
async fn wrong_passwords_in_a_row_throttle_the_account_without_checking_the_password() {
    let app = spawn_app().await;
    app.user("eve@example.com", &["member"]).await;
    let throttled_before = app.metric("relais_login_throttled_total").await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(login_attempt(&app, "eve@example.com", "guess-guess-guess").await);
    }
    let codes: Vec<u16> = statuses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(codes[..5], [401; 5], "{codes:?}");
    assert_eq!(codes[5..], [429; 25], "{codes:?}");
    let res = statuses.pop().unwrap();
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15).contains(&retry_after), "{retry_after}");
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "too_many_attempts"
    );
    // The right password is refused the same way: no oracle while locked.
    let res = login_attempt(&app, "EVE@example.com", "user-password-123").await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(
        app.metric("relais_login_throttled_total").await,
        throttled_before + 26.0
    );
    // Other accounts are not affected; an unknown one is throttled alike.
    app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(
            login_attempt(&app, "ghost@example.com", "guess-guess-guess")
                .await
                .status(),
        );
    }
    assert_eq!(codes[4], 401);
    assert_eq!(codes[5], 429);
}

#[tokio::test]
async fn a_successful_login_resets_the_account_count() {
    let app = spawn_app().await;
    app.user("fay@example.com", &["member"]).await;
    for round in 0..3 {
        for _ in 0..4 {
            let res = login_attempt(&app, "fay@example.com", "guess-guess-guess").await;
            assert_eq!(res.status(), 401, "round {round}");
        }
        app.login("fay@example.com", "user-password-123").await;
    }
}

#[tokio::test]
async fn the_login_throttle_is_shared_by_the_nodes_of_a_cluster() {
    let app = spawn_app().await;
    let peer = app.spawn_peer().await;
    for _ in 0..5 {
        let res = login_attempt(&app, ADMIN_EMAIL, "guess-guess-guess").await;
        assert_eq!(res.status(), 401);
    }
    let res = login_attempt(&peer, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(res.status(), 429);
}

#[tokio::test]
async fn failures_from_one_public_address_throttle_it_across_accounts() {
    use relais::auth::service::PasswordRefused;
    let app = spawn_app().await;
    let auth = &app.state.auth;
    let attacker: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    // One password tried on 20 accounts: each account sees one failure only.
    for i in 0..20 {
        let res = auth
            .login(
                "default",
                &format!("user{i}@example.com"),
                "Winter2024!",
                Some(attacker),
            )
            .await;
        assert!(matches!(res, Err(PasswordRefused::Api(_))), "attempt {i}");
    }
    let res = auth
        .login("default", ADMIN_EMAIL, ADMIN_PASSWORD, Some(attacker))
        .await;
    assert!(
        matches!(res, Err(PasswordRefused::Throttled(t)) if (1..=15).contains(&t.retry_after)),
        "{res:?}"
    );
    // Another address, or a proxy on a private one, is not affected.
    for other in ["198.51.100.1", "10.0.0.2"] {
        let res = auth
            .login(
                "default",
                ADMIN_EMAIL,
                ADMIN_PASSWORD,
                Some(other.parse().unwrap()),
            )
            .await;
        assert!(res.is_ok(), "{other}");
    }
    // Private addresses are never counted.
    let proxy: std::net::IpAddr = "10.0.0.3".parse().unwrap();
    for i in 0..25 {
        let res = auth
            .login(
                "default",
                &format!("other{i}@example.com"),
                "Winter2024!",
                Some(proxy),
            )
            .await;
        assert!(matches!(res, Err(PasswordRefused::Api(_))), "attempt {i}");
    }
}

#[tokio::test]
async fn wrong_current_passwords_throttle_the_password_change_too() {
    let app = spawn_app().await;
    let (_, token) = app.user("gus@example.com", &["member"]).await;
    let mut codes = Vec::new();
    for current in [
        "guess-1-guess",
        "guess-2-guess",
        "guess-3-guess",
        "guess-4-guess",
        "guess-5-guess",
        "user-password-123",
    ] {
        let res = app
            .http
            .patch(app.url("/api/v1/me/password"))
            .bearer_auth(&token)
            .json(&json!({"current_password": current, "new_password": "a-new-password-456"}))
            .send()
            .await
            .unwrap();
        codes.push(res.status().as_u16());
    }
    assert_eq!(codes, [403, 403, 403, 403, 403, 429]);
    // The lock-out is the account's: sign-in is throttled as well.
    assert_eq!(
        login_attempt(&app, "gus@example.com", "user-password-123")
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn admin_lists_of_users_and_keys_are_pages_with_a_cursor() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for i in 0..4 {
        let res = app
            .post(
                "/api/v1/admin/users",
                Some(&admin),
                json!({"email": format!("u{i}+list@example.com"), "password": "long-enough-pw", "roles": ["member"]}),
            )
            .await;
        assert_eq!(res.status(), 201);
        let res = app
            .post(
                "/api/v1/admin/api-keys",
                Some(&admin),
                json!({"name": format!("key {i}"), "scopes": ["publish"]}),
            )
            .await;
        assert_eq!(res.status(), 201);
    }
    // Five users (with the admin) and four keys, walked two at a time.
    for (path, total, field) in [
        ("/api/v1/admin/users", 5, "email"),
        ("/api/v1/admin/api-keys", 4, "name"),
    ] {
        let mut seen = Vec::new();
        let mut url = format!("{path}?limit=2");
        let mut pages = 0;
        loop {
            let res = app.get(&url, Some(&admin)).await;
            assert_eq!(res.status(), 200, "{url}");
            let page: Value = res.json().await.unwrap();
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 2);
            seen.extend(items.iter().map(|i| i[field].as_str().unwrap().to_owned()));
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(cursor) => url = format!("{path}?limit=2&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), total, "{path}: {seen:?}");
        assert_eq!(pages, total.div_ceil(2), "{path}");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), total, "no item twice: {seen:?}");
        if field == "email" {
            assert_eq!(sorted, seen, "users come by email");
        }
        // Without a limit, one page holds them all.
        let page: Value = app.get(path, Some(&admin)).await.json().await.unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), total);
        assert_eq!(page["next_cursor"], Value::Null);
        // Unknown parameters and foreign cursors are refused.
        for (query, code) in [
            ("?limt=2", "invalid_query"),
            ("?limit=two", "invalid_query"),
            ("?cursor=%%%", "invalid_cursor"),
        ] {
            let res = app.get(&format!("{path}{query}"), Some(&admin)).await;
            assert_eq!(res.status(), 422, "{path}{query}");
            assert_eq!(
                res.json::<Value>().await.unwrap()["error"]["code"],
                code,
                "{path}{query}"
            );
        }
    }
}
