-- pg_tenancy 0.2.0 -> 0.3.0: audit trail and per-tenant rate limits (issue #7).
--
-- Additions, and four functions replaced in place; no table of 0.2.0 changes,
-- so live tenants, roles, keys and rules are untouched. What is new:
--   * tenancy._rate_limit_take / rate_limit_stats (Rust, shared memory) and
--     tenancy.rate_limits with set_rate_limit: per-tenant request budgets;
--   * pre_request counts each request: X-RateLimit-* headers within budget,
--     HTTP 429 with Retry-After over it (new catalog codes TN030, TN031);
--   * raise_error takes response headers (so the 429 can carry Retry-After):
--     a new argument means a new signature, hence DROP and CREATE, and the
--     PUBLIC grant again (privileges.sql at the end re-applies all of them);
--   * idempotency_claim appends Idempotent-Replayed to the headers instead of
--     replacing them, so a replay keeps the rate-limit headers;
--   * tenancy.audit_log (partitioned by month, append-only), enable_audit,
--     disable_audit, audit_maintain, the 'audit' resource (action read), and
--     auditing of tenants, roles, role_permissions and user_roles. Changes
--     made before this update are not in the log: it starts now.
-- The shared library must be 0.3.0 and preloaded before this runs (install,
-- restart a server that preloads pg_tenancy: the counters live in shared
-- memory reserved at startup, then ALTER EXTENSION pg_tenancy UPDATE).

-- Rust entry points of the rate limiter.
CREATE FUNCTION tenancy."_rate_limit_take"(
	"tenant" uuid, /* pgrx :: Uuid */
	"user" uuid, /* Option < pgrx :: Uuid > */
	"requests" INT, /* Option < i32 > */
	"window_seconds" INT /* Option < i32 > */
) RETURNS TABLE (
	"allowed" bool,  /* bool */
	"rate_limit" INT,  /* Option < i32 > */
	"remaining" INT,  /* Option < i32 > */
	"reset_seconds" INT  /* Option < i32 > */
)
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rate_limit_take_wrapper';

CREATE FUNCTION tenancy."rate_limit_stats"() RETURNS TABLE (
	"live_keys" bigint,  /* i64 */
	"capacity" bigint  /* i64 */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rate_limit_stats_wrapper';

-- The catalog gains RATE_LIMITED and RATE_LIMIT_UNAVAILABLE.
CREATE OR REPLACE FUNCTION tenancy.error_catalog(
    code text,
    OUT sqlstate text,
    OUT http_status integer
)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.sqlstate, c.http_status
    FROM (VALUES
        ('TENANT_CONTEXT_REQUIRED', 'TN001', 401),
        ('TENANT_CLAIM_INVALID',    'TN002', 401),
        ('TOKEN_TYPE_INVALID',      'TN003', 401),
        ('SUBJECT_CLAIM_INVALID',   'TN004', 401),
        ('TENANT_NOT_FOUND',        'TN005', 403),
        ('TENANT_SUSPENDED',        'TN006', 403),
        ('NOT_A_MEMBER',            'TN007', 403),
        ('IDEMPOTENCY_KEY_REQUIRED', 'TN010', 400),
        ('IDEMPOTENCY_KEY_INVALID', 'TN011', 400),
        ('IDEMPOTENCY_KEY_IN_PROGRESS', 'TN012', 409),
        ('IDEMPOTENCY_KEY_REUSED',  'TN013', 422),
        ('INVALID_ARGUMENT',        '22023', 400),
        ('NOT_FOUND',               'P0002', 404),
        ('ALREADY_EXISTS',          '23505', 409),
        ('PERMISSION_DENIED',       '42501', 403),
        ('ALLOCATION_EXCEEDED',     'TN020', 409),
        ('RATE_LIMITED',            'TN030', 429),
        ('RATE_LIMIT_UNAVAILABLE',  'TN031', 503)
    ) AS c(code, sqlstate, http_status)
    WHERE c.code = error_catalog.code
$$;
COMMENT ON FUNCTION tenancy.error_catalog(text) IS 'SQLSTATE and HTTP status of a pg_tenancy error code.';

DROP FUNCTION tenancy.raise_error(text, text, text, integer);
CREATE FUNCTION tenancy.raise_error(code text, message text, hint text DEFAULT NULL, http_status integer DEFAULT NULL,
                                    headers jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    entry record;
BEGIN
    SELECT * INTO entry FROM tenancy.error_catalog(code);
    IF entry.sqlstate IS NULL THEN
        RAISE EXCEPTION 'unknown pg_tenancy error code %', code USING ERRCODE = 'XX000';
    END IF;
    IF coalesce(current_setting('request.method', true), '') <> '' THEN
        IF entry.http_status = 401 THEN
            headers := jsonb_build_object('WWW-Authenticate', 'Bearer error="invalid_token"') || coalesce(headers, '{}');
        END IF;
        RAISE EXCEPTION USING
            ERRCODE = 'PGRST',
            MESSAGE = jsonb_build_object('code', code, 'message', message, 'details', NULL, 'hint', hint)::text,
            DETAIL = jsonb_build_object('status', coalesce(http_status, entry.http_status), 'headers', coalesce(headers, '{}'))::text;
    END IF;
    IF hint IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = entry.sqlstate, MESSAGE = message;
    END IF;
    RAISE EXCEPTION USING ERRCODE = entry.sqlstate, MESSAGE = message, HINT = hint;
END
$$;
COMMENT ON FUNCTION tenancy.raise_error(text, text, text, integer, jsonb) IS 'Raises a pg_tenancy error: catalog SQLSTATE for SQL callers, PGRST JSON with an HTTP status (the catalog''s unless given) and response headers inside PostgREST requests.';

-- pre_request now counts the request once the tenant and user are known.
CREATE OR REPLACE FUNCTION tenancy.pre_request()
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

-- A replay appends its header to those pre_request set.
CREATE OR REPLACE FUNCTION tenancy.idempotency_claim(scope text, request jsonb, key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenant uuid := tenancy.tenant_scope();
    k text := coalesce(key, current_setting('request.headers', true)::jsonb ->> 'idempotency-key');
    fp bytea;
    existing tenancy.idempotency_keys;
BEGIN
    IF scope IS NULL OR scope = '' THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'idempotency_claim needs a scope (the endpoint''s name)');
    END IF;
    IF k IS NULL THEN
        PERFORM tenancy.raise_error('IDEMPOTENCY_KEY_REQUIRED', 'this endpoint requires an Idempotency-Key header',
            'Send a unique key per logical request, e.g. Idempotency-Key: a UUID, and reuse it only to retry that request.');
    END IF;
    IF k = '' OR length(k) > 255 OR k ~ '[[:cntrl:]]' THEN
        PERFORM tenancy.raise_error('IDEMPOTENCY_KEY_INVALID',
            'the Idempotency-Key must be 1 to 255 characters without control characters');
    END IF;
    IF tenancy._claimed_key() IS NOT NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'this transaction has already claimed an idempotency key');
    END IF;

    -- Someone holds this key right now: answer at once, never wait.
    IF NOT pg_try_advisory_xact_lock(tenancy.idempotency_lock_class(), hashtext(tenant::text || '/' || k)) THEN
        PERFORM tenancy.raise_error('IDEMPOTENCY_KEY_IN_PROGRESS',
            'a request with this Idempotency-Key is still being processed',
            'Retry after it has finished; the retry gets its stored response.');
    END IF;

    fp := sha256(convert_to(scope || E'\n' || coalesce(request::text, 'null'), 'UTF8'));
    -- Fast path, one statement: a new key. (The advisory lock above means no
    -- one else can be inserting it; a conflict is a committed earlier use.)
    INSERT INTO tenancy.idempotency_keys (tenant_id, key, scope, fingerprint, expires_at)
    VALUES (tenant, k, scope, fp, now() + make_interval(secs => tenancy.idempotency_ttl_seconds()))
    ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING;
    IF FOUND THEN
        PERFORM tenancy._set_claimed_key(k);
        RETURN NULL;
    END IF;

    SELECT * INTO existing FROM tenancy.idempotency_keys x WHERE x.tenant_id = tenant AND x.key = k;
    IF existing.expires_at <= now() THEN
        -- Expired: the key counts as new.
        UPDATE tenancy.idempotency_keys x
        SET scope = idempotency_claim.scope, fingerprint = fp, state = 'in_progress', status = NULL, body = NULL,
            created_at = now(), completed_at = NULL,
            expires_at = now() + make_interval(secs => tenancy.idempotency_ttl_seconds())
        WHERE x.tenant_id = tenant AND x.key = k;
        PERFORM tenancy._set_claimed_key(k);
        RETURN NULL;
    END IF;
    IF existing.fingerprint <> fp THEN
        PERFORM tenancy.raise_error('IDEMPOTENCY_KEY_REUSED',
            format('this Idempotency-Key was already used for a different request (%s)',
                   CASE WHEN existing.scope = scope THEN 'other payload' ELSE 'endpoint ' || existing.scope END),
            'Use a new key for a new request.', tenancy.idempotency_conflict_status());
    END IF;
    PERFORM set_config('response.status', existing.status::text, true);
    -- Appended: pre_request may already have set rate-limit headers.
    PERFORM set_config('response.headers',
        (coalesce(nullif(current_setting('response.headers', true), ''), '[]')::jsonb
         || '[{"Idempotent-Replayed": "true"}]'::jsonb)::text, true);
    RETURN coalesce(existing.body, 'null'::jsonb);
END
$$;
COMMENT ON FUNCTION tenancy.idempotency_claim(text, jsonb, text) IS 'Claims the Idempotency-Key (header, or the key argument) for this transaction. NULL: go ahead. Otherwise the stored response to return as is (a replay). Errors: 400 key missing or invalid, 409 in flight, 422 reused for another request.';

-- Rate limits (src/sql/rate_limit.sql as released in 0.3.0).
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

-- Audit trail (src/sql/audit.sql as released in 0.3.0).
-- Audit trail (DESIGN §3/§4, issue #7): who changed what, kept for years.
--
-- tenancy.enable_audit(tbl) adds three AFTER ... FOR EACH STATEMENT triggers
-- with transition tables: one trigger call per statement writes all of its
-- rows with a single INSERT ... SELECT, so a 10,000-row import costs one
-- extra statement, not 10,000 trigger calls.
--
-- The log is append-only: no role is granted UPDATE, DELETE or TRUNCATE, and
-- a row trigger refuses UPDATE and DELETE even to its owner, except inside
-- tenancy.audit_maintain() (which sets tenancy.audit_maintenance for its own
-- duration only). Old entries leave only by whole monthly partitions.

CREATE SEQUENCE tenancy.audit_log_id_seq;

CREATE TABLE tenancy.audit_log (
    id           bigint      NOT NULL DEFAULT nextval('tenancy.audit_log_id_seq'),
    at           timestamptz NOT NULL DEFAULT now(),
    tenant_id    uuid        NOT NULL,
    actor        uuid,
    db_user      text        NOT NULL DEFAULT session_user,
    request_id   text,
    request_path text,
    action       text        NOT NULL,
    table_name   text        NOT NULL,
    row_key      jsonb       NOT NULL,
    old_values   jsonb,
    new_values   jsonb,
    CONSTRAINT audit_log_action CHECK (action IN ('INSERT', 'UPDATE', 'DELETE'))
) PARTITION BY RANGE (at);
ALTER SEQUENCE tenancy.audit_log_id_seq OWNED BY tenancy.audit_log.id;
COMMENT ON TABLE tenancy.audit_log IS 'Append-only audit trail of tables under tenancy.enable_audit(): one row per changed row. Monthly partitions (UTC) are created and dropped by tenancy.audit_maintain().';
COMMENT ON COLUMN tenancy.audit_log.actor IS 'The JWT sub of the request (tenancy.current_user_id()); NULL for SQL sessions and jobs.';
COMMENT ON COLUMN tenancy.audit_log.db_user IS 'The database login (session_user): an analyst, the job role, or PostgREST''s authenticator.';
COMMENT ON COLUMN tenancy.audit_log.request_id IS 'The X-Request-Id header of the HTTP request, when the client or a proxy sent one.';
COMMENT ON COLUMN tenancy.audit_log.old_values IS 'UPDATE: the changed columns'' old values; DELETE: the whole row.';
COMMENT ON COLUMN tenancy.audit_log.new_values IS 'UPDATE: the changed columns'' new values; INSERT: the whole row.';

-- Catches whatever no monthly partition covers yet, so no entry is ever
-- refused; audit_maintain() moves such rows into their month.
CREATE TABLE tenancy.audit_log_default PARTITION OF tenancy.audit_log DEFAULT;
-- Each partition gets its own (tenant_id, at) index, not one inherited from
-- a partitioned index on the parent: the parent belongs to the extension, so
-- pg_dump would restore an inherited index twice and fail.
CREATE INDEX audit_log_default_tenant_at ON tenancy.audit_log_default (tenant_id, at);
SELECT pg_catalog.pg_extension_config_dump('tenancy.audit_log_default', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.audit_log_id_seq', '');

ALTER TABLE tenancy.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.audit_log FORCE ROW LEVEL SECURITY;
-- Readers see their tenant's entries and need audit.read. There is no
-- INSERT, UPDATE or DELETE policy: only the audit trigger (running as the
-- extension's owner) writes.
CREATE POLICY audit_read ON tenancy.audit_log FOR SELECT
    USING (tenant_id = (SELECT tenancy.tenant_scope()) AND (SELECT tenancy.permits('audit', 'read')));

INSERT INTO tenancy.resources (name, actions) VALUES ('audit', ARRAY['read']);
SELECT pg_catalog.pg_extension_config_dump('tenancy.resources', 'WHERE name NOT IN (''roles'', ''reconciliation'', ''audit'')');

CREATE FUNCTION tenancy._audit_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF current_setting('tenancy.audit_maintenance') = 'on' THEN
        RETURN OLD;
    END IF;
    PERFORM tenancy.raise_error('PERMISSION_DENIED',
        format('tenancy.audit_log is append-only: entries cannot be %s', CASE TG_OP WHEN 'UPDATE' THEN 'updated' ELSE 'deleted' END),
        'Entries leave only by retention: tenancy.audit_maintain() drops whole months older than tenancy.audit_retention (days).');
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON tenancy.audit_log
    FOR EACH ROW EXECUTE FUNCTION tenancy._audit_append_only();

-- The audit trigger. Arguments: the tenant column, then the primary key
-- columns. Runs as the extension's owner (it writes the log no caller may
-- write); the actor comes from the context, the login from session_user.
CREATE FUNCTION tenancy._audit()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenant_col text := TG_ARGV[0];
    keys text[] := TG_ARGV[1:TG_NARGS - 1];
    headers text := nullif(current_setting('request.headers', true), '');
    request_id text;
    key_new text;
    key_old text;
    same_key text;
    cols constant text := 'tenant_id, actor, request_id, request_path, action, table_name, row_key, old_values, new_values';
BEGIN
    IF headers IS NOT NULL THEN
        request_id := left(headers::jsonb ->> 'x-request-id', 200);
    END IF;
    SELECT 'jsonb_build_object(' || string_agg(format('%L, n.%I', k, k), ', ') || ')',
           'jsonb_build_object(' || string_agg(format('%L, o.%I', k, k), ', ') || ')',
           string_agg(format('o.%I = n.%I', k, k), ' AND ')
    INTO key_new, key_old, same_key
    FROM unnest(keys) k;

    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO tenancy.audit_log (%s)
            SELECT n.%I, $1, $2, $3, ''INSERT'', $4, %s, NULL, to_jsonb(n) FROM new_rows n', cols, tenant_col, key_new)
        USING tenancy.current_user_id(), request_id, current_setting('request.path', true), TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('INSERT INTO tenancy.audit_log (%s)
            SELECT o.%I, $1, $2, $3, ''DELETE'', $4, %s, to_jsonb(o), NULL FROM old_rows o', cols, tenant_col, key_old)
        USING tenancy.current_user_id(), request_id, current_setting('request.path', true), TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    ELSE
        -- Old and new versions are paired by primary key; a row whose key
        -- changed appears unpaired, with its whole old or new version.
        EXECUTE format('INSERT INTO tenancy.audit_log (%1$s)
            SELECT coalesce(n.%2$I, o.%2$I), $1, $2, $3, ''UPDATE'', $4,
                   CASE WHEN n.%3$I IS NULL THEN %4$s ELSE %5$s END, d.old_values, d.new_values
            FROM old_rows o FULL JOIN new_rows n ON %6$s
            CROSS JOIN LATERAL (
                SELECT coalesce(jsonb_object_agg(x.key, x.value) FILTER (WHERE x.key IS NOT NULL), ''{}'') AS old_values,
                       coalesce(jsonb_object_agg(y.key, y.value) FILTER (WHERE y.key IS NOT NULL), ''{}'') AS new_values
                FROM jsonb_each(to_jsonb(o)) x FULL JOIN jsonb_each(to_jsonb(n)) y ON x.key = y.key
                WHERE x.value IS DISTINCT FROM y.value) d',
            cols, tenant_col, keys[1], key_old, key_new, same_key)
        USING tenancy.current_user_id(), request_id, current_setting('request.path', true), TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION tenancy.enable_audit(tbl regclass, tenant_column name DEFAULT 'tenant_id')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    args text;
    op text;
BEGIN
    IF tbl IS NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'enable_audit needs a table');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = tbl AND c.relkind = 'r') THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('%s is not a table', tbl),
            'Audit the table a view or partition belongs to.');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = tenant_column
                   AND a.atttypid = 'uuid'::regtype AND a.attnum > 0 AND NOT a.attisdropped) THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('%s has no uuid column "%s"', tbl, tenant_column),
            'Name the tenant column: SELECT tenancy.enable_audit(''my_table'', ''my_tenant_column'');');
    END IF;
    SELECT string_agg(quote_literal(a.attname), ', ' ORDER BY k.ord) INTO args
    FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, ord), pg_attribute a
    WHERE i.indrelid = tbl AND i.indisprimary AND a.attrelid = tbl AND a.attnum = k.attnum;
    IF args IS NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('%s has no primary key', tbl),
            'Audit entries name the changed row by its primary key: add one first.');
    END IF;
    args := quote_literal(tenant_column) || ', ' || args;
    FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'tenancy_audit_' || op, tbl);
        EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT EXECUTE FUNCTION tenancy._audit(%s)',
            'tenancy_audit_' || op, upper(op), tbl,
            CASE op WHEN 'insert' THEN 'NEW TABLE AS new_rows'
                    WHEN 'update' THEN 'OLD TABLE AS old_rows NEW TABLE AS new_rows'
                    ELSE 'OLD TABLE AS old_rows' END,
            args);
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenancy.enable_audit(regclass, name) IS 'Records every INSERT, UPDATE and DELETE on the table in tenancy.audit_log: tenant, actor (JWT sub), login, request id and path, primary key, changed columns with old and new values. Needs a primary key. Idempotent.';

