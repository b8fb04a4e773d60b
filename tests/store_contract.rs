//! The store contract: one suite, written once against `&dyn Store`, run
//! against the memory store and the Redis store (each Redis test on its own
//! `redis-server`, see `common/redis.rs`). What only Redis can show lives
//! in `store_redis.rs`; the fixtures both use in `common/store.rs`.

#![allow(
    clippy::unwrap_used,
    reason = "a test's unwrap is its failure report (clippy.toml allows it in #[test] fns only)"
)]

#[path = "common/store.rs"]
mod fixtures;
#[path = "common/store_range.rs"]
mod range;

use chrono::{NaiveDate, Utc};
use fixtures::*;
use range::*;
use serde_json::json;
use tollgate::money::Nanos;
use tollgate::store::*;

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

#[allow(clippy::too_many_lines)] // test code: one case, one story
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
        vec![dep.clone(), promo, s1.clone(), s2.clone()],
        "the ledger keeps apply order"
    );
    // Deposits and transfers are kept by id; settlements are not (G1:
    // nothing kept per request beyond the retention window).
    assert_eq!(s.ledger_entry(w, "dep_1").await.unwrap(), Some(dep.clone()));
    assert_eq!(s.ledger_entry(w, "stl_1").await.unwrap(), None);
    assert_eq!(s.ledger_entry(w, "dep_none").await.unwrap(), None);
    assert_eq!(s.ledger_entry("user:other", "dep_1").await.unwrap(), None);
    assert_eq!(s.ledger("user:other").await.unwrap(), vec![]);

    let totals = s.money_totals().await.unwrap();
    assert_eq!(
        totals,
        MoneyTotals {
            deposits: usd(11).into(),
            usage: Nanos(4_000_001).into(),
            balances: expected.total().into(),
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
    assert_eq!(s.money_totals().await.unwrap().deposits, usd(5).into());

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
    assert_eq!(t.deposits, Nanos(1_009_007_199_254_740_998).into());
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
    assert_eq!(t.deposits, (usd(6) + Nanos(6)).into());
    assert_eq!(t.usage, Nanos(60).into());
    assert_eq!(
        t.balances,
        (usd(6) + Nanos(6) - Nanos(60) - Nanos(3)).into()
    );
}

#[allow(clippy::too_many_lines)] // test code: one case, one story
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

async fn limits_records_round_trip_per_subject(s: &dyn Store) {
    let key = LimitSubject::Key("key_1".into());
    let member = LimitSubject::Member {
        team_id: "team_1".into(),
        user_id: "key_1".into(),
    };
    assert_eq!(s.limits(&key).await.unwrap(), None);
    let rec = LimitsRecord {
        spend_limit: Some(Nanos(1_500_000_000)),
        period: Some(Period::Week),
        rpm: Some(1_000_000_000),
        tpm: None,
    };
    s.put_limits(&key, &rec).await.unwrap();
    assert_eq!(s.limits(&key).await.unwrap(), Some(rec));
    assert_eq!(
        s.limits(&member).await.unwrap(),
        None,
        "a member's record is not a key's with the same id"
    );
    let member_rec = LimitsRecord {
        spend_limit: Some(Nanos(1)),
        period: Some(Period::Total),
        ..LimitsRecord::default()
    };
    s.put_limits(&member, &member_rec).await.unwrap();
    assert_eq!(s.limits(&member).await.unwrap(), Some(member_rec));
    assert_eq!(s.limits(&key).await.unwrap(), Some(rec));
    // Cleared whole: as if never set.
    s.put_limits(&key, &LimitsRecord::default()).await.unwrap();
    assert_eq!(s.limits(&key).await.unwrap(), None);
}

async fn ping_answers(s: &dyn Store) {
    s.ping().await.unwrap();
    assert!(!s.kind().is_empty());
}

/// G1: a writer's batches are remembered by a high-water mark: a retry, or
/// any lower sequence, is `Before`; another writer has its own mark.
async fn sequenced_batches_apply_once_per_writer(s: &dyn Store) {
    let w = "user:usr_ann";
    s.apply(&batch(
        "dep",
        w,
        vec![deposit("dep_1", w, usd(10), Nanos::ZERO)],
    ))
    .await
    .unwrap();
    let seq = |writer, n, id: &str| WalletBatch {
        seq: Some(BatchSeq { writer, seq: n }),
        ..batch(
            &format!("{w}:{writer}:{n}"),
            w,
            vec![settlement(
                id,
                w,
                "key_a",
                "usr_ann",
                Nanos(1_000),
                at(2, 9),
            )],
        )
    };
    assert_eq!(s.apply(&seq(7, 5, "stl_5")).await.unwrap().0, Applied::Now);
    assert_eq!(
        s.apply(&seq(7, 5, "stl_5")).await.unwrap().0,
        Applied::Before
    );
    assert_eq!(
        s.apply(&seq(7, 3, "stl_3")).await.unwrap().0,
        Applied::Before
    );
    assert_eq!(s.apply(&seq(7, 6, "stl_6")).await.unwrap().0, Applied::Now);
    assert_eq!(
        s.apply(&seq(8, 1, "stl_8_1")).await.unwrap().0,
        Applied::Now
    );
    assert_eq!(s.wallet(w).await.unwrap().paid, usd(10) - Nanos(3_000));
    let t = s.money_totals().await.unwrap();
    assert_eq!(t.usage, Nanos(3_000).into());
}

/// G1, B9: a deposit replayed after its batch id expired is still
/// recognised (deposits and transfers are kept by id), never applied twice.
async fn money_movements_are_recognised_after_batch_ids_expire(s: &dyn Store) {
    let w = "user:usr_ann";
    let dep = deposit("dep_1", w, usd(10), Nanos::ZERO);
    assert_eq!(
        s.apply(&batch("b1", w, vec![dep.clone()])).await.unwrap().0,
        Applied::Now
    );
    // Another batch id (as after its expiry), the same entry.
    assert_eq!(
        s.apply(&batch("b1-later", w, vec![dep])).await.unwrap().0,
        Applied::Before
    );
    assert_eq!(s.wallet(w).await.unwrap().paid, usd(10));
    assert_eq!(s.money_totals().await.unwrap().deposits, usd(10).into());
}

/// G3: entries older than the cutoff are dropped; balances, totals and
/// usage rows stay; the newer entries stay in order.
async fn prune_ledger_drops_old_entries_and_keeps_totals(s: &dyn Store) {
    let w = "user:usr_ann";
    let dep = deposit("dep_1", w, usd(10), Nanos::ZERO);
    let old = settlement("stl_old", w, "key_a", "usr_ann", Nanos(1_000), at(2, 9));
    let new = settlement("stl_new", w, "key_a", "usr_ann", Nanos(2_000), at(9, 9));
    s.apply(&batch("b1", w, vec![dep.clone()])).await.unwrap();
    s.apply(&batch("b2", w, vec![old])).await.unwrap();
    s.apply(&batch("b3", w, vec![new.clone()])).await.unwrap();
    let before = s.money_totals().await.unwrap();
    let rows = s.usage_rows(w, date(1)).await.unwrap();
    let dropped = s.prune_ledger(at(5, 0)).await.unwrap();
    // The deposit's `at` is fixed by the fixture; whatever it is, every
    // entry before the cutoff went and every one after stayed.
    let kept = s.ledger(w).await.unwrap();
    assert!(kept.iter().all(|e| e.at >= at(5, 0)), "{kept:?}");
    assert!(kept.contains(&new));
    assert_eq!(dropped as usize, 3 - kept.len());
    assert_eq!(s.money_totals().await.unwrap(), before);
    assert_eq!(s.usage_rows(w, date(1)).await.unwrap(), rows);
    assert_eq!(s.wallet(w).await.unwrap().paid, usd(10) - Nanos(3_000));
    // A deposit stays known by id after its entry left the list.
    assert_eq!(s.ledger_entry(w, "dep_1").await.unwrap(), Some(dep));
}

/// G2: with export on, every applied entry waits in the wallet's queue
/// (no kept list), is read oldest first, and goes once acknowledged; a
/// full queue refuses the batch whole (Unavailable), nothing changed.
async fn export_queue_carries_every_entry_and_bounds_the_backlog(s: &dyn Store) {
    let w = "user:usr_ann";
    let dep = deposit("dep_1", w, usd(10), Nanos::ZERO);
    let s1 = settlement("stl_1", w, "key_a", "usr_ann", Nanos(1_000), at(2, 9));
    let s2 = settlement("stl_2", w, "key_a", "usr_ann", Nanos(2_000), at(2, 10));
    s.apply(&batch("b1", w, vec![dep.clone()])).await.unwrap();
    s.apply(&batch("b2", w, vec![s1.clone(), s2.clone()]))
        .await
        .unwrap();
    assert_eq!(s.export_wallets().await.unwrap(), vec![w.to_string()]);
    assert_eq!(s.export_dirty(), vec![w.to_string()]);
    assert_eq!(s.export_backlog(w).await.unwrap(), 3);
    let waiting = s.export_read(w, 10).await.unwrap();
    let entries: Vec<_> = waiting.iter().map(|x| x.entry.clone()).collect();
    assert_eq!(entries, vec![dep.clone(), s1, s2]);
    // The backlog bound (3 in these tests): one more entry is refused whole.
    let over = batch(
        "b3",
        w,
        vec![settlement(
            "stl_3",
            w,
            "key_a",
            "usr_ann",
            Nanos(4_000),
            at(2, 11),
        )],
    );
    let before = s.money_totals().await.unwrap();
    assert!(matches!(
        s.apply(&over).await,
        Err(StoreError::Unavailable(_))
    ));
    assert_eq!(s.money_totals().await.unwrap(), before);
    assert_eq!(s.export_backlog(w).await.unwrap(), 3);
    // Acknowledge the first two: the third waits; then it too.
    let cursors: Vec<String> = waiting.iter().map(|x| x.cursor.clone()).collect();
    s.export_ack(w, &cursors[..2]).await.unwrap();
    let rest = s.export_read(w, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].cursor, cursors[2]);
    s.export_ack(w, &cursors[2..]).await.unwrap();
    assert_eq!(s.export_backlog(w).await.unwrap(), 0);
    assert!(s.export_wallets().await.unwrap().is_empty());
    // Room again: the refused batch applies now.
    assert_eq!(s.apply(&over).await.unwrap().0, Applied::Now);
    assert_eq!(s.wallet(w).await.unwrap().paid, usd(10) - Nanos(7_000));
    // Nothing is kept per request; the deposit is, by id.
    assert_eq!(s.ledger(w).await.unwrap(), vec![dep.clone()]);
    assert_eq!(s.ledger_entry(w, "dep_1").await.unwrap(), Some(dep));
}

