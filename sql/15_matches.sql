-- Reconciliation results: which payment settles which invoice, and why.
--
-- A live match (status applied or confirmed) moves the invoice's open_amount
-- and the transaction's unmatched_amount by its allocated_amount; undoing or
-- deleting it moves them back. Those columns carry CHECKs (10_ledger.sql), and
-- the row locks of the two UPDATEs serialise concurrent writers, so the sum
-- allocated to an invoice or a transaction can never exceed its amount, even
-- when two runs race: the loser gets ALLOCATION_EXCEEDED (409) and nothing of
-- it stays.
CREATE TABLE IF NOT EXISTS ledger.matches (
    id               uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id        uuid        NOT NULL,
    invoice_id       uuid        NOT NULL,
    transaction_id   uuid        NOT NULL,
    allocated_amount numeric     NOT NULL,
    score            numeric     NOT NULL DEFAULT 1,
    grade            text        NOT NULL DEFAULT 'manual',
    group_id         uuid        NOT NULL DEFAULT gen_random_uuid(),
    reasons          jsonb       NOT NULL DEFAULT '[]',
    status           text        NOT NULL DEFAULT 'confirmed',
    created_by       uuid,
    decided_by       uuid,
    decided_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT matches_allocated_positive CHECK (allocated_amount > 0),
    CONSTRAINT matches_score_range CHECK (score BETWEEN 0 AND 1),
    CONSTRAINT matches_grade CHECK (grade IN ('auto', 'suggested', 'manual')),
    CONSTRAINT matches_status CHECK (status IN ('applied', 'confirmed', 'undone')),
    CONSTRAINT matches_reasons_array CHECK (jsonb_typeof(reasons) = 'array'),
    CONSTRAINT matches_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT matches_invoice_fk FOREIGN KEY (tenant_id, invoice_id)
        REFERENCES ledger.invoices (tenant_id, id),
    CONSTRAINT matches_transaction_fk FOREIGN KEY (tenant_id, transaction_id)
        REFERENCES ledger.bank_transactions (tenant_id, id)
);
-- Ledgers made before 0.7.0 had PRIMARY KEY (id) and a separate UNIQUE
-- (tenant_id, id) that matches' foreign keys pointed at. Their keys move to
-- (tenant_id, id) in place, rows kept: the same uniqueness, with the tenant
-- first, as Citus requires of a table sharded by tenant.
DO $$
DECLARE
    t text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
                   WHERE k.conrelid = 'ledger.matches'::regclass AND k.contype = 'p' AND a.attname = 'id') THEN
        RETURN;
    END IF;
    ALTER TABLE ledger.matches DROP CONSTRAINT matches_invoice_fk, DROP CONSTRAINT matches_transaction_fk;
    FOREACH t IN ARRAY ARRAY['invoices', 'bank_transactions', 'matches'] LOOP
        EXECUTE format('ALTER TABLE ledger.%I DROP CONSTRAINT IF EXISTS %I, DROP CONSTRAINT %I, ADD CONSTRAINT %I PRIMARY KEY (tenant_id, id)',
                       t, t || '_tenant_id_id_key', t || '_pkey', t || '_pkey');
    END LOOP;
    ALTER TABLE ledger.matches
        ADD CONSTRAINT matches_invoice_fk FOREIGN KEY (tenant_id, invoice_id) REFERENCES ledger.invoices (tenant_id, id),
        ADD CONSTRAINT matches_transaction_fk FOREIGN KEY (tenant_id, transaction_id) REFERENCES ledger.bank_transactions (tenant_id, id);
END
$$;

-- One live match per (invoice, transaction): re-running apply adds nothing.
CREATE UNIQUE INDEX IF NOT EXISTS matches_live_pair ON ledger.matches (tenant_id, invoice_id, transaction_id)
    WHERE status <> 'undone';
CREATE INDEX IF NOT EXISTS matches_transaction ON ledger.matches (tenant_id, transaction_id);
COMMENT ON TABLE ledger.matches IS 'Invoice <-> bank transaction matches: applied by reconciliation, confirmed or undone by people, or created by hand (grade manual).';

