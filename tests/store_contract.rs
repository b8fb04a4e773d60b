//! The store contract: one suite, written once against `&dyn Store`, run
//! against the memory store and the Redis store (each Redis test on its own
//! `redis-server`, see `common/redis.rs`). Below it, what only Redis can
//! show: data surviving kill -9, failing fast while Redis is down and
//! recovering with the same store value, two instances losing no update,
//! and pub/sub between instances.

#![allow(
    clippy::unwrap_used,
    reason = "a test's unwrap is its failure report (clippy.toml allows it in #[test] fns only)"
)]

#[path = "common/redis.rs"]
mod redis_harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use redis_harness::RedisServer;
use serde_json::json;
use tollgate::money::Nanos;
use tollgate::pricing::Usage;
use tollgate::store::memory::MemoryStore;
use tollgate::store::redis_store::RedisStore;
use tollgate::store::*;

// --- Fixtures ------------------------------------------------------------------------

/// A fixed instant with sub-microsecond digits, so round trips must be exact.
fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap()
        + chrono::Duration::nanoseconds(123_456_789)
}

fn date(day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, day).unwrap()
}

fn usd(d: i64) -> Nanos {
    Nanos(d * 1_000_000_000)
}

fn user(id: &str, email: &str) -> UserRecord {
    UserRecord {
        id: id.into(),
        email: email.into(),
        email_norm: email.to_lowercase(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: at(1, 9),
    }
}

fn key(id: &str, user: &str, team: Option<&str>, created: DateTime<Utc>) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        hash: format!("hash-of-{id}"),
        prefix: "tg_abc".into(),
        name: format!("key {id}"),
        scope: if team.is_some() {
            KeyScope::Team
        } else {
            KeyScope::Personal
        },
        created_by: user.into(),
        team_id: team.map(str::to_string),
        member_id: user.into(),
        wallet_id: match team {
            Some(t) => format!("team:{t}"),
            None => format!("user:{user}"),
        },
        status: KeyStatus::Active,
        created_at: created,
        last_used_at: None,
    }
}

fn deposit(id: &str, wallet: &str, paid: Nanos, promo: Nanos) -> LedgerEntry {
    LedgerEntry {
        id: id.into(),
        wallet_id: wallet.into(),
        kind: EntryKind::Deposit,
        paid,
        promo,
        at: at(1, 10),
        reference: format!("ref-{id}"),
        usage: None,
    }
}

fn settlement(
    id: &str,
    wallet: &str,
    key_id: &str,
    member: &str,
    cost: Nanos,
    when: DateTime<Utc>,
) -> LedgerEntry {
    LedgerEntry {
        id: id.into(),
        wallet_id: wallet.into(),
        kind: EntryKind::Settlement,
        paid: Nanos::ZERO - cost,
        promo: Nanos::ZERO,
        at: when,
        reference: format!("req-{id}"),
        usage: Some(UsageFacts {
            key_id: key_id.into(),
            member_id: member.into(),
            team_id: None,
            model: "gpt-4o-mini".into(),
            usage: Usage {
                input_tokens: 100,
                cached_tokens: 20,
                output_tokens: 50,
            },
        }),
    }
}

fn batch(id: &str, wallet: &str, entries: Vec<LedgerEntry>) -> WalletBatch {
    WalletBatch {
        batch_id: id.into(),
        wallet_id: wallet.into(),
        entries,
    }
}

fn team(id: &str, owner: &str, created: DateTime<Utc>) -> TeamRecord {
    TeamRecord {
        id: id.into(),
        name: format!("team {id}"),
        owner_id: owner.into(),
        created_at: created,
        deleted_at: None,
    }
}

fn member(team: &str, user: &str, role: Role, joined: DateTime<Utc>) -> MemberRecord {
    MemberRecord {
        team_id: team.into(),
        user_id: user.into(),
        role,
        joined_at: joined,
        left_at: None,
    }
}

fn invite(id: &str, team: &str, created: DateTime<Utc>) -> InviteRecord {
    InviteRecord {
        id: id.into(),
        team_id: team.into(),
        email: format!("{id}@Example.com"),
        email_norm: format!("{id}@example.com"),
        role: Role::Member,
        token_hash: format!("token-of-{id}"),
        invited_by: "usr_owner".into(),
        created_at: created,
        expires_at: created + chrono::Duration::days(7),
        status: InviteStatus::Pending,
    }
}

// --- The contract --------------------------------------------------------------------

async fn users_are_unique_by_email_case_insensitively(s: &dyn Store) {
    let ann = user("usr_ann", "Ann@Example.com");
    s.create_user(&ann).await.unwrap();
    assert_eq!(s.user(&ann.id).await.unwrap(), Some(ann.clone()));
    assert_eq!(
        s.user_by_email("ann@example.com").await.unwrap(),
        Some(ann.clone())
    );
    let twin = user("usr_twin", "ANN@example.COM");
    assert_eq!(
        s.create_user(&twin).await,
        Err(StoreError::Conflict("email"))
    );
    assert_eq!(
        s.user(&twin.id).await.unwrap(),
        None,
        "a refused user is not stored"
    );
    assert_eq!(s.user_by_email("ann@example.com").await.unwrap(), Some(ann));
    assert_eq!(s.user_by_email("bob@example.com").await.unwrap(), None);
    assert_eq!(s.user("usr_nobody").await.unwrap(), None);
}

