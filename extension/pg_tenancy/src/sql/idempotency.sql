-- Idempotency keys (draft-ietf-httpapi-idempotency-key-header), inside the
-- transaction of the effect they protect.
--
-- An RPC opts in with one call at its start:
--
--     replay := tenancy.idempotency_claim('import_bank_transactions', $1);
--     IF replay IS NOT NULL THEN RETURN replay; END IF;
--     ... the effect ...
--     RETURN tenancy.idempotency_complete(result, 201);
--
-- The claim, the effect and the stored response commit together, so a
-- rollback (an error, a killed backend, a crash) leaves no key behind and the
-- client may simply retry. While a request holds a key, a transaction-level
-- advisory lock marks it in flight: a second request with the same key gets
-- 409 at once instead of waiting on a row lock.

CREATE TABLE tenancy.idempotency_keys (
    tenant_id    uuid        NOT NULL REFERENCES tenancy.tenants (id) ON DELETE CASCADE,
    key          text        NOT NULL,
    scope        text        NOT NULL,
    fingerprint  bytea       NOT NULL,
    state        text        NOT NULL DEFAULT 'in_progress',
    status       integer,
    body         jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key),
    CONSTRAINT idempotency_keys_state CHECK (state IN ('in_progress', 'completed'))
);
CREATE INDEX idempotency_keys_expires ON tenancy.idempotency_keys (expires_at);
COMMENT ON TABLE tenancy.idempotency_keys IS 'Stored responses per (tenant, Idempotency-Key); replayed until expires_at.';
SELECT pg_catalog.pg_extension_config_dump('tenancy.idempotency_keys', '');

CREATE TABLE tenancy.idempotency_purges (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ran_at   timestamptz NOT NULL,
    deleted  bigint      NOT NULL,
    duration interval    NOT NULL
);
COMMENT ON TABLE tenancy.idempotency_purges IS 'The last purges of expired idempotency keys (100 are kept).';

-- The advisory lock class of idempotency keys ('idem' in ASCII).
CREATE FUNCTION tenancy.idempotency_lock_class()
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 1768187245 $$;

CREATE FUNCTION tenancy.idempotency_claim(scope text, request jsonb, key text DEFAULT NULL)
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

CREATE FUNCTION tenancy.idempotency_complete(body jsonb, status integer DEFAULT 200)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text := tenancy._claimed_key();
BEGIN
    IF k IS NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'no idempotency key was claimed in this transaction',
            'Call tenancy.idempotency_claim() at the start of the request.');
    END IF;
    IF status IS NULL OR status NOT BETWEEN 200 AND 299 THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'only a 2xx response can be stored for replay');
    END IF;
    UPDATE tenancy.idempotency_keys x
    SET state = 'completed', status = idempotency_complete.status, body = idempotency_complete.body, completed_at = now()
    WHERE x.tenant_id = tenancy.tenant_scope() AND x.key = k;
    PERFORM set_config('response.status', status::text, true);
    RETURN body;
END
$$;
COMMENT ON FUNCTION tenancy.idempotency_complete(jsonb, integer) IS 'Stores the response of the claimed key (same transaction as the effect) and returns the body.';

-- Deletes expired keys in small batches, committing between them, so it never
-- holds many locks nor blocks requests (SKIP LOCKED). Bounded per run.
-- No SET search_path here: Postgres forbids COMMIT in a procedure with SET
-- clauses. It runs as its caller (never SECURITY DEFINER) and names every
-- object with its schema.
CREATE PROCEDURE tenancy.purge_idempotency_keys(
    batch_size integer DEFAULT 1000,
    max_batches integer DEFAULT 1000,
    pause interval DEFAULT '10 milliseconds'
)
LANGUAGE plpgsql
AS $$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    total bigint := 0;
    n integer;
    batches integer := 0;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 OR max_batches IS NULL OR max_batches < 1 THEN
        RAISE EXCEPTION 'batch_size and max_batches must be positive' USING ERRCODE = '22023';
    END IF;
    IF pause IS NULL OR pause < interval '0' OR pause > interval '10 seconds' THEN
        RAISE EXCEPTION 'pause must be between 0 and 10 seconds' USING ERRCODE = '22023';
    END IF;
    LOOP
        DELETE FROM tenancy.idempotency_keys k
        USING (SELECT x.tenant_id, x.key FROM tenancy.idempotency_keys x
               WHERE x.expires_at <= pg_catalog.now() LIMIT batch_size FOR UPDATE SKIP LOCKED) e
        WHERE k.tenant_id = e.tenant_id AND k.key = e.key;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
        batches := batches + 1;
        COMMIT;
        EXIT WHEN n < batch_size OR batches >= max_batches;
        -- Leave the CPU to requests between batches.
        PERFORM pg_catalog.pg_sleep(pg_catalog.date_part('epoch', pause));
    END LOOP;
    INSERT INTO tenancy.idempotency_purges (ran_at, deleted, duration)
    VALUES (started, total, pg_catalog.clock_timestamp() - started);
    DELETE FROM tenancy.idempotency_purges WHERE id <= (SELECT pg_catalog.max(id) - 100 FROM tenancy.idempotency_purges);
    COMMIT;
END
$$;
COMMENT ON PROCEDURE tenancy.purge_idempotency_keys(integer, integer, interval) IS 'Deletes expired idempotency keys in batches (SKIP LOCKED, a commit and a pause per batch, at most max_batches per run). Scheduled by pg_cron.';

CREATE FUNCTION tenancy.idempotency_stats(
    OUT live_keys bigint,
    OUT in_progress bigint,
    OUT oldest_in_progress interval,
    OUT expired_backlog bigint,
    OUT last_purge_at timestamptz,
    OUT last_purge_deleted bigint,
    OUT last_purge_duration interval
)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT
        (SELECT count(*) FROM tenancy.idempotency_keys WHERE expires_at > now()),
        (SELECT count(*) FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = tenancy.idempotency_lock_class()),
        (SELECT now() - min(a.xact_start) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = tenancy.idempotency_lock_class()),
        (SELECT count(*) FROM tenancy.idempotency_keys WHERE expires_at <= now()),
        p.ran_at, p.deleted, p.duration
    FROM (SELECT NULL) AS one
    LEFT JOIN LATERAL (SELECT * FROM tenancy.idempotency_purges ORDER BY id DESC LIMIT 1) p ON true
$$;
COMMENT ON FUNCTION tenancy.idempotency_stats() IS 'Live keys, keys in flight and the oldest one''s age, the expired backlog, and the last purge''s row count and duration.';