-- Clients choose what to match and how much; the ledger keeps the rest. Only
-- the status changes after insert: applied -> confirmed, either -> undone.
CREATE OR REPLACE FUNCTION ledger.matches_derived()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status NOT IN ('applied', 'confirmed') THEN
            PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'a new match is applied or confirmed');
        END IF;
        NEW.created_by := tenancy.current_user_id();
        NEW.created_at := now();
        NEW.decided_by := CASE WHEN NEW.status = 'confirmed' THEN NEW.created_by END;
        NEW.decided_at := CASE WHEN NEW.status = 'confirmed' THEN now() END;
        RETURN NEW;
    END IF;
    IF OLD.status = 'undone' AND NEW.status <> 'undone' THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('match %s was undone', OLD.id),
            'Create a new match instead.');
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        OLD.status := NEW.status;
        OLD.decided_by := tenancy.current_user_id();
        OLD.decided_at := now();
    END IF;
    RETURN OLD;  -- every other column keeps its value
END
$$;
DROP TRIGGER IF EXISTS matches_derived ON ledger.matches;
CREATE TRIGGER matches_derived BEFORE INSERT OR UPDATE ON ledger.matches
    FOR EACH ROW EXECUTE FUNCTION ledger.matches_derived();

-- Moves open/unmatched amounts as the caller (row level security and RBAC
-- apply: allocating needs invoices.update and bank_transactions.update).
CREATE OR REPLACE FUNCTION ledger.matches_allocate()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m ledger.matches := CASE WHEN TG_OP = 'INSERT' THEN NEW ELSE OLD END;
    delta numeric;
BEGIN
    IF TG_OP = 'INSERT' AND NEW.status <> 'undone' THEN
        delta := NEW.allocated_amount;
    ELSIF TG_OP = 'UPDATE' AND OLD.status <> 'undone' AND NEW.status = 'undone' THEN
        delta := -OLD.allocated_amount;
    ELSIF TG_OP = 'DELETE' AND OLD.status <> 'undone' AND pg_trigger_depth() = 1 THEN
        delta := -OLD.allocated_amount;  -- not when a tenant is dropped (cascade)
    ELSE
        RETURN NULL;
    END IF;
    BEGIN
        UPDATE ledger.invoices SET open_amount = open_amount - delta
        WHERE tenant_id = m.tenant_id AND id = m.invoice_id;
        UPDATE ledger.bank_transactions SET unmatched_amount = unmatched_amount - delta
        WHERE tenant_id = m.tenant_id AND id = m.transaction_id;
    EXCEPTION WHEN check_violation THEN
        PERFORM tenancy.raise_error('ALLOCATION_EXCEEDED',
            format('allocating %s of transaction %s to invoice %s exceeds what is open', m.allocated_amount,
                   m.transaction_id, m.invoice_id),
            'Another match took part of the amount first: re-run reconciliation, or undo a match.');
    END;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS matches_allocate ON ledger.matches;
CREATE TRIGGER matches_allocate AFTER INSERT OR UPDATE OF status OR DELETE ON ledger.matches
    FOR EACH ROW EXECUTE FUNCTION ledger.matches_allocate();

-- Functions of one tenant, given as their first argument, which must be the
-- current tenant: on Citus, sql/citus/17_distribute.sql distributes them by
-- it, so that they run on the worker that holds the tenant's rows. They are
-- what the API and the job call, in a schema of their own that only the
-- API role and the job role may use. Each is STRICT and returns one value:
-- Citus 13.2 crashes the node that plans a call of a distributed function
-- whose distribution argument is a NULL constant, and only for a strict
-- function returning one value does Postgres' planner replace such a call
-- by NULL, in every form, before Citus looks at it.
CREATE SCHEMA IF NOT EXISTS ledger_routed;
REVOKE ALL ON SCHEMA ledger_routed FROM PUBLIC;
GRANT USAGE ON SCHEMA ledger_routed TO authenticated, tenancy_jobs;

