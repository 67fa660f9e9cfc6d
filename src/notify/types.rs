//! Notification types: what a notification is (category, priority, channels,
//! templates) independently of who receives it.
//!
//! A tenant sees the built-in catalogue ([`super::catalog`]) plus its own
//! rows in `notification_types`; a row with a built-in's key overrides it,
//! and deleting that row restores the built-in.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::template::{Template, TemplateError};

/// How urgent a notification is. `Critical` bypasses quiet hours and digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Normal,
    High,
    Critical,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// The stored form: a small integer, so "high or above" is a range query.
    pub fn rank(self) -> i64 {
        self as i64
    }

    pub fn from_rank(rank: i64) -> Priority {
        match rank {
            0 => Priority::Low,
            1 => Priority::Normal,
            2 => Priority::High,
            _ => Priority::Critical,
        }
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown priority `{s}` (known: low, normal, high, critical)"))
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a notification can be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    InApp,
    Email,
}

/// Supported template languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Locale {
    En,
    Fr,
}

impl Locale {
    pub const ALL: [Locale; 2] = [Locale::En, Locale::Fr];

    pub fn as_str(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::Fr => "fr",
        }
    }
}

impl FromStr for Locale {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "en" => Ok(Locale::En),
            "fr" => Ok(Locale::Fr),
            _ => Err(format!("unknown locale `{s}` (known: en, fr)")),
        }
    }
}

/// The texts of one type in one language, as given over REST. Email texts
/// are optional: the subject defaults to the title, the text body to the
/// body, and the HTML body to the escaped body in the standard layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocaleTexts {
    pub title: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_html: Option<String>,
}

/// A notification type as the API shows it and the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeDef {
    pub key: String,
    pub category: String,
    pub priority: Priority,
    pub channels: Vec<Channel>,
    /// Users cannot opt out of a mandatory type.
    #[serde(default)]
    pub mandatory: bool,
    /// Payload paths the templates may use (`campaign.name`); a trigger must
    /// provide every one of them.
    pub variables: Vec<String>,
    /// A link template (to the campaign, task, thread…), optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub templates: BTreeMap<Locale, LocaleTexts>,
    /// `true` for the catalogue's types, `false` for a tenant's own rows.
    #[serde(default)]
    pub builtin: bool,
}

/// Placeholders every template may use besides the type's variables.
pub const CONTEXT_VARIABLES: [&str; 2] = ["recipient.name", "recipient.email"];

/// A type whose templates are parsed and checked against its variables.
#[derive(Debug, Clone)]
pub struct CompiledType {
    pub def: TypeDef,
    pub url: Option<Template>,
    pub texts: BTreeMap<Locale, CompiledTexts>,
}

#[derive(Debug, Clone)]
pub struct CompiledTexts {
    pub title: Template,
    pub body: Template,
    pub email_subject: Option<Template>,
    pub email_text: Option<Template>,
    pub email_html: Option<Template>,
}

/// Why a type definition was refused.
#[derive(Debug, thiserror::Error)]
pub enum TypeError {
    #[error("{0}")]
    Invalid(String),
    #[error("{field}: {source}")]
    Template {
        field: String,
        source: TemplateError,
    },
    #[error("{field}: placeholder `{{{{{name}}}}}` is not among the type's variables ({known})")]
    UnknownPlaceholder {
        field: String,
        name: String,
        known: String,
    },
}

impl CompiledType {
    /// Checks a definition completely, so nothing about it can fail at send time.
    pub fn compile(def: TypeDef) -> Result<CompiledType, TypeError> {
        validate_key(&def.key).map_err(TypeError::Invalid)?;
        validate_key(&def.category).map_err(|e| TypeError::Invalid(format!("category: {e}")))?;
        if def.channels.is_empty() {
            return Err(TypeError::Invalid(
                "channels: at least one of in_app, email".into(),
            ));
        }
        if def.templates.is_empty() {
            return Err(TypeError::Invalid(
                "templates: at least one language (en, fr)".into(),
            ));
        }
        for v in &def.variables {
            if v.is_empty() || v.len() > 100 || !v.split('.').all(valid_segment) {
                return Err(TypeError::Invalid(format!(
                    "variables: `{v}` is not a payload path like `campaign.name`"
                )));
            }
        }
        let known = |name: &str| {
            def.variables.iter().any(|v| v == name) || CONTEXT_VARIABLES.contains(&name)
        };
        let check = |field: String, source: &str| -> Result<Template, TypeError> {
            let template = Template::parse(source).map_err(|source| TypeError::Template {
                field: field.clone(),
                source,
            })?;
            if let Some(name) = template.placeholders().find(|p| !known(p)) {
                let mut all: Vec<&str> = def.variables.iter().map(String::as_str).collect();
                all.extend(CONTEXT_VARIABLES);
                return Err(TypeError::UnknownPlaceholder {
                    field,
                    name: name.to_owned(),
                    known: all.join(", "),
                });
            }
            Ok(template)
        };
        let url = def
            .url
            .as_deref()
            .map(|u| check("url".into(), u))
            .transpose()?;
        let mut texts = BTreeMap::new();
        for (locale, t) in &def.templates {
            let l = locale.as_str();
            if t.title.trim().is_empty() {
                return Err(TypeError::Invalid(format!(
                    "templates.{l}.title must not be empty"
                )));
            }
            let optional = |name: &str, v: &Option<String>| {
                v.as_deref()
                    .map(|s| check(format!("templates.{l}.{name}"), s))
                    .transpose()
            };
            texts.insert(
                *locale,
                CompiledTexts {
                    title: check(format!("templates.{l}.title"), &t.title)?,
                    body: check(format!("templates.{l}.body"), &t.body)?,
                    email_subject: optional("email_subject", &t.email_subject)?,
                    email_text: optional("email_text", &t.email_text)?,
                    email_html: optional("email_html", &t.email_html)?,
                },
            );
        }
        Ok(CompiledType { def, url, texts })
    }

    /// The texts for `locale`, else English, else whatever exists.
    pub fn texts(&self, locale: Locale) -> &CompiledTexts {
        self.texts
            .get(&locale)
            .or_else(|| self.texts.get(&Locale::En))
            .or_else(|| self.texts.values().next())
            .expect("a compiled type has at least one language")
    }
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Type keys and categories: 1–64 of `a-z 0-9 . _ -`, starting with a letter.
pub fn validate_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 64
        && key.as_bytes()[0].is_ascii_lowercase()
        && key.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{key}` must be 1-64 characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter"
        ))
    }
}
