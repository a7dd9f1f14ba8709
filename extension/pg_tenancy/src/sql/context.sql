-- Setting and requiring the tenant context. The context lives in two
-- PGC_SUSET settings (tenancy.tenant_id, tenancy.user_id) that only these
-- SECURITY DEFINER functions may set, and always transaction-locally: a
-- pooled connection can never carry a tenant into the next transaction.

-- The tenant of the current transaction, or an error naming the fix.
-- Isolation policies call it as `(SELECT tenancy.tenant_scope())`, which the
-- planner turns into an initPlan: evaluated once per statement, not per row.
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
COMMENT ON FUNCTION tenancy.tenant_scope() IS 'The current tenant, or error TENANT_CONTEXT_REQUIRED (SQLSTATE TN001). Used by isolation policies.';

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

-- PostgREST's db-pre-request: validates the verified JWT claims, sets the
-- tenant and user for this request's transaction and counts the request
-- against the tenant's rate limit, all in tenancy._pre_request()
-- (src/request.rs). PostgREST has already checked the signature and exp;
-- this checks what only the database knows. A refusal is raised here, with
-- the error catalog's code and HTTP status.
CREATE FUNCTION tenancy.pre_request()
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    refusal text := tenancy._pre_request();
    r jsonb;
BEGIN
    IF refusal IS NOT NULL THEN
        r := refusal::jsonb;
        PERFORM tenancy.raise_error(r ->> 'code', r ->> 'message', r ->> 'hint', NULL, r -> 'headers');
    END IF;
END
$$;
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
