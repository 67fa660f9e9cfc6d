//! Built-in types of marketing projects: events on a project, its phases
//! and steps (`projects`), work given to one person and its deadlines
//! (`tasks`), and project documents, their validation and comments
//! (`documents`). Written as data, one entry per type, in the compact form
//! [`Builtin`] describes.

use super::{Builtin, IN_APP, IN_APP_EMAIL};
use crate::notify::types::Priority;

pub(super) static TYPES: &[Builtin] = &[
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
];
