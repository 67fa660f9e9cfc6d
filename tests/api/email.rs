//! Email delivery against a real SMTP server process on loopback: fallback,
//! quiet hours, digests, opt-outs, languages, retries, dead letters, and
//! crashes. The engine's clock is moved forward instead of waiting.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    helpers::{NodeProcess, TestApp, WAIT, spawn_app_with},
    notifications::{done, inbox, trigger},
    smtp::{Received, SmtpSink},
};

/// Settings that make retries and polling fast enough for tests.
fn smtp_vars(port: u16) -> Vec<(String, String)> {
    [
        ("RELAIS_SMTP_HOST", "127.0.0.1".to_owned()),
        ("RELAIS_SMTP_PORT", port.to_string()),
        ("RELAIS_SMTP_TLS", "none".into()),
        ("RELAIS_SMTP_TIMEOUT_SECS", "1".into()),
        ("RELAIS_NOTIFY_LEASE_SECS", "5".into()),
        ("RELAIS_NOTIFY_POLL_SECS", "0.1".into()),
        ("RELAIS_EMAIL_RETRY_BASE_SECS", "0.2".into()),
        ("RELAIS_EMAIL_RETRY_MAX_SECS", "0.5".into()),
        ("RELAIS_DIGEST_TICK_SECS", "0.1".into()),
        (
            "RELAIS_EMAIL_FROM",
            "Relais <notifications@relais.test>".into(),
        ),
        ("RELAIS_PUBLIC_URL", "https://app.example.com".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

async fn app_with_smtp(sink: &SmtpSink, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = smtp_vars(sink.port);
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_app_with(&refs).await
}

fn task_assigned(users: &[&str]) -> Value {
    json!({
        "type": "task.assigned",
        "payload": {"task": {"id": "t9", "title": "Brief créatif"}, "project": {"id": "p1", "name": "Offre fibre"}, "actor": {"name": "Awa"}},
        "recipients": {"users": users},
    })
}

fn maintenance(users: &[&str]) -> Value {
    json!({
        "type": "system.maintenance",
        "payload": {"maintenance": {"starts_at": "22:00", "ends_at": "23:00"}},
        "recipients": {"users": users},
    })
}

/// Emails of the tenant in one status, newest first (admin API).
async fn emails(app: &TestApp, admin: &str, status: &str) -> Vec<Value> {
    let page: Value = app
        .get(
            &format!("/api/v1/admin/emails?status={status}&limit=200"),
            Some(admin),
        )
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().cloned().unwrap_or_default()
}

async fn email_detail(app: &TestApp, admin: &str, id: &str) -> Value {
    app.get(&format!("/api/v1/admin/emails/{id}"), Some(admin))
        .await
        .json()
        .await
        .unwrap()
}

/// Polls the admin API until an email in `status` exists for `to`.
async fn wait_status(app: &TestApp, admin: &str, status: &str, to: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(e) = emails(app, admin, status)
            .await
            .into_iter()
            .find(|e| e["to"] == to)
        {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {status} email to {to}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Messages received for `to`.
fn received_by<'a>(all: &'a [Received], to: &str) -> Vec<&'a Received> {
    all.iter()
        .filter(|m| m.rcpt_tos.iter().any(|r| r == to))
        .collect()
}

/// Waits a little longer to be sure nothing else arrives, then returns all.
async fn settle(sink: &SmtpSink) -> Vec<Received> {
    tokio::time::sleep(Duration::from_millis(700)).await;
    sink.messages()
}

#[tokio::test]
async fn fallback_email_goes_only_if_the_notification_stays_unread() {
    let sink = SmtpSink::start().await;
    let app = app_with_smtp(&sink, &[]).await;
    let admin = app.admin_token().await;
    let key = app.api_key(&["notify"]).await;
    let (alice, _) = app.user("alice@example.com", &["member"]).await;
    let (bob, bob_token) = app.user("bob@example.com", &["member"]).await;

    done(
        &app,
        &key,
        &trigger(&app, &key, task_assigned(&[&alice, &bob])).await,
    )
    .await;
    // Bob reads his at once; Alice does not.
    let id = inbox(&app, &bob_token, "").await["items"][0]["id"]
        .as_i64()
        .unwrap();
    app.post(
        &format!("/api/v1/inbox/{id}/read"),
        Some(&bob_token),
        json!({}),
    )
    .await;
    // Nothing before the delay (default five minutes).
    assert!(settle(&sink).await.is_empty());
    assert_eq!(emails(&app, &admin, "pending").await.len(), 1);

    app.state.notify.clock.advance(Duration::from_secs(301));
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_tos, ["alice@example.com"]);
    assert!(
        got[0]
            .header_decoded("Subject")
            .unwrap()
            .contains("Brief créatif")
    );
    assert!(
        got[0]
            .text_body()
            .contains("https://app.example.com/projects/p1/tasks/t9"),
        "{}",
        got[0].text_body()
    );
    assert!(
        got[0].html_body().contains("Brief cr"),
        "{}",
        got[0].html_body()
    );
    let sent = wait_status(&app, &admin, "sent", "alice@example.com").await;
    assert_eq!(
        got[0].message_id().unwrap(),
        format!("{}@relais.test", sent["id"].as_str().unwrap())
    );
    let cancelled = wait_status(&app, &admin, "cancelled", "bob@example.com").await;
    assert_eq!(cancelled["kind"], "fallback");
    assert_eq!(
        received_by(&settle(&sink).await, "bob@example.com").len(),
        0
    );

    let log = email_detail(&app, &admin, sent["id"].as_str().unwrap()).await;
    assert_eq!(log["log"][0]["outcome"], "sent");
    assert_eq!(log["log"][0]["smtp_code"], 250);
}

#[tokio::test]
async fn quiet_hours_defer_email_and_critical_bypasses_them() {
    let sink = SmtpSink::start().await;
    let app = app_with_smtp(&sink, &[]).await;
    let admin = app.admin_token().await;
    let key = app.api_key(&["notify"]).await;
    let (alice, token) = app.user("alice@example.com", &["member"]).await;
    // Quiet hours around "now" in Alice's zone, whatever the time of day.
    let clock = &app.state.notify.clock;
    let start = jiff::Timestamp::from_millisecond(clock.now_millis())
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Tokyo").unwrap());
    let from = start.checked_sub(jiff::Span::new().hours(1)).unwrap();
    let until = start.checked_add(jiff::Span::new().hours(2)).unwrap();
    let res = app
        .http
        .patch(app.url("/api/v1/me/preferences"))
        .bearer_auth(&token)
        .json(&json!({"timezone": "Asia/Tokyo", "quiet_hours": {"start": from.strftime("%H:%M").to_string(), "end": until.strftime("%H:%M").to_string()}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Critical: at once, quiet hours or not.
    done(
        &app,
        &key,
        &trigger(&app, &key, maintenance(&[&alice])).await,
    )
    .await;
    let got = sink.wait_for(1, WAIT).await;
    assert!(got[0].header_decoded("Subject").unwrap().contains("22:00"));

    // Normal: the fallback falls due inside quiet hours and is deferred, not dropped.
    done(
        &app,
        &key,
        &trigger(&app, &key, task_assigned(&[&alice])).await,
    )
    .await;
    clock.advance(Duration::from_secs(301));
    let deferred = loop {
        let pending = emails(&app, &admin, "pending").await;
        let e = pending
            .into_iter()
            .find(|e| e["kind"] == "fallback")
            .expect("still pending");
        let detail = email_detail(&app, &admin, e["id"].as_str().unwrap()).await;
        if detail["log"].as_array().is_some_and(|l| !l.is_empty()) {
            break detail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(deferred["log"][0]["outcome"], "deferred");
    assert_eq!(deferred["attempts"], 0);
    let end_ms = deferred["send_after"].as_i64().unwrap();
    assert!(
        end_ms > clock.now_millis() + 3_000_000,
        "deferred to the end of quiet hours"
    );
    assert_eq!(settle(&sink).await.len(), 1);

    clock.set_millis(end_ms + 1000);
    let got = sink.wait_for(2, WAIT).await;
    assert!(
        got[1]
            .header_decoded("Subject")
            .unwrap()
            .contains("Brief créatif")
    );
}

#[tokio::test]
async fn opt_outs_are_honoured_except_for_mandatory_types_and_languages_follow_the_user() {
    let sink = SmtpSink::start().await;
    let app = app_with_smtp(&sink, &[]).await;
    let key = app.api_key(&["notify"]).await;
    let (alice, alice_token) = app.user("alice@example.com", &["member"]).await;
    let (bob, bob_token) = app.user("bob@example.com", &["member"]).await;
    for (token, body) in [
        (
            &alice_token,
            json!({"locale": "fr", "categories": {"tasks": {"email": false}, "account": {"email": false, "in_app": false}}}),
        ),
        (&bob_token, json!({"locale": "en"})),
    ] {
        let res = app
            .http
            .put(app.url("/api/v1/me/preferences"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    done(
        &app,
        &key,
        &trigger(&app, &key, task_assigned(&[&alice, &bob])).await,
    )
    .await;
    app.state.notify.clock.advance(Duration::from_secs(301));
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_tos, ["bob@example.com"]);
    assert!(
        got[0]
            .header_decoded("Subject")
            .unwrap()
            .starts_with("New task"),
        "{:?}",
        got[0].header_decoded("Subject")
    );
    assert_eq!(
        received_by(&settle(&sink).await, "alice@example.com").len(),
        0
    );
    // In-app is still on for Alice's tasks, in French.
    let item = &inbox(&app, &alice_token, "").await["items"][0];
    assert!(item["title"].as_str().unwrap().contains("Brief créatif"));
    assert!(
        !item["title"].as_str().unwrap().starts_with("New task"),
        "{item}"
    );

    // Mandatory: delivered despite the opt-out, in her language.
    let body = json!({"type": "account.password_changed", "payload": {"changed_at": "21/11/2026 10:00"}, "recipients": {"users": [alice]}});
    done(&app, &key, &trigger(&app, &key, body).await).await;
    let got = sink.wait_for(2, WAIT).await;
    let mail = received_by(&got, "alice@example.com")[0];
    let text = mail.text_body();
    assert!(
        text.contains("Bonjour") && text.contains("alice@example.com"),
        "{text}"
    );
    assert!(mail.html_body().contains("lang=\"fr\""));
    assert_eq!(
        inbox(&app, &alice_token, "?category=account").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn an_smtp_server_down_then_back_gets_the_email_once() {
    let mut sink = SmtpSink::start().await;
    let app = app_with_smtp(&sink, &[("RELAIS_EMAIL_MAX_ATTEMPTS", "100")]).await;
    let admin = app.admin_token().await;
    let key = app.api_key(&["notify"]).await;
    let (alice, _) = app.user("alice@example.com", &["member"]).await;
    let (port, maildir) = (sink.port, sink.maildir.clone());
    sink.kill().await;

    done(
        &app,
        &key,
        &trigger(&app, &key, maintenance(&[&alice])).await,
    )
    .await;
    // Wait for at least two failed, logged attempts.
    let id = loop {
        if let Some(e) = emails(&app, &admin, "pending").await.first()
            && e["attempts"].as_i64().unwrap() >= 2
        {
            break e["id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let detail = email_detail(&app, &admin, &id).await;
    assert_eq!(detail["log"][0]["outcome"], "retry");
    assert!(detail["last_error"].as_str().is_some());

    let sink = SmtpSink::start_on(port, maildir).await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(settle(&sink).await.len(), 1);
    let sent = wait_status(&app, &admin, "sent", "alice@example.com").await;
    assert_eq!(sent["id"], id.as_str());
}

#[tokio::test]
async fn refusals_timeouts_and_dropped_connections_are_retried_or_dead_lettered() {
    let sink = SmtpSink::start().await;
    let app = app_with_smtp(&sink, &[("RELAIS_EMAIL_MAX_ATTEMPTS", "3")]).await;
    let admin = app.admin_token().await;
    let key = app.api_key(&["notify"]).await;
    let (alice, _) = app.user("alice@example.com", &["member"]).await;
    let (bob, _) = app.user("bob@example.com", &["member"]).await;
    let (carol, _) = app.user("carol@example.com", &["member"]).await;

    // A temporary refusal, then a dropped connection, then a hang: each
    // retried; the server then accepts and the email arrives once.
    for mode in ["tempfail", "drop", "hang"] {
        sink.set_mode(mode);
        done(
            &app,
            &key,
            &trigger(&app, &key, maintenance(&[&alice])).await,
        )
        .await;
        let id = loop {
            if let Some(e) = emails(&app, &admin, "pending")
                .await
                .into_iter()
                .find(|e| e["attempts"].as_i64().unwrap() >= 1 && e["last_error"].is_string())
            {
                break e["id"].as_str().unwrap().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        sink.set_mode("accept");
        let sent = loop {
            let detail = email_detail(&app, &admin, &id).await;
            if detail["status"] == "sent" {
                break detail;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let log = sent["log"].as_array().unwrap();
        assert_eq!(log.first().unwrap()["outcome"], "retry", "{mode}: {sent}");
        assert_eq!(log.last().unwrap()["outcome"], "sent", "{mode}: {sent}");
        if mode == "tempfail" {
            assert_eq!(log[0]["smtp_code"], 451);
        }
    }
    let all = settle(&sink).await;
    assert_eq!(received_by(&all, "alice@example.com").len(), 3);
    let ids: std::collections::HashSet<_> = all.iter().map(|m| m.message_id().unwrap()).collect();
    assert_eq!(ids.len(), 3, "three distinct emails, none twice");

    // A permanent refusal dead-letters at once; an admin retries it.
    sink.set_mode("reject");
    done(&app, &key, &trigger(&app, &key, maintenance(&[&bob])).await).await;
    let dead = wait_status(&app, &admin, "dead", "bob@example.com").await;
    let detail = email_detail(&app, &admin, dead["id"].as_str().unwrap()).await;
    assert_eq!(detail["log"][0]["outcome"], "failed");
    assert_eq!(detail["log"][0]["smtp_code"], 550);
    assert_eq!(detail["attempts"], 1);
    // Too many temporary failures dead-letter too (3 attempts here).
    sink.set_mode("tempfail");
    done(
        &app,
        &key,
        &trigger(&app, &key, maintenance(&[&carol])).await,
    )
    .await;
    let dead_carol = wait_status(&app, &admin, "dead", "carol@example.com").await;
    assert_eq!(dead_carol["attempts"], 3);

    sink.set_mode("accept");
    let (_, member) = app.user("dan@example.com", &["member"]).await;
    let retry = format!(
        "/api/v1/admin/emails/{}/retry",
        dead["id"].as_str().unwrap()
    );
    let res = app.post(&retry, Some(&member), json!({})).await;
    assert_eq!(res.status(), 403);
    let res = app.post(&retry, Some(&admin), json!({})).await;
    assert_eq!(res.status(), 200);
    // Once back in the queue (or sent) it is no longer dead.
    let res = app.post(&retry, Some(&admin), json!({})).await;
    assert_eq!(res.status(), 409);
    wait_status(&app, &admin, "sent", "bob@example.com").await;
    assert_eq!(
        received_by(&settle(&sink).await, "bob@example.com").len(),
        1
    );
}

#[tokio::test]
async fn a_crash_in_the_middle_of_a_send_still_delivers_the_email_once() {
    let sink = SmtpSink::start().await;
    sink.set_mode("hang");
    // Set up users and a key in-process, then stop that node: from here on
    // only `relais` processes run, so one can be killed.
    let mut setup = app_with_smtp(&sink, &[("RELAIS_EMAIL_MAX_ATTEMPTS", "100")]).await;
    let key = setup.api_key(&["notify"]).await;
    let admin = setup.admin_token().await;
    let (alice, _) = setup.user("alice@example.com", &["member"]).await;
    setup.shutdown().await.unwrap();
    let env = setup.env().clone();

    let mut first = NodeProcess::start(&env);
    let http = reqwest::Client::new();
    let res = http
        .post(format!("http://{}/api/v1/notifications", first.addr))
        .bearer_auth(&key)
        .json(&maintenance(&[&alice]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    // The node is now inside an SMTP transaction the server never answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill();
    assert!(sink.messages().is_empty());

    sink.set_mode("accept");
    let second = NodeProcess::start(&env);
    // After the dead node's lease lapses, the email goes, exactly once.
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].rcpt_tos, ["alice@example.com"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.messages().len(), 1);
    let page: Value = http
        .get(format!(
            "http://{}/api/v1/admin/emails?status=sent",
            second.addr
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        got[0].message_id().unwrap(),
        format!("{}@relais.test", page["items"][0]["id"].as_str().unwrap())
    );
}

/// The next 06:00 UTC at least a day ahead of the engine's clock.
fn next_morning(now_ms: i64) -> i64 {
    let day = 24 * 3600 * 1000;
    (now_ms / day + 2) * day + 6 * 3600 * 1000
}

#[tokio::test]
async fn daily_digests_go_at_each_users_local_hour_once_per_day() {
    let sink = SmtpSink::start().await;
    let app = app_with_smtp(&sink, &[]).await;
    let key = app.api_key(&["notify"]).await;
    let (paris, paris_token) = app.user("paris@example.com", &["member"]).await;
    let (ny, ny_token) = app.user("ny@example.com", &["member"]).await;
    for (token, tz, locale) in [
        (&paris_token, "Europe/Paris", "fr"),
        (&ny_token, "America/New_York", "en"),
    ] {
        let res = app
            .http
            .put(app.url("/api/v1/me/preferences"))
            .bearer_auth(token)
            .json(&json!({"timezone": tz, "locale": locale, "digest_hour": 8, "categories": {"tasks": {"frequency": "daily"}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let clock = &app.state.notify.clock;
    let six_utc = next_morning(clock.now_millis());
    let hour = 3600 * 1000;
    // 06:00 UTC is 07:00 in Paris (winter) and 01:00 in New York: no digest yet.
    // (The first pass of each user records the current period.)
    clock.set_millis(six_utc - 2 * hour);
    tokio::time::sleep(Duration::from_millis(300)).await;
    clock.set_millis(six_utc);
    for _ in 0..3 {
        done(
            &app,
            &key,
            &trigger(&app, &key, task_assigned(&[&paris, &ny])).await,
        )
        .await;
    }
    // Critical ones are emailed at once and left out of digests.
    done(
        &app,
        &key,
        &trigger(&app, &key, maintenance(&[&paris])).await,
    )
    .await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    // No fallback email either: tasks go to the digest.
    clock.advance(Duration::from_secs(600));
    assert_eq!(settle(&sink).await.len(), 1);

    // 07:05 UTC = 08:05 in Paris: Paris gets its digest, New York does not.
    clock.set_millis(six_utc + hour + 5 * 60 * 1000);
    let got = sink.wait_for(2, WAIT).await;
    let digest = received_by(&got, "paris@example.com")
        .into_iter()
        .find(|m| m.header_decoded("Subject").unwrap().contains("quotidien"))
        .expect("a French daily digest");
    assert!(
        digest
            .header_decoded("Subject")
            .unwrap()
            .contains("3 notifications non lues")
    );
    assert_eq!(
        digest.text_body().matches("/projects/p1/tasks/t9").count(),
        3,
        "{}",
        digest.text_body()
    );
    assert!(
        !digest.text_body().contains("22:00"),
        "critical ones are not repeated"
    );
    // A digest is something one may stop, from the mail client too.
    let (one_click, page) = unsubscribe_addresses(digest);
    assert!(one_click.starts_with(ONE_CLICK), "{one_click}");
    assert_eq!(page, "https://app.example.com/settings/notifications");
    assert_eq!(received_by(&settle(&sink).await, "ny@example.com").len(), 0);

    // 13:05 UTC = 08:05 in New York.
    clock.set_millis(six_utc + 7 * hour + 5 * 60 * 1000);
    let got = sink.wait_for(3, WAIT).await;
    let digest = received_by(&got, "ny@example.com")[0];
    assert!(
        digest
            .header_decoded("Subject")
            .unwrap()
            .contains("daily digest")
    );
    // Later the same day: no second digest for anyone.
    clock.set_millis(six_utc + 12 * hour);
    assert_eq!(settle(&sink).await.len(), 3);
    // Next day, with nothing new unread: nothing sent.
    clock.set_millis(six_utc + 26 * hour);
    assert_eq!(settle(&sink).await.len(), 3);
}

#[tokio::test]
async fn without_smtp_emails_are_written_as_files_in_the_data_folder() {
    let app = spawn_app_with(&[("RELAIS_NOTIFY_POLL_SECS", "0.1")]).await;
    let key = app.api_key(&["notify"]).await;
    let (alice, _) = app.user("alice@example.com", &["member"]).await;
    done(
        &app,
        &key,
        &trigger(&app, &key, maintenance(&[&alice])).await,
    )
    .await;
    let dir = app.data_dir.join("mail");
    let deadline = tokio::time::Instant::now() + WAIT;
    let file = loop {
        let found = std::fs::read_dir(&dir).ok().and_then(|mut d| {
            d.find_map(|e| {
                e.ok()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            })
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no .eml in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let raw = std::fs::read_to_string(file).unwrap();
    assert!(raw.contains("To: alice@example.com"), "{raw}");
    assert!(raw.contains("Message-ID: <"));
    assert!(
        raw.contains("\r\nAuto-Submitted: auto-generated\r\n"),
        "{raw}"
    );
}

const PREFERENCES: &str = "https://app.example.com/settings/notifications";
/// The start of every one-click unsubscribe address in the tests' emails.
const ONE_CLICK: &str = "https://app.example.com/api/v1/unsubscribe/";

/// The two addresses of an email's `List-Unsubscribe` (one-click, then the
/// preferences page), after checking it also promises one-click.
fn unsubscribe_addresses(mail: &Received) -> (String, String) {
    let header = mail.header("List-Unsubscribe").expect("List-Unsubscribe");
    let urls: Vec<String> = header
        .split(',')
        .map(|u| {
            let u = u.trim();
            assert!(u.starts_with('<') && u.ends_with('>'), "{header}");
            u[1..u.len() - 1].to_owned()
        })
        .collect();
    assert_eq!(urls.len(), 2, "{header}");
    assert_eq!(
        mail.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    (urls[0].clone(), urls[1].clone())
}

/// The path of a one-click address, to reach it on the test server (the
/// public URL is not the server's address).
fn one_click_path(url: &str) -> String {
    let path = url
        .strip_prefix("https://app.example.com")
        .expect("an address under the public URL");
    assert!(path.starts_with("/api/v1/unsubscribe/"), "{url}");
    path.to_owned()
}

/// What a mail provider sends to unsubscribe in one click: a bare POST, no
/// credentials, no cookies.
async fn one_click_post(app: &TestApp, path: &str) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap()
}

async fn preferences(app: &TestApp, token: &str) -> Value {
    let res = app.get("/api/v1/me/preferences", Some(token)).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn every_email_is_marked_automatic_and_those_one_may_opt_out_of_say_where() {
    let sink = SmtpSink::start().await;
    let app = app_with_smtp(&sink, &[]).await;
    let key = app.api_key(&["notify"]).await;
    let (alice, alice_token) = app.user("alice@example.com", &["member"]).await;
    let (bob, _) = app.user("bob@example.com", &["member"]).await;
    let res = app
        .http
        .put(app.url("/api/v1/me/preferences"))
        .bearer_auth(&alice_token)
        .json(&json!({"locale": "fr"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // An ordinary type: the recipient may opt out, in French and in English.
    done(
        &app,
        &key,
        &trigger(&app, &key, task_assigned(&[&alice, &bob])).await,
    )
    .await;
    app.state.notify.clock.advance(Duration::from_secs(301));
    let got = sink.wait_for(2, WAIT).await;
    for (to, words) in [
        ("alice@example.com", "Gérer vos préférences de notification"),
        ("bob@example.com", "Manage your notification preferences"),
    ] {
        let mail = received_by(&got, to)[0];
        assert_eq!(
            mail.header("Auto-Submitted").as_deref(),
            Some("auto-generated")
        );
        // One-click first (RFC 8058), then the preferences page.
        let (one_click, page) = unsubscribe_addresses(mail);
        assert!(one_click.starts_with(ONE_CLICK), "{one_click}");
        assert_eq!(page, PREFERENCES);
        let text = mail.text_body();
        assert!(text.contains(&format!("{words}: {PREFERENCES}")), "{text}");
        let html = mail.html_body();
        assert!(
            html.contains(&format!("href=\"{PREFERENCES}\"")) && html.contains(words),
            "{html}"
        );
    }

    // Mandatory (account.password_changed) and critical (system.maintenance)
    // emails are automatic too, but offer no unsubscribing.
    let body = json!({"type": "account.password_changed", "payload": {"changed_at": "21/11/2026 10:00"}, "recipients": {"users": [alice]}});
    done(&app, &key, &trigger(&app, &key, body).await).await;
    done(&app, &key, &trigger(&app, &key, maintenance(&[&bob])).await).await;
    let got = sink.wait_for(4, WAIT).await;
    for mail in &got[2..] {
        assert_eq!(
            mail.header("Auto-Submitted").as_deref(),
            Some("auto-generated")
        );
        assert_eq!(mail.header("List-Unsubscribe"), None, "{}", mail.raw);
        assert_eq!(mail.header("List-Unsubscribe-Post"), None);
    }
}

#[tokio::test]
async fn without_a_public_url_emails_carry_no_relative_preferences_link() {
    let sink = SmtpSink::start().await;
    let (_app, mail) = one_task_email(&sink, &[("RELAIS_PUBLIC_URL", "")]).await;
    let mail = &mail;
    assert_eq!(
        mail.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert_eq!(mail.header("List-Unsubscribe"), None);
    assert_eq!(mail.header("List-Unsubscribe-Post"), None);
    assert!(!mail.text_body().contains("/settings/notifications"));
    assert!(!mail.html_body().contains("/settings/notifications"));
}

#[tokio::test]
async fn one_click_unsubscribe_stops_that_categorys_emails_and_keeps_the_inbox() {
    let sink = SmtpSink::start().await;
    let app = app_with_smtp(&sink, &[]).await;
    let key = app.api_key(&["notify"]).await;
    let (alice, _) = app.user("alice@example.com", &["member"]).await;
    let (bob, bob_token) = app.user("bob@example.com", &["member"]).await;
    done(
        &app,
        &key,
        &trigger(&app, &key, task_assigned(&[&alice, &bob])).await,
    )
    .await;
    app.state.notify.clock.advance(Duration::from_secs(301));
    let got = sink.wait_for(2, WAIT).await;
    let (one_click, _) = unsubscribe_addresses(received_by(&got, "bob@example.com")[0]);
    let path = one_click_path(&one_click);
    let untouched = preferences(&app, &bob_token).await;

    // A GET (a link scanner, a click) only shows a page with a button.
    let res = app.get(&path, None).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = res.text().await.unwrap();
    assert!(page.contains("<form method=\"post\""), "{page}");
    assert!(page.contains("<b>tasks</b>"), "{page}");
    assert_eq!(preferences(&app, &bob_token).await, untouched);

    // A token altered anywhere is unknown, and changes nothing.
    let (payload, tag) = path
        .trim_start_matches("/api/v1/unsubscribe/")
        .split_once('.')
        .unwrap();
    let flip = |s: &str| {
        let first = if s.starts_with('e') { 'f' } else { 'e' };
        format!("{first}{}", &s[1..])
    };
    for forged in [
        format!("/api/v1/unsubscribe/{}.{tag}", flip(payload)),
        format!("/api/v1/unsubscribe/{payload}.{}", flip(tag)),
        format!("/api/v1/unsubscribe/{payload}"),
    ] {
        for res in [
            one_click_post(&app, &forged).await,
            app.get(&forged, None).await,
        ] {
            assert_eq!(res.status(), 404, "{forged}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "not_found", "{body}");
        }
    }
    assert_eq!(preferences(&app, &bob_token).await, untouched);

    // The one-click POST: no credentials needed; again is the same.
    for _ in 0..2 {
        let res = one_click_post(&app, &path).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body,
            json!({"unsubscribed": {"category": "tasks", "channel": "email"}})
        );
    }
    // A bare POST with no body is one-click too.
    let res = app.http.post(app.url(&path)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let tasks = &preferences(&app, &bob_token).await["categories"]["tasks"];
    assert_eq!(tasks["email"], false, "{tasks}");
    assert_eq!(tasks["in_app"], true, "{tasks}");

    // The next task: Bob gets it in his inbox but not by email; Alice, whose
    // address was not used, gets both.
    done(
        &app,
        &key,
        &trigger(&app, &key, task_assigned(&[&alice, &bob])).await,
    )
    .await;
    app.state.notify.clock.advance(Duration::from_secs(301));
    sink.wait_for(3, WAIT).await;
    let got = settle(&sink).await;
    assert_eq!(got.len(), 3);
    assert_eq!(received_by(&got, "alice@example.com").len(), 2);
    assert_eq!(received_by(&got, "bob@example.com").len(), 1);
    assert_eq!(
        inbox(&app, &bob_token, "?category=tasks").await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn one_click_unsubscribe_from_a_digest_stops_that_digest() {
    let sink = SmtpSink::start().await;
    let app = app_with_smtp(&sink, &[]).await;
    let key = app.api_key(&["notify"]).await;
    let (bob, bob_token) = app.user("bob@example.com", &["member"]).await;
    let res = app
        .http
        .put(app.url("/api/v1/me/preferences"))
        .bearer_auth(&bob_token)
        .json(&json!({"digest_hour": 8, "categories": {"tasks": {"frequency": "daily"}, "projects": {"frequency": "weekly"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let clock = &app.state.notify.clock;
    let six_utc = next_morning(clock.now_millis());
    let hour = 3600 * 1000;
    // The first pass records the current period.
    clock.set_millis(six_utc);
    tokio::time::sleep(Duration::from_millis(300)).await;
    done(
        &app,
        &key,
        &trigger(&app, &key, task_assigned(&[&bob])).await,
    )
    .await;
    clock.set_millis(six_utc + 2 * hour + 5 * 60 * 1000);
    let got = sink.wait_for(1, WAIT).await;
    let (one_click, _) = unsubscribe_addresses(&got[0]);
    let path = one_click_path(&one_click);
    // A GET names the digest and changes nothing.
    let page = app.get(&path, None).await.text().await.unwrap();
    assert!(page.contains("Stop the daily digest?"), "{page}");
    assert_eq!(
        preferences(&app, &bob_token).await["categories"]["tasks"]["email"],
        true
    );

    let res = one_click_post(&app, &path).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"unsubscribed": {"digest": "daily", "channel": "email", "categories": ["tasks"]}})
    );
    let prefs = preferences(&app, &bob_token).await;
    // Email off for the digest's categories, which stay daily (switching
    // email back on restores the digest); the weekly one is untouched.
    assert_eq!(
        prefs["categories"]["tasks"],
        json!({"in_app": true, "email": false, "frequency": "daily"})
    );
    assert_eq!(prefs["categories"]["projects"]["email"], true);

    // Next day: a new task is in the inbox, and no email comes, neither a
    // digest nor one on its own.
    clock.set_millis(six_utc + 20 * hour);
    done(
        &app,
        &key,
        &trigger(&app, &key, task_assigned(&[&bob])).await,
    )
    .await;
    clock.set_millis(six_utc + 26 * hour + 5 * 60 * 1000);
    assert_eq!(settle(&sink).await.len(), 1);
    assert_eq!(
        inbox(&app, &bob_token, "?category=tasks").await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_public_url_over_plain_http_gets_no_one_click_address() {
    let sink = SmtpSink::start().await;
    let (_app, mail) =
        one_task_email(&sink, &[("RELAIS_PUBLIC_URL", "http://app.example.com")]).await;
    let mail = &mail;
    // RFC 8058 wants https: the preferences page only.
    assert_eq!(
        mail.header("List-Unsubscribe").as_deref(),
        Some("<http://app.example.com/settings/notifications>")
    );
    assert_eq!(mail.header("List-Unsubscribe-Post"), None);
}

/// An app on `sink` with `overrides`, and the one email a task assignment to
/// a member sends once its fallback delay has passed.
async fn one_task_email(sink: &SmtpSink, overrides: &[(&str, &str)]) -> (TestApp, Received) {
    let app = app_with_smtp(sink, overrides).await;
    let key = app.api_key(&["notify"]).await;
    let (bob, _) = app.user("bob@example.com", &["member"]).await;
    done(
        &app,
        &key,
        &trigger(&app, &key, task_assigned(&[&bob])).await,
    )
    .await;
    app.state.notify.clock.advance(Duration::from_secs(301));
    let mail = sink.wait_for(1, WAIT).await.remove(0);
    (app, mail)
}
