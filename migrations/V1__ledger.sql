-- tollgate ledger database, version 1 (G2): the append-only ledger (B9)
-- and the per-request records (U1). Amounts are integer nano-dollars
-- (1 USD = 1e9), the same i64 the gateway computes with; rows are only
-- ever inserted (idempotent by id), never updated or deleted.

CREATE TABLE ledger_entries (
    id          text        PRIMARY KEY,
    wallet_id   text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('deposit', 'settlement', 'transfer_in', 'transfer_out')),
    paid        bigint      NOT NULL,
    promo       bigint      NOT NULL,
    at          timestamptz NOT NULL,
    reference   text        NOT NULL,
    exported_at timestamptz NOT NULL DEFAULT now()
);
-- A wallet's movements in time order (the Owner's ledger view).
CREATE INDEX ledger_entries_wallet_at ON ledger_entries (wallet_id, at, id);

-- One row per billed request: the settlement entry it came from is its id.
CREATE TABLE request_records (
    entry_id      text        PRIMARY KEY REFERENCES ledger_entries (id),
    request_id    text        NOT NULL,
    wallet_id     text        NOT NULL,
    key_id        text        NOT NULL,
    member_id     text        NOT NULL,
    team_id       text,
    model         text        NOT NULL,
    input_tokens  bigint      NOT NULL,
    cached_tokens bigint      NOT NULL,
    output_tokens bigint      NOT NULL,
    cost          bigint      NOT NULL,
    status        text        NOT NULL,
    at            timestamptz NOT NULL
);
-- "The last 30 days by key / by member / by wallet".
CREATE INDEX request_records_key_at ON request_records (key_id, at);
CREATE INDEX request_records_member_at ON request_records (member_id, at);
CREATE INDEX request_records_wallet_at ON request_records (wallet_id, at);
