//! Teams: the documented lifecycle (T1-T4, L1-L3, D1). Create, see, list
//! members, change roles, leave or be removed, delete; the membership side
//! of the money transfers (`wallet::transfer` moves the money). Invites are
//! in `invites`, team keys in `team_keys`, usage visibility in `reports`:
//! all `impl Teams`, so callers hold one handle. Who may do what is decided
//! by `accounts::rules` (pure); this module does the changes. Nothing here
//! speaks HTTP.
//!
//! Membership changes take one async mutex (`changes`): they are rare, and
//! one lock makes "joins while the team is deleted" and "creates twice at
//! once" plainly impossible in a process. The hot path never touches it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::accounts::rules;
use crate::accounts::AccountError;
use crate::auth::{keys, KeyCache};
use crate::clock::Clock;
use crate::ids;
use crate::ledger_db::LedgerDb;
use crate::mailer::Mailer;
use crate::money::Nanos;
use crate::store::{
    EventRecord, KeyRecord, KeyStatus, LedgerEntry, MemberRecord, Role, Store, StoreError,
    TeamRecord, TransferOp, UserRecord,
};
use crate::wallet::transfer::{self, Transfers};
use crate::wallet::{team_wallet_id, user_wallet_id, WalletError, WalletRegistry, WalletView};

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
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(super) type Result<T, E = TeamError> = std::result::Result<T, E>;

pub struct Teams {
    pub(super) store: Arc<dyn Store>,
    pub(super) wallets: Arc<WalletRegistry>,
    pub(super) keys: Arc<KeyCache>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) mailer: Mailer,
    pub(super) public_url: String,
    /// How long deletion waits for in-flight requests to settle (D1).
    close_wait: Duration,
    pub(super) changes: tokio::sync::Mutex<()>,
    pub(super) transfers: Transfers,
    /// Set at boot when `ledger_url` is: the ledger view reads it (G2).
    ledger_db: OnceLock<Arc<LedgerDb>>,
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