CREATE FUNCTION tenancy.disable_audit(tbl regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    op text;
BEGIN
    FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'tenancy_audit_' || op, tbl);
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenancy.disable_audit(regclass) IS 'Stops auditing the table (its past entries stay in tenancy.audit_log).';

-- Retention without mass DELETEs: one partition per month (UTC). Creates
-- the partitions for this month and the next two, moves rows that landed in
-- the default partition into their month, and drops the months that ended
-- more than tenancy.audit_retention days ago. pg_cron runs it daily.
CREATE FUNCTION tenancy.audit_maintain()
RETURNS TABLE (action text, partition_name text, entries bigint)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET tenancy.audit_maintenance = on
AS $$
DECLARE
    first_day timestamptz;
    part text;
    moved bigint;
    cutoff timestamptz := now() - make_interval(days => current_setting('tenancy.audit_retention')::int);
    p record;
BEGIN
    FOR first_day IN
        SELECT m FROM generate_series(date_trunc('month', now(), 'UTC'), date_trunc('month', now(), 'UTC') + interval '2 months',
                                      interval '1 month') m
        UNION
        SELECT DISTINCT date_trunc('month', d.at, 'UTC') FROM tenancy.audit_log_default d
        ORDER BY 1
    LOOP
        part := 'audit_log_p' || to_char(first_day AT TIME ZONE 'UTC', 'YYYY_MM');
        CONTINUE WHEN to_regclass('tenancy.' || part) IS NOT NULL;
        EXECUTE format('CREATE TABLE tenancy.%I (LIKE tenancy.audit_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        EXECUTE format('CREATE INDEX %I ON tenancy.%I (tenant_id, at)', part || '_tenant_at', part);
        EXECUTE format('WITH gone AS (DELETE FROM tenancy.audit_log_default d WHERE d.at >= $1 AND d.at < $2 RETURNING d.*)
                        INSERT INTO tenancy.%I SELECT * FROM gone', part)
        USING first_day, first_day + interval '1 month';
        GET DIAGNOSTICS moved = ROW_COUNT;
        EXECUTE format('ALTER TABLE tenancy.audit_log ATTACH PARTITION tenancy.%I FOR VALUES FROM (%L) TO (%L)',
                       part, first_day, first_day + interval '1 month');
        action := 'created'; partition_name := 'tenancy.' || part; entries := moved;
        RETURN NEXT;
    END LOOP;

    FOR p IN
        SELECT c.relname, (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS upper_bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'tenancy.audit_log'::regclass AND c.relname <> 'audit_log_default'
        ORDER BY 1
    LOOP
        CONTINUE WHEN p.upper_bound > cutoff;
        EXECUTE format('SELECT count(*) FROM tenancy.%I', p.relname) INTO moved;
        EXECUTE format('DROP TABLE tenancy.%I', p.relname);
        action := 'dropped'; partition_name := 'tenancy.' || p.relname; entries := moved;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenancy.audit_maintain() IS 'Audit log partitions: creates this month''s and the next two (UTC), moves entries out of the default partition into their month, drops months that ended more than tenancy.audit_retention days ago. Returns what it did. Scheduled daily by pg_cron.';

-- Role and permission changes are audited from the start; so is the tenant
-- list itself (its id is the tenant).
SELECT tenancy.enable_audit('tenancy.tenants', 'id');
SELECT tenancy.enable_audit('tenancy.roles');
SELECT tenancy.enable_audit('tenancy.role_permissions');
SELECT tenancy.enable_audit('tenancy.user_roles');

-- Privileges, re-applied as a fresh install sets them (src/sql/privileges.sql).
-- Fail closed: nothing in the tenancy schema is executable by PUBLIC except
-- what row level security policies and API code must call.
REVOKE ALL ON ALL ROUTINES IN SCHEMA tenancy FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA tenancy FROM PUBLIC;
GRANT USAGE ON SCHEMA tenancy TO PUBLIC;

-- Called from policies and from API functions, running as the caller.
GRANT EXECUTE ON FUNCTION
    tenancy.current_tenant_id(),
    tenancy.current_user_id(),
    tenancy.tenant_scope(),
    tenancy.tenant_context_required(),
    tenancy.raise_error(text, text, text, integer, jsonb),
    tenancy.error_catalog(text),
    tenancy.version(),
    tenancy.has_permission(text, text),
    tenancy.require_permission(text, text),
    tenancy.permits(text, text),
    tenancy._permitted(text, text),
    tenancy.permission_denied(text, text),
    tenancy.current_grants(),
    tenancy.reconcile(regclass, regclass, jsonb),
    tenancy._reconcile(regclass, regclass, numeric, numeric, numeric, integer, integer, numeric, integer, boolean),
    tenancy.effective_reconcile_rules(jsonb),
    tenancy.explain_reasons(jsonb)
TO PUBLIC;
GRANT SELECT ON tenancy.resources TO PUBLIC;

-- Deliberately NOT granted to PUBLIC (grant them to your own roles):
--   tenancy.pre_request()          to the PostgREST API roles (anon, authenticated)
--   tenancy.set_tenant(text)       to analyst and job roles; never to API roles
--   create_tenant, suspend_tenant, resume_tenant, drop_tenant, add_member,
--   enable, disable, protect, unprotect, check
--                                  to the DBA / platform role
--   idempotency_claim, idempotency_complete
--                                  to the API role (RPCs call them)
--   purge_idempotency_keys, idempotency_stats
--                                  to the DBA / the pg_cron job's owner
--   set_reconcile_rules            to the API and analyst roles (it checks
--                                  reconciliation.manage itself)
--   for_each_tenant                to the DBA / the pg_cron job's role, with
--                                  _job_context and SELECT on tenancy.tenants
--   enable_audit, disable_audit, set_rate_limit, rate_limit_stats
--                                  to the DBA / platform role
--   audit_maintain                 to the audit maintenance role only (the
--                                  pg_cron job's); SELECT on tenancy.audit_log
--                                  to the API and analyst roles (row level
--                                  security shows a tenant's own entries to
--                                  holders of audit.read)
--   create_role, delete_role, grant_permission, revoke_permission,
--   assign_role, unassign_role, list_roles
--                                  to the API role (they check roles.manage
--                                  / roles.read themselves)