-- Persists the auto-grade candidates of the tenant. Safe to re-run: matched
-- amounts are no longer open, and a live (invoice, transaction) pair is
-- never stored twice. Runs of one tenant take turns (advisory lock, taken
-- where the tenant's rows are), so a second run sees the first one's
-- matches instead of racing it. STRICT: a NULL tenant is no call at all.
CREATE OR REPLACE FUNCTION ledger_routed.apply_reconciliation_for(tenant uuid)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    run text := gen_random_uuid()::text;
    result jsonb;
BEGIN
    IF tenant IS DISTINCT FROM tenancy.tenant_scope() THEN
        PERFORM tenancy.raise_error('PERMISSION_DENIED', format('tenant %s is not the current tenant', tenant),
            'Call ledger.apply_reconciliation(), which applies for the current tenant.');
    END IF;
    PERFORM tenancy.require_permission('matches', 'create');
    PERFORM pg_advisory_xact_lock(hashtextextended('ledger.apply_reconciliation ' || tenant, 0));
    WITH applied AS (
        INSERT INTO ledger.matches (invoice_id, transaction_id, allocated_amount, score, grade, group_id,
                                    reasons, status)
        SELECT c.invoice_id::uuid, c.transaction_id::uuid, c.allocated_amount, c.score, c.grade,
               md5(run || c.group_id)::uuid, c.reasons, 'applied'
        FROM tenancy.reconcile('ledger.invoices', 'ledger.bank_transactions') c
        WHERE c.grade = 'auto'
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT jsonb_build_object('applied', count(*), 'match_ids', coalesce(jsonb_agg(id), '[]'))
    INTO result FROM applied;
    RETURN result;
END
$$;
COMMENT ON FUNCTION ledger_routed.apply_reconciliation_for(uuid) IS 'ledger.apply_reconciliation() for the tenant given, which must be the current one: the scheduled job''s form (on Citus it runs on the tenant''s worker).';

-- The same for the current tenant: it calls the function above with the
-- tenant as a constant in the FROM clause, the form Citus delegates.
CREATE OR REPLACE FUNCTION ledger.apply_reconciliation()
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result jsonb;
BEGIN
    EXECUTE format('SELECT * FROM ledger_routed.apply_reconciliation_for(%L::pg_catalog.uuid)',
                   tenancy.tenant_scope())
    INTO result;
    RETURN result;
END
$$;
COMMENT ON FUNCTION ledger.apply_reconciliation() IS 'Stores the auto-grade matches of tenancy.reconcile for the current tenant; re-running adds nothing twice. Needs matches.create.';

-- The match candidates of the tenant given, which must be the current one:
-- what POST /rpc/reconcile answers (api.reconcile, through ledger.reconcile
-- below). On Citus it runs on the
-- worker that holds the tenant (17_distribute.sql distributes it by the
-- tenant, colocated with the ledger), and only the candidates come back to
-- the coordinator. It returns a set, so Postgres does not take away a call
-- with a NULL tenant, which would crash the Citus node that plans it: only
-- its owner may call it, and only ledger.reconcile does, with the current
-- tenant (tenant_scope() is never NULL).
CREATE OR REPLACE FUNCTION ledger_routed.reconcile_for(tenant uuid, rules jsonb)
RETURNS TABLE (invoice_id text, transaction_id text, allocated_amount numeric, score numeric,
               grade text, group_id bigint, reasons jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tenant IS DISTINCT FROM tenancy.tenant_scope() THEN
        PERFORM tenancy.raise_error('PERMISSION_DENIED', format('tenant %s is not the current tenant', tenant),
            'Call ledger.reconcile() (POST /rpc/reconcile), which reconciles the current tenant.');
    END IF;
    RETURN QUERY SELECT * FROM tenancy.reconcile('ledger.invoices', 'ledger.bank_transactions', rules);
END
$$;
COMMENT ON FUNCTION ledger_routed.reconcile_for(uuid, jsonb) IS 'tenancy.reconcile over the ledger for the tenant given, which must be the current one: ledger.reconcile''s form (on Citus it runs on the tenant''s worker). Its owner''s only.';

-- The same for the current tenant, with the tenant as a constant: the form
-- Citus delegates. It runs as the ledger's owner, the one role that may
-- call ledger_routed.reconcile_for (above). Row level security holds the
-- owner to the caller's tenant and permissions as it holds the caller
-- (FORCE ROW LEVEL SECURITY; the policies read the context, not the role).
-- In the ledger's schema, which its owner owns: Citus creates the function
-- as its owner on a worker added later.
CREATE OR REPLACE FUNCTION ledger.reconcile(rules jsonb DEFAULT '{}')
RETURNS TABLE (invoice_id text, transaction_id text, allocated_amount numeric, score numeric,
               grade text, group_id bigint, reasons jsonb)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY EXECUTE format('SELECT * FROM ledger_routed.reconcile_for(%L::pg_catalog.uuid, %L::pg_catalog.jsonb)',
                                tenancy.tenant_scope(), rules);
END
$$;
COMMENT ON FUNCTION ledger.reconcile(jsonb) IS 'Match candidates of tenancy.reconcile over the ledger for the current tenant (on Citus computed on its worker); writes nothing. Reads what the caller''s policies show (invoices.read, bank_transactions.read); POST /rpc/reconcile also needs matches.read.';

CREATE OR REPLACE FUNCTION ledger.match_not_found(match_id uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenancy.raise_error('NOT_FOUND', format('match %s does not exist', coalesce(match_id::text, 'NULL')),
        'GET /matches lists the matches of your tenant.');
END
$$;

-- A person's decision on a match: confirm it, or undo it (open amounts are
-- restored). Undoing twice is harmless; confirming an undone match is not.
CREATE OR REPLACE FUNCTION ledger.decide_match(match_id uuid, decision text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m ledger.matches;
BEGIN
    PERFORM tenancy.tenant_scope();
    UPDATE ledger.matches x SET status = decision WHERE x.id = match_id RETURNING * INTO m;
    IF m.id IS NULL THEN
        PERFORM ledger.match_not_found(match_id);
    END IF;
    RETURN to_jsonb(m);
END
$$;

CREATE OR REPLACE FUNCTION ledger.explain_match(match_id uuid)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sentence text;
BEGIN
    PERFORM tenancy.tenant_scope();
    SELECT format('%s of transaction %s (%s, %s %s) settles invoice %s (%s %s) — %s, score %s: %s',
                  m.allocated_amount, t.id, t.booked_on, t.amount, t.currency, i.reference, i.amount, i.currency,
                  m.grade, m.score, tenancy.explain_reasons(m.reasons))
           || CASE m.status WHEN 'undone' THEN ' (undone)' WHEN 'confirmed' THEN ' (confirmed)' ELSE '' END
    INTO sentence
    FROM ledger.matches m
    JOIN ledger.invoices i ON i.tenant_id = m.tenant_id AND i.id = m.invoice_id
    JOIN ledger.bank_transactions t ON t.tenant_id = m.tenant_id AND t.id = m.transaction_id
    WHERE m.id = match_id;
    IF sentence IS NULL THEN
        PERFORM ledger.match_not_found(match_id);
    END IF;
    RETURN sentence;
END
$$;

SELECT tenancy.enable('ledger.matches');
SELECT tenancy.protect('ledger.matches', 'matches');
-- Reconciliation decisions (apply, confirm, undo, manual matches) are
-- audited rows of ledger.matches: who, through which request, what changed.
SELECT tenancy.enable_audit('ledger.matches');
ALTER TABLE ledger.matches OWNER TO ledger_owner;
GRANT SELECT, INSERT, UPDATE, DELETE ON ledger.matches TO authenticated;
GRANT SELECT ON ledger.matches TO analyst;
-- pg_cron's reconciliation job (sql/30_cron.sql) runs as tenancy_jobs.
GRANT USAGE ON SCHEMA ledger TO tenancy_jobs;
GRANT SELECT, UPDATE ON ledger.invoices, ledger.bank_transactions TO tenancy_jobs;
GRANT SELECT, INSERT ON ledger.matches TO tenancy_jobs;
REVOKE ALL ON FUNCTION ledger.apply_reconciliation(), ledger_routed.apply_reconciliation_for(uuid),
    ledger.decide_match(uuid, text), ledger.explain_match(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger.apply_reconciliation(), ledger_routed.apply_reconciliation_for(uuid),
    ledger.decide_match(uuid, text), ledger.explain_match(uuid)
    TO authenticated;
GRANT EXECUTE ON FUNCTION ledger.explain_match(uuid) TO analyst;
GRANT EXECUTE ON FUNCTION ledger.apply_reconciliation(), ledger_routed.apply_reconciliation_for(uuid) TO tenancy_jobs;
-- The ledger's owner calls it, as ledger.reconcile's owner; nobody else
-- may: a NULL tenant would crash a Citus node.
ALTER FUNCTION ledger_routed.reconcile_for(uuid, jsonb) OWNER TO ledger_owner;
REVOKE ALL ON FUNCTION ledger_routed.reconcile_for(uuid, jsonb) FROM PUBLIC;
GRANT USAGE ON SCHEMA ledger_routed TO ledger_owner;
ALTER FUNCTION ledger.reconcile(jsonb) OWNER TO ledger_owner;
REVOKE ALL ON FUNCTION ledger.reconcile(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger.reconcile(jsonb) TO authenticated;
