//! Built-in types of the broadcast advertising domain: an advertiser's
//! campaigns and spots and the decisions on them (`campaigns`), planning
//! spots into a station's slots (`diffusion`), and generic moderation
//! queues (`moderation`). Written as data, one entry per type, in the
//! compact form [`Builtin`] describes.

use super::{Builtin, IN_APP, IN_APP_EMAIL};
use crate::notify::types::Priority;

pub(super) static TYPES: &[Builtin] = &[
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
];
