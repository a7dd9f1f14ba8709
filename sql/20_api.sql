-- The api schema: all that PostgREST exposes. Views are security_invoker so
-- the ledger's row level security applies to the caller, never to the view
-- owner. Every object carries a COMMENT for PostgREST's OpenAPI output.
CREATE SCHEMA IF NOT EXISTS api;
COMMENT ON SCHEMA api IS 'pg_tenancy reference API: every row is the caller''s tenant''s.';

CREATE OR REPLACE VIEW api.invoices WITH (security_invoker = true) AS
    SELECT id, tenant_id, amount, currency, issue_date, due_date, reference,
           counterparty, open_amount, status, created_at
    FROM ledger.invoices;
COMMENT ON VIEW api.invoices IS 'Invoices of your tenant. open_amount, status and created_at are maintained by the ledger.';

CREATE OR REPLACE VIEW api.bank_transactions WITH (security_invoker = true) AS
    SELECT id, tenant_id, amount, currency, booked_on, description, counterparty,
           status, created_at, unmatched_amount
    FROM ledger.bank_transactions;
COMMENT ON VIEW api.bank_transactions IS 'Bank transactions of your tenant. status, created_at and unmatched_amount (what matches have not yet allocated) are maintained by the ledger.';

CREATE OR REPLACE VIEW api.matches WITH (security_invoker = true) AS
    SELECT id, tenant_id, invoice_id, transaction_id, allocated_amount, score, grade, group_id,
           reasons, status, created_by, decided_by, decided_at, created_at
    FROM ledger.matches;
COMMENT ON VIEW api.matches IS 'Invoice <-> payment matches of your tenant. POST a manual match with invoice_id, transaction_id and allocated_amount; PATCH status to confirmed or undone; DELETE removes a match and restores the open amounts.';

CREATE OR REPLACE VIEW api.audit_log WITH (security_invoker = true) AS
    SELECT id, at, actor, db_user, request_id, request_path, action, table_name, row_key,
           old_values, new_values
    FROM tenancy.audit_log;
COMMENT ON VIEW api.audit_log IS 'Who changed what in your tenant: one entry per inserted, updated or deleted row of the ledger, the matches and roles. actor is the user (JWT sub); old_values/new_values hold the changed columns. Needs audit.read; read-only.';

CREATE OR REPLACE FUNCTION api.health()
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT jsonb_build_object('status', 'ok', 'version', tenancy.version()) $$;
COMMENT ON FUNCTION api.health() IS 'Liveness check; needs no token.';

