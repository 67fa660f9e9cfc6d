//! One-click unsubscribe (RFC 8058): the signed token an email's
//! `List-Unsubscribe` address carries, and what applying it changes.
//!
//! A token names a tenant, a user and what to stop: the email channel of
//! one category (in a notification email) or one digest (daily or weekly,
//! in a digest email). It is `<payload>.<mac>`, both base64url without
//! padding: the payload is a small JSON object (`{"t":tenant,"u":user,"c":
//! category}` or `{…,"d":"daily"}`), the MAC is HMAC-SHA256 of the encoded
//! payload under a key derived from the JWT secret. Tokens do not expire
//! (an email may be read months later) and only ever switch email off;
//! rotating the JWT secret revokes them all.
//!
//! Applying one is idempotent: the preference it names is set, whatever it
//! was. A category token sets that category's `email` to off (in-app items
//! still arrive). A digest token sets `email` off for every category whose
//! frequency is that digest's, so that digest has nothing left to gather
//! (their frequency is kept, so switching email back on restores the
//! digest rather than sending each notification on its own).

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use super::{
    Notify,
    prefs::{Frequency, Preferences},
    prefs_store,
    template::escape,
    types::Locale,
};
use crate::error::{ApiError, ApiResult};

/// What a token stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stop {
    /// Emails of one category.
    #[serde(rename = "c")]
    Category(String),
    /// The daily or the weekly digest.
    #[serde(rename = "d")]
    Digest(Frequency),
}

/// The signed content of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribe {
    #[serde(rename = "t")]
    pub tenant: String,
    #[serde(rename = "u")]
    pub user: String,
    #[serde(flatten)]
    pub stop: Stop,
}

/// The key tokens are signed with.
#[derive(Clone)]
pub struct UnsubscribeKey([u8; 32]);

/// Tokens longer than this are refused before any work.
const MAX_TOKEN: usize = 1024;

impl UnsubscribeKey {
    /// Derived from the JWT secret with a label of its own, so a token's MAC
    /// is never something else signed with that secret.
    pub fn derive(jwt_secret: &SecretString) -> Self {
        let mut mac = hmac(jwt_secret.expose_secret().as_bytes());
        mac.update(b"relais one-click unsubscribe v1");
        UnsubscribeKey(mac.finalize().into_bytes().into())
    }

    pub fn sign(&self, what: &Unsubscribe) -> String {
        let payload = serde_json::to_vec(what).expect("a token payload serializes");
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let mut mac = hmac(&self.0);
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// The content of a token this key signed; `None` for anything else
    /// (malformed, forged, altered), without saying which.
    pub fn verify(&self, token: &str) -> Option<Unsubscribe> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        let (payload, tag) = token.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = hmac(&self.0);
        mac.update(payload.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&tag).ok()?;
        let what: Unsubscribe =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (what.stop != Stop::Digest(Frequency::Immediate)).then_some(what)
    }
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

impl Stop {
    /// Applies this opt-out to `prefs`; returns the categories whose email
    /// it concerns (now all off).
    pub fn apply(&self, prefs: &mut Preferences) -> Vec<String> {
        match self {
            Stop::Category(category) => {
                let mut pref = prefs.category(category);
                pref.email = false;
                prefs.categories.insert(category.clone(), pref);
                vec![category.clone()]
            }
            Stop::Digest(frequency) => prefs
                .categories
                .iter_mut()
                .filter(|(_, c)| c.frequency == *frequency)
                .map(|(name, c)| {
                    c.email = false;
                    name.clone()
                })
                .collect(),
        }
    }
}

/// `POST /api/v1/unsubscribe/{token}`: applies the token, whatever the
/// body (RFC 8058 senders post `List-Unsubscribe=One-Click`, as a form or
/// multipart; a bare POST is the same). No credentials: the token is the
/// authority. A token this hub did not sign, or whose user is gone, is a
/// 404 `not_found`, with no reason given.
///
/// The answer is JSON `{"unsubscribed": {...}}`, or a short HTML page for
/// a browser (an `Accept` that names `text/html`: the form of the GET page).
pub async fn post(
    State(notify): State<Arc<Notify>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let what = verified(&notify, &token).await?;
    let mut prefs = notify.preferences(&what.tenant, &what.user).await?;
    let before = prefs.clone();
    let categories = what.stop.apply(&mut prefs);
    if prefs != before {
        prefs_store::save(
            &notify.store,
            &what.tenant,
            &what.user,
            &prefs,
            notify.clock.now_millis(),
        )
        .await?;
        tracing::info!(tenant = %what.tenant, user = %what.user, stop = ?what.stop, "unsubscribed in one click");
    }
    let locale = prefs.locale.unwrap_or(notify.default_locale());
    if accepts_html(&headers) {
        return Ok(html(done_page(
            locale,
            notify.preferences_link().as_deref(),
        )));
    }
    let unsubscribed = match &what.stop {
        Stop::Category(category) => json!({"category": category, "channel": "email"}),
        Stop::Digest(frequency) => {
            json!({"digest": frequency.as_str(), "channel": "email", "categories": categories})
        }
    };
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "unsubscribed": unsubscribed })),
    )
        .into_response())
}

