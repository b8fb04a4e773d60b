//! Teams: the documented lifecycle (T1-T4, I1-I5, L1-L3, K3, D1). Create,
//! invite, join, leave or be removed, change roles, team keys, delete.
//! Who may do what is decided by `accounts::rules` (pure); this module does
//! the changes. Nothing here speaks HTTP.
//!
//! Money between wallets (create, join, delete) goes through a transfer
//! record written before the first half: the source wallet withdraws under
//! `xfer:{id}:out`, the destination credits `xfer:{id}:in`, each applied at
//! most once, and the membership change is idempotent too. A crash between
//! the halves is finished by `recover` at start, never doubled.
//!
//! Membership changes take one async mutex (`changes`): they are rare, and
//! one lock makes "joins while the team is deleted" and "creates twice at
//! once" plainly impossible in a process. The hot path never touches it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::accounts::rules;
use crate::accounts::users::{valid_email, valid_key_name};
use crate::accounts::AccountError;
use crate::auth::{mint_key, KeyCache, NewKey};
use crate::clock::Clock;
use crate::ids;
use crate::mailer::Mailer;
use crate::money::Nanos;
use crate::store::{
    Change, EntryKind, EventRecord, InviteRecord, InviteStatus, KeyRecord, KeyScope, KeyStatus,
    LedgerEntry, MemberRecord, OutboxMessage, Role, Store, StoreError, TeamRecord, TransferOp,
    TransferRecord, UserRecord,
};
use crate::wallet::{team_wallet_id, user_wallet_id, WalletError, WalletRegistry, WithdrawRule};

/// Invites live 7 days (I2).
pub const INVITE_TTL_DAYS: i64 = 7;
/// Team names: 1 to 48 characters after trimming (T2).
pub const MAX_TEAM_NAME: usize = 48;

#[derive(Debug, thiserror::Error)]
pub enum TeamError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("you already own a team; delete it to create another")]
    TeamLimit,
    #[error("a team name is 1 to 48 characters without control characters")]
    InvalidName,
    #[error("role must be \"admin\" or \"member\"")]
    InvalidRole,
    #[error("not a valid email address")]
    InvalidEmail,
    #[error("already a member of this team")]
    AlreadyMember,
    #[error("the owner cannot leave the team; delete it instead")]
    OwnerCannotLeave,
    #[error("this invite has expired, was used or was revoked")]
    InviteGone,
    #[error("this invite is for another email address")]
    WrongInvitee,
    #[error("member_id must name a current member of the team")]
    InvalidMember,
    #[error("promo credit is personal: team deposits are paid (stripe or crypto)")]
    PromoToTeam,
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T, E = TeamError> = std::result::Result<T, E>;

pub struct Teams {
    store: Arc<dyn Store>,
    wallets: Arc<WalletRegistry>,
    keys: Arc<KeyCache>,
    clock: Arc<dyn Clock>,
    mailer: Mailer,
    public_url: String,
    /// How long deletion waits for in-flight requests to settle (D1).
    close_wait: Duration,
    changes: tokio::sync::Mutex<()>,
}

/// A team as one of its members sees it.
pub struct TeamView {
    pub team: TeamRecord,
    pub role: Role,
    pub suspended: bool,
    pub member_count: usize,
    /// Owner only (billing).
    pub balance: Option<Nanos>,
}

