//! The commands a session answers besides subscribing: each resolves the
//! channel, checks the namespace's policy, asks the bus or a domain, and
//! writes one reply.

use std::fmt::Write;

use serde_json::value::RawValue;

use super::{CommandError, Flow, Frames, Session};
use crate::{
    bus::Position,
    channels::Operation,
    extension::Publisher,
    gateway::{
        ChannelOpError, Published,
        protocol::{Reply, codes},
    },
};

/// Most publications returned by one `history` command.
const HISTORY_MAX: usize = 1000;

impl Session {
    pub(super) async fn unsubscribe(
        &mut self,
        out: &mut impl Frames,
        id: Option<u64>,
        channel: &str,
    ) -> Result<Flow, CommandError> {
        let (key, _) = self.resolve(channel)?;
        if !self.subs.contains_key(&key) {
            return Err(CommandError::new(
                codes::NOT_SUBSCRIBED,
                format!("not subscribed to `{channel}`"),
            ));
        }
        self.leave(&key).await;
        let reply = Reply::Unsubscribed {
            id,
            channel: key.name().as_str(),
            reason: None,
        };
        Ok(self.reply(out, reply.to_json()).await)
    }

    pub(super) async fn publish(
        &mut self,
        out: &mut impl Frames,
        id: Option<u64>,
        channel: &str,
        data: &RawValue,
    ) -> Result<Flow, CommandError> {
        let (key, ns) = self.resolve(channel)?;
        self.gw
            .authorize(&ns, Operation::Publish, &self.principal, &key)
            .await?;
        let published = self
            .gw
            .publish_from(Publisher::User(&self.principal), &key, &ns, data, None)
            .await?;
        let reply = match &published {
            Published::Stored(position) | Published::Replayed(position) => Reply::Published {
                id,
                channel: key.name().as_str(),
                epoch: Some(&position.epoch),
                offset: Some(position.offset),
                ephemeral: false,
            },
            Published::Ephemeral => Reply::Published {
                id,
                channel: key.name().as_str(),
                epoch: None,
                offset: None,
                ephemeral: true,
            },
        };
        Ok(self.reply(out, reply.to_json()).await)
    }

    pub(super) async fn rpc(
        &mut self,
        out: &mut impl Frames,
        id: Option<u64>,
        method: &str,
        data: Option<serde_json::Value>,
    ) -> Result<Flow, CommandError> {
        let data = data
            .map(|d| serde_json::value::to_raw_value(&d))
            .transpose()
            .map_err(|e| CommandError::new(codes::MALFORMED, e.to_string()))?;
        let result = self
            .gw
            .rpc()
            .call(&self.gw, &self.principal, method, data.as_deref())
            .await?;
        let reply = Reply::RpcResult { id, data: &result };
        Ok(self.reply(out, reply.to_json()).await)
    }

    pub(super) async fn presence(
        &mut self,
        out: &mut impl Frames,
        id: Option<u64>,
        channel: &str,
    ) -> Result<Flow, CommandError> {
        let (key, ns) = self.resolve(channel)?;
        self.gw
            .authorize(&ns, Operation::Presence, &self.principal, &key)
            .await?;
        let members = self
            .gw
            .broker
            .presence(&key)
            .await
            .map_err(ChannelOpError::from)?;
        let clients = members.iter().map(|m| m.clients as u64).sum();
        let reply = Reply::Presence {
            id,
            channel: key.name().as_str(),
            users: members.len(),
            clients,
            members: &members,
        };
        Ok(self.reply(out, reply.to_json()).await)
    }

    pub(super) async fn history(
        &mut self,
        out: &mut impl Frames,
        id: Option<u64>,
        channel: &str,
        since: Option<Position>,
        limit: Option<usize>,
    ) -> Result<Flow, CommandError> {
        let (key, ns) = self.resolve(channel)?;
        self.gw
            .authorize(&ns, Operation::Subscribe, &self.principal, &key)
            .await?;
        let limit = limit.unwrap_or(100).clamp(1, HISTORY_MAX);
        let broker = &self.gw.broker;
        let page = match &since {
            Some(position) => broker.page_after(&key, ns.history, position, limit).await,
            None => broker
                .latest(&key, ns.history, limit)
                .await
                .map(|r| crate::bus::HistoryPage {
                    top: r.top,
                    publications: r.publications,
                    complete: r.recovered,
                    more: false,
                }),
        }
        .map_err(ChannelOpError::from)?;
        let mut frame = String::with_capacity(
            128 + page
                .publications
                .iter()
                .map(|p| p.frame.len() + 1)
                .sum::<usize>(),
        );
        frame.push_str(r#"{"type":"history","id":"#);
        frame.push_str(&serde_json::to_string(&id).unwrap_or_default());
        let _ = write!(
            frame,
            r#","channel":{},"epoch":{},"offset":{},"complete":{},"more":{},"publications":["#,
            serde_json::to_string(key.name().as_str()).unwrap_or_default(),
            serde_json::to_string(&*page.top.epoch).unwrap_or_default(),
            page.top.offset,
            page.complete,
            page.more,
        );
        for (i, publication) in page.publications.iter().enumerate() {
            if i > 0 {
                frame.push(',');
            }
            frame.push_str(publication.frame.as_str());
        }
        frame.push_str("]}");
        Ok(self.reply(out, frame).await)
    }

    pub(super) async fn refresh(
        &mut self,
        out: &mut impl Frames,
        id: Option<u64>,
        token: &str,
    ) -> Result<Flow, CommandError> {
        let principal = self
            .gw
            .auth
            .authenticate(token)
            .await
            .map_err(|e| CommandError::new(e.code(), e.to_string()))?;
        if principal.tenant != self.principal.tenant || principal.user != self.principal.user {
            return Err(CommandError::new(
                codes::WRONG_USER,
                "the new token belongs to another user",
            ));
        }
        self.gw.hub.set_session(self.id, principal.session.clone());
        let expires_at = principal.expires_at;
        self.principal = principal;
        let reply = Reply::Refreshed {
            id,
            expires_at,
            expires_in: expires_at.saturating_sub(crate::auth::tokens::unix_secs()),
        };
        Ok(self.reply(out, reply.to_json()).await)
    }
}
