//! The template language of notification texts: literal text with
//! `{{ path }}` placeholders, where `path` names a value in the trigger's
//! payload (`campaign.name`) or in the recipient context (`recipient.name`).
//!
//! Deliberately tiny: no logic, no filters. A template is parsed when its
//! type is saved, so a typo is refused then rather than at send time, and
//! the set of placeholders can be checked against the type's variables.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Placeholder(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{{{` at byte {0}")]
    Unclosed(usize),
    #[error("empty placeholder at byte {0}")]
    Empty(usize),
    #[error("placeholder `{0}` is not a path like `campaign.name`")]
    BadPath(String),
    #[error("template longer than {0} bytes")]
    TooLong(usize),
}

/// Longest template accepted (HTML bodies included).
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// Values a template is filled from.
pub struct Context<'a> {
    pub payload: &'a Value,
    pub recipient_name: &'a str,
    pub recipient_email: &'a str,
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError::TooLong(MAX_TEMPLATE_BYTES));
        }
        let mut parts = Vec::new();
        let mut rest = source;
        let mut at = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or(TemplateError::Unclosed(at + open))?;
            let path = after[..close].trim();
            if path.is_empty() {
                return Err(TemplateError::Empty(at + open));
            }
            let valid = path.split('.').all(|seg| {
                !seg.is_empty()
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
            if !valid {
                return Err(TemplateError::BadPath(path.to_owned()));
            }
            parts.push(Part::Placeholder(path.to_owned()));
            let consumed = open + 2 + close + 2;
            at += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// Every placeholder path, in order of appearance.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Placeholder(path) => Some(path.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Fills the template; with `html`, values are HTML-escaped (the
    /// template's own text is trusted: tenant admins write it).
    pub fn render(&self, ctx: &Context<'_>, html: bool) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Placeholder(path) => {
                    let value = resolve(ctx, path);
                    if html {
                        push_escaped(&mut out, &value);
                    } else {
                        out.push_str(&value);
                    }
                }
            }
        }
        out
    }
}

fn resolve(ctx: &Context<'_>, path: &str) -> String {
    match path {
        "recipient.name" => return ctx.recipient_name.to_owned(),
        "recipient.email" => return ctx.recipient_email.to_owned(),
        _ => {}
    }
    lookup(ctx.payload, path).map(display).unwrap_or_default()
}

/// The value at a dotted path of a JSON object, if any (`null` counts as absent).
pub fn lookup<'v>(payload: &'v Value, path: &str) -> Option<&'v Value> {
    let mut value = payload;
    for seg in path.split('.') {
        value = value.as_object()?.get(seg)?;
    }
    (!value.is_null()).then_some(value)
}

fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_escaped(&mut out, text);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx(payload: &Value) -> Context<'_> {
        Context {
            payload,
            recipient_name: "Awa",
            recipient_email: "awa@example.com",
        }
    }

    #[test]
    fn fills_nested_paths_and_recipient() {
        let t =
            Template::parse("Bonjour {{ recipient.name }}, {{campaign.name}} ({{count}})").unwrap();
        let payload = json!({"campaign": {"name": "Été 2026"}, "count": 3});
        assert_eq!(t.render(&ctx(&payload), false), "Bonjour Awa, Été 2026 (3)");
        assert_eq!(
            t.placeholders().collect::<Vec<_>>(),
            ["recipient.name", "campaign.name", "count"]
        );
    }

    #[test]
    fn escapes_values_in_html_only() {
        let t = Template::parse("<b>{{name}}</b>").unwrap();
        let payload = json!({"name": "<script>&"});
        assert_eq!(t.render(&ctx(&payload), true), "<b>&lt;script&gt;&amp;</b>");
        assert_eq!(t.render(&ctx(&payload), false), "<b><script>&</b>");
    }

    #[test]
    fn refuses_malformed_templates() {
        assert_eq!(
            Template::parse("a {{ b").unwrap_err(),
            TemplateError::Unclosed(2)
        );
        assert_eq!(
            Template::parse("{{ }}").unwrap_err(),
            TemplateError::Empty(0)
        );
        assert!(matches!(
            Template::parse("{{ a b }}").unwrap_err(),
            TemplateError::BadPath(_)
        ));
        assert!(matches!(
            Template::parse("{{ a..b }}").unwrap_err(),
            TemplateError::BadPath(_)
        ));
    }
}
