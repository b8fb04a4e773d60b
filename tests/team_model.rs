//! A property test against a reference model: random sequences of create,
//! invite + join, leave, remove, role change, delete, deposits, team keys
//! and proxied requests. After every step every key's status is the
//! model's and every request's outcome (200, 401, 402) is the model's; at
//! the end every balance equals the model's and conservation (B8) is exact.

#![allow(
    clippy::too_many_lines,
    reason = "test code: the model's interpreter reads best as one match"
)]
// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::Value;

const USERS: usize = 4;
/// gpt-4o-mini, 1000 output tokens.
const COST: i64 = 600_000;
const THRESHOLD: i64 = 50_000_000;

#[derive(Clone, Debug)]
enum Op {
    Create(usize),
    Join {
        owner: usize,
        user: usize,
        admin: bool,
    },
    Leave {
        owner: usize,
        user: usize,
    },
    Remove {
        owner: usize,
        user: usize,
    },
    Promote {
        owner: usize,
        user: usize,
    },
    Delete(usize),
    Deposit {
        user: usize,
        cents: i64,
        promo: bool,
    },
    TeamDeposit {
        owner: usize,
        cents: i64,
    },
    TeamKey {
        owner: usize,
        by: usize,
        assign: usize,
    },
    Request(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let u = || 0..USERS;
    prop_oneof![
        u().prop_map(Op::Create),
        (u(), u(), any::<bool>()).prop_map(|(owner, user, admin)| Op::Join { owner, user, admin }),
        (u(), u()).prop_map(|(owner, user)| Op::Leave { owner, user }),
        (u(), u()).prop_map(|(owner, user)| Op::Remove { owner, user }),
        (u(), u()).prop_map(|(owner, user)| Op::Promote { owner, user }),
        u().prop_map(Op::Delete),
        (u(), 1i64..300, any::<bool>()).prop_map(|(user, cents, promo)| Op::Deposit {
            user,
            cents,
            promo
        }),
        (u(), 1i64..300).prop_map(|(owner, cents)| Op::TeamDeposit { owner, cents }),
        (u(), u(), u()).prop_map(|(owner, by, assign)| Op::TeamKey { owner, by, assign }),
        (0usize..12).prop_map(Op::Request),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Owner,
    Admin,
    Member,
}

#[derive(Default, Debug)]
struct MTeam {
    id: String,
    balance: i64,
    members: BTreeMap<usize, Role>,
}

#[derive(Debug)]
struct MKey {
    id: String,
    secret: String,
    /// None: personal key of `creator`.
    team_owner: Option<usize>,
    team_id: Option<String>,
    creator: usize,
    /// The member a team key is assigned to (the creator for personal keys).
    assignee: usize,
    deleted: bool,
}

#[derive(Default, Debug)]
struct Model {
    paid: [i64; USERS],
    promo: [i64; USERS],
    /// By owner index: the team they own now.
    teams: BTreeMap<usize, MTeam>,
    keys: Vec<MKey>,
    deposits: i64,
    usage: i64,
}

impl Model {
    fn in_a_team(&self, u: usize) -> bool {
        self.teams.values().any(|t| t.members.contains_key(&u))
    }

    fn key_status(&self, k: &MKey) -> &'static str {
        match (&k.team_id, k.deleted) {
            (_, true) => "deleted",
            (None, false) if self.in_a_team(k.creator) => "archived",
            _ => "active",
        }
    }

    fn leave(&mut self, owner: usize, user: usize) {
        let team_id = self.teams[&owner].id.clone();
        self.teams.get_mut(&owner).unwrap().members.remove(&user);
        for k in &mut self.keys {
            // L3 as amended: the keys the leaver created or is assigned.
            let theirs = k.creator == user || k.assignee == user;
            if k.team_id.as_deref() == Some(team_id.as_str()) && theirs {
                k.deleted = true;
            }
        }
    }
}

async fn run(ops: Vec<Op>) {
    let g = spawn_gateway().await;
    let mut users = Vec::new();
    let mut m = Model::default();
    for i in 0..USERS {
        let (u, secret) = g.funded(&format!("u{i}@example.com"), "0").await;
        let id = g.store.keys_of_user(&u.id).await.unwrap()[0].id.clone();
        m.keys.push(MKey {
            id,
            secret,
            team_owner: None,
            team_id: None,
            creator: i,
            assignee: i,
            deleted: false,
        });
        users.push(u);
    }
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Create(o) => {
                let r = g
                    .post(
                        "/api/teams",
                        Some(&users[o].token),
                        &serde_json::json!({"name": "t"}),
                    )
                    .await;
                if m.teams.contains_key(&o) {
                    assert_eq!(r.status(), StatusCode::CONFLICT);
                } else {
                    assert_eq!(r.status(), StatusCode::CREATED);
                    let id = r.json::<Value>().await.unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    let moved = m.paid[o].max(0);
                    m.paid[o] -= moved;
                    m.teams.insert(
                        o,
                        MTeam {
                            id,
                            balance: moved,
                            members: BTreeMap::from([(o, Role::Owner)]),
                        },
                    );
                }
            }
            Op::Join { owner, user, admin } => {
                let Some(t) = m.teams.get(&owner) else {
                    continue;
                };
                if t.members.contains_key(&user) {
                    continue;
                }
                let role = if admin { "admin" } else { "member" };
                let team = t.id.clone();
                g.join(&team, &users[owner], &users[user], role).await;
                let moved = m.paid[user].max(0);
                m.paid[user] -= moved;
                let t = m.teams.get_mut(&owner).unwrap();
                t.balance += moved;
                t.members
                    .insert(user, if admin { Role::Admin } else { Role::Member });
            }
            Op::Leave { owner, user } | Op::Remove { owner, user } => {
                let Some(t) = m.teams.get(&owner) else {
                    continue;
                };
                let Some(role) = t.members.get(&user).copied() else {
                    continue;
                };
                let by = if matches!(op, Op::Leave { .. }) {
                    user
                } else {
                    owner
                };
                let r = g
                    .delete(
                        &format!("/api/teams/{}/members/{}", t.id, users[user].id),
                        Some(&users[by].token),
                    )
                    .await;
                if role == Role::Owner {
                    assert_eq!(r.status(), StatusCode::CONFLICT);
                } else {
                    assert_eq!(r.status(), StatusCode::NO_CONTENT);
                    m.leave(owner, user);
                }
            }
            Op::Promote { owner, user } => {
                let Some(t) = m.teams.get(&owner) else {
                    continue;
                };
                let Some(role) = t.members.get(&user).copied() else {
                    continue;
                };
                let body = serde_json::json!({"role": "admin"});
                let r = g
                    .patch(
                        &format!("/api/teams/{}/members/{}", t.id, users[user].id),
                        Some(&users[owner].token),
                        &body,
                    )
                    .await;
                if role == Role::Owner {
                    assert_eq!(r.status(), StatusCode::FORBIDDEN);
                } else {
                    assert_eq!(r.status(), StatusCode::OK);
                    m.teams
                        .get_mut(&owner)
                        .unwrap()
                        .members
                        .insert(user, Role::Admin);
                }
            }
            Op::Delete(o) => {
                let Some(t) = m.teams.get(&o) else { continue };
                let r = g
                    .delete(&format!("/api/teams/{}", t.id), Some(&users[o].token))
                    .await;
                assert_eq!(r.status(), StatusCode::OK);
                let refunded = nanos(
                    r.json::<Value>().await.unwrap()["refunded"]
                        .as_str()
                        .unwrap(),
                );
                let t = m.teams.remove(&o).unwrap();
                assert_eq!(refunded, t.balance, "step {step}: payout = final balance");
                m.paid[o] += t.balance;
                for k in &mut m.keys {
                    if k.team_id.as_deref() == Some(t.id.as_str()) {
                        k.deleted = true;
                    }
                }
            }
            Op::Deposit { user, cents, promo } => {
                let amount = format!("{}.{:02}", cents / 100, cents % 100);
                g.deposit(
                    &users[user],
                    &amount,
                    if promo { "promo" } else { "stripe" },
                )
                .await;
                let n = cents * 10_000_000;
                if promo {
                    m.promo[user] += n
                } else {
                    m.paid[user] += n
                }
                m.deposits += n;
            }
            Op::TeamDeposit { owner, cents } => {
                let Some(t) = m.teams.get_mut(&owner) else {
                    continue;
                };
                let amount = format!("{}.{:02}", cents / 100, cents % 100);
                assert_eq!(
                    g.team_deposit(&t.id, &amount).await.status(),
                    StatusCode::CREATED
                );
                t.balance += cents * 10_000_000;
                m.deposits += cents * 10_000_000;
            }
            Op::TeamKey { owner, by, assign } => {
                let Some(t) = m.teams.get(&owner) else {
                    continue;
                };
                let (Some(by_role), true) =
                    (t.members.get(&by).copied(), t.members.contains_key(&assign))
                else {
                    continue;
                };
                let body = serde_json::json!({"name": "k", "member_id": users[assign].id});
                let r = g
                    .post(
                        &format!("/api/teams/{}/keys", t.id),
                        Some(&users[by].token),
                        &body,
                    )
                    .await;
                if by_role == Role::Member {
                    assert_eq!(r.status(), StatusCode::FORBIDDEN);
                } else {
                    assert_eq!(r.status(), StatusCode::CREATED);
                    let v: Value = r.json().await.unwrap();
                    let (id, secret) = (
                        v["id"].as_str().unwrap().to_string(),
                        v["key"].as_str().unwrap().to_string(),
                    );
                    m.keys.push(MKey {
                        id,
                        secret,
                        team_owner: Some(owner),
                        team_id: Some(t.id.clone()),
                        creator: by,
                        assignee: assign,
                        deleted: false,
                    });
                }
            }
            Op::Request(i) => {
                let Some(k) = m.keys.get(i) else { continue };
                let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1000});
                let knobs = [
                    ("x-mock-prompt-tokens", "0"),
                    ("x-mock-completion-tokens", "1000"),
                ];
                let status = g.chat(&k.secret, &body, &knobs).await.status();
                let expected = match m.key_status(k) {
                    "deleted" | "archived" => StatusCode::UNAUTHORIZED,
                    _ => {
                        let balance = match k.team_owner {
                            Some(o) => m.teams[&o].balance,
                            None => m.paid[k.creator] + m.promo[k.creator],
                        };
                        if balance > THRESHOLD {
                            StatusCode::OK
                        } else {
                            StatusCode::PAYMENT_REQUIRED
                        }
                    }
                };
                assert_eq!(status, expected, "step {step}: request with key {i}");
                if status == StatusCode::OK {
                    m.usage += COST;
                    match k.team_owner {
                        Some(o) => m.teams.get_mut(&o).unwrap().balance -= COST,
                        None => {
                            let u = k.creator;
                            let from_promo = COST.min(m.promo[u].max(0));
                            m.promo[u] -= from_promo;
                            m.paid[u] -= COST - from_promo;
                        }
                    }
                }
            }
        }
        // Every key's status is the model's.
        for k in &m.keys {
            let stored = g.store.key(&k.id).await.unwrap().unwrap();
            assert_eq!(
                serde_json::to_value(stored.status).unwrap(),
                m.key_status(k),
                "step {step}: key {}",
                k.id
            );
        }
    }
    // Balances and conservation (B8), exactly.
    for (i, u) in users.iter().enumerate() {
        let (paid, promo) = g.balance(u).await;
        assert_eq!(
            (nanos(&paid), nanos(&promo)),
            (m.paid[i], m.promo[i]),
            "user {i}"
        );
    }
    for (o, t) in &m.teams {
        assert_eq!(nanos(&g.team_balance(&t.id, &users[*o]).await), t.balance);
    }
    let rec = g.reconcile().await;
    assert_eq!(rec["ok"], true);
    assert_eq!(nanos(rec["deposits_total"].as_str().unwrap()), m.deposits);
    assert_eq!(nanos(rec["usage_total"].as_str().unwrap()), m.usage);
    assert_eq!(rec["holds_total"], "0.00");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn random_team_lifecycles_match_the_model(ops in prop::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