async fn sessions_round_trip(s: &dyn Store) {
    let expires = Utc::now() + chrono::Duration::hours(1);
    let sess = SessionRecord {
        token_hash: "sess-hash".into(),
        user_id: "usr_ann".into(),
        expires_at: expires,
    };
    s.put_session(&sess).await.unwrap();
    assert_eq!(s.session("sess-hash").await.unwrap(), Some(sess.clone()));
    let longer = SessionRecord {
        expires_at: expires + chrono::Duration::hours(1),
        ..sess
    };
    s.put_session(&longer).await.unwrap();
    assert_eq!(s.session("sess-hash").await.unwrap(), Some(longer));
    assert_eq!(s.session("other").await.unwrap(), None);
}

async fn keys_are_indexed_by_hash_user_and_team(s: &dyn Store) {
    let k2 = key("key_2", "usr_ann", None, at(2, 9));
    let k1 = key("key_1", "usr_ann", None, at(1, 9));
    let team_key = key("key_t", "usr_ann", Some("tm_1"), at(1, 8));
    let bobs = key("key_b", "usr_bob", None, at(1, 9));
    for k in [&k2, &k1, &team_key, &bobs] {
        s.put_key(k).await.unwrap();
    }
    assert_eq!(s.key_by_hash(&k1.hash).await.unwrap(), Some(k1.clone()));
    assert_eq!(s.key("key_2").await.unwrap(), Some(k2.clone()));
    assert_eq!(s.key_by_hash("hash-of-nothing").await.unwrap(), None);
    assert_eq!(s.key("key_nothing").await.unwrap(), None);
    assert_eq!(
        s.keys_of_user("usr_ann").await.unwrap(),
        vec![k1.clone(), k2.clone()],
        "personal keys only, oldest first"
    );
    assert_eq!(s.team_keys("tm_1").await.unwrap(), vec![team_key.clone()]);
    assert_eq!(s.team_keys("tm_none").await.unwrap(), vec![]);

    // A second key with a hash already taken is refused and not stored.
    let clash = KeyRecord {
        id: "key_clash".into(),
        ..k1.clone()
    };
    assert_eq!(
        s.put_key(&clash).await,
        Err(StoreError::Conflict("key hash"))
    );
    assert_eq!(s.key("key_clash").await.unwrap(), None);
    assert_eq!(s.key_by_hash(&k1.hash).await.unwrap(), Some(k1.clone()));

    // The same key written again is an update.
    let renamed = KeyRecord {
        name: "renamed".into(),
        ..k1.clone()
    };
    s.put_key(&renamed).await.unwrap();
    assert_eq!(s.key("key_1").await.unwrap(), Some(renamed.clone()));

    s.set_key_status("key_1", KeyStatus::Archived)
        .await
        .unwrap();
    let got = s.key_by_hash(&k1.hash).await.unwrap().unwrap();
    assert_eq!(got.status, KeyStatus::Archived);
    assert_eq!(got.name, "renamed");
    s.set_key_status("key_1", KeyStatus::Deleted).await.unwrap();
    assert_eq!(
        s.keys_of_user("usr_ann").await.unwrap()[0].status,
        KeyStatus::Deleted
    );
    assert_eq!(
        s.set_key_status("key_nothing", KeyStatus::Archived).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(s.key("key_nothing").await.unwrap(), None);
}

async fn apply_adds_deltas_once_and_records_everything(s: &dyn Store) {
    let w = "user:usr_ann";
    let k = key("key_a", "usr_ann", None, at(1, 8));
    s.put_key(&k).await.unwrap();
    assert_eq!(s.wallet(w).await.unwrap(), WalletBalance::default());

    let dep = deposit("dep_1", w, usd(10), Nanos::ZERO);
    let promo = deposit("dep_2", w, Nanos::ZERO, usd(1));
    let (applied, bal) = s.apply(&batch("b1", w, vec![dep.clone()])).await.unwrap();
    assert_eq!(applied, Applied::Now);
    assert_eq!(
        bal,
        WalletBalance {
            paid: usd(10),
            promo: Nanos::ZERO
        }
    );
    let (_, bal) = s.apply(&batch("b2", w, vec![promo.clone()])).await.unwrap();
    assert_eq!(
        bal,
        WalletBalance {
            paid: usd(10),
            promo: usd(1)
        }
    );

    let s1 = settlement("stl_1", w, "key_a", "usr_ann", Nanos(1_500_000), at(2, 11));
    let s2 = settlement("stl_2", w, "key_a", "usr_ann", Nanos(2_500_001), at(2, 10));
    let settle = batch("b3", w, vec![s1.clone(), s2.clone()]);
    let (applied, after) = s.apply(&settle).await.unwrap();
    assert_eq!(applied, Applied::Now);
    let expected = WalletBalance {
        paid: usd(10) - Nanos(4_000_001),
        promo: usd(1),
    };
    assert_eq!(after, expected);
    assert_eq!(s.wallet(w).await.unwrap(), expected);

    // The same batch id again: nothing changes, the stored balance comes back.
    let (applied, again) = s.apply(&settle).await.unwrap();
    assert_eq!(applied, Applied::Before);
    assert_eq!(again, expected);
    assert_eq!(s.wallet(w).await.unwrap(), expected);

    assert_eq!(
        s.ledger(w).await.unwrap(),
        vec![dep, promo, s1.clone(), s2.clone()],
        "the ledger keeps apply order"
    );
    assert_eq!(s.ledger_entry(w, "stl_1").await.unwrap(), Some(s1.clone()));
    assert_eq!(s.ledger_entry(w, "stl_2").await.unwrap(), Some(s2));
    assert_eq!(s.ledger_entry(w, "stl_none").await.unwrap(), None);
    assert_eq!(s.ledger_entry("user:other", "stl_1").await.unwrap(), None);
    assert_eq!(s.ledger("user:other").await.unwrap(), vec![]);

    let totals = s.money_totals().await.unwrap();
    assert_eq!(
        totals,
        MoneyTotals {
            deposits: usd(11),
            usage: Nanos(4_000_001),
            balances: expected.total(),
        }
    );
    assert_eq!(totals.balances, totals.deposits - totals.usage);

    assert_eq!(
        s.key("key_a").await.unwrap().unwrap().last_used_at,
        Some(at(2, 11)),
        "the latest settlement, to the nanosecond"
    );
    let rows = s.usage_rows(w, date(1)).await.unwrap();
    assert_eq!(
        rows,
        vec![UsageRow {
            wallet_id: w.into(),
            key_id: "key_a".into(),
            member_id: "usr_ann".into(),
            date: date(2),
            usage: DayUsage {
                calls: 2,
                input_tokens: 200,
                cached_tokens: 40,
                output_tokens: 100,
                spend: Nanos(4_000_001),
            },
        }]
    );
}

async fn apply_keeps_the_later_last_used_across_batches(s: &dyn Store) {
    let w = "user:usr_ann";
    s.put_key(&key("key_a", "usr_ann", None, at(1, 8)))
        .await
        .unwrap();
    let late = settlement("stl_late", w, "key_a", "usr_ann", Nanos(1), at(5, 12));
    let early = settlement("stl_early", w, "key_a", "usr_ann", Nanos(1), at(5, 11));
    s.apply(&batch("b1", w, vec![late])).await.unwrap();
    s.apply(&batch("b2", w, vec![early])).await.unwrap();
    assert_eq!(
        s.key("key_a").await.unwrap().unwrap().last_used_at,
        Some(at(5, 12))
    );
    // A key's status change keeps its last use.
    s.set_key_status("key_a", KeyStatus::Archived)
        .await
        .unwrap();
    assert_eq!(
        s.keys_of_user("usr_ann").await.unwrap()[0].last_used_at,
        Some(at(5, 12))
    );
}

async fn apply_refuses_bad_batches_whole(s: &dyn Store) {
    let w = "user:usr_ann";
    s.apply(&batch(
        "b1",
        w,
        vec![deposit("dep_1", w, usd(5), Nanos::ZERO)],
    ))
    .await
    .unwrap();
    let before = s.wallet(w).await.unwrap();

    // An entry for another wallet: nothing of the batch lands.
    let mixed = batch(
        "b2",
        w,
        vec![
            deposit("dep_2", w, usd(1), Nanos::ZERO),
            deposit("dep_3", "user:usr_bob", usd(1), Nanos::ZERO),
        ],
    );
    assert!(matches!(s.apply(&mixed).await, Err(StoreError::Corrupt(_))));
    // An entry applied before, under a new batch id: refused too.
    let replay = batch(
        "b3",
        w,
        vec![
            deposit("dep_4", w, usd(1), Nanos::ZERO),
            deposit("dep_1", w, usd(5), Nanos::ZERO),
        ],
    );
    assert!(matches!(
        s.apply(&replay).await,
        Err(StoreError::Corrupt(_))
    ));

    assert_eq!(s.wallet(w).await.unwrap(), before);
    assert_eq!(
        s.wallet("user:usr_bob").await.unwrap(),
        WalletBalance::default()
    );
    assert_eq!(s.ledger(w).await.unwrap().len(), 1);
    assert_eq!(s.ledger_entry(w, "dep_4").await.unwrap(), None);
    assert_eq!(s.money_totals().await.unwrap().deposits, usd(5));

    // Refused batches were not recorded: fixed, the same id applies.
    let fixed = batch("b2", w, vec![deposit("dep_2", w, usd(1), Nanos::ZERO)]);
    assert_eq!(s.apply(&fixed).await.unwrap().0, Applied::Now);
    assert_eq!(s.wallet(w).await.unwrap().paid, usd(6));
}

async fn apply_is_exact_for_large_amounts(s: &dyn Store) {
    // Past 2^53: a double would round these.
    let w = "team:tm_big";
    let big = Nanos(1_000_000_000_000_000_001);
    s.apply(&batch(
        "b1",
        w,
        vec![deposit("dep_1", w, big, Nanos(9_007_199_254_740_993))],
    ))
    .await
    .unwrap();
    let (_, bal) = s
        .apply(&batch(
            "b2",
            w,
            vec![deposit("dep_2", w, Nanos(2), Nanos(2))],
        ))
        .await
        .unwrap();
    assert_eq!(bal.paid, Nanos(1_000_000_000_000_000_003));
    assert_eq!(bal.promo, Nanos(9_007_199_254_740_995));
    let t = s.money_totals().await.unwrap();
    assert_eq!(t.deposits, Nanos(1_009_007_199_254_740_998));
    assert_eq!(t.balances, t.deposits);
}

async fn money_totals_sum_every_wallet(s: &dyn Store) {
    assert_eq!(s.money_totals().await.unwrap(), MoneyTotals::default());
    for (i, w) in ["user:usr_a", "user:usr_b", "team:tm_c"].iter().enumerate() {
        let i = i as i64 + 1;
        s.apply(&batch(
            &format!("b{i}"),
            w,
            vec![
                deposit(&format!("dep_{i}"), w, usd(i), Nanos(i)),
                settlement(
                    &format!("stl_{i}"),
                    w,
                    "key_x",
                    "usr_x",
                    Nanos(10 * i),
                    at(3, 9),
                ),
                LedgerEntry {
                    kind: EntryKind::TransferOut,
                    ..deposit(&format!("out_{i}"), w, Nanos(-1), Nanos::ZERO)
                },
            ],
        ))
        .await
        .unwrap();
    }
    let t = s.money_totals().await.unwrap();
    assert_eq!(t.deposits, usd(6) + Nanos(6));
    assert_eq!(t.usage, Nanos(60));
    assert_eq!(t.balances, usd(6) + Nanos(6) - Nanos(60) - Nanos(3));
}

async fn usage_rows_are_ordered_and_pruned_by_day(s: &dyn Store) {
    let w = "team:tm_1";
    let other = "team:tm_2";
    s.apply(&batch(
        "b1",
        w,
        vec![
            settlement("s1", w, "key_b", "usr_2", Nanos(1), at(3, 9)),
            settlement("s2", w, "key_a", "usr_2", Nanos(2), at(3, 9)),
            settlement("s3", w, "key_a", "usr_1", Nanos(3), at(3, 9)),
            settlement("s4", w, "key_a", "usr_1", Nanos(4), at(1, 9)),
        ],
    ))
    .await
    .unwrap();
    s.apply(&batch(
        "b2",
        w,
        vec![
            settlement("s5", w, "key_a", "usr_1", Nanos(5), at(2, 9)),
            settlement("s6", w, "key_a", "usr_1", Nanos(6), at(3, 23)),
        ],
    ))
    .await
    .unwrap();
    s.apply(&batch(
        "b3",
        other,
        vec![settlement(
            "s7",
            other,
            "key_z",
            "usr_9",
            Nanos(7),
            at(1, 9),
        )],
    ))
    .await
    .unwrap();

    let seen = |rows: Vec<UsageRow>| -> Vec<(NaiveDate, String, String, u64, Nanos)> {
        rows.into_iter()
            .map(|r| {
                assert_eq!(r.wallet_id, w);
                (r.date, r.key_id, r.member_id, r.usage.calls, r.usage.spend)
            })
            .collect()
    };
    let row = |d, k: &str, m: &str, calls, spend| {
        (date(d), k.to_string(), m.to_string(), calls, Nanos(spend))
    };
    assert_eq!(
        seen(s.usage_rows(w, date(1)).await.unwrap()),
        vec![
            row(1, "key_a", "usr_1", 1, 4),
            row(2, "key_a", "usr_1", 1, 5),
            row(3, "key_a", "usr_1", 2, 9),
            row(3, "key_a", "usr_2", 1, 2),
            row(3, "key_b", "usr_2", 1, 1),
        ]
    );
    assert_eq!(
        seen(s.usage_rows(w, date(2)).await.unwrap()),
        vec![
            row(2, "key_a", "usr_1", 1, 5),
            row(3, "key_a", "usr_1", 2, 9),
            row(3, "key_a", "usr_2", 1, 2),
            row(3, "key_b", "usr_2", 1, 1),
        ],
        "from is inclusive"
    );
    assert_eq!(s.usage_rows(w, date(4)).await.unwrap(), vec![]);
    assert_eq!(s.usage_rows("team:tm_none", date(1)).await.unwrap(), vec![]);

    s.prune_usage(date(3)).await.unwrap();
    assert_eq!(
        seen(s.usage_rows(w, date(1)).await.unwrap()),
        vec![
            row(3, "key_a", "usr_1", 2, 9),
            row(3, "key_a", "usr_2", 1, 2),
            row(3, "key_b", "usr_2", 1, 1),
        ],
        "before is exclusive"
    );
    assert_eq!(s.usage_rows(other, date(1)).await.unwrap(), vec![]);
    // Pruning touches usage only: the ledger stays whole.
    assert_eq!(s.ledger(w).await.unwrap().len(), 6);
}

async fn teams_and_members_round_trip(s: &dyn Store) {
    let old = TeamRecord {
        deleted_at: Some(at(2, 9)),
        ..team("tm_old", "usr_ann", at(1, 9))
    };
    let live = team("tm_live", "usr_ann", at(3, 9));
    s.put_team(&old).await.unwrap();
    s.put_team(&live).await.unwrap();
    assert_eq!(s.team("tm_old").await.unwrap(), Some(old));
    assert_eq!(s.team("tm_none").await.unwrap(), None);
    assert_eq!(s.owned_team("usr_ann").await.unwrap(), Some(live.clone()));
    assert_eq!(s.owned_team("usr_bob").await.unwrap(), None);
    let deleted = TeamRecord {
        deleted_at: Some(at(4, 9)),
        ..live.clone()
    };
    s.put_team(&deleted).await.unwrap();
    assert_eq!(s.owned_team("usr_ann").await.unwrap(), None);
    assert_eq!(s.team("tm_live").await.unwrap(), Some(deleted));

    let owner = member("tm_live", "usr_ann", Role::Owner, at(3, 9));
    let bob = member("tm_live", "usr_bob", Role::Member, at(3, 10));
    let cat = member("tm_live", "usr_cat", Role::Admin, at(3, 10));
    let bob_elsewhere = member("tm_other", "usr_bob", Role::Admin, at(2, 9));
    for m in [&cat, &bob, &owner, &bob_elsewhere] {
        s.put_member(m).await.unwrap();
    }
    assert_eq!(
        s.member("tm_live", "usr_bob").await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(s.member("tm_live", "usr_dan").await.unwrap(), None);
    assert_eq!(
        s.members("tm_live").await.unwrap(),
        vec![owner.clone(), bob.clone(), cat.clone()],
        "by join time, then user id"
    );
    assert_eq!(
        s.memberships("usr_bob").await.unwrap(),
        vec![bob_elsewhere.clone(), bob.clone()],
        "by join time"
    );

    let bob_left = MemberRecord {
        left_at: Some(at(4, 9)),
        ..bob
    };
    s.put_member(&bob_left).await.unwrap();
    assert_eq!(
        s.members("tm_live").await.unwrap(),
        vec![owner, bob_left.clone(), cat],
        "departed members stay listed"
    );
    assert_eq!(
        s.memberships("usr_bob").await.unwrap(),
        vec![bob_elsewhere],
        "active memberships only"
    );
    assert_eq!(
        s.member("tm_live", "usr_bob").await.unwrap(),
        Some(bob_left)
    );
    assert_eq!(s.memberships("usr_dan").await.unwrap(), vec![]);
    assert_eq!(s.members("tm_none").await.unwrap(), vec![]);
}

async fn invites_round_trip(s: &dyn Store) {
    let second = invite("inv_2", "tm_1", at(2, 9));
    let first = invite("inv_1", "tm_1", at(1, 9));
    let elsewhere = invite("inv_3", "tm_2", at(1, 9));
    for i in [&second, &first, &elsewhere] {
        s.put_invite(i).await.unwrap();
    }
    assert_eq!(s.invite("inv_1").await.unwrap(), Some(first.clone()));
    assert_eq!(s.invite("inv_none").await.unwrap(), None);
    assert_eq!(
        s.invite_by_token("token-of-inv_2").await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(s.invite_by_token("token-of-nothing").await.unwrap(), None);
    assert_eq!(
        s.invites("tm_1").await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    let replaced = InviteRecord {
        status: InviteStatus::Replaced,
        ..first
    };
    s.put_invite(&replaced).await.unwrap();
    assert_eq!(
        s.invite_by_token("token-of-inv_1").await.unwrap(),
        Some(replaced.clone())
    );
    assert_eq!(s.invites("tm_1").await.unwrap(), vec![replaced, second]);
    assert_eq!(s.invites("tm_none").await.unwrap(), vec![]);
}

async fn outbox_keeps_order_and_updates_in_place(s: &dyn Store) {
    let msg = |id: &str, day| OutboxMessage {
        id: id.into(),
        to: format!("{id}@example.com"),
        subject: "You are invited".into(),
        body: "Join us".into(),
        link: format!("https://gw.example/invites/accept?token={id}"),
        created_at: at(day, 9),
        delivered_at: None,
    };
    assert_eq!(s.outbox().await.unwrap(), vec![]);
    let (m2, m1) = (msg("msg_2", 1), msg("msg_1", 2));
    s.put_outbox(&m2).await.unwrap();
    s.put_outbox(&m1).await.unwrap();
    let delivered = OutboxMessage {
        delivered_at: Some(at(3, 9)),
        ..m2
    };
    s.put_outbox(&delivered).await.unwrap();
    assert_eq!(
        s.outbox().await.unwrap(),
        vec![delivered, m1],
        "insertion order; an update keeps its place"
    );
}

async fn events_are_per_team_in_append_order(s: &dyn Store) {
    let ev = |id: &str, team: &str, kind: &str| EventRecord {
        id: id.into(),
        team_id: team.into(),
        kind: kind.into(),
        at: at(1, 9),
        data: json!({ "user_id": "usr_bob", "amount": "1.50" }),
    };
    let (e1, e2, e3) = (
        ev("ev_1", "tm_1", "member.joined"),
        ev("ev_2", "tm_2", "key.created"),
        ev("ev_3", "tm_1", "team.suspended"),
    );
    for e in [&e1, &e2, &e3] {
        s.append_event(e).await.unwrap();
    }
    assert_eq!(s.events("tm_1").await.unwrap(), vec![e1, e3]);
    assert_eq!(s.events("tm_2").await.unwrap(), vec![e2]);
    assert_eq!(s.events("tm_none").await.unwrap(), vec![]);
}

async fn transfers_stay_until_finished(s: &dyn Store) {
    let t2 = TransferRecord {
        id: "tr_2".into(),
        from_wallet: "team:tm_1".into(),
        to_wallet: "user:usr_ann".into(),
        op: TransferOp::DeleteTeam {
            team_id: "tm_1".into(),
            owner_id: "usr_ann".into(),
        },
        created_at: at(2, 9),
    };
    let t1 = TransferRecord {
        id: "tr_1".into(),
        from_wallet: "user:usr_bob".into(),
        to_wallet: "team:tm_1".into(),
        op: TransferOp::Join {
            team_id: "tm_1".into(),
            user_id: "usr_bob".into(),
            role: Role::Member,
            invite_id: "inv_1".into(),
        },
        created_at: at(1, 9),
    };
    assert_eq!(s.unfinished_transfers().await.unwrap(), vec![]);
    s.put_transfer(&t2).await.unwrap();
    s.put_transfer(&t1).await.unwrap();
    assert_eq!(
        s.unfinished_transfers().await.unwrap(),
        vec![t1.clone(), t2.clone()],
        "oldest first"
    );
    s.finish_transfer("tr_1").await.unwrap();
    s.finish_transfer("tr_none").await.unwrap();
    assert_eq!(s.unfinished_transfers().await.unwrap(), vec![t2]);
}

async fn idempotency_records_round_trip(s: &dyn Store) {
    assert_eq!(s.idempotency("deposit:abc").await.unwrap(), None);
    let rec = IdempotencyRecord {
        request_hash: "req-hash".into(),
        status: 201,
        response: r#"{"balance":"12.50"}"#.into(),
    };
    s.put_idempotency("deposit:abc", &rec).await.unwrap();
    assert_eq!(
        s.idempotency("deposit:abc").await.unwrap(),
        Some(rec.clone())
    );
    let newer = IdempotencyRecord { status: 200, ..rec };
    s.put_idempotency("deposit:abc", &newer).await.unwrap();
    assert_eq!(s.idempotency("deposit:abc").await.unwrap(), Some(newer));
    assert_eq!(s.idempotency("deposit:other").await.unwrap(), None);
}

async fn ping_answers(s: &dyn Store) {
    s.ping().await.unwrap();
    assert!(!s.kind().is_empty());
}

/// Each contract fn, as one test per store: a fresh memory store, or a
/// fresh redis-server (skipped loudly where there is none).
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&tollgate::store::memory::MemoryStore::new()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some((_server, store)) = super::redis_store(stringify!($name)).await else {
                        return;
                    };
                    super::$name(&store).await;
                }
            )*
        }
    };
}

