//! Texts of the notification engine's emails: a notification's own
//! templates inside a shared layout, and the digest, in the recipient's
//! language. The outbox stores and sends them as rendered here.

use super::{
    template::{Context, escape},
    types::{CompiledType, Locale},
};

pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

struct Strings {
    open: &'static str,
    footer: &'static str,
    daily: &'static str,
    weekly: &'static str,
    /// `{n}` is replaced by the count.
    unread_count: &'static str,
    more: &'static str,
    preferences: &'static str,
}

fn strings(locale: Locale) -> &'static Strings {
    match locale {
        Locale::En => &Strings {
            open: "Open",
            footer: "You receive this email because of your notification preferences.",
            daily: "Your daily digest",
            weekly: "Your weekly digest",
            unread_count: "{n} unread notifications",
            more: "and {n} more in your inbox",
            preferences: "Manage your notification preferences",
        },
        Locale::Fr => &Strings {
            open: "Ouvrir",
            footer: "Vous recevez cet e-mail en raison de vos préférences de notification.",
            daily: "Votre récapitulatif quotidien",
            weekly: "Votre récapitulatif hebdomadaire",
            unread_count: "{n} notifications non lues",
            more: "et {n} autres dans votre boîte de réception",
            preferences: "Gérer vos préférences de notification",
        },
    }
}

/// The footer of the text part: why the email came, and where to change that.
fn text_footer(locale: Locale, preferences: Option<&str>) -> String {
    let s = strings(locale);
    match preferences {
        Some(url) => format!("\n\n-- \n{}\n{}: {url}\n", s.footer, s.preferences),
        None => format!("\n\n-- \n{}\n", s.footer),
    }
}

fn layout(locale: Locale, title: &str, inner_html: &str, preferences: Option<&str>) -> String {
    let s = strings(locale);
    let footer = match preferences {
        Some(url) => format!(
            "{}<br><a href=\"{}\" style=\"color:#52606d\">{}</a>",
            escape(s.footer),
            escape(url),
            escape(s.preferences)
        ),
        None => escape(s.footer),
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"margin:0;padding:24px;background:#f4f5f7;font-family:Arial,Helvetica,sans-serif;color:#1f2933\">\
         <div style=\"max-width:560px;margin:0 auto;background:#ffffff;border-radius:8px;padding:24px\">\
         {inner_html}\
         <p style=\"margin-top:32px;font-size:12px;color:#7b8794\">{footer}</p>\
         </div></body></html>\n",
        lang = locale.as_str(),
        title = escape(title),
    )
}

fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            format!(
                "<p style=\"line-height:1.5\">{}</p>",
                escape(p).replace('\n', "<br>")
            )
        })
        .collect()
}

/// The email of one notification. `link` is already absolute when possible;
/// `preferences`, the page the footer links to, is absolute or `None`.
pub fn notification(
    ty: &CompiledType,
    locale: Locale,
    ctx: &Context<'_>,
    link: Option<&str>,
    preferences: Option<&str>,
) -> Rendered {
    let t = ty.texts(locale);
    let title = t.title.render(ctx, false);
    let body = t.body.render(ctx, false);
    let subject = t
        .email_subject
        .as_ref()
        .map(|s| s.render(ctx, false))
        .unwrap_or_else(|| title.clone());
    let s = strings(locale);
    let mut text = match &t.email_text {
        Some(tpl) => tpl.render(ctx, false),
        None => format!("{title}\n\n{body}"),
    };
    if let Some(link) = link {
        text.push_str(&format!("\n\n{}: {link}\n", s.open));
    }
    text.push_str(&text_footer(locale, preferences));
    let inner = match &t.email_html {
        Some(tpl) => tpl.render(ctx, true),
        None => {
            let mut inner = format!(
                "<h1 style=\"font-size:20px;margin:0 0 16px\">{}</h1>{}",
                escape(&title),
                paragraphs(&body)
            );
            if let Some(link) = link {
                inner.push_str(&format!(
                    "<p><a href=\"{}\" style=\"display:inline-block;padding:10px 16px;background:#2563eb;color:#ffffff;text-decoration:none;border-radius:6px\">{}</a></p>",
                    escape(link),
                    escape(s.open)
                ));
            }
            inner
        }
    };
    Rendered {
        subject,
        text,
        html: layout(locale, &title, &inner, preferences),
    }
}

/// One line of a digest.
pub struct DigestItem {
    pub category: String,
    pub title: String,
    pub body: String,
    pub link: Option<String>,
}

/// A digest of `total` unread notifications, of which `items` are listed.
pub fn digest(
    locale: Locale,
    weekly: bool,
    items: &[DigestItem],
    total: usize,
    preferences: Option<&str>,
) -> Rendered {
    let s = strings(locale);
    let heading = if weekly { s.weekly } else { s.daily };
    let count = s.unread_count.replace("{n}", &total.to_string());
    let subject = format!("{heading}: {count}");
    let mut text = format!("{heading}\n{count}\n");
    let mut inner = format!(
        "<h1 style=\"font-size:20px;margin:0 0 8px\">{}</h1><p style=\"color:#52606d\">{}</p>",
        escape(heading),
        escape(&count)
    );
    let mut category: Option<&str> = None;
    for item in items {
        if category != Some(item.category.as_str()) {
            category = Some(&item.category);
            text.push_str(&format!("\n## {}\n", item.category));
            inner.push_str(&format!(
                "<h2 style=\"font-size:14px;text-transform:uppercase;color:#7b8794;margin:24px 0 8px\">{}</h2>",
                escape(&item.category)
            ));
        }
        text.push_str(&format!("- {}: {}\n", item.title, item.body));
        if let Some(link) = &item.link {
            text.push_str(&format!("  {link}\n"));
        }
        let title = match &item.link {
            Some(link) => format!("<a href=\"{}\">{}</a>", escape(link), escape(&item.title)),
            None => escape(&item.title),
        };
        inner.push_str(&format!(
            "<p style=\"margin:0 0 12px\"><strong>{title}</strong><br><span style=\"color:#52606d\">{}</span></p>",
            escape(&item.body)
        ));
    }
    if total > items.len() {
        let more = s.more.replace("{n}", &(total - items.len()).to_string());
        text.push_str(&format!("\n{more}\n"));
        inner.push_str(&format!("<p>{}</p>", escape(&more)));
    }
    text.push_str(&text_footer(locale, preferences));
    Rendered {
        subject,
        text,
        html: layout(locale, heading, &inner, preferences),
    }
}