/// `GET /api/v1/unsubscribe/{token}`: a page that says what the token
/// stops, with a button that POSTs. A GET changes nothing: link scanners
/// and mail clients fetch addresses in emails on their own.
pub async fn get(
    State(notify): State<Arc<Notify>>,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    let what = verified(&notify, &token).await?;
    let prefs = notify.preferences(&what.tenant, &what.user).await?;
    let locale = prefs.locale.unwrap_or(notify.default_locale());
    Ok(html(confirm_page(locale, &what.stop)))
}

/// The token's content, if this hub signed it and its user still exists.
async fn verified(notify: &Notify, token: &str) -> ApiResult<Unsubscribe> {
    let not_found = || ApiError::NotFound("unsubscribe link");
    let what = notify.unsubscribe.verify(token).ok_or_else(not_found)?;
    let exists = sqlx::query("SELECT 1 AS x FROM users WHERE id = $1 AND tenant_id = $2")
        .bind(&what.user)
        .bind(&what.tenant)
        .fetch_optional(&notify.store.pool)
        .await?;
    exists.map(|_| what).ok_or_else(not_found)
}

fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

fn html(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // No script, no framing (a hidden button under a click), posts
            // only to this origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The address holds the token.
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

struct Texts {
    lang: &'static str,
    title: &'static str,
    button: &'static str,
    done: &'static str,
    /// `{c}` is replaced by the category.
    category: &'static str,
    daily: &'static str,
    weekly: &'static str,
    in_app: &'static str,
    preferences: &'static str,
}

fn texts(locale: Locale) -> &'static Texts {
    match locale {
        Locale::En => &Texts {
            lang: "en",
            title: "Unsubscribe",
            button: "Unsubscribe",
            done: "You are unsubscribed.",
            category: "Stop emails about {c}?",
            daily: "Stop the daily digest?",
            weekly: "Stop the weekly digest?",
            in_app: "Notifications still appear in the app.",
            preferences: "Manage your notification preferences",
        },
        Locale::Fr => &Texts {
            lang: "fr",
            title: "Se désabonner",
            button: "Se désabonner",
            done: "Vous êtes désabonné·e.",
            category: "Ne plus recevoir d’e-mails « {c} » ?",
            daily: "Ne plus recevoir le récapitulatif quotidien ?",
            weekly: "Ne plus recevoir le récapitulatif hebdomadaire ?",
            in_app: "Les notifications restent visibles dans l’application.",
            preferences: "Gérer vos préférences de notification",
        },
    }
}

fn question(t: &Texts, stop: &Stop) -> String {
    match stop {
        Stop::Category(c) => escape(t.category).replace("{c}", &format!("<b>{}</b>", escape(c))),
        Stop::Digest(Frequency::Weekly) => escape(t.weekly),
        Stop::Digest(_) => escape(t.daily),
    }
}

fn page(t: &Texts, inner: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}}\
         button{{font-size:1rem;padding:.5rem 1.25rem;cursor:pointer}}</style></head>\
         <body>{inner}</body></html>\n",
        lang = t.lang,
        title = escape(t.title),
    )
}

fn confirm_page(locale: Locale, stop: &Stop) -> String {
    let t = texts(locale);
    // An empty action posts back to this very address.
    page(
        t,
        &format!(
            "<h1>{}</h1><p>{}</p><form method=\"post\" action=\"\">\
             <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <button type=\"submit\">{}</button></form>",
            question(t, stop),
            escape(t.in_app),
            escape(t.button),
        ),
    )
}

