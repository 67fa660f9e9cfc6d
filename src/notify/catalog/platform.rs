//! Built-in types of the hub's own features and of the platform: chat
//! rooms (`chat`), the assistant's provider trouble (`assistant`), security
//! events about the recipient's account (`account`) and the operator's
//! notices (`system`). Written as data, one entry per type, in the compact
//! form [`Builtin`] describes.

use super::{Builtin, IN_APP, IN_APP_EMAIL};
use crate::notify::types::Priority;

pub(super) static TYPES: &[Builtin] = &[
    // ---- chat: collaboration rooms
    Builtin {
        key: "chat.mention",
        category: "chat",
        priority: Priority::Normal,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &[
            "room.id",
            "room.name",
            "message.id",
            "message.excerpt",
            "actor.name",
        ],
        url: Some("/chat/{{ room.id }}?message={{ message.id }}"),
        en: (
            "{{ actor.name }} mentioned you in {{ room.name }}",
            "{{ actor.name }} wrote in {{ room.name }}:\n\"{{ message.excerpt }}\"",
        ),
        fr: (
            "{{ actor.name }} vous mentionne dans {{ room.name }}",
            "{{ actor.name }} a écrit dans {{ room.name }} :\n« {{ message.excerpt }} »",
        ),
        subject: None,
    },
    Builtin {
        key: "chat.direct_message",
        category: "chat",
        priority: Priority::Normal,
        channels: IN_APP,
        mandatory: false,
        variables: &["room.id", "message.excerpt", "actor.name"],
        url: Some("/chat/{{ room.id }}"),
        en: ("New message from {{ actor.name }}", "{{ message.excerpt }}"),
        fr: (
            "Nouveau message de {{ actor.name }}",
            "{{ message.excerpt }}",
        ),
        subject: None,
    },
    // ---- assistant: provider trouble, for tenant admins
    Builtin {
        key: "assistant.fallback",
        category: "assistant",
        priority: Priority::High,
        channels: IN_APP,
        mandatory: false,
        variables: &[
            "assistant.id",
            "assistant.name",
            "provider.name",
            "fallback.name",
            "reason",
        ],
        url: Some("/admin/assistants/{{ assistant.id }}"),
        en: (
            "{{ assistant.name }}: failover to {{ fallback.name }}",
            "The provider {{ provider.name }} failed before the first token; {{ assistant.name }} answered with {{ fallback.name }} instead. Check the provider's key, quota and status.\nReason: {{ reason }}",
        ),
        fr: (
            "{{ assistant.name }} : bascule vers {{ fallback.name }}",
            "Le fournisseur {{ provider.name }} a échoué avant le premier jeton ; {{ assistant.name }} a répondu avec {{ fallback.name }}. Vérifiez la clé, le quota et l'état du fournisseur.\nMotif : {{ reason }}",
        ),
        subject: None,
    },
    Builtin {
        key: "assistant.quota_exceeded",
        category: "assistant",
        priority: Priority::High,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &["assistant.id", "assistant.name", "provider.name"],
        url: Some("/admin/assistants/{{ assistant.id }}"),
        en: (
            "Quota exceeded: {{ assistant.name }} on {{ provider.name }}",
            "{{ provider.name }} refuses requests from {{ assistant.name }}: the quota or credit of its key is used up. Answers will fail until the quota is raised or another provider is added to the fallback chain.",
        ),
        fr: (
            "Quota dépassé : {{ assistant.name }} sur {{ provider.name }}",
            "{{ provider.name }} refuse les requêtes de {{ assistant.name }} : le quota ou le crédit de sa clé est épuisé. Les réponses échoueront jusqu'à ce que le quota soit relevé ou qu'un autre fournisseur soit ajouté à la chaîne de secours.",
        ),
        subject: None,
    },
    // ---- account: security events about the recipient's own account
    Builtin {
        key: "account.password_changed",
        category: "account",
        priority: Priority::Critical,
        channels: IN_APP_EMAIL,
        mandatory: true,
        variables: &["changed_at"],
        url: Some("/profile"),
        en: (
            "Your password was changed",
            "Hello {{ recipient.name }}, the password of your account {{ recipient.email }} was changed on {{ changed_at }}. If you did not do this, reset your password and tell your administrator immediately.",
        ),
        fr: (
            "Votre mot de passe a été modifié",
            "Bonjour {{ recipient.name }}, le mot de passe de votre compte {{ recipient.email }} a été modifié le {{ changed_at }}. Si vous n'êtes pas à l'origine de ce changement, réinitialisez votre mot de passe et prévenez immédiatement votre administrateur.",
        ),
        subject: Some((
            "Security alert: your password was changed",
            "Alerte de sécurité : votre mot de passe a été modifié",
        )),
    },
    Builtin {
        key: "account.new_login",
        category: "account",
        priority: Priority::High,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &["login.at", "login.device", "login.ip"],
        url: Some("/profile"),
        en: (
            "New sign-in to your account",
            "Your account {{ recipient.email }} was signed in to on {{ login.at }} from {{ login.device }} ({{ login.ip }}). If it was not you, change your password now.",
        ),
        fr: (
            "Nouvelle connexion à votre compte",
            "Une connexion à votre compte {{ recipient.email }} a eu lieu le {{ login.at }} depuis {{ login.device }} ({{ login.ip }}). Si ce n'était pas vous, changez votre mot de passe dès maintenant.",
        ),
        subject: None,
    },
    // ---- system: notices from the operator to everyone
    Builtin {
        key: "system.announcement",
        category: "system",
        priority: Priority::Normal,
        channels: IN_APP,
        mandatory: false,
        variables: &["announcement.title", "announcement.body"],
        url: None,
        en: (
            "Announcement: {{ announcement.title }}",
            "{{ announcement.body }}",
        ),
        fr: (
            "Annonce : {{ announcement.title }}",
            "{{ announcement.body }}",
        ),
        subject: None,
    },
    Builtin {
        key: "system.maintenance",
        category: "system",
        priority: Priority::Critical,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &["maintenance.starts_at", "maintenance.ends_at"],
        url: None,
        en: (
            "Planned maintenance on {{ maintenance.starts_at }}",
            "The service will be unavailable from {{ maintenance.starts_at }} to {{ maintenance.ends_at }}. Save your work before then; open pages will reconnect by themselves afterwards.",
        ),
        fr: (
            "Maintenance prévue le {{ maintenance.starts_at }}",
            "Le service sera indisponible du {{ maintenance.starts_at }} au {{ maintenance.ends_at }}. Enregistrez votre travail avant cette heure ; les pages ouvertes se reconnecteront ensuite d'elles-mêmes.",
        ),
        subject: Some((
            "Planned downtime: {{ maintenance.starts_at }} to {{ maintenance.ends_at }}",
            "Interruption prévue : du {{ maintenance.starts_at }} au {{ maintenance.ends_at }}",
        )),
    },
];
