//! Who reads which usage (U1-U3), as the role table says: a key's usage
//! for its owner, its assigned member and the team's Owner and Admins; a
//! team's whole usage for the Owner and Admins; each member's own share;
//! a user's personal usage and their share of each team. Anyone else gets
//! `NotFound` (A3). Each read first flushes the wallet it reads, so a
//! request is in the figures as soon as its response has ended (U1). The
//! figures themselves are computed by `crate::usage` (pure).

use super::teams::{Result, TeamError, Teams};
use crate::accounts::rules;
use crate::store::{KeyRecord, KeyScope, KeyStatus, Role, UsageRow};
use crate::usage::{self, Stats, Window};
use crate::wallet::{team_wallet_id, user_wallet_id};

/// A team's usage as its JSON report lists it (U2).
pub struct TeamUsage {
    pub total: Stats,
    pub by_member: Vec<MemberUsage>,
    pub by_key: Vec<KeyUsage>,
}

pub struct MemberUsage {
    pub user_id: String,
    pub email: Option<String>,
    /// No longer a member (their past usage still counts).
    pub left: bool,
    pub stats: Stats,
}

pub struct KeyUsage {
    pub key_id: String,
    pub name: Option<String>,
    pub status: KeyStatus,
    pub stats: Stats,
}

/// A user's usage (U3): personal keys, and their share of each team.
pub struct MyUsage {
    pub personal: Vec<UsageRow>,
    pub teams: Vec<(String, Role, Vec<UsageRow>)>,
}

impl Teams {
    /// U1: the rows of one key, for whoever may see the key.
    pub async fn key_usage(
        &self,
        user_id: &str,
        key_id: &str,
        window: Window,
    ) -> Result<(KeyRecord, Vec<UsageRow>)> {
        let key = self.store.key(key_id).await?.ok_or(TeamError::NotFound)?;
        if !self.may_see_key_usage(user_id, &key).await? {
            return Err(TeamError::NotFound);
        }
        let rows = self.usage_rows(&key.wallet_id, window).await?;
        let mine = rows.into_iter().filter(|r| r.key_id == key.id).collect();
        Ok((key, mine))
    }

    /// A personal key: its creator. A team key: the team's Owner and
    /// Admins, and the member it is assigned to.
    async fn may_see_key_usage(&self, user_id: &str, key: &KeyRecord) -> Result<bool> {
        Ok(match (&key.scope, &key.team_id) {
            (KeyScope::Personal, _) => key.created_by == user_id,
            (KeyScope::Team, Some(team_id)) => match self.role_of(team_id, user_id).await {
                Ok((_, role)) => rules::can_see_team_usage(role) || key.member_id == user_id,
                Err(TeamError::NotFound) => false,
                Err(e) => return Err(e),
            },
            (KeyScope::Team, None) => false,
        })
    }

    /// U2: every row of the team, Owner and Admins only.
    pub async fn team_usage_rows(
        &self,
        team_id: &str,
        actor: &str,
        window: Window,
    ) -> Result<Vec<UsageRow>> {
        let (_, role) = self.role_of(team_id, actor).await?;
        if !rules::can_see_team_usage(role) {
            return Err(TeamError::Forbidden(
                "only the owner and admins see the team's usage",
            ));
        }
        self.usage_rows(&team_wallet_id(team_id), window).await
    }

    /// U2: the team's totals, by member and by key, Owner and Admins only.
    pub async fn team_usage(
        &self,
        team_id: &str,
        actor: &str,
        window: Window,
    ) -> Result<TeamUsage> {
        let rows = self.team_usage_rows(team_id, actor, window).await?;
        let members = self.store.members(team_id).await?;
        let mut by_member = Vec::new();
        for (user_id, stats) in usage::grouped(window, &rows, |r| r.member_id.as_str()) {
            let email = self.store.user(user_id).await?.map(|u| u.email);
            let left = members
                .iter()
                .find(|m| m.user_id == user_id)
                .is_none_or(|m| !m.active());
            by_member.push(MemberUsage {
                user_id: user_id.to_string(),
                email,
                left,
                stats,
            });
        }
        let mut by_key = Vec::new();
        for (key_id, stats) in usage::grouped(window, &rows, |r| r.key_id.as_str()) {
            let key = self.store.key(key_id).await?;
            by_key.push(KeyUsage {
                key_id: key_id.to_string(),
                name: key.as_ref().map(|k| k.name.clone()),
                status: key.map(|k| k.status).unwrap_or(KeyStatus::Deleted),
                stats,
            });
        }
        Ok(TeamUsage {
            total: usage::stats(window, &rows),
            by_member,
            by_key,
        })
    }

    /// U2: any member's own contribution to the team.
    pub async fn member_usage(
        &self,
        team_id: &str,
        user_id: &str,
        window: Window,
    ) -> Result<Vec<UsageRow>> {
        self.role_of(team_id, user_id).await?;
        let rows = self.usage_rows(&team_wallet_id(team_id), window).await?;
        Ok(rows
            .into_iter()
            .filter(|r| r.member_id == user_id)
            .collect())
    }

    /// U3: the user's personal rows, and their rows in each team.
    pub async fn my_usage(&self, user_id: &str, window: Window) -> Result<MyUsage> {
        let personal = self.usage_rows(&user_wallet_id(user_id), window).await?;
        let mut teams = Vec::new();
        for m in self.store.memberships(user_id).await? {
            let rows = self.usage_rows(&team_wallet_id(&m.team_id), window).await?;
            let mine = rows
                .into_iter()
                .filter(|r| r.member_id == user_id)
                .collect();
            teams.push((m.team_id, m.role, mine));
        }
        Ok(MyUsage { personal, teams })
    }

    /// The wallet's rows in the window, after flushing what it has pending.
    async fn usage_rows(&self, wallet_id: &str, window: Window) -> Result<Vec<UsageRow>> {
        let wallet = self.wallets.get(wallet_id).await?;
        wallet.flush().await?;
        Ok(self.store.usage_rows(wallet_id, window.first).await?)
    }
}