fn done_page(locale: Locale, preferences: Option<&str>) -> String {
    let t = texts(locale);
    let link = preferences
        .map(|url| {
            format!(
                "<p><a href=\"{}\">{}</a></p>",
                escape(url),
                escape(t.preferences)
            )
        })
        .unwrap_or_default();
    page(
        t,
        &format!(
            "<h1>{}</h1><p>{}</p>{link}",
            escape(t.done),
            escape(t.in_app)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> UnsubscribeKey {
        UnsubscribeKey::derive(&SecretString::from(secret.to_owned()))
    }

    fn tasks() -> Unsubscribe {
        Unsubscribe {
            tenant: "acme".into(),
            user: "u1".into(),
            stop: Stop::Category("tasks".into()),
        }
    }

    #[test]
    fn a_token_reads_back_only_under_its_key_and_unaltered() {
        let k = key("a secret of at least thirty-two bytes!!");
        let token = k.sign(&tasks());
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{token}"
        );
        assert_eq!(k.verify(&token), Some(tasks()));
        // Another secret (a rotated one) does not accept it.
        assert_eq!(
            key("another secret of at least thirty-two!").verify(&token),
            None
        );
        // Any change to the payload or the MAC is refused.
        let (payload, tag) = token.split_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(br#"{"t":"acme","u":"u2","c":"tasks"}"#);
        for forged in [
            format!("{other}.{tag}"),
            format!("{payload}.{}", &tag[1..]),
            format!(
                "{payload}.{}{}",
                if tag.starts_with('A') { 'B' } else { 'A' },
                &tag[1..]
            ),
            payload.to_owned(),
            String::new(),
            format!("{payload}.{tag}.x"),
        ] {
            assert_eq!(k.verify(&forged), None, "{forged}");
        }
    }

    #[test]
    fn the_payload_is_compact_json() {
        let what = Unsubscribe {
            tenant: "acme".into(),
            user: "u1".into(),
            stop: Stop::Digest(Frequency::Weekly),
        };
        let token = key("k").sign(&what);
        let payload = URL_SAFE_NO_PAD
            .decode(token.split_once('.').unwrap().0)
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&payload).unwrap(),
            json!({"t": "acme", "u": "u1", "d": "weekly"})
        );
    }

    #[test]
    fn a_category_token_turns_that_categorys_email_off_and_nothing_else() {
        let mut prefs = Preferences::from_value(
            json!({"categories": {"tasks": {"frequency": "daily"}, "projects": {}}}),
        )
        .unwrap();
        assert_eq!(
            Stop::Category("tasks".into()).apply(&mut prefs),
            vec!["tasks"]
        );
        let tasks = prefs.category("tasks");
        assert!(!tasks.email && tasks.in_app);
        assert!(prefs.category("projects").email);
        // Again: same result.
        let before = prefs.clone();
        Stop::Category("tasks".into()).apply(&mut prefs);
        assert_eq!(prefs, before);
        // A category never saved gets an entry of its own.
        Stop::Category("billing".into()).apply(&mut prefs);
        assert!(!prefs.category("billing").email && prefs.category("billing").in_app);
    }

    #[test]
    fn a_digest_token_stops_that_digest_only() {
        let mut prefs = Preferences::from_value(json!({"categories": {
            "tasks": {"frequency": "daily"},
            "projects": {"frequency": "daily"},
            "billing": {"frequency": "weekly"},
            "chat": {}
        }}))
        .unwrap();
        assert!(prefs.has_digest());
        let stopped = Stop::Digest(Frequency::Daily).apply(&mut prefs);
        assert_eq!(stopped, vec!["projects", "tasks"]);
        assert!(!prefs.category("tasks").email && !prefs.category("projects").email);
        assert_eq!(prefs.category("tasks").frequency, Frequency::Daily);
        assert!(prefs.category("billing").email && prefs.category("chat").email);
        Stop::Digest(Frequency::Weekly).apply(&mut prefs);
        assert!(!prefs.has_digest());
    }

    #[test]
    fn the_page_escapes_the_category_and_posts_back() {
        let page = confirm_page(Locale::Fr, &Stop::Category("<x>".into()));
        assert!(
            page.contains("&lt;x&gt;") && !page.contains("<x>"),
            "{page}"
        );
        assert!(page.contains("lang=\"fr\""));
        assert!(page.contains("<form method=\"post\" action=\"\">"));
        assert!(page.contains("name=\"List-Unsubscribe\" value=\"One-Click\""));
        let page = confirm_page(Locale::En, &Stop::Digest(Frequency::Weekly));
        assert!(page.contains("Stop the weekly digest?"), "{page}");
    }
}
