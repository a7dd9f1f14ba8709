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
           status, created_at
    FROM ledger.bank_transactions;
COMMENT ON VIEW api.bank_transactions IS 'Bank transactions of your tenant.';

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

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA api FROM PUBLIC;
GRANT USAGE ON SCHEMA api TO anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON api.invoices, api.bank_transactions TO authenticated;
GRANT EXECUTE ON FUNCTION api.health() TO anon, authenticated;
GRANT EXECUTE ON FUNCTION api.my_permissions(), api.roles(), api.create_role(text, text, text[]),
    api.delete_role(text), api.grant_permission(text, text), api.revoke_permission(text, text),
    api.assign_role(uuid, text), api.unassign_role(uuid, text), api.import_bank_transactions(jsonb)
TO authenticated;
