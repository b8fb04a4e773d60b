//! Team keys (K3, K5): created by the Owner or an Admin and assigned to a
//! member, drawing on the team's wallet. Minting goes through the one path
//! in `auth::keys`; the role checks are here (`accounts::rules`).

use serde_json::json;

use super::teams::{Result, TeamError, Teams};
use crate::accounts::rules;
use crate::accounts::users::valid_key_name;
use crate::auth::{keys, KeyOwner, NewKey};
use crate::store::{KeyRecord, KeyStatus};

impl Teams {
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
        if !self.is_member(team_id, member_id).await? {
            return Err(TeamError::InvalidMember);
        }
        let (record, minted) = keys::create(
            &*self.store,
            &self.keys,
            KeyOwner::team(team_id, actor, member_id),
            name,
            self.clock.now(),
        )
        .await?;
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
        let key = self
            .managed_team_key(team_id, actor, key_id, "members cannot delete team keys")
            .await?;
        self.set_key_status(&key, KeyStatus::Deleted).await?;
        self.event(
            team_id,
            "key.deleted",
            json!({"key_id": key_id, "by": actor}),
        )
        .await;
        Ok(())
    }

    /// A live key of this team that `actor` may manage (Owner, Admin). A
    /// Member gets 404 for a key not assigned to them (A3) and 403 with
    /// `refusal` for one that is; a non-member 404.
    pub(super) async fn managed_team_key(
        &self,
        team_id: &str,
        actor: &str,
        key_id: &str,
        refusal: &'static str,
    ) -> Result<KeyRecord> {
        let (_, role) = self.role_of(team_id, actor).await?;
        let key = self
            .store
            .key(key_id)
            .await?
            .filter(|k| k.team_id.as_deref() == Some(team_id) && k.status != KeyStatus::Deleted)
            .filter(|k| rules::can_manage_keys(role) || k.member_id == actor)
            .ok_or(TeamError::NotFound)?;
        if !rules::can_manage_keys(role) {
            return Err(TeamError::Forbidden(refusal));
        }
        Ok(key)
    }
}
