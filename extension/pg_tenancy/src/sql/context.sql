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

-- PostgREST's db-pre-request: validates the verified JWT claims and sets the
-- tenant and user for this request's transaction. PostgREST has already
-- checked the signature and exp; this checks what only the database knows.
CREATE FUNCTION tenancy.pre_request()
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    raw text := current_setting('request.jwt.claims', true);
    claims jsonb;
    uuid_re constant text := '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
    tenant_claim text;
    sub_claim text;
    t tenancy.tenants;
    budget integer;
    window_seconds integer;
    per_user boolean;
BEGIN
    IF raw IS NULL OR raw = '' THEN
        RETURN;  -- no token: anonymous, no context (tenant-scoped tables stay closed)
    END IF;
    claims := raw::jsonb;
    IF claims - 'role' = '{}'::jsonb THEN
        RETURN;  -- anonymous request: PostgREST passes only the anon role
    END IF;

    IF claims->'type' IS NULL OR claims->>'type' IS DISTINCT FROM 'access' THEN
        PERFORM tenancy.raise_error('TOKEN_TYPE_INVALID', 'the token is not an access token',
            'Send an access token (claim "type": "access"), not a refresh or other token.');
    END IF;
    IF jsonb_typeof(claims->'tenant_id') IS DISTINCT FROM 'string' THEN
        PERFORM tenancy.raise_error('TENANT_CLAIM_INVALID', 'the token has no tenant_id claim',
            'The token must carry the tenant''s id as a string claim "tenant_id".');
    END IF;
    tenant_claim := claims->>'tenant_id';
    IF tenant_claim !~ uuid_re THEN
        PERFORM tenancy.raise_error('TENANT_CLAIM_INVALID', 'the token''s tenant_id claim is not a uuid');
    END IF;
    IF jsonb_typeof(claims->'sub') IS DISTINCT FROM 'string' OR claims->>'sub' !~ uuid_re THEN
        PERFORM tenancy.raise_error('SUBJECT_CLAIM_INVALID', 'the token''s sub claim is missing or not a uuid');
    END IF;
    sub_claim := claims->>'sub';

    -- Fast path, one statement: active tenant, user holds a role, context set,
    -- and the user's grants handed over so RBAC checks need no other query.
    -- (Should the context be set for a row that then fails a condition, the
    -- slow path below raises, and the transaction takes it back.)
    SELECT x.id, rl.requests, rl.window_seconds, rl.per_user INTO t.id, budget, window_seconds, per_user
    FROM tenancy.tenants x
         LEFT JOIN tenancy.rate_limits rl ON rl.tenant_id = x.id,
         LATERAL (SELECT coalesce(array_agg(rp.resource || '.' || rp.action), '{}') AS grants
                  FROM tenancy.user_roles ur
                  JOIN tenancy.role_permissions rp ON rp.tenant_id = ur.tenant_id AND rp.role = ur.role
                  WHERE ur.tenant_id = x.id AND ur.user_id = sub_claim::uuid) g,
         LATERAL tenancy._set_context(x.id, sub_claim::uuid, g.grants) c
    WHERE x.id = tenant_claim::uuid AND x.status = 'active'
      AND EXISTS (SELECT 1 FROM tenancy.user_roles ur WHERE ur.tenant_id = x.id AND ur.user_id = sub_claim::uuid);
    IF t.id IS NOT NULL THEN
        -- Counted only for members of an active tenant: 429 with Retry-After
        -- over budget, X-RateLimit-* headers within it.
        PERFORM tenancy._rate_limit(t.id, sub_claim::uuid, budget, window_seconds, per_user);
        RETURN;
    END IF;

    -- Slow path: say what is wrong.
    SELECT * INTO t FROM tenancy.tenants x WHERE x.id = tenant_claim::uuid;
    IF t.id IS NULL THEN
        PERFORM tenancy.raise_error('TENANT_NOT_FOUND', 'the token''s tenant does not exist');
    END IF;
    IF t.status <> 'active' THEN
        PERFORM tenancy.raise_error('TENANT_SUSPENDED', 'the token''s tenant is suspended');
    END IF;
    PERFORM tenancy.raise_error('NOT_A_MEMBER', 'the token''s user has no role in this tenant');
END
$$;
COMMENT ON FUNCTION tenancy.pre_request() IS 'PostgREST db-pre-request: validates request.jwt.claims (type, tenant_id, sub, tenant status, membership), sets the tenant and user for this request only, and counts the request against the tenant''s rate limit (429 over budget).';