impl Teams {
    pub fn new(
        store: Arc<dyn Store>,
        wallets: Arc<WalletRegistry>,
        keys: Arc<KeyCache>,
        clock: Arc<dyn Clock>,
        mailer: Mailer,
        public_url: String,
        close_wait: Duration,
    ) -> Teams {
        Teams {
            store,
            wallets,
            keys,
            clock,
            mailer,
            public_url,
            close_wait,
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// The live team and the caller's role in it; `NotFound` for anyone
    /// who is not a current member (A3: do not reveal that it exists).
    pub async fn role_of(&self, team_id: &str, user_id: &str) -> Result<(TeamRecord, Role)> {
        let team = self
            .store
            .team(team_id)
            .await?
            .filter(|t| t.deleted_at.is_none())
            .ok_or(TeamError::NotFound)?;
        let member = self
            .store
            .member(team_id, user_id)
            .await?
            .filter(MemberRecord::active)
            .ok_or(TeamError::NotFound)?;
        Ok((team, member.role))
    }

    /// Whether the user belongs to any team (K2).
    pub async fn in_a_team(&self, user_id: &str) -> Result<bool> {
        Ok(!self.store.memberships(user_id).await?.is_empty())
    }

    /// T1-T3: create a team; the creator's paid balance moves into it.
    pub async fn create(&self, owner: &UserRecord, name: &str) -> Result<(TeamRecord, Nanos)> {
        let name = valid_team_name(name)?;
        let _g = self.changes.lock().await;
        if self.store.owned_team(&owner.id).await?.is_some() {
            return Err(TeamError::TeamLimit);
        }
        let team = TeamRecord {
            id: ids::new_id("team"),
            name,
            owner_id: owner.id.clone(),
            created_at: self.clock.now(),
            deleted_at: None,
        };
        let transfer = TransferRecord {
            id: ids::new_id("xfer"),
            from_wallet: user_wallet_id(&owner.id),
            to_wallet: team_wallet_id(&team.id),
            op: TransferOp::CreateTeam { team: team.clone() },
            created_at: self.clock.now(),
        };
        let moved = self.run_transfer(&transfer).await?;
        Ok((team, moved))
    }

    pub async fn view(&self, team_id: &str, user_id: &str) -> Result<TeamView> {
        let (team, role) = self.role_of(team_id, user_id).await?;
        let wallet = self.wallets.get(&team_wallet_id(team_id)).await?;
        let snap = wallet.snapshot().await?;
        let member_count = self
            .store
            .members(team_id)
            .await?
            .iter()
            .filter(|m| m.active())
            .count();
        Ok(TeamView {
            team,
            role,
            suspended: snap.suspended,
            member_count,
            balance: rules::can_see_billing(role).then(|| snap.balance()),
        })
    }

    /// Current members with their emails.
    pub async fn members(&self, team_id: &str, actor: &str) -> Result<Vec<(MemberRecord, String)>> {
        self.role_of(team_id, actor).await?;
        let mut out = Vec::new();
        for m in self.store.members(team_id).await? {
            if !m.active() {
                continue;
            }
            let email = self
                .store
                .user(&m.user_id)
                .await?
                .map(|u| u.email)
                .unwrap_or_default();
            out.push((m, email));
        }
        Ok(out)
    }

    pub async fn change_role(
        &self,
        team_id: &str,
        actor: &str,
        target: &str,
        role: Role,
    ) -> Result<MemberRecord> {
        let _g = self.changes.lock().await;
        let (_, actor_role) = self.role_of(team_id, actor).await?;
        let mut member = self
            .store
            .member(team_id, target)
            .await?
            .filter(MemberRecord::active)
            .ok_or(TeamError::NotFound)?;
        if role == Role::Owner {
            return Err(TeamError::InvalidRole);
        }
        if !rules::can_change_role(actor_role, member.role, role) {
            return Err(TeamError::Forbidden(
                "only the owner changes roles, and not their own",
            ));
        }
        let from = member.role;
        member.role = role;
        self.store.put_member(&member).await?;
        self.event(
            team_id,
            "member.role_changed",
            json!({"user_id": target, "from": from, "to": role}),
        )
        .await;
        Ok(member)
    }

    /// L1-L3: a member leaves (target == actor) or is removed.
    pub async fn remove(&self, team_id: &str, actor: &str, target: &str) -> Result<()> {
        let _g = self.changes.lock().await;
        let (_, actor_role) = self.role_of(team_id, actor).await?;
        let member = self
            .store
            .member(team_id, target)
            .await?
            .filter(MemberRecord::active)
            .ok_or(TeamError::NotFound)?;
        let kind = if actor == target {
            if member.role == Role::Owner {
                return Err(TeamError::OwnerCannotLeave);
            }
            "member.left"
        } else {
            if !rules::can_remove(actor_role, member.role) {
                return Err(TeamError::Forbidden("your role cannot remove this member"));
            }
            "member.removed"
        };
        self.leave(team_id, target).await?;
        self.event(team_id, kind, json!({"user_id": target, "by": actor}))
            .await;
        Ok(())
    }

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
            if self
                .store
                .member(team_id, &user.id)
                .await?
                .is_some_and(|m| m.active())
            {
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
            .send(OutboxMessage {
                id: ids::new_id("mail"),
                to: invite.email.clone(),
                subject: format!("You are invited to join {} on tollgate", team.name),
                body: format!(
                    "You have been invited to join the team \"{}\" as {}.\n\nAccept: {link}\n\nThe link expires on {}.\n",
                    team.name,
                    role_name(role),
                    invite.expires_at.to_rfc3339()
                ),
                link: link.clone(),
                created_at: now,
                delivered_at: None,
            })
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
        if self
            .store
            .member(&invite.team_id, &user.id)
            .await?
            .is_some_and(|m| m.active())
        {
            return Err(TeamError::AlreadyMember);
        }
        let transfer = TransferRecord {
            id: ids::new_id("xfer"),
            from_wallet: user_wallet_id(&user.id),
            to_wallet: team_wallet_id(&invite.team_id),
            op: TransferOp::Join {
                team_id: invite.team_id.clone(),
                user_id: user.id.clone(),
                role: invite.role,
                invite_id: invite.id.clone(),
            },
            created_at: self.clock.now(),
        };
        self.run_transfer(&transfer).await?;
        Ok((invite.team_id, invite.role))
    }

    /// K3: a team key, assigned to `member_id` (default: its creator).
    pub async fn create_key(
        &self,
        team_id: &str,
        actor: &str,
        name: &str,
        member_id: Option<&str>,
    ) -> Result<(KeyRecord, NewKey)> {
        let _g = self.changes.lock().await;
        let (_, role) = self.role_of(team_id, actor).await?;
        if !rules::can_manage_keys(role) {
            return Err(TeamError::Forbidden("members cannot create team keys"));
        }
        let name = valid_key_name(name)?;
        let member_id = member_id.unwrap_or(actor);
        if !self
            .store
            .member(team_id, member_id)
            .await?
            .is_some_and(|m| m.active())
        {
            return Err(TeamError::InvalidMember);
        }
        let minted = mint_key();
        let record = KeyRecord {
            id: ids::new_id("key"),
            hash: minted.hash_hex.clone(),
            prefix: minted.prefix.clone(),
            name,
            scope: KeyScope::Team,
            created_by: actor.to_string(),
            team_id: Some(team_id.to_string()),
            member_id: member_id.to_string(),
            wallet_id: team_wallet_id(team_id),
            status: KeyStatus::Active,
            created_at: self.clock.now(),
            last_used_at: None,
        };
        self.store.put_key(&record).await?;
        self.key_changed(&record.hash).await;
        self.event(
            team_id,
            "key.created",
            json!({"key_id": record.id, "by": actor, "member_id": member_id}),
        )
        .await;
        Ok((record, minted))
    }

    /// Owner/Admin: every team key; Member: those assigned to them.
    pub async fn keys(&self, team_id: &str, actor: &str) -> Result<Vec<KeyRecord>> {
        let (_, role) = self.role_of(team_id, actor).await?;
        let keys = self.store.team_keys(team_id).await?;
        Ok(if rules::can_manage_keys(role) {
            keys
        } else {
            keys.into_iter().filter(|k| k.member_id == actor).collect()
        })
    }

    pub async fn delete_key(&self, team_id: &str, actor: &str, key_id: &str) -> Result<()> {
        let _g = self.changes.lock().await;
        let (_, role) = self.role_of(team_id, actor).await?;
        let key = self
            .store
            .key(key_id)
            .await?
            .filter(|k| k.team_id.as_deref() == Some(team_id) && k.status != KeyStatus::Deleted)
            // A member sees only keys assigned to them (A3: 404 otherwise).
            .filter(|k| rules::can_manage_keys(role) || k.member_id == actor)
            .ok_or(TeamError::NotFound)?;
        if !rules::can_manage_keys(role) {
            return Err(TeamError::Forbidden("members cannot delete team keys"));
        }
        self.set_key_status(&key, KeyStatus::Deleted).await?;
        self.event(
            team_id,
            "key.deleted",
            json!({"key_id": key_id, "by": actor}),
        )
        .await;
        Ok(())
    }

    /// The team wallet's money movements (B9), Owner only.
    pub async fn ledger(&self, team_id: &str, actor: &str) -> Result<Vec<LedgerEntry>> {
        let (_, role) = self.role_of(team_id, actor).await?;
        if !rules::can_see_billing(role) {
            return Err(TeamError::Forbidden("only the owner sees billing"));
        }
        let wallet = self.wallets.get(&team_wallet_id(team_id)).await?;
        wallet.flush().await?;
        Ok(self.store.ledger(&team_wallet_id(team_id)).await?)
    }

    /// The team's event log, Owner only.
    pub async fn events(&self, team_id: &str, actor: &str) -> Result<Vec<EventRecord>> {
        let (_, role) = self.role_of(team_id, actor).await?;
        if !rules::can_see_billing(role) {
            return Err(TeamError::Forbidden("only the owner sees the event log"));
        }
        Ok(self.store.events(team_id).await?)
    }

    /// B7 for teams: the owner's top-up target, checked.
    pub async fn deposit_target(&self, team_id: &str) -> Result<String> {
        self.store
            .team(team_id)
            .await?
            .filter(|t| t.deleted_at.is_none())
            .ok_or(TeamError::NotFound)?;
        Ok(team_wallet_id(team_id))
    }

    /// D1, in order: keys stop, in-flight requests settle, members are
    /// removed (L3), invites revoked, the balance goes to the Owner.
    pub async fn delete(&self, team_id: &str, actor: &str) -> Result<Nanos> {
        let transfer = {
            let _g = self.changes.lock().await;
            let (mut team, role) = self.role_of(team_id, actor).await?;
            if !rules::can_delete_team(role) {
                return Err(TeamError::Forbidden("only the owner deletes the team"));
            }
            let transfer = TransferRecord {
                id: ids::new_id("xfer"),
                from_wallet: team_wallet_id(team_id),
                to_wallet: user_wallet_id(&team.owner_id),
                op: TransferOp::DeleteTeam {
                    team_id: team_id.to_string(),
                    owner_id: team.owner_id.clone(),
                },
                created_at: self.clock.now(),
            };
            // Recorded first: from here a crash finishes the deletion at start.
            self.store.put_transfer(&transfer).await?;
            // Gone for everyone from here: no join, invite, key or top-up
            // gets in while in-flight requests settle (a second delete
            // finds nothing either).
            team.deleted_at = Some(self.clock.now());
            self.store.put_team(&team).await?;
            self.event(team_id, "team.deleted", json!({"owner_id": team.owner_id}))
                .await;
            transfer
        };
        // Keys stop working from the very next request (K5)...
        for key in self.store.team_keys(team_id).await? {
            if key.status != KeyStatus::Deleted {
                self.set_key_status(&key, KeyStatus::Deleted).await?;
            }
        }
        // ...and requests already admitted settle before the payout.
        let wallet = self.wallets.get(&team_wallet_id(team_id)).await?;
        if wallet.close(self.close_wait).await.is_err() {
            tracing::warn!(
                team = team_id,
                "in-flight requests still open after the close wait; their reserve stays to settle against"
            );
        }
        let _g = self.changes.lock().await;
        self.run_transfer(&transfer).await
    }

    /// Hold the membership lock: personal key changes take it so that a key
    /// cannot be created while its owner joins a team (K2).
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changes.lock().await
    }

    /// Finish transfers a failed store write left behind, while running
    /// (every `every`), under the membership lock.
    pub async fn retry_loop(teams: std::sync::Weak<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let Some(teams) = teams.upgrade() else { break };
            let _g = teams.changes.lock().await;
            if let Err(e) = teams.recover().await {
                tracing::warn!(error = %e, "unfinished transfers still pending; will retry");
            }
        }
    }