/// A user's own account: their wallet and the live teams they belong to.
pub struct AccountView {
    pub wallet: WalletView,
    pub owned_team_id: Option<String>,
    pub teams: Vec<(TeamRecord, Role)>,
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
        let transfers = Transfers::new(store.clone(), wallets.clone(), clock.clone(), close_wait);
        Teams {
            store,
            wallets,
            keys,
            clock,
            mailer,
            public_url,
            close_wait,
            changes: tokio::sync::Mutex::new(()),
            transfers,
            ledger_db: OnceLock::new(),
        }
    }

    /// Read ledgers from this database from now on (boot, G2).
    pub fn use_ledger_db(&self, db: Arc<LedgerDb>) {
        let _ = self.ledger_db.set(db);
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
        let member = self.active_member(team_id, user_id).await?;
        Ok((team, member.role))
    }

    /// Whether the user belongs to any team (K2).
    pub async fn in_a_team(&self, user_id: &str) -> Result<bool, StoreError> {
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
        let transfer = self.transfers.open(
            user_wallet_id(&owner.id),
            team_wallet_id(&team.id),
            TransferOp::CreateTeam { team: team.clone() },
        );
        // B10: refused before anything is written if the money cannot move.
        self.transfers.check_fits(&transfer).await?;
        // N3: the new wallet's actor starts at $0, suspended, with no
        // change to log; its funding below is not a resumption either.
        let wallet = self.wallets.get(&team_wallet_id(&team.id)).await?;
        wallet.mark_fresh(true);
        let moved = self.transfers.run(&transfer, self).await;
        wallet.mark_fresh(false);
        let moved = moved?;
        // B2: a team created with no more than the threshold starts
        // suspended, and the log says so.
        if wallet.is_suspended() {
            self.event(&team.id, "team.suspended", json!({"balance": moved}))
                .await;
        }
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

    /// `GET /api/me` and the operator's view of a user: their wallet, the
    /// team they own, the live teams they belong to.
    pub async fn account(&self, user_id: &str) -> Result<AccountView> {
        let wallet = self.wallets.get(&user_wallet_id(user_id)).await?;
        let wallet = wallet.snapshot().await?;
        let owned = self.store.owned_team(user_id).await?;
        let mut teams = Vec::new();
        for m in self.store.memberships(user_id).await? {
            if let Some(t) = self
                .store
                .team(&m.team_id)
                .await?
                .filter(|t| t.deleted_at.is_none())
            {
                teams.push((t, m.role));
            }
        }
        Ok(AccountView {
            wallet,
            owned_team_id: owned.map(|t| t.id),
            teams,
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
        let mut member = self.active_member(team_id, target).await?;
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
        let member = self.active_member(team_id, target).await?;
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

    /// The team wallet's money movements (B9), Owner only.
    pub async fn ledger(&self, team_id: &str, actor: &str) -> Result<Vec<LedgerEntry>> {
        let (_, role) = self.role_of(team_id, actor).await?;
        if !rules::can_see_billing(role) {
            return Err(TeamError::Forbidden("only the owner sees billing"));
        }
        let wallet_id = team_wallet_id(team_id);
        let wallet = self.wallets.get(&wallet_id).await?;
        wallet.flush().await?;
        match self.ledger_db.get() {
            Some(db) => Ok(
                crate::ledger_db::wallet_ledger(db, &*self.store, &wallet_id)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?,
            ),
            None => Ok(self.store.ledger(&wallet_id).await?),
        }
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
            let transfer = self.transfers.open(
                team_wallet_id(team_id),
                user_wallet_id(&team.owner_id),
                TransferOp::DeleteTeam {
                    team_id: team_id.to_string(),
                    owner_id: team.owner_id.clone(),
                },
            );
            // B10: the payout must fit the Owner's balance, or nothing changes.
            self.transfers.check_fits(&transfer).await?;
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
        self.transfers.run(&transfer, self).await
    }

    /// Hold the membership lock: personal key changes take it so that a key
    /// cannot be created while its owner joins a team (K2).
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changes.lock().await
    }

    /// Finish transfers a failed store write left behind, while running
    /// (every `every`), under the membership lock.
    pub async fn retry_loop(teams: std::sync::Weak<Self>, every: Duration) {
        transfer::retry_loop(teams, every, |teams| async move {
            let _g = teams.changes.lock().await;
            teams.recover().await
        })
        .await;
    }

    /// Finish transfers a crash interrupted (at start, then by `retry_loop`).
    pub async fn recover(&self) -> Result<usize> {
        self.transfers.recover(self).await
    }

    pub fn mailer(&self) -> &Mailer {
        &self.mailer
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The user's current membership of the team, or `NotFound`.
    pub(super) async fn active_member(&self, team_id: &str, user_id: &str) -> Result<MemberRecord> {
        self.store
            .member(team_id, user_id)
            .await?
            .filter(MemberRecord::active)
            .ok_or(TeamError::NotFound)
    }

    /// Whether the user is a current member of the team.
    pub(super) async fn is_member(&self, team_id: &str, user_id: &str) -> Result<bool> {
        Ok(self
            .store
            .member(team_id, user_id)
            .await?
            .is_some_and(|m| m.active()))
    }

    /// Store first, then the cache (here and, by pub/sub, elsewhere): K5.
    pub(super) async fn set_key_status(&self, key: &KeyRecord, status: KeyStatus) -> Result<()> {
        Ok(keys::set_status(&*self.store, &self.keys, key, status).await?)
    }

    /// Append to the team's event log; a failure is logged, not returned.
    pub(super) async fn event(&self, team_id: &str, kind: &str, data: serde_json::Value) {
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
}

/// T2: trimmed, 1 to 48 Unicode scalar values, no control or bidi
/// override characters, at least one visible character (names.rs).
pub fn valid_team_name(name: &str) -> Result<String> {
    super::names::valid_name(name, MAX_TEAM_NAME).ok_or(TeamError::InvalidName)
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
        assert!(valid_team_name("\u{200B}\u{200B}").is_err());
        assert!(valid_team_name("Ops\u{202E}").is_err());
    }
}
