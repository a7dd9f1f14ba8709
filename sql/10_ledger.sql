-- The reference ledger: invoices and bank transactions, tenant-scoped with
-- tenancy.enable(). Column names follow the conventions of the README's
-- "Reconciliation" section, so tenancy.reconcile runs on them directly.
-- Amounts are exact numerics with at most 4 decimals.
CREATE SCHEMA IF NOT EXISTS ledger;

-- Every key leads with tenant_id, so that Citus can shard the ledger by
-- tenant (README: Scale out on Citus); 15_matches.sql moves older ledgers.
CREATE TABLE IF NOT EXISTS ledger.invoices (
    id           uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    uuid        NOT NULL,
    amount       numeric     NOT NULL,
    currency     text        NOT NULL,
    issue_date   date        NOT NULL DEFAULT current_date,
    due_date     date,
    reference    text        NOT NULL,
    counterparty text        NOT NULL DEFAULT '',
    open_amount  numeric     NOT NULL,
    status       text        NOT NULL DEFAULT 'open',
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invoices_amount_positive CHECK (amount > 0),
    CONSTRAINT invoices_amount_scale CHECK (scale(amount) <= 4),
    CONSTRAINT invoices_currency_code CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT invoices_due_after_issue CHECK (due_date >= issue_date),
    CONSTRAINT invoices_reference_length CHECK (length(reference) BETWEEN 1 AND 100),
    CONSTRAINT invoices_open_amount_range CHECK (open_amount >= 0 AND open_amount <= amount),
    CONSTRAINT invoices_status CHECK (status IN ('open', 'partially_paid', 'paid')),
    CONSTRAINT invoices_reference_unique UNIQUE (tenant_id, reference),
    CONSTRAINT invoices_pkey PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS invoices_tenant_created ON ledger.invoices (tenant_id, created_at DESC, id);
COMMENT ON TABLE ledger.invoices IS 'Invoices issued by the tenant; reference is the invoice number, unique per tenant.';

CREATE TABLE IF NOT EXISTS ledger.bank_transactions (
    id           uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    uuid        NOT NULL,
    amount       numeric     NOT NULL,
    currency     text        NOT NULL,
    booked_on    date        NOT NULL,
    description  text        NOT NULL DEFAULT '',
    counterparty text        NOT NULL DEFAULT '',
    status       text        NOT NULL DEFAULT 'unmatched',
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- What is not yet allocated to invoices; payments out (negative) never are.
    unmatched_amount numeric NOT NULL,
    CONSTRAINT bank_transactions_amount_nonzero CHECK (amount <> 0),
    CONSTRAINT bank_transactions_unmatched_range CHECK (unmatched_amount >= 0 AND unmatched_amount <= greatest(amount, 0)),
    CONSTRAINT bank_transactions_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT bank_transactions_amount_scale CHECK (scale(amount) <= 4),
    CONSTRAINT bank_transactions_currency_code CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT bank_transactions_description_length CHECK (length(description) <= 1000),
    CONSTRAINT bank_transactions_status CHECK (status IN ('unmatched', 'partially_matched', 'matched'))
);
CREATE INDEX IF NOT EXISTS bank_transactions_tenant_created ON ledger.bank_transactions (tenant_id, created_at DESC, id);

-- tenancy.reconcile reads only what is still open (open_amount, or
-- unmatched_amount, not 0; NULL is read, and refused), by date when it works
-- in windows: these partial indexes, with the very predicate of that read,
-- serve it, so its cost follows the open items, not the years of settled
-- history beside them.
CREATE INDEX IF NOT EXISTS invoices_open ON ledger.invoices (tenant_id, issue_date)
    WHERE (open_amount <> 0 OR open_amount IS NULL);
CREATE INDEX IF NOT EXISTS bank_transactions_unmatched ON ledger.bank_transactions (tenant_id, booked_on)
    WHERE (unmatched_amount <> 0 OR unmatched_amount IS NULL);
COMMENT ON TABLE ledger.bank_transactions IS 'Bank statement lines of the tenant: positive amounts are money received.';

-- Derived columns belong to the ledger, not to the client: a new invoice is
-- fully open, and changing its amount moves its open amount by the same delta.
-- Only the ledger's own triggers (matches, below: trigger depth > 1) move
-- open amounts otherwise; the CHECK on open_amount then forbids allocating
-- more than an invoice's amount, under any concurrency (row locks).
CREATE OR REPLACE FUNCTION ledger.invoices_derived()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.open_amount := NEW.amount;
        NEW.created_at := now();
    ELSE
        IF pg_trigger_depth() = 1 THEN
            NEW.open_amount := OLD.open_amount + (NEW.amount - OLD.amount);
        END IF;
        NEW.created_at := OLD.created_at;
    END IF;
    NEW.status := CASE WHEN NEW.open_amount = NEW.amount THEN 'open'
                       WHEN NEW.open_amount = 0 THEN 'paid' ELSE 'partially_paid' END;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS invoices_derived ON ledger.invoices;
CREATE TRIGGER invoices_derived BEFORE INSERT OR UPDATE ON ledger.invoices
    FOR EACH ROW EXECUTE FUNCTION ledger.invoices_derived();

CREATE OR REPLACE FUNCTION ledger.bank_transactions_derived()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.unmatched_amount := greatest(NEW.amount, 0);
        NEW.created_at := now();
    ELSE
        IF pg_trigger_depth() = 1 THEN
            NEW.unmatched_amount := OLD.unmatched_amount + (greatest(NEW.amount, 0) - greatest(OLD.amount, 0));
        END IF;
        NEW.created_at := OLD.created_at;
    END IF;
    NEW.status := CASE WHEN NEW.amount < 0 OR NEW.unmatched_amount = NEW.amount THEN 'unmatched'
                       WHEN NEW.unmatched_amount = 0 THEN 'matched' ELSE 'partially_matched' END;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS bank_transactions_derived ON ledger.bank_transactions;
CREATE TRIGGER bank_transactions_derived BEFORE INSERT OR UPDATE ON ledger.bank_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger.bank_transactions_derived();

-- Bulk import, as the caller (row level security and RBAC apply). The API
-- wraps it in an idempotency key (sql/20_api.sql).
CREATE OR REPLACE FUNCTION ledger.import_bank_transactions(transactions jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    imported jsonb;
BEGIN
    IF jsonb_typeof(transactions) IS DISTINCT FROM 'array' OR jsonb_array_length(transactions) NOT BETWEEN 1 AND 10000 THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'the body must be a JSON array of 1 to 10000 transactions');
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(transactions) x
               WHERE jsonb_typeof(x) <> 'object' OR NOT x ?& ARRAY['amount', 'currency', 'booked_on']) THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'every transaction needs amount, currency and booked_on');
    END IF;
    WITH rows AS (
        INSERT INTO ledger.bank_transactions (amount, currency, booked_on, description, counterparty)
        SELECT (x->>'amount')::numeric, x->>'currency', (x->>'booked_on')::date,
               coalesce(x->>'description', ''), coalesce(x->>'counterparty', '')
        FROM jsonb_array_elements(transactions) WITH ORDINALITY AS e(x, n)
        ORDER BY n
        RETURNING id
    )
    SELECT jsonb_build_object('imported', count(*), 'ids', jsonb_agg(id)) INTO imported FROM rows;
    RETURN imported;
END
$$;
REVOKE ALL ON FUNCTION ledger.import_bank_transactions(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger.import_bank_transactions(jsonb) TO authenticated;

SELECT tenancy.enable('ledger.invoices');
SELECT tenancy.enable('ledger.bank_transactions');
-- RBAC on top of isolation: GET needs <resource>.read, POST .create,
-- PATCH .update, DELETE .delete.
SELECT tenancy.protect('ledger.invoices', 'invoices');
SELECT tenancy.protect('ledger.bank_transactions', 'bank_transactions');
-- Every change to the ledger is recorded in tenancy.audit_log.
SELECT tenancy.enable_audit('ledger.invoices');
SELECT tenancy.enable_audit('ledger.bank_transactions');

ALTER SCHEMA ledger OWNER TO ledger_owner;
ALTER TABLE ledger.invoices OWNER TO ledger_owner;
ALTER TABLE ledger.bank_transactions OWNER TO ledger_owner;

GRANT USAGE ON SCHEMA ledger TO authenticated, analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON ledger.invoices, ledger.bank_transactions TO authenticated;
GRANT SELECT ON ledger.invoices, ledger.bank_transactions TO analyst;