    /// Finish transfers a crash interrupted (at start, then by `retry_loop`).
    pub async fn recover(&self) -> Result<usize> {
        let pending = self.store.unfinished_transfers().await?;
        let n = pending.len();
        for t in pending {
            tracing::warn!(transfer = %t.id, "finishing an interrupted transfer");
            if let TransferOp::DeleteTeam { team_id, .. } = &t.op {
                let wallet = self.wallets.get(&team_wallet_id(team_id)).await?;
                let _ = wallet.close(self.close_wait).await;
            }
            self.run_transfer(&t).await?;
        }
        Ok(n)
    }

    /// Record the transfer, make the membership change, move the money,
    /// mark it done. Every step is idempotent, so `recover` reruns it whole.
    async fn run_transfer(&self, t: &TransferRecord) -> Result<Nanos> {
        self.store.put_transfer(t).await?;
        self.apply_op(&t.op).await?;
        let rule = match t.op {
            TransferOp::DeleteTeam { .. } => WithdrawRule::Everything,
            _ => WithdrawRule::MovablePaid,
        };
        let from = self.wallets.get(&t.from_wallet).await?;
        let amount = from
            .withdraw(format!("xfer:{}:out", t.id), rule, t.id.clone())
            .await?;
        if amount != Nanos::ZERO {
            let to = self.wallets.get(&t.to_wallet).await?;
            to.credit(LedgerEntry {
                id: format!("xfer:{}:in", t.id),
                wallet_id: t.to_wallet.clone(),
                kind: EntryKind::TransferIn,
                paid: amount,
                promo: Nanos::ZERO,
                at: self.clock.now(),
                reference: t.id.clone(),
                usage: None,
            })
            .await?;
        }
        let _ = self
            .store
            .publish(&Change::Wallet(t.from_wallet.clone()))
            .await;
        let _ = self
            .store
            .publish(&Change::Wallet(t.to_wallet.clone()))
            .await;
        self.store.finish_transfer(&t.id).await?;
        Ok(amount)
    }