-- RBAC over HTTP. Each RPC acts on the caller's tenant only (there is no
-- tenant parameter) and checks the caller's permissions inside.
CREATE OR REPLACE FUNCTION api.my_permissions()
RETURNS TABLE (permission text, resource text, action text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT resource || '.' || action, resource, action FROM tenancy.current_grants() $$;
COMMENT ON FUNCTION api.my_permissions() IS 'What the caller may do in their tenant, as granted by their roles (''*'' matches anything).';

CREATE OR REPLACE FUNCTION api.roles()
RETURNS SETOF jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenancy.list_roles() $$;
COMMENT ON FUNCTION api.roles() IS 'The roles of your tenant with their permissions and member counts. Needs roles.read.';

CREATE OR REPLACE FUNCTION api.create_role(name text, description text DEFAULT '', permissions text[] DEFAULT '{}')
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenancy.create_role(name, description, permissions) $$;
COMMENT ON FUNCTION api.create_role(text, text, text[]) IS 'Creates a custom role, e.g. {"name": "auditor", "permissions": ["invoices.read"]}. Needs roles.manage and every permission it grants.';

CREATE OR REPLACE FUNCTION api.delete_role(name text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenancy.delete_role(name) $$;
COMMENT ON FUNCTION api.delete_role(text) IS 'Deletes a custom role. System roles (admin, member, readonly) cannot be deleted.';

CREATE OR REPLACE FUNCTION api.grant_permission(role text, permission text)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenancy.grant_permission(role, permission) $$;
COMMENT ON FUNCTION api.grant_permission(text, text) IS 'Adds a permission such as "invoices.delete" to a custom role. Needs roles.manage and the permission itself.';

CREATE OR REPLACE FUNCTION api.revoke_permission(role text, permission text)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenancy.revoke_permission(role, permission) $$;
COMMENT ON FUNCTION api.revoke_permission(text, text) IS 'Removes a permission from a custom role.';

CREATE OR REPLACE FUNCTION api.assign_role(user_id uuid, role text)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenancy.assign_role(user_id, role) $$;
COMMENT ON FUNCTION api.assign_role(uuid, text) IS 'Gives a user a role in your tenant. Needs roles.manage and every permission of the role.';

CREATE OR REPLACE FUNCTION api.unassign_role(user_id uuid, role text)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenancy.unassign_role(user_id, role) $$;
COMMENT ON FUNCTION api.unassign_role(uuid, text) IS 'Takes a role from a user in your tenant; effective on their next request.';

-- Bulk import of bank transactions, exactly once per Idempotency-Key.
-- The body is a JSON array of {amount, currency, booked_on, description,
-- counterparty}; the answer is 201 {"imported": n, "ids": [...]}, and a retry
-- with the same key and body replays it with Idempotent-Replayed: true.
CREATE OR REPLACE FUNCTION api.import_bank_transactions(jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    replay jsonb := tenancy.idempotency_claim('import_bank_transactions', $1);
BEGIN
    IF replay IS NOT NULL THEN
        RETURN replay;
    END IF;
    RETURN tenancy.idempotency_complete(ledger.import_bank_transactions($1), 201);
END
$$;
COMMENT ON FUNCTION api.import_bank_transactions(jsonb) IS 'Imports a JSON array of bank transactions exactly once per Idempotency-Key header (required). Retries replay the stored 201 response with Idempotent-Replayed: true.';

-- Reconciliation (README "Reconciliation"). Candidates are computed, never stored, by
-- reconcile; apply_reconciliation stores the auto-grade ones. On Citus both
-- run on the worker that holds the tenant (ledger.reconcile,
-- ledger.apply_reconciliation()).
CREATE OR REPLACE FUNCTION api.reconcile(rules jsonb DEFAULT '{}')
RETURNS TABLE (invoice_id text, transaction_id text, allocated_amount numeric, score numeric,
               grade text, group_id bigint, reasons jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenancy.require_permission('matches', 'read');
    RETURN QUERY SELECT * FROM ledger.reconcile(rules);
END
$$;
COMMENT ON FUNCTION api.reconcile(jsonb) IS 'Match candidates for your open invoices and unmatched payments, with score, grade (auto | suggested) and reasons; writes nothing. {"rules": {...}} overrides your tenant''s rules for this call.';

CREATE OR REPLACE FUNCTION api.apply_reconciliation()
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ledger.apply_reconciliation() $$;
COMMENT ON FUNCTION api.apply_reconciliation() IS 'Stores the auto-grade matches; safe to re-run (nothing is stored twice). Returns {"applied": n, "match_ids": [...]}. Needs matches.create.';

CREATE OR REPLACE FUNCTION api.confirm_match(match_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ledger.decide_match(match_id, 'confirmed') $$;
COMMENT ON FUNCTION api.confirm_match(uuid) IS 'Records that a person confirmed a match. Needs matches.update.';

CREATE OR REPLACE FUNCTION api.undo_match(match_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ledger.decide_match(match_id, 'undone') $$;
COMMENT ON FUNCTION api.undo_match(uuid) IS 'Undoes a match: the invoice''s open amount and the payment''s unmatched amount are restored. Needs matches.update.';

CREATE OR REPLACE FUNCTION api.explain_match(match_id uuid)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT ledger.explain_match(match_id) $$;
COMMENT ON FUNCTION api.explain_match(uuid) IS 'A plain-language sentence saying why a payment was matched to an invoice. Needs matches.read.';

CREATE OR REPLACE FUNCTION api.reconcile_rules()
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT to_jsonb(r) - 'tenant_id' FROM tenancy.effective_reconcile_rules() r $$;
COMMENT ON FUNCTION api.reconcile_rules() IS 'Your tenant''s reconciliation rules (null = the built-in default).';

CREATE OR REPLACE FUNCTION api.set_reconcile_rules(rules jsonb)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT to_jsonb(r) - 'tenant_id' FROM tenancy.set_reconcile_rules(rules) r $$;
COMMENT ON FUNCTION api.set_reconcile_rules(jsonb) IS 'Sets reconciliation rules, e.g. {"rules": {"fee_ceiling": 15, "days_after": 90}}; null restores a default. Needs reconciliation.manage.';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA api FROM PUBLIC;
GRANT USAGE ON SCHEMA api TO anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON api.invoices, api.bank_transactions, api.matches TO authenticated;
GRANT SELECT ON api.audit_log TO authenticated;
GRANT EXECUTE ON FUNCTION api.health() TO anon, authenticated;
GRANT EXECUTE ON FUNCTION api.my_permissions(), api.roles(), api.create_role(text, text, text[]),
    api.delete_role(text), api.grant_permission(text, text), api.revoke_permission(text, text),
    api.assign_role(uuid, text), api.unassign_role(uuid, text), api.import_bank_transactions(jsonb),
    api.reconcile(jsonb), api.apply_reconciliation(), api.confirm_match(uuid), api.undo_match(uuid),
    api.explain_match(uuid), api.reconcile_rules(), api.set_reconcile_rules(jsonb)
TO authenticated;
