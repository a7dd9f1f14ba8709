-- Per-tenant request budgets. The counting is in Rust, in shared memory
-- (src/rate_limit.rs), done by tenancy.pre_request() (src/request.rs):
-- response headers within budget, HTTP 429 with Retry-After over it. This
-- file holds the per-tenant settings.

CREATE TABLE tenancy.rate_limits (
    tenant_id      uuid    PRIMARY KEY REFERENCES tenancy.tenants (id) ON DELETE CASCADE,
    requests       integer NOT NULL,
    window_seconds integer NOT NULL DEFAULT 3600,
    per_user       boolean NOT NULL DEFAULT true,
    CONSTRAINT rate_limits_requests CHECK (requests > 0),
    CONSTRAINT rate_limits_window CHECK (window_seconds BETWEEN 1 AND 31 * 86400)
);
COMMENT ON TABLE tenancy.rate_limits IS 'Request budgets per tenant: requests per window_seconds, counted per user (per_user) or for the whole tenant. Tenants without a row get tenancy.rate_limit_requests per tenancy.rate_limit_window, per user.';
SELECT pg_catalog.pg_extension_config_dump('tenancy.rate_limits', '');

CREATE FUNCTION tenancy.set_rate_limit(tenant text, requests integer, window_length interval DEFAULT '1 hour',
                                       per_user boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t tenancy.tenants := tenancy.find_tenant(tenant);
    secs numeric := extract(epoch FROM window_length);
BEGIN
    IF requests IS NULL THEN
        DELETE FROM tenancy.rate_limits r WHERE r.tenant_id = t.id;
        RETURN;
    END IF;
    IF requests < 1 THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('requests must be at least 1, not %s', requests),
            'To go back to the default budget pass NULL; to stop a tenant, suspend it.');
    END IF;
    IF secs IS NULL OR secs < 1 OR secs > 31 * 86400 OR secs <> trunc(secs) THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('window_length must be whole seconds between 1 second and 31 days, not %s', window_length));
    END IF;
    INSERT INTO tenancy.rate_limits AS r (tenant_id, requests, window_seconds, per_user)
    VALUES (t.id, requests, secs::integer, coalesce(per_user, true))
    ON CONFLICT (tenant_id) DO UPDATE
    SET requests = EXCLUDED.requests, window_seconds = EXCLUDED.window_seconds, per_user = EXCLUDED.per_user;
END
$$;
COMMENT ON FUNCTION tenancy.set_rate_limit(text, integer, interval, boolean) IS 'Sets a tenant''s request budget (requests per window_length, per user or for the whole tenant); NULL requests goes back to the default. Takes effect on the next request; a running window keeps its end.';

-- What tenancy._pre_request() (src/request.rs) looks up for a request of
-- user `sub` in tenant `tenant`, when its per-backend cache does not have it:
-- no row if there is no such tenant.
CREATE FUNCTION tenancy._request_facts(tenant uuid, sub uuid)
RETURNS TABLE (active boolean, member boolean, grants text[], requests integer, window_seconds integer,
               per_user boolean)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.status = 'active',
           EXISTS (SELECT 1 FROM tenancy.user_roles ur WHERE ur.tenant_id = t.id AND ur.user_id = sub),
           coalesce((SELECT array_agg(rp.resource || '.' || rp.action)
                     FROM tenancy.user_roles ur
                     JOIN tenancy.role_permissions rp ON rp.tenant_id = ur.tenant_id AND rp.role = ur.role
                     WHERE ur.tenant_id = t.id AND ur.user_id = sub), '{}'),
           rl.requests, rl.window_seconds, rl.per_user
    FROM tenancy.tenants t
    LEFT JOIN tenancy.rate_limits rl ON rl.tenant_id = t.id
    WHERE t.id = tenant
$$;

-- The budgets are read by tenancy._pre_request(): a change drops what
-- backends keep of them (see context.sql).
CREATE TRIGGER request_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.rate_limits
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._changed();