contract!(
    users_are_unique_by_email_case_insensitively,
    sessions_round_trip,
    keys_are_indexed_by_hash_user_and_team,
    apply_adds_deltas_once_and_records_everything,
    apply_keeps_the_later_last_used_across_batches,
    apply_refuses_bad_batches_whole,
    apply_is_exact_for_large_amounts,
    money_totals_sum_every_wallet,
    usage_rows_are_ordered_and_pruned_by_day,
    teams_and_members_round_trip,
    invites_round_trip,
    outbox_keeps_order_and_updates_in_place,
    events_are_per_team_in_append_order,
    transfers_stay_until_finished,
    idempotency_records_round_trip,
    ping_answers,
);

const PREFIX: &str = "tg-test:";

async fn redis_store(test: &str) -> Option<(RedisServer, RedisStore)> {
    let server = RedisServer::start(test)?;
    let store = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    Some((server, store))
}

// --- Redis only ------------------------------------------------------------------------

/// Poll until `f` holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within {within:?}: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_and_restart() {
    let Some((mut server, store)) = redis_store("acknowledged_writes_survive_kill_9").await else {
        return;
    };
    let w = "user:usr_ann";
    store
        .create_user(&user("usr_ann", "ann@example.com"))
        .await
        .unwrap();
    store
        .put_key(&key("key_a", "usr_ann", None, at(1, 8)))
        .await
        .unwrap();
    store
        .apply(&batch(
            "b1",
            w,
            vec![deposit("dep_1", w, usd(10), Nanos::ZERO)],
        ))
        .await
        .unwrap();
    let settle = batch(
        "b2",
        w,
        vec![settlement(
            "stl_1",
            w,
            "key_a",
            "usr_ann",
            Nanos(1_234),
            at(2, 9),
        )],
    );
    let (_, acknowledged) = store.apply(&settle).await.unwrap();

    server.kill();
    server.restart();

    // A new process (a new store value) finds everything...
    let fresh = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    // ...and so does the old one, once it has reconnected.
    eventually(Duration::from_secs(10), "old store reconnects", || async {
        store.ping().await.is_ok()
    })
    .await;
    for s in [&fresh as &dyn Store, &store] {
        assert_eq!(s.wallet(w).await.unwrap(), acknowledged);
        assert_eq!(s.ledger(w).await.unwrap().len(), 2);
        assert!(s.user_by_email("ann@example.com").await.unwrap().is_some());
        assert_eq!(
            s.key_by_hash("hash-of-key_a")
                .await
                .unwrap()
                .unwrap()
                .last_used_at,
            Some(at(2, 9))
        );
        assert_eq!(s.usage_rows(w, date(1)).await.unwrap().len(), 1);
        // The batch ids survived too: a resent batch is still applied once.
        assert_eq!(
            s.apply(&settle).await.unwrap(),
            (Applied::Before, acknowledged)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_fast_while_down_and_recovers_with_the_same_store() {
    let Some((mut server, store)) = redis_store("fails_fast_while_down").await else {
        return;
    };
    let w = "user:usr_ann";
    store
        .apply(&batch(
            "b1",
            w,
            vec![deposit("dep_1", w, usd(10), Nanos::ZERO)],
        ))
        .await
        .unwrap();

    server.kill();
    let started = Instant::now();
    let unavailable = |r: StoreError| matches!(r, StoreError::Unavailable(_));
    assert!(unavailable(store.ping().await.unwrap_err()));
    assert!(unavailable(store.wallet(w).await.unwrap_err()));
    let pending = batch("b2", w, vec![deposit("dep_2", w, usd(5), Nanos::ZERO)]);
    assert!(unavailable(store.apply(&pending).await.unwrap_err()));
    assert!(unavailable(store.user("usr_ann").await.unwrap_err()));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "four calls against a dead Redis took {:?}",
        started.elapsed()
    );

    server.restart();
    eventually(
        Duration::from_secs(10),
        "the same store reconnects",
        || async { store.ping().await.is_ok() },
    )
    .await;
    // The batch refused while down never landed: it applies now, once.
    let (applied, bal) = store.apply(&pending).await.unwrap();
    assert_eq!((applied, bal.paid), (Applied::Now, usd(15)));
    assert_eq!(store.apply(&pending).await.unwrap().0, Applied::Before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_times_out_instead_of_hanging() {
    let Some((server, store)) = redis_store("a_hung_redis_times_out").await else {
        return;
    };
    let w = "user:usr_ann";
    server.pause();
    let started = Instant::now();
    let r = store
        .apply(&batch(
            "b1",
            w,
            vec![deposit("dep_1", w, usd(1), Nanos::ZERO)],
        ))
        .await;
    let took = started.elapsed();
    server.resume();
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The write may have been queued and applied after all: a resend with
    // the same batch id lands exactly once either way.
    eventually(
        Duration::from_secs(10),
        "the store answers again",
        || async { store.ping().await.is_ok() },
    )
    .await;
    store
        .apply(&batch(
            "b1",
            w,
            vec![deposit("dep_1", w, usd(1), Nanos::ZERO)],
        ))
        .await
        .unwrap();
    assert_eq!(store.wallet(w).await.unwrap().paid, usd(1));
    assert_eq!(store.ledger(w).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_lose_no_update() {
    let Some((server, a)) = redis_store("two_instances_lose_no_update").await else {
        return;
    };
    let b = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    let stores: [Arc<dyn Store>; 2] = [Arc::new(a), Arc::new(b)];
    let w = "team:tm_shared";
    let mut tasks = Vec::new();
    for (n, store) in stores.iter().enumerate() {
        for i in 0..200i64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("{n}-{i}");
                let e = if i % 2 == 0 {
                    deposit(&format!("dep_{id}"), w, Nanos(1_000 + i), Nanos(i))
                } else {
                    settlement(
                        &format!("stl_{id}"),
                        w,
                        "key_a",
                        "usr_1",
                        Nanos(i),
                        at(3, 9),
                    )
                };
                store.apply(&batch(&format!("b_{id}"), w, vec![e])).await
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().0, Applied::Now);
    }
    let evens: i64 = (0..200).filter(|i| i % 2 == 0).sum();
    let odds: i64 = (0..200).filter(|i| i % 2 == 1).sum();
    let paid = 2 * (100 * 1_000 + evens) - 2 * odds;
    let promo = 2 * evens;
    for s in &stores {
        assert_eq!(
            s.wallet(w).await.unwrap(),
            WalletBalance {
                paid: Nanos(paid),
                promo: Nanos(promo)
            }
        );
        assert_eq!(s.ledger(w).await.unwrap().len(), 400);
        let t = s.money_totals().await.unwrap();
        assert_eq!(t.usage, Nanos(2 * odds));
        assert_eq!(t.balances, t.deposits - t.usage);
        let rows = s.usage_rows(w, date(1)).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].usage.calls, 200);
        assert_eq!(rows[0].usage.spend, Nanos(2 * odds));
    }
}

/// Publish on `from` until `rx` hears `want`: the subscription is set up
/// in the background, so the first messages may go unheard.
async fn hear(
    from: &RedisStore,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Change>,
    want: Change,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        from.publish(&want).await.ok();
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            if got == want {
                return;
            }
        }
    }
    panic!("{want:?} not received within 15 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_published_by_one_instance_reach_another() {
    let Some((mut server, a)) = redis_store("changes_reach_another_instance").await else {
        return;
    };
    let b = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    assert!(MemoryStore::new().subscribe().is_none());
    let mut rx = b.subscribe().expect("redis store subscribes");

    hear(&a, &mut rx, Change::Key("key_1".into())).await;
    hear(&a, &mut rx, Change::Wallet("team:tm_1".into())).await;

    // Redis restarts: the subscriber reconnects by itself.
    server.kill();
    server.restart();
    hear(&a, &mut rx, Change::Key("key_2".into())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallets_keys_share_one_hash_slot_and_the_prefix() {
    let Some((server, store)) = redis_store("wallet_keys_share_a_slot").await else {
        return;
    };
    let w = "team:tm_slot";
    store
        .put_key(&key("key_s", "usr_1", Some("tm_slot"), at(1, 8)))
        .await
        .unwrap();
    store
        .apply(&batch(
            "b1",
            w,
            vec![
                deposit("dep_1", w, usd(1), Nanos::ZERO),
                settlement("stl_1", w, "key_s", "usr_1", Nanos(5), at(2, 9)),
            ],
        ))
        .await
        .unwrap();
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let all: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(all.iter().all(|k| k.starts_with(PREFIX)), "{all:?}");
    let wallet_keys: Vec<&String> = all
        .iter()
        .filter(|k| k.contains("{team:tm_slot}"))
        .collect();
    assert!(wallet_keys.len() >= 7, "{wallet_keys:?}");
    for k in &wallet_keys {
        // The hash tag is the first {...}: the wallet id, for every one.
        let tag = k.split('{').nth(1).and_then(|r| r.split('}').next());
        assert_eq!(tag, Some(w), "{k}");
    }
    // Money is stored as integers, never as floats.
    let paid: String = ::redis::cmd("HGET")
        .arg(format!("{PREFIX}{{{w}}}:bal"))
        .arg("paid")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(paid, (usd(1) - Nanos(5)).0.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_would_overflow_is_refused_before_any_write() {
    let Some((_server, store)) = redis_store("overflow_refused").await else {
        return;
    };
    let w = "user:usr_rich";
    store
        .apply(&batch(
            "b1",
            w,
            vec![deposit(
                "dep_1",
                w,
                Nanos(8_900_000_000_000_000_000),
                Nanos::ZERO,
            )],
        ))
        .await
        .unwrap();
    let r = store
        .apply(&batch(
            "b2",
            w,
            vec![
                settlement("stl_1", w, "key_a", "usr_rich", Nanos(1), at(2, 9)),
                // 9.3e18 > i64::MAX: HINCRBY would fail after earlier writes.
                deposit("dep_2", w, Nanos(400_000_000_000_000_000), Nanos::ZERO),
            ],
        ))
        .await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
    assert_eq!(
        store.wallet(w).await.unwrap().paid,
        Nanos(8_900_000_000_000_000_000)
    );
    assert_eq!(store.ledger(w).await.unwrap().len(), 1);
    assert_eq!(store.usage_rows(w, date(1)).await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_in_redis_and_prefixes_keep_stores_apart() {
    let Some((server, store)) = redis_store("sessions_expire_and_prefixes").await else {
        return;
    };
    let soon = SessionRecord {
        token_hash: "short".into(),
        user_id: "usr_ann".into(),
        expires_at: Utc::now() + chrono::Duration::milliseconds(300),
    };
    store.put_session(&soon).await.unwrap();
    assert_eq!(store.session("short").await.unwrap(), Some(soon));
    eventually(Duration::from_secs(5), "the session expires", || async {
        store.session("short").await.unwrap().is_none()
    })
    .await;
    let past = SessionRecord {
        token_hash: "past".into(),
        user_id: "usr_ann".into(),
        expires_at: Utc::now() - chrono::Duration::hours(1),
    };
    store.put_session(&past).await.unwrap();
    assert_eq!(store.session("past").await.unwrap(), None);

    let other = RedisStore::connect(&server.url(), "other:").await.unwrap();
    let w = "user:usr_ann";
    store
        .apply(&batch(
            "b1",
            w,
            vec![deposit("dep_1", w, usd(1), Nanos::ZERO)],
        ))
        .await
        .unwrap();
    assert_eq!(other.wallet(w).await.unwrap(), WalletBalance::default());
    assert_eq!(other.money_totals().await.unwrap(), MoneyTotals::default());
}

#[tokio::test]
async fn connect_to_nothing_is_unavailable_not_a_hang() {
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let r = RedisStore::connect(&format!("redis://127.0.0.1:{port}/"), PREFIX).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))));
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = RedisStore::connect("not a url", PREFIX).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))));
}
