-- Orders, payments and the refund saga.

-- What customers paid for: a refund is checked against it (who owns the order, what was
-- paid, when, whether it is already refunded). Money in minor units (cents), never floats.
CREATE TABLE orders (
    order_id     text PRIMARY KEY,
    email        text NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    currency     text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    ordered_at   timestamptz NOT NULL,
    status       text NOT NULL CHECK (status IN ('paid', 'shipped', 'delivered', 'cancelled', 'refunded')),
    loaded_at    timestamptz NOT NULL DEFAULT now()
);

-- The default payments adapter: a ledger in PostgreSQL. One row per operation, keyed by the
-- caller's idempotency key, so a repeated call finds the row it wrote before.
CREATE TABLE ledger_entries (
    id              bigserial PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    kind            text NOT NULL CHECK (kind IN ('credit_note', 'refund', 'void')),
    order_id        text NOT NULL,
    amount_cents    bigint NOT NULL,
    currency        text NOT NULL,
    -- for a void: the credit note it cancels (at most one void per credit note)
    voids           bigint UNIQUE REFERENCES ledger_entries (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- What a thread's refund saga did, whichever adapter ran it: one row per step, keyed like the
-- call it records and written with its audit event, so each step is recorded (and audited)
-- once however often a crash makes it run again.
CREATE TABLE payment_operations (
    idempotency_key text PRIMARY KEY,
    thread_id       text NOT NULL,
    step            text NOT NULL CHECK (step IN ('credit_note', 'refund', 'void_credit_note')),
    order_id        text NOT NULL,
    amount_cents    bigint NOT NULL,
    currency        text NOT NULL,
    status          text NOT NULL CHECK (status IN ('done', 'failed')),
    reference       text NOT NULL DEFAULT '',
    error           text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_operations_order_idx ON payment_operations (order_id, step, status);
CREATE INDEX payment_operations_thread_idx ON payment_operations (thread_id);
