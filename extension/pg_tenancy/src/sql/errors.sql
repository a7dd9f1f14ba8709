-- One error catalog for every error a user of the extension can hit.
--
-- A SQL caller (psql, a pg_cron job) gets the catalog's SQLSTATE with a plain
-- message and a hint naming the fix. Inside a PostgREST request (request.method
-- is set) the same error is raised with SQLSTATE 'PGRST' and a JSON message,
-- which PostgREST turns into the catalog's HTTP status and a JSON body whose
-- "code" is the catalog code, e.g. {"code":"TENANT_CONTEXT_REQUIRED", ...}.
--
--   code                     SQLSTATE  HTTP
--   TENANT_CONTEXT_REQUIRED  TN001     401   no tenant set for this transaction
--   TENANT_CLAIM_INVALID     TN002     401   JWT tenant_id missing or not a uuid
--   TOKEN_TYPE_INVALID       TN003     401   JWT type is not "access"
--   SUBJECT_CLAIM_INVALID    TN004     401   JWT sub missing or not a uuid
--   TENANT_NOT_FOUND         TN005     403   no such tenant (slug or id)
--   TENANT_SUSPENDED         TN006     403   tenant exists but is suspended
--   NOT_A_MEMBER             TN007     403   user holds no role in the tenant
--   IDEMPOTENCY_KEY_REQUIRED TN010     400   the endpoint needs an Idempotency-Key
--   IDEMPOTENCY_KEY_INVALID  TN011     400   empty, > 255 chars or control characters
--   IDEMPOTENCY_KEY_IN_PROGRESS TN012  409   the same key is being processed now
--   IDEMPOTENCY_KEY_REUSED   TN013     422   same key, other request (GUC: or 409)
--   INVALID_ARGUMENT         22023     400   bad input to a function
--   NOT_FOUND                P0002     404   the named role (or object) does not exist
--   ALREADY_EXISTS           23505     409   a unique name is taken
--   PERMISSION_DENIED        42501     403   the caller lacks a permission
--   ALLOCATION_EXCEEDED      TN020     409   a match would allocate more than an
--                                            invoice's open or a payment's unmatched amount
--   RATE_LIMITED             TN030     429   the tenant's or user's request budget is spent
--   RATE_LIMIT_UNAVAILABLE   TN031     503   the rate-limit table is full

CREATE FUNCTION tenancy.error_catalog(
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
