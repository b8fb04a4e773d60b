//! Invites (I1-I5): create (replacing a pending invite to the same email),
//! list, revoke, accept, and the invite mail. An invite is a secret token
//! stored only as its SHA-256; accepting one is a transfer (the joiner's
//! paid balance moves to the team, `wallet::transfer`). Who may invite whom
//! is decided by `accounts::rules`.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::teams::{role_name, Result, TeamError, Teams};
use crate::accounts::rules;
use crate::accounts::users::valid_email;
use crate::ids;
use crate::store::{
    InviteRecord, InviteStatus, OutboxMessage, Role, TeamRecord, TransferOp, UserRecord,
};
use crate::wallet::{team_wallet_id, user_wallet_id};

/// Invites live 7 days (I2).
pub const INVITE_TTL_DAYS: i64 = 7;

impl Teams {
    /// I1-I3: invite by email; a pending invite to the same email is
    /// replaced. Returns the invite and its accept link (the email).
    pub async fn invite(
        &self,
        team_id: &str,
        actor: &str,
        email: &str,
        role: Role,
    ) -> Result<(InviteRecord, String)> {
        let _g = self.changes.lock().await;
        let (team, actor_role) = self.role_of(team_id, actor).await?;
        if role == Role::Owner {
            return Err(TeamError::InvalidRole);
        }
        if !rules::can_invite(actor_role, role) {
            return Err(TeamError::Forbidden("your role cannot send this invite"));
        }
        let email = email.trim();
        if !valid_email(email) {
            return Err(TeamError::InvalidEmail);
        }
        let email_norm = email.to_lowercase();
        if let Some(user) = self.store.user_by_email(&email_norm).await? {
            if self.is_member(team_id, &user.id).await? {
                return Err(TeamError::AlreadyMember);
            }
        }
        let now = self.clock.now();
        for mut old in self.store.invites(team_id).await? {
            if old.email_norm == email_norm && old.status == InviteStatus::Pending {
                old.status = InviteStatus::Replaced;
                self.store.put_invite(&old).await?;
            }
        }
        let token = ids::new_secret("tgi_");
        let invite = InviteRecord {
            id: ids::new_id("inv"),
            team_id: team_id.to_string(),
            email: email.to_string(),
            email_norm,
            role,
            token_hash: ids::sha256_hex(token.as_bytes()),
            invited_by: actor.to_string(),
            created_at: now,
            expires_at: now + chrono::Duration::days(INVITE_TTL_DAYS),
            status: InviteStatus::Pending,
        };
        self.store.put_invite(&invite).await?;
        let link = format!("{}/invites/{token}", self.public_url);
        self.mailer
            .send(invite_mail(&team, &invite, &link, now))
            .await?;
        self.event(
            team_id,
            "invite.created",
            json!({"invite_id": invite.id, "email": invite.email, "role": role}),
        )
        .await;
        Ok((invite, link))
    }

    /// Pending, unexpired invites.
    pub async fn invites(&self, team_id: &str, actor: &str) -> Result<Vec<InviteRecord>> {
        let (_, role) = self.role_of(team_id, actor).await?;
        if !rules::can_manage_invites(role) {
            return Err(TeamError::Forbidden("members cannot see invites"));
        }
        let now = self.clock.now();
        Ok(self
            .store
            .invites(team_id)
            .await?
            .into_iter()
            .filter(|i| i.status == InviteStatus::Pending && i.expires_at > now)
            // An Admin manages member invites only (the role table).
            .filter(|i| rules::can_invite(role, i.role))
            .collect())
    }

    pub async fn revoke(&self, team_id: &str, actor: &str, invite_id: &str) -> Result<()> {
        let _g = self.changes.lock().await;
        let (_, role) = self.role_of(team_id, actor).await?;
        if !rules::can_manage_invites(role) {
            return Err(TeamError::Forbidden("members cannot revoke invites"));
        }
        let mut invite = self
            .store
            .invite(invite_id)
            .await?
            .filter(|i| i.team_id == team_id && i.status == InviteStatus::Pending)
            .ok_or(TeamError::NotFound)?;
        if !rules::can_invite(role, invite.role) {
            return Err(TeamError::Forbidden("an admin revokes member invites only"));
        }
        invite.status = InviteStatus::Revoked;
        self.store.put_invite(&invite).await?;
        self.event(
            team_id,
            "invite.revoked",
            json!({"invite_id": invite_id, "by": actor}),
        )
        .await;
        Ok(())
    }

    /// I4, I5: accept an invite; the joiner's paid balance moves to the team.
    pub async fn accept(&self, user: &UserRecord, token: &str) -> Result<(String, Role)> {
        let _g = self.changes.lock().await;
        let invite = self
            .store
            .invite_by_token(&ids::sha256_hex(token.as_bytes()))
            .await?
            .ok_or(TeamError::NotFound)?;
        if invite.email_norm != user.email_norm {
            return Err(TeamError::WrongInvitee);
        }
        let live_team = self
            .store
            .team(&invite.team_id)
            .await?
            .is_some_and(|t| t.deleted_at.is_none());
        if invite.status != InviteStatus::Pending
            || invite.expires_at <= self.clock.now()
            || !live_team
        {
            return Err(TeamError::InviteGone);
        }
        if self.is_member(&invite.team_id, &user.id).await? {
            return Err(TeamError::AlreadyMember);
        }
        let transfer = self.transfers.open(
            user_wallet_id(&user.id),
            team_wallet_id(&invite.team_id),
            TransferOp::Join {
                team_id: invite.team_id.clone(),
                user_id: user.id.clone(),
                role: invite.role,
                invite_id: invite.id.clone(),
            },
        );
        // B10: refused here, before the record, if the team could not hold it.
        self.transfers.check_fits(&transfer).await?;
        self.transfers.run(&transfer, self).await?;
        Ok((invite.team_id, invite.role))
    }
}

/// The invite email (I3): the team, the role, the accept link, the expiry.
fn invite_mail(
    team: &TeamRecord,
    invite: &InviteRecord,
    link: &str,
    now: DateTime<Utc>,
) -> OutboxMessage {
    OutboxMessage {
        id: ids::new_id("mail"),
        to: invite.email.clone(),
        subject: format!("You are invited to join {} on tollgate", team.name),
        body: format!(
            "You have been invited to join the team \"{}\" as {}.\n\nAccept: {link}\n\nThe link expires on {}.\n",
            team.name,
            role_name(invite.role),
            invite.expires_at.to_rfc3339()
        ),
        link: link.to_string(),
        created_at: now,
        delivered_at: None,
    }
}
