//! The built-in notification types.
//!
//! A new tenant gets a working set of types on day one for the domains
//! Relais serves: advertising campaigns, spots and their broadcast planning,
//! moderation queues, marketing projects (phases, steps, tasks, documents),
//! collaboration chat, the assistant, account security and system notices.
//! App backends can trigger `spot.approved` or `task.assigned` without first
//! defining anything.
//!
//! The catalogue is code, not data: it costs no rows and ships with the
//! binary. A tenant adapts a type by saving its own row with the same key
//! (new texts, priority, channels…), which overrides the built-in for that
//! tenant only; deleting the row brings the built-in back.
//!
//! This file holds the entry format, the lookups and the checks every entry
//! must pass (the tests below); the entries themselves are in one file per
//! domain: [`advertising`] (campaigns, diffusion, moderation), [`projects`]
//! (projects, tasks, documents) and [`platform`] (chat, assistant,
//! account, system), so each reads as one domain's vocabulary.
//!
//! Conventions the texts rely on:
//! - `*.status` variables (`project.status`, `task.status`…) and dates
//!   (`slot.starts_at`, `task.due_date`…) are display labels the app
//!   backend formats for the recipient; the templates insert them as given.
//! - `reason` is the free text a moderator or broadcaster typed, always put
//!   last so it can be any length.
//! - `actor.name` is whoever caused the event.

mod advertising;
mod platform;
mod projects;

use std::collections::BTreeMap;

use super::types::{Channel, Locale, LocaleTexts, Priority, TypeDef};

/// One catalogue entry, in the compact form it is written in.
struct Builtin {
    key: &'static str,
    category: &'static str,
    priority: Priority,
    channels: &'static [Channel],
    mandatory: bool,
    variables: &'static [&'static str],
    url: Option<&'static str>,
    /// English (title, body).
    en: (&'static str, &'static str),
    /// French (title, body).
    fr: (&'static str, &'static str),
    /// (English, French) email subject, when it should differ from the title.
    subject: Option<(&'static str, &'static str)>,
}

const IN_APP: &[Channel] = &[Channel::InApp];
const IN_APP_EMAIL: &[Channel] = &[Channel::InApp, Channel::Email];

/// The catalogue, domain by domain, in the order the API lists it.
static BUILTIN: &[&[Builtin]] = &[advertising::TYPES, projects::TYPES, platform::TYPES];

/// Every built-in entry.
fn all() -> impl Iterator<Item = &'static Builtin> {
    BUILTIN.iter().flat_map(|table| table.iter())
}

impl Builtin {
    fn to_def(&self) -> TypeDef {
        let texts = |(title, body): (&str, &str), subject: Option<&str>| LocaleTexts {
            title: title.to_owned(),
            body: body.to_owned(),
            email_subject: subject.map(str::to_owned),
            email_text: None,
            email_html: None,
        };
        let templates = BTreeMap::from([
            (Locale::En, texts(self.en, self.subject.map(|s| s.0))),
            (Locale::Fr, texts(self.fr, self.subject.map(|s| s.1))),
        ]);
        TypeDef {
            key: self.key.to_owned(),
            category: self.category.to_owned(),
            priority: self.priority,
            channels: self.channels.to_vec(),
            mandatory: self.mandatory,
            variables: self.variables.iter().map(|v| (*v).to_owned()).collect(),
            url: self.url.map(str::to_owned),
            templates,
            builtin: true,
        }
    }
}

/// All built-in types, as API-shaped definitions (`builtin: true`).
pub fn builtin_types() -> Vec<TypeDef> {
    all().map(Builtin::to_def).collect()
}

