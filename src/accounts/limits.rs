//! Who sets which limit (Q1, Q2) and what a limits object shows. A user
//! sets their own personal keys' limits; the Owner or an Admin a team
//! key's; the Owner any member's, an Admin only a Member's. Store first,
//! then the key cache hears of it (here and, by pub/sub, on every
//! instance, Q3), so the next request runs under the new limits. Inputs
//! arrive validated (`LimitsPatch`, built by the API); nothing here parses.

use chrono::{DateTime, Duration, Utc};

use super::teams::{Result, TeamError, Teams};
use crate::accounts::rules;
use crate::money::Nanos;
use crate::store::{
    KeyRecord, KeyScope, KeyStatus, LimitSubject, LimitsRecord, Period, Role, UsageRow,
};
use crate::wallet::{team_wallet_id, user_wallet_id};

/// A validated `PUT .../limits` body: `Some` for every field it names,
/// `Some(None)` for a field it clears.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitsPatch {
    pub spend_limit: Option<Option<Nanos>>,
    pub period: Option<Option<Period>>,
    pub rpm: Option<Option<u32>>,
    pub tpm: Option<Option<u32>>,
}

impl LimitsPatch {
    /// The record after this patch: named fields set, the others kept; a
    /// spend limit with no period gets `month` (API.md "Limits").
    pub fn apply(self, mut rec: LimitsRecord) -> LimitsRecord {
        if let Some(v) = self.spend_limit {
            rec.spend_limit = v;
        }
        if let Some(v) = self.period {
            rec.period = v;
        }
        if let Some(v) = self.rpm {
            rec.rpm = v;
        }
        if let Some(v) = self.tpm {
            rec.tpm = v;
        }
        if rec.spend_limit.is_some() && rec.period.is_none() {
            rec.period = Some(Period::Month);
        }
        rec
    }
}

/// A limits object (API.md): the record, and the spend of its period so
/// far. With no period stored, spend and reset are the calendar month's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitsView {
    pub rec: LimitsRecord,
    pub spent_in_period: Nanos,
    pub resets_at: Option<DateTime<Utc>>,
}

impl LimitsView {
    /// Whose rows count: `key_id` for a key, `member_id` for a member.
    pub fn of(
        rec: LimitsRecord,
        rows: &[UsageRow],
        counts: impl Fn(&UsageRow) -> bool,
        now: DateTime<Utc>,
    ) -> LimitsView {
        let period = rec.period.unwrap_or(Period::Month);
        let first = period.first_day(now.date_naive());
        let spent = rows
            .iter()
            .filter(|r| first.is_none_or(|f| r.date >= f) && counts(r))
            .fold(Nanos::ZERO, |acc, r| acc + r.usage.spend);
        LimitsView {
            rec,
            spent_in_period: spent,
            resets_at: period.resets_at(now),
        }
    }
}

impl Teams {
    async fn stored_limits(&self, subject: &LimitSubject) -> Result<LimitsRecord> {
        Ok(self.store.limits(subject).await?.unwrap_or_default())
    }

    /// The rows limits views count: the wallet's retained day buckets
    /// (`total` counts what they keep), flushed first (U1).
    pub async fn limit_rows(&self, wallet_id: &str) -> Result<Vec<UsageRow>> {
        let wallet = self.wallets.get(wallet_id).await?;
        wallet.flush().await?;
        let from = self.clock.now().date_naive() - Duration::days(crate::wallet::limits::LOAD_DAYS);
        Ok(self.store.usage_rows(wallet_id, from).await?)
    }

    /// A key's limits object, counted over `rows` of its wallet.
    pub async fn key_limits(&self, key: &KeyRecord, rows: &[UsageRow]) -> Result<LimitsView> {
        self.key_limits_by_id(&key.id, rows).await
    }

    /// The limits object of the key `key_id`, counted over `rows`.
    pub async fn key_limits_by_id(&self, key_id: &str, rows: &[UsageRow]) -> Result<LimitsView> {
        let rec = self
            .stored_limits(&LimitSubject::Key(key_id.to_string()))
            .await?;
        Ok(LimitsView::of(
            rec,
            rows,
            |r| r.key_id == key_id,
            self.clock.now(),
        ))
    }

    /// A member's limits object, counted over `rows` of the team wallet.
    pub async fn member_limits(
        &self,
        team_id: &str,
        user_id: &str,
        rows: &[UsageRow],
    ) -> Result<LimitsView> {
        let rec = self.stored_limits(&member(team_id, user_id)).await?;
        Ok(LimitsView::of(
            rec,
            rows,
            |r| r.member_id == user_id,
            self.clock.now(),
        ))
    }

