-- Per-tenant request budgets (issue #7). The counting is in Rust, in shared
-- memory (src/rate_limit.rs); this file holds the per-tenant settings and
-- what tenancy.pre_request() does with a decision: response headers within
-- budget, HTTP 429 with Retry-After over it.

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

-- Called by pre_request once the tenant and user are known.
CREATE FUNCTION tenancy._rate_limit(tenant uuid, sub uuid, requests integer, window_seconds integer, per_user boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
BEGIN
    SELECT * INTO d FROM tenancy._rate_limit_take(tenant, CASE WHEN coalesce(per_user, true) THEN sub END,
                                                  requests, window_seconds);
    IF d.allowed THEN
        IF d.rate_limit IS NOT NULL THEN
            PERFORM set_config('response.headers', format(
                '[{"X-RateLimit-Limit": "%s"}, {"X-RateLimit-Remaining": "%s"}, {"X-RateLimit-Reset": "%s"}]',
                d.rate_limit, d.remaining, d.reset_seconds), true);
        END IF;
        RETURN;
    END IF;
    IF d.rate_limit IS NULL THEN
        RAISE WARNING 'pg_tenancy: the rate-limit table is full (see tenancy.rate_limit_stats())';
        PERFORM tenancy.raise_error('RATE_LIMIT_UNAVAILABLE',
            'too many distinct users are being counted right now to count this request',
            'Retry shortly; an operator can check tenancy.rate_limit_stats().',
            NULL, jsonb_build_object('Retry-After', '60'));
    END IF;
    PERFORM tenancy.raise_error('RATE_LIMITED',
        format('rate limit exceeded: %s requests per %s seconds; retry in %s seconds',
               d.rate_limit, coalesce(window_seconds, current_setting('tenancy.rate_limit_window')::int), d.reset_seconds),
        'Wait for the Retry-After seconds, or ask the operator for a larger budget.',
        NULL, jsonb_build_object('Retry-After', d.reset_seconds::text, 'X-RateLimit-Limit', d.rate_limit::text,
                                 'X-RateLimit-Remaining', '0', 'X-RateLimit-Reset', d.reset_seconds::text));
END
$$;
