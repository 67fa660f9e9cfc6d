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
//! Conventions the texts rely on:
//! - `*.status` variables (`project.status`, `task.status`…) and dates
//!   (`slot.starts_at`, `task.due_date`…) are display labels the app
//!   backend formats for the recipient; the templates insert them as given.
//! - `reason` is the free text a moderator or broadcaster typed, always put
//!   last so it can be any length.
//! - `actor.name` is whoever caused the event.

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

static BUILTIN: &[Builtin] = &[
    // ---- campaigns: an advertiser's campaigns and spots, and decisions on them
    Builtin {
        key: "campaign.submitted",
        category: "campaigns",
        priority: Priority::Normal,
        channels: IN_APP,
        mandatory: false,
        variables: &["campaign.id", "campaign.name", "advertiser.name"],
        url: Some("/campaigns/{{ campaign.id }}"),
        en: (
            "New campaign: {{ campaign.name }}",
            "{{ advertiser.name }} submitted the campaign \"{{ campaign.name }}\" for review.",
        ),
        fr: (
            "Nouvelle campagne : {{ campaign.name }}",
            "{{ advertiser.name }} a soumis la campagne « {{ campaign.name }} » pour validation.",
        ),
        subject: None,
    },
    Builtin {
        key: "campaign.approved",
        category: "campaigns",
        priority: Priority::Normal,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &["campaign.id", "campaign.name"],
        url: Some("/campaigns/{{ campaign.id }}"),
        en: (
            "Campaign approved: {{ campaign.name }}",
            "Your campaign \"{{ campaign.name }}\" was approved. Its spots can now be scheduled for broadcast.",
        ),
        fr: (
            "Campagne validée : {{ campaign.name }}",
            "Votre campagne « {{ campaign.name }} » a été validée. Ses spots peuvent désormais être programmés pour la diffusion.",
        ),
        subject: None,
    },
    Builtin {
        key: "campaign.rejected",
        category: "campaigns",
        priority: Priority::High,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &["campaign.id", "campaign.name", "reason"],
        url: Some("/campaigns/{{ campaign.id }}"),
        en: (
            "Campaign rejected: {{ campaign.name }}",
            "Your campaign \"{{ campaign.name }}\" was rejected. You can edit it and submit it again.\nReason: {{ reason }}",
        ),
        fr: (
            "Campagne refusée : {{ campaign.name }}",
            "Votre campagne « {{ campaign.name }} » a été refusée. Vous pouvez la modifier et la soumettre à nouveau.\nMotif : {{ reason }}",
        ),
        subject: Some((
            "Action needed: your campaign \"{{ campaign.name }}\" was rejected",
            "Action requise : votre campagne « {{ campaign.name }} » a été refusée",
        )),
    },
    Builtin {
        key: "spot.submitted",
        category: "campaigns",
        priority: Priority::Normal,
        channels: IN_APP,
        mandatory: false,
        variables: &[
            "campaign.id",
            "campaign.name",
            "spot.id",
            "spot.title",
            "advertiser.name",
        ],
        url: Some("/campaigns/{{ campaign.id }}/spots/{{ spot.id }}"),
        en: (
            "New spot to review: {{ spot.title }}",
            "{{ advertiser.name }} uploaded the spot \"{{ spot.title }}\" for the campaign \"{{ campaign.name }}\".",
        ),
        fr: (
            "Nouveau spot à valider : {{ spot.title }}",
            "{{ advertiser.name }} a déposé le spot « {{ spot.title }} » pour la campagne « {{ campaign.name }} ».",
        ),
        subject: None,
    },
    Builtin {
        key: "spot.approved",
        category: "campaigns",
        priority: Priority::Normal,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &["campaign.id", "campaign.name", "spot.id", "spot.title"],
        url: Some("/campaigns/{{ campaign.id }}/spots/{{ spot.id }}"),
        en: (
            "Spot approved: {{ spot.title }}",
            "Your spot \"{{ spot.title }}\" (campaign \"{{ campaign.name }}\") was approved and can now be scheduled.",
        ),
        fr: (
            "Spot validé : {{ spot.title }}",
            "Votre spot « {{ spot.title }} » (campagne « {{ campaign.name }} ») a été validé et peut maintenant être programmé.",
        ),
        subject: None,
    },
    Builtin {
        key: "spot.rejected",
        category: "campaigns",
        priority: Priority::High,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &[
            "campaign.id",
            "campaign.name",
            "spot.id",
            "spot.title",
            "reason",
        ],
        url: Some("/campaigns/{{ campaign.id }}/spots/{{ spot.id }}"),
        en: (
            "Spot rejected: {{ spot.title }}",
            "Your spot \"{{ spot.title }}\" (campaign \"{{ campaign.name }}\") was rejected. You can upload a new version.\nReason: {{ reason }}",
        ),
        fr: (
            "Spot refusé : {{ spot.title }}",
            "Votre spot « {{ spot.title }} » (campagne « {{ campaign.name }} ») a été refusé. Vous pouvez en déposer une nouvelle version.\nMotif : {{ reason }}",
        ),
        subject: None,
    },
    // ---- diffusion: planning slots on a station, told to the advertiser
    Builtin {
        key: "spot.scheduled",
        category: "diffusion",
        priority: Priority::Normal,
        channels: IN_APP,
        mandatory: false,
        variables: &["slot.id", "slot.starts_at", "station.name", "spot.title"],
        url: Some("/broadcasts/{{ slot.id }}"),
        en: (
            "Spot scheduled: {{ spot.title }}",
            "Your spot \"{{ spot.title }}\" is scheduled on {{ station.name }} for {{ slot.starts_at }}. The broadcaster will confirm the slot.",
        ),
        fr: (
            "Spot programmé : {{ spot.title }}",
            "Votre spot « {{ spot.title }} » est programmé sur {{ station.name }} pour le {{ slot.starts_at }}. Le diffuseur confirmera le créneau.",
        ),
        subject: None,
    },
    Builtin {
        key: "slot.confirmed",
        category: "diffusion",
        priority: Priority::Normal,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &["slot.id", "slot.starts_at", "station.name", "spot.title"],
        url: Some("/broadcasts/{{ slot.id }}"),
        en: (
            "Broadcast confirmed: {{ spot.title }}",
            "{{ station.name }} confirmed the broadcast of your spot \"{{ spot.title }}\" on {{ slot.starts_at }}.",
        ),
        fr: (
            "Diffusion confirmée : {{ spot.title }}",
            "{{ station.name }} a confirmé la diffusion de votre spot « {{ spot.title }} » le {{ slot.starts_at }}.",
        ),
        subject: None,
    },
    Builtin {
        key: "slot.cancelled",
        category: "diffusion",
        priority: Priority::High,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &[
            "slot.id",
            "slot.starts_at",
            "station.name",
            "spot.title",
            "reason",
        ],
        url: Some("/broadcasts/{{ slot.id }}"),
        en: (
            "Broadcast cancelled: {{ spot.title }}",
            "The broadcast of your spot \"{{ spot.title }}\" on {{ station.name }} on {{ slot.starts_at }} was cancelled.\nReason: {{ reason }}",
        ),
        fr: (
            "Diffusion annulée : {{ spot.title }}",
            "La diffusion de votre spot « {{ spot.title }} » sur {{ station.name }} le {{ slot.starts_at }} a été annulée.\nMotif : {{ reason }}",
        ),
        subject: None,
    },
    Builtin {
        key: "spot.aired",
        category: "diffusion",
        priority: Priority::Low,
        channels: IN_APP,
        mandatory: false,
        variables: &["slot.id", "slot.starts_at", "station.name", "spot.title"],
        url: Some("/broadcasts/{{ slot.id }}"),
        en: (
            "Spot aired: {{ spot.title }}",
            "Your spot \"{{ spot.title }}\" was broadcast on {{ station.name }} on {{ slot.starts_at }}.",
        ),
        fr: (
            "Spot diffusé : {{ spot.title }}",
            "Votre spot « {{ spot.title }} » a été diffusé sur {{ station.name }} le {{ slot.starts_at }}.",
        ),
        subject: None,
    },
    // ---- moderation: generic queue items (any queue), for moderators and submitters
    Builtin {
        key: "moderation.item_pending",
        category: "moderation",
        priority: Priority::Normal,
        channels: IN_APP,
        mandatory: false,
        variables: &["queue.name", "item.id", "item.title", "submitter.name"],
        url: Some("/console/queues/{{ queue.name }}/items/{{ item.id }}"),
        en: (
            "To review in {{ queue.name }}: {{ item.title }}",
            "{{ submitter.name }} submitted \"{{ item.title }}\". It is waiting in the {{ queue.name }} queue.",
        ),
        fr: (
            "À modérer ({{ queue.name }}) : {{ item.title }}",
            "{{ submitter.name }} a soumis « {{ item.title }} », en attente dans la file {{ queue.name }}.",
        ),
        subject: None,
    },
    Builtin {
        key: "moderation.item_approved",
        category: "moderation",
        priority: Priority::Normal,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &["queue.name", "item.title"],
        url: None,
        en: (
            "Request approved: {{ item.title }}",
            "Your request \"{{ item.title }}\" ({{ queue.name }}) was approved.",
        ),
        fr: (
            "Demande validée : {{ item.title }}",
            "Votre demande « {{ item.title }} » ({{ queue.name }}) a été validée.",
        ),
        subject: None,
    },
    Builtin {
        key: "moderation.item_rejected",
        category: "moderation",
        priority: Priority::High,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &["queue.name", "item.title", "reason"],
        url: None,
        en: (
            "Request rejected: {{ item.title }}",
            "Your request \"{{ item.title }}\" ({{ queue.name }}) was rejected.\nReason: {{ reason }}",
        ),
        fr: (
            "Demande refusée : {{ item.title }}",
            "Votre demande « {{ item.title }} » ({{ queue.name }}) a été refusée.\nMotif : {{ reason }}",
        ),
        subject: None,
    },
    // ---- projects: events app backends report, sent to project members
    Builtin {
        key: "project.created",
        category: "projects",
        priority: Priority::Normal,
        channels: IN_APP,
        mandatory: false,
        variables: &["project.id", "project.name", "actor.name"],
        url: Some("/projects/{{ project.id }}"),
        en: (
            "New project: {{ project.name }}",
            "{{ actor.name }} created the project \"{{ project.name }}\".",
        ),
        fr: (
            "Nouveau projet : {{ project.name }}",
            "{{ actor.name }} a créé le projet « {{ project.name }} ».",
        ),
        subject: None,
    },
    Builtin {
        key: "project.member_added",
        category: "projects",
        priority: Priority::Normal,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &["project.id", "project.name", "actor.name"],
        url: Some("/projects/{{ project.id }}"),
        en: (
            "You joined {{ project.name }}",
            "{{ actor.name }} added you to the project \"{{ project.name }}\". You will now receive its updates and can use its chat room.",
        ),
        fr: (
            "Vous avez rejoint {{ project.name }}",
            "{{ actor.name }} vous a ajouté au projet « {{ project.name }} ». Vous recevrez désormais ses mises à jour et avez accès à son salon de discussion.",
        ),
        subject: None,
    },
    Builtin {
        key: "project.status_changed",
        category: "projects",
        priority: Priority::Normal,
        channels: IN_APP,
        mandatory: false,
        variables: &["project.id", "project.name", "project.status", "actor.name"],
        url: Some("/projects/{{ project.id }}"),
        en: (
            "Project {{ project.name }}: {{ project.status }}",
            "{{ actor.name }} changed the status of the project \"{{ project.name }}\" to \"{{ project.status }}\".",
        ),
        fr: (
            "Projet {{ project.name }} : {{ project.status }}",
            "{{ actor.name }} a passé le projet « {{ project.name }} » au statut « {{ project.status }} ».",
        ),
        subject: None,
    },
    Builtin {
        key: "project.phase_changed",
        category: "projects",
        priority: Priority::Normal,
        channels: IN_APP,
        mandatory: false,
        variables: &["project.id", "project.name", "phase.name", "phase.status"],
        url: Some("/projects/{{ project.id }}"),
        en: (
            "Phase update: {{ phase.name }}",
            "The phase \"{{ phase.name }}\" of the project \"{{ project.name }}\" is now \"{{ phase.status }}\".",
        ),
        fr: (
            "Phase mise à jour : {{ phase.name }}",
            "La phase « {{ phase.name }} » du projet « {{ project.name }} » est désormais « {{ phase.status }} ».",
        ),
        subject: None,
    },
    Builtin {
        key: "project.step_changed",
        category: "projects",
        priority: Priority::Normal,
        channels: IN_APP,
        mandatory: false,
        variables: &[
            "project.id",
            "project.name",
            "step.id",
            "step.name",
            "step.status",
            "actor.name",
        ],
        url: Some("/projects/{{ project.id }}/steps/{{ step.id }}"),
        en: (
            "Step update: {{ step.name }}",
            "{{ actor.name }} set the step \"{{ step.name }}\" of the project \"{{ project.name }}\" to \"{{ step.status }}\".",
        ),
        fr: (
            "Étape mise à jour : {{ step.name }}",
            "{{ actor.name }} a passé l'étape « {{ step.name }} » du projet « {{ project.name }} » au statut « {{ step.status }} ».",
        ),
        subject: None,
    },
    Builtin {
        key: "project.task_changed",
        category: "projects",
        priority: Priority::Low,
        channels: IN_APP,
        mandatory: false,
        variables: &[
            "project.id",
            "project.name",
            "task.id",
            "task.title",
            "task.status",
            "actor.name",
        ],
        url: Some("/projects/{{ project.id }}/tasks/{{ task.id }}"),
        en: (
            "Task update: {{ task.title }}",
            "{{ actor.name }} set the task \"{{ task.title }}\" of the project \"{{ project.name }}\" to \"{{ task.status }}\".",
        ),
        fr: (
            "Tâche mise à jour : {{ task.title }}",
            "{{ actor.name }} a passé la tâche « {{ task.title }} » du projet « {{ project.name }} » au statut « {{ task.status }} ».",
        ),
        subject: None,
    },
    // ---- tasks: work given to one person, and its deadlines
    Builtin {
        key: "task.assigned",
        category: "tasks",
        priority: Priority::Normal,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &[
            "project.id",
            "project.name",
            "task.id",
            "task.title",
            "actor.name",
        ],
        url: Some("/projects/{{ project.id }}/tasks/{{ task.id }}"),
        en: (
            "New task: {{ task.title }}",
            "{{ actor.name }} assigned you the task \"{{ task.title }}\" in the project \"{{ project.name }}\".",
        ),
        fr: (
            "Nouvelle tâche : {{ task.title }}",
            "{{ actor.name }} vous a confié la tâche « {{ task.title }} » dans le projet « {{ project.name }} ».",
        ),
        subject: None,
    },
    Builtin {
        key: "task.due_soon",
        category: "tasks",
        priority: Priority::Normal,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &[
            "project.id",
            "project.name",
            "task.id",
            "task.title",
            "task.due_date",
        ],
        url: Some("/projects/{{ project.id }}/tasks/{{ task.id }}"),
        en: (
            "Due soon: {{ task.title }}",
            "The task \"{{ task.title }}\" in the project \"{{ project.name }}\" is due on {{ task.due_date }}.",
        ),
        fr: (
            "Échéance proche : {{ task.title }}",
            "La tâche « {{ task.title }} » du projet « {{ project.name }} » arrive à échéance le {{ task.due_date }}.",
        ),
        subject: None,
    },
    Builtin {
        key: "task.overdue",
        category: "tasks",
        priority: Priority::High,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &[
            "project.id",
            "project.name",
            "task.id",
            "task.title",
            "task.due_date",
        ],
        url: Some("/projects/{{ project.id }}/tasks/{{ task.id }}"),
        en: (
            "Overdue: {{ task.title }}",
            "The task \"{{ task.title }}\" in the project \"{{ project.name }}\" was due on {{ task.due_date }} and is not finished yet.",
        ),
        fr: (
            "En retard : {{ task.title }}",
            "La tâche « {{ task.title }} » du projet « {{ project.name }} » devait être terminée le {{ task.due_date }} et ne l'est pas encore.",
        ),
        subject: None,
    },
    Builtin {
        key: "step.assigned",
        category: "tasks",
        priority: Priority::Normal,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &[
            "project.id",
            "project.name",
            "phase.name",
            "step.id",
            "step.name",
            "actor.name",
        ],
        url: Some("/projects/{{ project.id }}/steps/{{ step.id }}"),
        en: (
            "Step assigned to you: {{ step.name }}",
            "{{ actor.name }} assigned you the step \"{{ step.name }}\" (phase \"{{ phase.name }}\") of the project \"{{ project.name }}\".",
        ),
        fr: (
            "Étape confiée : {{ step.name }}",
            "{{ actor.name }} vous a confié l'étape « {{ step.name }} » (phase « {{ phase.name }} ») du projet « {{ project.name }} ».",
        ),
        subject: None,
    },
    // ---- documents: project documents, their validation and comments
    Builtin {
        key: "document.uploaded",
        category: "documents",
        priority: Priority::Low,
        channels: IN_APP,
        mandatory: false,
        variables: &[
            "project.id",
            "project.name",
            "document.id",
            "document.name",
            "actor.name",
        ],
        url: Some("/projects/{{ project.id }}/documents/{{ document.id }}"),
        en: (
            "New document: {{ document.name }}",
            "{{ actor.name }} uploaded \"{{ document.name }}\" to the project \"{{ project.name }}\".",
        ),
        fr: (
            "Nouveau document : {{ document.name }}",
            "{{ actor.name }} a déposé « {{ document.name }} » dans le projet « {{ project.name }} ».",
        ),
        subject: None,
    },
    Builtin {
        key: "document.validated",
        category: "documents",
        priority: Priority::Normal,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &[
            "project.id",
            "project.name",
            "document.id",
            "document.name",
            "actor.name",
        ],
        url: Some("/projects/{{ project.id }}/documents/{{ document.id }}"),
        en: (
            "Document validated: {{ document.name }}",
            "{{ actor.name }} validated the document \"{{ document.name }}\" of the project \"{{ project.name }}\".",
        ),
        fr: (
            "Document validé : {{ document.name }}",
            "{{ actor.name }} a validé le document « {{ document.name }} » du projet « {{ project.name }} ».",
        ),
        subject: None,
    },
    Builtin {
        key: "document.rejected",
        category: "documents",
        priority: Priority::High,
        channels: IN_APP_EMAIL,
        mandatory: false,
        variables: &[
            "project.id",
            "project.name",
            "document.id",
            "document.name",
            "actor.name",
            "reason",
        ],
        url: Some("/projects/{{ project.id }}/documents/{{ document.id }}"),
        en: (
            "Document rejected: {{ document.name }}",
            "{{ actor.name }} rejected the document \"{{ document.name }}\" of the project \"{{ project.name }}\".\nReason: {{ reason }}",
        ),
        fr: (
            "Document refusé : {{ document.name }}",
            "{{ actor.name }} a refusé le document « {{ document.name }} » du projet « {{ project.name }} ».\nMotif : {{ reason }}",
        ),
        subject: None,
    },
    Builtin {
        key: "document.commented",
        category: "documents",
        priority: Priority::Normal,
        channels: IN_APP,
        mandatory: false,
        variables: &[
            "project.id",
            "document.id",
            "document.name",
            "actor.name",
            "comment.excerpt",
        ],
        url: Some("/projects/{{ project.id }}/documents/{{ document.id }}"),
        en: (
            "New comment on {{ document.name }}",
            "{{ actor.name }}: \"{{ comment.excerpt }}\"",
        ),
        fr: (
            "Nouveau commentaire sur {{ document.name }}",
            "{{ actor.name }} : « {{ comment.excerpt }} »",
        ),
        subject: None,
    },
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
    BUILTIN.iter().map(Builtin::to_def).collect()
}

/// One built-in type by key.
pub fn builtin_type(key: &str) -> Option<TypeDef> {
    BUILTIN.iter().find(|b| b.key == key).map(Builtin::to_def)
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
        for b in BUILTIN {
            assert!(seen.insert(b.key), "duplicate key {}", b.key);
        }
    }

    #[test]
    fn the_catalogue_is_large_enough() {
        assert!(BUILTIN.len() >= 30, "only {} built-in types", BUILTIN.len());
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
                BUILTIN.iter().any(|b| b.category == category),
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
        for b in BUILTIN {
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