    async fn apply_op(&self, op: &TransferOp) -> Result<()> {
        let now = self.clock.now();
        match op {
            TransferOp::CreateTeam { team } => {
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
                self.archive_personal_keys(&team.owner_id).await?;
            }
            TransferOp::Join {
                team_id,
                user_id,
                role,
                invite_id,
            } => {
                if !self
                    .store
                    .member(team_id, user_id)
                    .await?
                    .is_some_and(|m| m.active())
                {
                    self.store
                        .put_member(&MemberRecord {
                            team_id: team_id.clone(),
                            user_id: user_id.clone(),
                            role: *role,
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
                self.archive_personal_keys(user_id).await?;
            }
            TransferOp::DeleteTeam { team_id, owner_id } => {
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
            }
        }
        Ok(())
    }

    /// L3: the leaver's team keys are deleted, their money stays, their
    /// personal keys come back if they now belong to no team.
    async fn leave(&self, team_id: &str, user_id: &str) -> Result<()> {
        for key in self.store.team_keys(team_id).await? {
            if key.created_by == user_id && key.status != KeyStatus::Deleted {
                self.set_key_status(&key, KeyStatus::Deleted).await?;
            }
        }
        if let Some(mut m) = self.store.member(team_id, user_id).await? {
            if m.active() {
                m.left_at = Some(self.clock.now());
                self.store.put_member(&m).await?;
            }
        }
        if self.store.memberships(user_id).await?.is_empty() {
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

    /// Store first, then the cache (here and, by pub/sub, elsewhere): K5.
    async fn set_key_status(&self, key: &KeyRecord, status: KeyStatus) -> Result<()> {
        self.store.set_key_status(&key.id, status).await?;
        self.key_changed(&key.hash).await;
        Ok(())
    }

    async fn key_changed(&self, hash: &str) {
        self.keys.changed(&*self.store, hash).await;
    }

    async fn event(&self, team_id: &str, kind: &str, data: serde_json::Value) {
        let event = EventRecord {
            id: ids::new_id("evt"),
            team_id: team_id.to_string(),
            kind: kind.to_string(),
            at: self.clock.now(),
            data,
        };
        if let Err(e) = self.store.append_event(&event).await {
            tracing::warn!(error = %e, kind, "team event not recorded");
        }
    }

    pub fn mailer(&self) -> &Mailer {
        &self.mailer
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// T2: trimmed, 1 to 48 Unicode scalar values, no control characters.
pub fn valid_team_name(name: &str) -> Result<String> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > MAX_TEAM_NAME || name.chars().any(char::is_control) {
        return Err(TeamError::InvalidName);
    }
    Ok(name.to_string())
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_names_count_characters_not_bytes() {
        assert_eq!(valid_team_name("  Ops  ").unwrap(), "Ops");
        assert!(valid_team_name(&"é".repeat(48)).is_ok());
        assert!(valid_team_name(&"é".repeat(49)).is_err());
        assert!(valid_team_name("   ").is_err());
        assert!(valid_team_name("a\u{7}b").is_err());
        assert!(valid_team_name("tab\tname").is_err());
    }
}