/// The export-mode policy of `export_queue_carries_every_entry...`.
fn exporting() -> LedgerPolicy {
    LedgerPolicy {
        export: true,
        backlog_max: 3,
        ..LedgerPolicy::default()
    }
}

mod export_mode {
    #[tokio::test]
    async fn memory() {
        let s = tollgate::store::memory::MemoryStore::with_policy(super::exporting());
        super::export_queue_carries_every_entry_and_bounds_the_backlog(&s).await;
    }

    #[tokio::test]
    async fn redis() {
        let Some((_server, store)) = super::redis_store("export_mode::redis").await else {
            return;
        };
        let s = store.with_policy(super::exporting());
        super::export_queue_carries_every_entry_and_bounds_the_backlog(&s).await;
    }
}

/// G3: the memory store keeps at most `memory_entries` entries.
#[tokio::test]
async fn the_memory_store_keeps_a_bounded_ring_of_entries() {
    let s = tollgate::store::memory::MemoryStore::with_policy(LedgerPolicy {
        memory_entries: 5,
        ..LedgerPolicy::default()
    });
    let w = "user:usr_ann";
    s.apply(&batch(
        "dep",
        w,
        vec![deposit("dep_1", w, usd(10), Nanos::ZERO)],
    ))
    .await
    .unwrap();
    for i in 0..20 {
        let e = settlement(
            &format!("stl_{i}"),
            w,
            "key_a",
            "usr_ann",
            Nanos(1),
            at(2, 9),
        );
        s.apply(&batch(&format!("b{i}"), w, vec![e])).await.unwrap();
    }
    let kept: Vec<String> = s
        .ledger(w)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let newest: Vec<String> = (15..20).map(|i| format!("stl_{i}")).collect();
    assert_eq!(kept, newest, "the newest five, in order");
    assert_eq!(s.wallet(w).await.unwrap().paid, usd(10) - Nanos(20));
    assert_eq!(s.money_totals().await.unwrap().usage, Nanos(20).into());
}