    /// Q1, Q2: the limits of one of `user_id`'s personal keys.
    pub async fn set_personal_key_limits(
        &self,
        user_id: &str,
        key_id: &str,
        patch: LimitsPatch,
    ) -> Result<LimitsView> {
        let _g = self.changes.lock().await;
        let key = self
            .store
            .key(key_id)
            .await?
            .filter(|k| {
                k.scope == KeyScope::Personal
                    && k.member_id == user_id
                    && k.status != KeyStatus::Deleted
            })
            .ok_or(TeamError::NotFound)?;
        self.put_key_limits(&key, patch).await
    }

    /// Q1, Q2: a team key's limits (Owner, Admin; a Member gets 404 on a
    /// key not assigned to them, 403 on one that is).
    pub async fn set_team_key_limits(
        &self,
        team_id: &str,
        actor: &str,
        key_id: &str,
        patch: LimitsPatch,
    ) -> Result<LimitsView> {
        let _g = self.changes.lock().await;
        let key = self
            .managed_team_key(team_id, actor, key_id, "members cannot set key limits")
            .await?;
        self.put_key_limits(&key, patch).await
    }

    async fn put_key_limits(&self, key: &KeyRecord, patch: LimitsPatch) -> Result<LimitsView> {
        let subject = LimitSubject::Key(key.id.clone());
        let rec = patch.apply(self.stored_limits(&subject).await?);
        self.store.put_limits(&subject, &rec).await?;
        // Q3: the next request, on every instance, reads the new limits.
        self.keys.changed(&*self.store, &key.hash).await;
        let rows = self.limit_rows(&key.wallet_id).await?;
        self.key_limits(key, &rows).await
    }

    /// Q1: a member's spend limit, covering every team key assigned to
    /// them: the Owner sets anyone's, an Admin only a Member's.
    pub async fn set_member_limits(
        &self,
        team_id: &str,
        actor: &str,
        target: &str,
        patch: LimitsPatch,
    ) -> Result<LimitsView> {
        let _g = self.changes.lock().await;
        let (_, role) = self.role_of(team_id, actor).await?;
        let target_role = self.active_member(team_id, target).await?.role;
        if !rules::can_set_member_limits(role, target_role) {
            return Err(TeamError::Forbidden(match role {
                Role::Member => "members cannot set limits",
                _ => "admins set limits on members only",
            }));
        }
        let subject = member(team_id, target);
        let rec = patch.apply(self.stored_limits(&subject).await?);
        self.store.put_limits(&subject, &rec).await?;
        // Q3: every key assigned to the member is read again.
        for key in self.store.team_keys(team_id).await? {
            if key.member_id == target {
                self.keys.changed(&*self.store, &key.hash).await;
            }
        }
        let rows = self.limit_rows(&team_wallet_id(team_id)).await?;
        self.member_limits(team_id, target, &rows).await
    }

    /// `GET /api/me`: the caller's own member limits in `team_id`.
    pub async fn own_member_limits(&self, team_id: &str, user_id: &str) -> Result<LimitsView> {
        let rows = self.limit_rows(&team_wallet_id(team_id)).await?;
        self.member_limits(team_id, user_id, &rows).await
    }

    /// Personal keys' limits objects, by key, for `GET /api/keys`.
    pub async fn personal_key_limits(
        &self,
        user_id: &str,
        keys: &[KeyRecord],
    ) -> Result<Vec<LimitsView>> {
        let rows = self.limit_rows(&user_wallet_id(user_id)).await?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.key_limits(k, &rows).await?);
        }
        Ok(out)
    }

    /// Team keys' limits objects, in the order of `keys`.
    pub async fn team_key_limits(
        &self,
        team_id: &str,
        keys: &[KeyRecord],
    ) -> Result<Vec<LimitsView>> {
        let rows = self.limit_rows(&team_wallet_id(team_id)).await?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.key_limits(k, &rows).await?);
        }
        Ok(out)
    }
}

fn member(team_id: &str, user_id: &str) -> LimitSubject {
    LimitSubject::Member {
        team_id: team_id.to_string(),
        user_id: user_id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_sets_what_it_names() {
        let set = LimitsPatch {
            spend_limit: Some(Some(Nanos(5))),
            rpm: Some(Some(10)),
            ..LimitsPatch::default()
        };
        let rec = set.apply(LimitsRecord::default());
        assert_eq!(rec.period, Some(Period::Month));
        assert_eq!(rec.rpm, Some(10));
        let week = LimitsPatch {
            period: Some(Some(Period::Week)),
            ..LimitsPatch::default()
        }
        .apply(rec);
        assert_eq!(
            (week.spend_limit, week.period),
            (Some(Nanos(5)), Some(Period::Week))
        );
        let cleared = LimitsPatch {
            spend_limit: Some(None),
            ..LimitsPatch::default()
        }
        .apply(week);
        assert_eq!(cleared.spend_limit, None);
        assert_eq!(cleared.rpm, Some(10));
    }
}