/// One built-in type by key.
pub fn builtin_type(key: &str) -> Option<TypeDef> {
    all().find(|b| b.key == key).map(Builtin::to_def)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::types::{CONTEXT_VARIABLES, CompiledTexts, CompiledType};
    use super::*;

    const CATEGORIES: [&str; 10] = [
        "campaigns",
        "diffusion",
        "moderation",
        "projects",
        "tasks",
        "documents",
        "chat",
        "assistant",
        "account",
        "system",
    ];

    fn compiled() -> Vec<CompiledType> {
        builtin_types()
            .into_iter()
            .map(|def| {
                let key = def.key.clone();
                CompiledType::compile(def).unwrap_or_else(|e| panic!("{key}: {e}"))
            })
            .collect()
    }

    fn text_placeholders(texts: &CompiledTexts) -> BTreeSet<String> {
        [
            Some(&texts.title),
            Some(&texts.body),
            texts.email_subject.as_ref(),
            texts.email_text.as_ref(),
            texts.email_html.as_ref(),
        ]
        .into_iter()
        .flatten()
        .flat_map(|t| t.placeholders().map(str::to_owned))
        .collect()
    }

    #[test]
    fn every_builtin_compiles() {
        let all = compiled();
        assert!(all.iter().all(|c| c.def.builtin));
    }

    #[test]
    fn keys_are_unique() {
        let mut seen = BTreeSet::new();
        for b in all() {
            assert!(seen.insert(b.key), "duplicate key {}", b.key);
        }
    }

    #[test]
    fn the_catalogue_is_large_enough() {
        assert!(all().count() >= 30, "only {} built-in types", all().count());
    }

    #[test]
    fn every_type_has_english_and_french() {
        for def in builtin_types() {
            for locale in Locale::ALL {
                let t = def
                    .templates
                    .get(&locale)
                    .unwrap_or_else(|| panic!("{}: no {} texts", def.key, locale.as_str()));
                assert!(!t.title.trim().is_empty(), "{}: empty title", def.key);
                assert!(!t.body.trim().is_empty(), "{}: empty body", def.key);
            }
        }
    }

    #[test]
    fn every_declared_variable_is_used() {
        for c in compiled() {
            let mut used: BTreeSet<String> = c
                .url
                .iter()
                .flat_map(|u| u.placeholders().map(str::to_owned))
                .collect();
            for texts in c.texts.values() {
                used.extend(text_placeholders(texts));
            }
            for v in &c.def.variables {
                assert!(
                    used.contains(v),
                    "{}: `{v}` is declared but never used",
                    c.def.key
                );
            }
            let mut unique = BTreeSet::new();
            for v in &c.def.variables {
                assert!(unique.insert(v), "{}: `{v}` declared twice", c.def.key);
                assert!(
                    !CONTEXT_VARIABLES.contains(&v.as_str()),
                    "{}: `{v}` is a context variable, not a payload one",
                    c.def.key
                );
            }
        }
    }

    #[test]
    fn english_and_french_say_the_same_things() {
        for c in compiled() {
            let en = text_placeholders(&c.texts[&Locale::En]);
            let fr = text_placeholders(&c.texts[&Locale::Fr]);
            assert_eq!(
                en, fr,
                "{}: en and fr use different placeholders",
                c.def.key
            );
        }
    }

    #[test]
    fn categories_channels_and_priorities_follow_the_conventions() {
        for def in builtin_types() {
            assert!(
                CATEGORIES.contains(&def.category.as_str()),
                "{}: unknown category {}",
                def.key,
                def.category
            );
            assert!(
                def.channels.contains(&Channel::InApp),
                "{}: not in-app",
                def.key
            );
            if def.priority == Priority::Critical || def.mandatory {
                assert!(
                    def.channels.contains(&Channel::Email),
                    "{}: critical without email",
                    def.key
                );
            }
        }
        for category in CATEGORIES {
            assert!(
                all().any(|b| b.category == category),
                "category {category} has no type"
            );
        }
    }

    #[test]
    fn titles_stay_short_once_filled() {
        // Each placeholder stands for a 20-character value.
        fn filled_len(template: &str) -> usize {
            let mut len = 0;
            let mut rest = template;
            while let Some(open) = rest.find("{{") {
                len += rest[..open].chars().count() + 20;
                let close = rest[open..].find("}}").expect("closed placeholder");
                rest = &rest[open + close + 2..];
            }
            len + rest.chars().count()
        }
        for b in all() {
            for (title, _) in [b.en, b.fr] {
                assert!(
                    filled_len(title) <= 80,
                    "{}: title too long: {title}",
                    b.key
                );
            }
        }
    }

    #[test]
    fn lookup_by_key() {
        let def = builtin_type("task.assigned").expect("task.assigned is built in");
        assert_eq!(def.category, "tasks");
        assert!(def.builtin);
        assert!(builtin_type("no.such_type").is_none());
        let password = builtin_type("account.password_changed").unwrap();
        assert!(password.mandatory);
        assert_eq!(password.priority, Priority::Critical);
    }
}