/// G1: a batch id is forgotten after `batch_id_ttl`.
async fn batch_ids_expire(s: &dyn Store) {
    let w = "user:usr_ann";
    let b = |id: &str| {
        batch(
            "b1",
            w,
            vec![settlement(id, w, "key_a", "usr_ann", Nanos(1), at(2, 9))],
        )
    };
    assert_eq!(s.apply(&b("stl_1")).await.unwrap().0, Applied::Now);
    assert_eq!(s.apply(&b("stl_1")).await.unwrap().0, Applied::Before);
    // Wait for the condition (Redis expires keys by itself; the memory
    // store on its next look), bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (applied, _) = s.apply(&b("stl_2")).await.unwrap();
        if applied == Applied::Now {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "batch id never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(s.wallet(w).await.unwrap().paid, Nanos(-2));
}

mod batch_ttl {
    fn one_second() -> tollgate::store::LedgerPolicy {
        tollgate::store::LedgerPolicy {
            batch_id_ttl: std::time::Duration::from_secs(1),
            ..tollgate::store::LedgerPolicy::default()
        }
    }

    #[tokio::test]
    async fn memory() {
        let s = tollgate::store::memory::MemoryStore::with_policy(one_second());
        super::batch_ids_expire(&s).await;
    }

    #[tokio::test]
    async fn redis() {
        let Some((_server, store)) = super::redis_store("batch_ttl::redis").await else {
            return;
        };
        super::batch_ids_expire(&store.with_policy(one_second())).await;
    }
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
    apply_refuses_out_of_range_before_any_write,
    money_totals_pass_i64_exactly,
    usage_rows_are_ordered_and_pruned_by_day,
    teams_and_members_round_trip,
    invites_round_trip,
    outbox_keeps_order_and_updates_in_place,
    events_are_per_team_in_append_order,
    transfers_stay_until_finished,
    idempotency_records_round_trip,
    limits_records_round_trip_per_subject,
    ping_answers,
    sequenced_batches_apply_once_per_writer,
    money_movements_are_recognised_after_batch_ids_expire,
    prune_ledger_drops_old_entries_and_keeps_totals,
);
