-- Setting and requiring the tenant context. The context lives in two
-- PGC_SUSET settings (tenancy.tenant_id, tenancy.user_id) that only these
-- SECURITY DEFINER functions may set, and always transaction-locally: a
-- pooled connection can never carry a tenant into the next transaction.

-- The tenant of the current transaction, or an error naming the fix.
-- Isolation policies write its body out in a sub-select,
-- `(SELECT coalesce(tenancy.current_tenant_id(), tenancy.tenant_context_required()))`,
-- which the planner turns into an initPlan: evaluated once per statement,
-- not per row. Written out, not called: inlining a SQL function parses its
-- body again at every planning, and PostgREST plans most requests afresh
-- (their LIMIT is a parameter, so Postgres picks custom plans).
-- Raised by tenant_scope() when no tenant is set.
CREATE FUNCTION tenancy.tenant_context_required()
RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenancy.raise_error('TENANT_CONTEXT_REQUIRED',
        'no tenant is set for this transaction, so tenant-scoped tables cannot be read or written',
        'In SQL: BEGIN; SELECT tenancy.set_tenant(''<slug or id>''); then query (the tenant lasts until COMMIT or ROLLBACK). Over HTTP: send a token whose tenant_id claim names your tenant.');
    RETURN NULL;
END
$$;

-- A plain SQL function without SET clauses, so the planner inlines it into
-- the policy's initPlan: the fast path is one call into Rust, and COALESCE
-- only reaches the error when the context is unset.
CREATE FUNCTION tenancy.tenant_scope()
RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT coalesce(tenancy.current_tenant_id(), tenancy.tenant_context_required()) $$;
COMMENT ON FUNCTION tenancy.tenant_scope() IS 'The current tenant, or error TENANT_CONTEXT_REQUIRED (SQLSTATE TN001). Isolation policies check the same, written out.';

-- For analysts and jobs: sets the tenant (no user) for the current transaction.
CREATE FUNCTION tenancy.set_tenant(tenant text)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found uuid;
    t tenancy.tenants;
BEGIN
    -- Fast path, one statement: an active tenant by id or slug, context set.
    IF tenant ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        SELECT x.id INTO found FROM tenancy.tenants x, tenancy._set_context(x.id, NULL) c
        WHERE x.id = tenant::uuid AND x.status = 'active';
    ELSE
        SELECT x.id INTO found FROM tenancy.tenants x, tenancy._set_context(x.id, NULL) c
        WHERE x.slug = tenant AND x.status = 'active';
    END IF;
    IF found IS NULL THEN
        t := tenancy.find_tenant(tenant);  -- raises TENANT_NOT_FOUND
        PERFORM tenancy.raise_error('TENANT_SUSPENDED', format('tenant "%s" is suspended', t.slug),
            format('A DBA can reactivate it with SELECT tenancy.resume_tenant(%L);', t.slug));
    END IF;
    IF NOT tenancy._in_transaction_block() THEN
        RAISE NOTICE 'tenant "%" is set for this transaction only, which ends with this statement', tenant
            USING HINT = 'Run BEGIN first, then set_tenant, then your queries, then COMMIT.';
    END IF;
    RETURN found;
END
$$;
COMMENT ON FUNCTION tenancy.set_tenant(text) IS 'Sets the tenant (slug or id) for the current transaction only; returns its id.';

-- Raises a refusal of tenancy._pre_request() with the error catalog's code
-- and HTTP status (custom SQLSTATEs are raised from SQL, not from Rust).
CREATE FUNCTION tenancy._raise_refusal(refusal text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r constant jsonb := refusal::jsonb;
BEGIN
    PERFORM tenancy.raise_error(r ->> 'code', r ->> 'message', r ->> 'hint', NULL, r -> 'headers');
END
$$;

-- PostgREST's db-pre-request: validates the verified JWT claims, sets the
-- tenant and user for this request's transaction and counts the request
-- against the tenant's rate limit, all in tenancy._pre_request()
-- (src/request.rs). PostgREST has already checked the signature and exp;
-- this checks what only the database knows.
--
-- It runs on every request, so it is a plain SQL function that Postgres
-- inlines into PostgREST's statement: no SECURITY DEFINER and no SET clause
-- (each would cost more than the hook's own work). _pre_request() reads
-- what the API role may not read with a privilege of its own (see
-- src/request.rs), and the roles that may run this hook must also be
-- granted EXECUTE on _pre_request() (tenancy.check() reports a role that
-- has one without the other). A refusal comes back as JSON and is raised
-- by _raise_refusal(), which is STRICT: a request that goes ahead never
-- enters PL/pgSQL.
CREATE FUNCTION tenancy.pre_request()
RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT tenancy._raise_refusal(tenancy._pre_request()) $$;
COMMENT ON FUNCTION tenancy.pre_request() IS 'PostgREST db-pre-request: validates request.jwt.claims (type, tenant_id, sub, tenant status, membership), sets the tenant and user for this request only, and counts the request against the tenant''s rate limit (429 over budget).';

-- What tenancy._pre_request() keeps per backend is dropped in every backend
-- as soon as a change to these tables commits (the trigger queues a relcache
-- invalidation of the table, which Postgres delivers with the commit).
CREATE TRIGGER request_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.tenants
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._changed();
CREATE TRIGGER request_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.roles
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._changed();
CREATE TRIGGER request_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.role_permissions
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._changed();
CREATE TRIGGER request_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.user_roles
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._changed();
