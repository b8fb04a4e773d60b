//! The membership changes money moves with (T3, I5, D1) and leaving (L3):
//! `Teams` as the `wallet::transfer::Membership` a transfer applies before
//! its money moves. Each change is idempotent, so `recover` may rerun it
//! whole after a crash. Personal keys are archived while their owner is in
//! a team and come back when they belong to none (K2).

use chrono::{DateTime, Utc};
use serde_json::json;

use super::teams::{Result, TeamError, Teams};
use crate::store::{InviteStatus, KeyStatus, MemberRecord, Role, TeamRecord, TransferOp};
use crate::wallet::transfer::Membership;

impl Membership for Teams {
    type Error = TeamError;

    async fn apply(&self, op: &TransferOp) -> Result<()> {
        let now = self.clock.now();
        match op {
            TransferOp::CreateTeam { team } => self.apply_create(team).await,
            TransferOp::Join {
                team_id,
                user_id,
                role,
                invite_id,
            } => {
                self.apply_join(team_id, user_id, *role, invite_id, now)
                    .await
            }
            TransferOp::DeleteTeam { team_id, owner_id } => {
                self.apply_delete(team_id, owner_id, now).await
            }
        }
    }
}

impl Teams {
    /// T1: the team and its Owner; the Owner's personal keys are archived.
    async fn apply_create(&self, team: &TeamRecord) -> Result<()> {
        self.store.put_team(team).await?;
        if self.store.member(&team.id, &team.owner_id).await?.is_none() {
            self.store
                .put_member(&MemberRecord {
                    team_id: team.id.clone(),
                    user_id: team.owner_id.clone(),
                    role: Role::Owner,
                    joined_at: team.created_at,
                    left_at: None,
                })
                .await?;
            self.event(
                &team.id,
                "team.created",
                json!({"owner_id": team.owner_id, "name": team.name}),
            )
            .await;
        }
        self.archive_personal_keys(&team.owner_id).await
    }

    /// I4, I5: the joiner becomes a member, the invite is used, the
    /// joiner's personal keys are archived.
    async fn apply_join(
        &self,
        team_id: &str,
        user_id: &str,
        role: Role,
        invite_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if !self.is_member(team_id, user_id).await? {
            self.store
                .put_member(&MemberRecord {
                    team_id: team_id.to_string(),
                    user_id: user_id.to_string(),
                    role,
                    joined_at: now,
                    left_at: None,
                })
                .await?;
            self.event(
                team_id,
                "member.joined",
                json!({"user_id": user_id, "role": role}),
            )
            .await;
        }
        if let Some(mut invite) = self.store.invite(invite_id).await? {
            if invite.status == InviteStatus::Pending {
                invite.status = InviteStatus::Accepted;
                self.store.put_invite(&invite).await?;
            }
        }
        self.archive_personal_keys(user_id).await
    }

    /// D1: every member leaves (the Owner last), pending invites are
    /// revoked, the team is marked deleted.
    async fn apply_delete(&self, team_id: &str, owner_id: &str, now: DateTime<Utc>) -> Result<()> {
        for m in self.store.members(team_id).await? {
            if m.active() && m.user_id != *owner_id {
                self.leave(team_id, &m.user_id).await?;
            }
        }
        self.leave(team_id, owner_id).await?;
        for mut invite in self.store.invites(team_id).await? {
            if invite.status == InviteStatus::Pending {
                invite.status = InviteStatus::Revoked;
                self.store.put_invite(&invite).await?;
            }
        }
        if let Some(mut team) = self.store.team(team_id).await? {
            if team.deleted_at.is_none() {
                team.deleted_at = Some(now);
                self.store.put_team(&team).await?;
                self.event(team_id, "team.deleted", json!({"owner_id": owner_id}))
                    .await;
            }
        }
        Ok(())
    }

    /// L3: every team key the leaver created or is assigned is deleted
    /// (and so refused on the proxy from the next request, K5), their money
    /// stays, their personal keys come back if they now belong to no team.
    pub(super) async fn leave(&self, team_id: &str, user_id: &str) -> Result<()> {
        for key in self.store.team_keys(team_id).await? {
            let theirs = key.created_by == user_id || key.member_id == user_id;
            if theirs && key.status != KeyStatus::Deleted {
                self.set_key_status(&key, KeyStatus::Deleted).await?;
            }
        }
        if let Some(mut m) = self.store.member(team_id, user_id).await? {
            if m.active() {
                m.left_at = Some(self.clock.now());
                self.store.put_member(&m).await?;
            }
        }
        if !self.in_a_team(user_id).await? {
            for key in self.store.keys_of_user(user_id).await? {
                if key.status == KeyStatus::Archived {
                    self.set_key_status(&key, KeyStatus::Active).await?;
                }
            }
        }
        Ok(())
    }

    async fn archive_personal_keys(&self, user_id: &str) -> Result<()> {
        for key in self.store.keys_of_user(user_id).await? {
            if key.status == KeyStatus::Active {
                self.set_key_status(&key, KeyStatus::Archived).await?;
            }
        }
        Ok(())
    }
}
