-- Audit trail (README "Audit trail"): who changed what, kept for years.
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
    -- Added in 0.5.0, last, where the upgrade adds it.
    acting_as    text,
    CONSTRAINT audit_log_action CHECK (action IN ('INSERT', 'UPDATE', 'DELETE'))
) PARTITION BY RANGE (at);
ALTER SEQUENCE tenancy.audit_log_id_seq OWNED BY tenancy.audit_log.id;
COMMENT ON TABLE tenancy.audit_log IS 'Append-only audit trail of tables under tenancy.enable_audit(): one row per changed row. Monthly partitions (UTC) are created and dropped by tenancy.audit_maintain().';
COMMENT ON COLUMN tenancy.audit_log.actor IS 'The JWT sub of the request (tenancy.current_user_id()); NULL for SQL sessions and jobs.';
COMMENT ON COLUMN tenancy.audit_log.db_user IS 'The database login (session_user): an analyst, the job role, or PostgREST''s authenticator.';
COMMENT ON COLUMN tenancy.audit_log.request_id IS 'The X-Request-Id header of the HTTP request, when the client or a proxy sent one.';
COMMENT ON COLUMN tenancy.audit_log.old_values IS 'UPDATE: the changed columns'' old values; DELETE: the whole row.';
COMMENT ON COLUMN tenancy.audit_log.new_values IS 'UPDATE: the changed columns'' new values; INSERT: the whole row.';
COMMENT ON COLUMN tenancy.audit_log.acting_as IS 'For a database login bound to the tenant (tenancy.grant_sql_access): the RBAC role it acted as; db_user names the login.';

-- Catches whatever no monthly partition covers yet, so no entry is ever
-- refused; audit_maintain() moves such rows into their month.
CREATE TABLE tenancy.audit_log_default PARTITION OF tenancy.audit_log DEFAULT;
-- Entries have no key (they are only appended), yet Citus moves a tenant's
-- shards with logical replication, which needs a replica identity on every
-- table of the group it moves. FULL costs an INSERT nothing; the log and
-- each of its partitions have it (audit_maintain() gives new months theirs).
ALTER TABLE tenancy.audit_log REPLICA IDENTITY FULL;
ALTER TABLE tenancy.audit_log_default REPLICA IDENTITY FULL;
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
    USING (tenant_id = (SELECT coalesce(tenancy.current_tenant_id(), tenancy.tenant_context_required()))
           AND (SELECT tenancy._permitted('audit', 'read') OR tenancy.permission_denied('audit', 'read')));

INSERT INTO tenancy.resources (name, actions) VALUES ('audit', ARRAY['read']);
SELECT pg_catalog.pg_extension_config_dump('tenancy.resources', 'WHERE name NOT IN (''roles'', ''reconciliation'', ''audit'')');

CREATE FUNCTION tenancy._audit_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF current_setting('tenancy.audit_maintenance') = 'on' THEN
        RETURN CASE TG_OP WHEN 'UPDATE' THEN NEW ELSE OLD END;
    END IF;
    PERFORM tenancy.raise_error('PERMISSION_DENIED',
        format('tenancy.audit_log is append-only: entries cannot be %s', CASE TG_OP WHEN 'UPDATE' THEN 'updated' ELSE 'deleted' END),
        'Entries leave only by retention: tenancy.audit_maintain() drops whole months older than tenancy.audit_retention (days).');
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON tenancy.audit_log
    FOR EACH ROW EXECUTE FUNCTION tenancy._audit_append_only();

-- On Citus, row triggers run on the shards (and on every node's copy of a
-- reference table), where TG_TABLE_NAME is the shard's name. This names the
-- Citus table a shard (given as schema.name, unquoted, as the audit log
-- keeps names) belongs to, unquoted too, and how it is distributed: 'r' a
-- reference table, 'h' sharded by a column, else Citus' partmethod; or
-- nothing for an ordinary table (or without Citus). By name, from Citus'
-- metadata alone: the shard need not be on this node, and Citus hides
-- shards from queries of pg_class in clients' sessions.
CREATE FUNCTION tenancy._citus_table_of(shard text, OUT logical text, OUT method "char")
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF shard !~ '_[0-9]{1,18}$' OR to_regclass('pg_catalog.pg_dist_shard') IS NULL THEN
        RETURN;
    END IF;
    EXECUTE 'SELECT n.nspname || ''.'' || l.relname,
                    CASE WHEN p.partmethod = ''n'' AND p.repmodel = ''t'' THEN ''r'' ELSE p.partmethod END
             FROM pg_catalog.pg_dist_shard s
             JOIN pg_catalog.pg_dist_partition p ON p.logicalrelid = s.logicalrelid
             JOIN pg_catalog.pg_class l ON l.oid = s.logicalrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = l.relnamespace
             WHERE s.shardid = substring($1 FROM ''_([0-9]{1,18})$'')::bigint
               AND array_to_string(pg_catalog.parse_ident(pg_catalog.shard_name(s.logicalrelid, s.shardid, false)), ''.'') = $1'
        INTO logical, method USING shard;
END
$$;

-- On Citus: whether this node holds the shard of the audit log a tenant's
-- entries go to. A change to a reference table runs its triggers on every
-- node's copy; exactly one node holds that shard, so the entry is written
-- once, and locally (a trigger on a shard may not reach other nodes).
CREATE FUNCTION tenancy._audit_shard_here(tenant uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM pg_dist_placement p, pg_dist_local_group g
                   WHERE p.shardid = get_shard_id_for_distribution_column('tenancy.audit_log', tenant)
                     AND p.groupid = g.groupid);
END
$$;

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
    key_new text;
    key_old text;
    same_key text;
    cols constant text := 'tenant_id, actor, request_id, request_path, action, table_name, row_key, old_values, new_values, acting_as, db_user';
    acting text := tenancy._acting_as();
    -- Login, request path and id (on a Citus worker, the coordinator's).
    source constant text[] := tenancy._request_source();
    db_user text := coalesce(source[1], session_user);
    request_path text := source[2];
    request_id text := source[3];
    tbl text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    -- Without Citus none of its helpers is called (each call costs).
    citus constant boolean := to_regclass('pg_catalog.pg_dist_shard') IS NOT NULL;
    logical text;
    method "char";
    chunk jsonb;
    entries text;
BEGIN
    IF citus THEN
        SELECT c.logical, c.method INTO logical, method FROM tenancy._citus_table_of(tbl) c;
        tbl := coalesce(logical, tbl);
    END IF;
    SELECT 'jsonb_build_object(' || string_agg(format('%L, n.%I', k, k), ', ') || ')',
           'jsonb_build_object(' || string_agg(format('%L, o.%I', k, k), ', ') || ')',
           string_agg(format('o.%I = n.%I', k, k), ' AND ')
    INTO key_new, key_old, same_key
    FROM unnest(keys) k;

    -- The entries, in the order of cols.
    IF TG_OP = 'INSERT' THEN
        entries := format('SELECT n.%I, $1, $2, $3, ''INSERT'', $4, %s, NULL::jsonb, to_jsonb(n), $5, $6 FROM new_rows n',
                          tenant_col, key_new);
    ELSIF TG_OP = 'DELETE' THEN
        entries := format('SELECT o.%I, $1, $2, $3, ''DELETE'', $4, %s, to_jsonb(o), NULL::jsonb, $5, $6 FROM old_rows o',
                          tenant_col, key_old);
    ELSE
        -- Old and new versions are paired by primary key; a row whose key
        -- changed appears unpaired, with its whole old or new version.
        entries := format('SELECT coalesce(n.%1$I, o.%1$I), $1, $2, $3, ''UPDATE'', $4,
                   CASE WHEN n.%2$I IS NULL THEN %3$s ELSE %4$s END, d.old_values, d.new_values, $5, $6
            FROM old_rows o FULL JOIN new_rows n ON %5$s
            CROSS JOIN LATERAL (
                SELECT coalesce(jsonb_object_agg(x.key, x.value) FILTER (WHERE x.key IS NOT NULL), ''{}'') AS old_values,
                       coalesce(jsonb_object_agg(y.key, y.value) FILTER (WHERE y.key IS NOT NULL), ''{}'') AS new_values
                FROM jsonb_each(to_jsonb(o)) x FULL JOIN jsonb_each(to_jsonb(n)) y ON x.key = y.key
                WHERE x.value IS DISTINCT FROM y.value) d',
            tenant_col, keys[1], key_old, key_new, same_key);
    END IF;

    IF NOT citus OR NOT tenancy._distributed('tenancy.audit_log') THEN
        IF citus AND method = 'r' THEN
            -- (Its own statement: Citus' catalogs exist only with Citus.)
            IF EXISTS (SELECT 1 FROM pg_dist_local_group g WHERE g.groupid <> 0) THEN
                -- A worker's copy of a reference table, before scale_out()
                -- shards the log (0.8.0 upgraded): the coordinator records it.
                RETURN NULL;
            END IF;
        END IF;
        IF citus AND to_regclass('tenancy._audit_log_stash') IS NOT NULL THEN
            -- This worker's entries were set aside to go into the sharded
            -- log, which is not there yet: an entry written now would be
            -- left behind, so nothing is written.
            RAISE EXCEPTION 'tenancy.audit_log is being sharded (tenancy.scale_out() is running, or failed), so audited tables cannot be written on this node'
                USING ERRCODE = 'object_in_use',
                      HINT = 'Try again when scale_out() has finished; if it failed, run SELECT * FROM tenancy.scale_out(); again on the coordinator.';
        END IF;
        EXECUTE format('INSERT INTO tenancy.audit_log (%s) %s', cols, entries)
        USING tenancy.current_user_id(), request_id, request_path, tbl, acting, db_user;
        RETURN NULL;
    END IF;
    -- Citus (README: Scale out on Citus): the log is sharded by tenant,
    -- colocated with the tenant's tables, so the entries of a shard's rows
    -- go to a shard on the same node. Citus cannot read a trigger's
    -- transition tables in a distributed INSERT ... SELECT, so the entries
    -- are gathered first, 10,000 at a time (a jsonb value holds at most
    -- 256 MB); a reference table's copy on this node records only the
    -- tenants whose log is here (every node runs the trigger).
    FOR chunk IN EXECUTE format(
        'SELECT jsonb_agg(to_jsonb(e)) FROM (SELECT e.*, (row_number() OVER () - 1) / 10000 AS chunk
                                             FROM (%s) e(%s) WHERE %s) e GROUP BY e.chunk',
        entries, cols, CASE WHEN method = 'r' THEN 'tenancy._audit_shard_here(e.tenant_id)' ELSE 'true' END)
    USING tenancy.current_user_id(), request_id, request_path, tbl, acting, db_user LOOP
        EXECUTE format('INSERT INTO tenancy.audit_log (%1$s) SELECT %1$s FROM jsonb_populate_recordset(NULL::tenancy.audit_log, $1)', cols)
        USING chunk;
    END LOOP;
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
    IF tenancy._distributed(tbl) THEN
        -- Citus runs the triggers on the shards, which write to the shard
        -- of the (sharded) log on the same node (tenancy._audit). The
        -- setting stays on until the transaction ends.
        SET LOCAL citus.enable_unsafe_triggers = on;
    END IF;
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
    IF tenancy._distributed(tbl) THEN
        SET LOCAL citus.enable_unsafe_triggers = on;
    END IF;
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
SET lock_timeout = '1s'
AS $$
DECLARE
    first_day timestamptz;
    part text;
    moved bigint;
    cutoff timestamptz := now() - make_interval(days => current_setting('tenancy.audit_retention')::int);
    months timestamptz[];
    old_parts text[];
    attempt int := 0;
    stray boolean;
BEGIN
    -- One maintainer at a time. ONLY: the partitions are not locked, and this
    -- mode lets every reader and writer of the log through.
    LOOP
        BEGIN
            LOCK TABLE ONLY tenancy.audit_log IN SHARE UPDATE EXCLUSIVE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            attempt := attempt + 1;
            IF attempt >= 30 THEN
                RAISE EXCEPTION 'tenancy.audit_maintain is already running in another session'
                    USING ERRCODE = 'lock_not_available', HINT = 'Nothing was changed. Run it again once the other call has finished.';
            END IF;
        END;
    END LOOP;

    IF tenancy._distributed('tenancy.audit_log') THEN
        -- The workers' safety copies of a 0.8.0 log, once it is sharded.
        PERFORM run_command_on_workers('DROP TABLE IF EXISTS tenancy._audit_log_stash');
    END IF;

    -- What there is to do: months that have no partition yet (this one, the
    -- next two, and any month entries in the default partition belong to),
    -- and months that ended before the retention cutoff.
    SELECT coalesce(array_agg(m ORDER BY m), '{}') INTO months
    FROM (
        SELECT m FROM generate_series(date_trunc('month', now(), 'UTC'), date_trunc('month', now(), 'UTC') + interval '2 months',
                                      interval '1 month') m
        UNION
        SELECT DISTINCT date_trunc('month', d.at, 'UTC') FROM tenancy.audit_log_default d
    ) wanted
    WHERE to_regclass('tenancy.audit_log_p' || to_char(m AT TIME ZONE 'UTC', 'YYYY_MM')) IS NULL;
    SELECT coalesce(array_agg(c.relname::text ORDER BY c.relname), '{}') INTO old_parts
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'tenancy.audit_log'::regclass AND c.relname <> 'audit_log_default'
      AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz <= cutoff;
    IF months = '{}' AND old_parts = '{}' THEN
        RETURN;
    END IF;

    -- Attaching and dropping partitions needs the whole log to itself. Take
    -- that lock first, parent before partitions as every reader and writer
    -- does, rather than one partition at a time midway: that order could
    -- deadlock with a transaction that had written an entry and then read
    -- the log. Each attempt waits at most lock_timeout, so a long reader makes
    -- audited writes queue behind this job for a second at a time, not for as
    -- long as the reader runs.
    attempt := 0;
    LOOP
        BEGIN
            IF tenancy._distributed('tenancy.audit_log') THEN
                -- On Citus the lock is taken on the workers too, where this
                -- function's lock_timeout does not reach: it would wait there
                -- as long as a writer stays open, and a writer that then read
                -- the log would be cancelled as a distributed deadlock. So it
                -- does not queue at all, and tries again a second later.
                LOCK TABLE tenancy.audit_log IN ACCESS EXCLUSIVE MODE NOWAIT;
            ELSE
                LOCK TABLE tenancy.audit_log IN ACCESS EXCLUSIVE MODE;
            END IF;
            EXIT;
        EXCEPTION WHEN lock_not_available OR internal_error THEN
            -- Citus reports a worker's lock_not_available as an internal
            -- error of the connection (after a warning that names the lock).
            IF SQLSTATE = 'XX000' AND SQLERRM NOT LIKE 'failure on connection marked as essential:%' THEN
                RAISE;
            END IF;
            attempt := attempt + 1;
            IF attempt >= 30 THEN
                RAISE EXCEPTION 'tenancy.audit_log stayed in use: audit_maintain gave up after % tries', attempt
                    USING ERRCODE = 'lock_not_available',
                          HINT = 'Nothing was changed. Long transactions reading or writing audited tables hold the log; the next run tries again.';
            END IF;
            PERFORM pg_sleep(1);
        END;
    END LOOP;

    -- Entries that wait in the default partition move to their month while
    -- it is detached: without the log's append-only trigger, which would
    -- also stop this function's own deletes on Citus' shards (a setting of
    -- this function does not reach them).
    IF tenancy._distributed('tenancy.audit_log') THEN
        -- Several statements over all shards, then DDL, in one transaction.
        PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    stray := EXISTS (SELECT 1 FROM tenancy.audit_log_default);
    IF stray THEN
        ALTER TABLE tenancy.audit_log DETACH PARTITION tenancy.audit_log_default;
    END IF;
    FOREACH first_day IN ARRAY months LOOP
        part := 'audit_log_p' || to_char(first_day AT TIME ZONE 'UTC', 'YYYY_MM');
        EXECUTE format('CREATE TABLE tenancy.%I (LIKE tenancy.audit_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        EXECUTE format('CREATE INDEX %I ON tenancy.%I (tenant_id, at)', part || '_tenant_at', part);
        EXECUTE format('ALTER TABLE tenancy.%I REPLICA IDENTITY FULL', part);
        -- Attached while empty: on Citus that makes it a sharded table
        -- right away, and the entries go from shard to shard.
        EXECUTE format('ALTER TABLE tenancy.audit_log ATTACH PARTITION tenancy.%I FOR VALUES FROM (%L) TO (%L)',
                       part, first_day, first_day + interval '1 month');
        moved := 0;
        IF stray THEN
            EXECUTE format('INSERT INTO tenancy.%I SELECT * FROM tenancy.audit_log_default d WHERE d.at >= $1 AND d.at < $2', part)
            USING first_day, first_day + interval '1 month';
            GET DIAGNOSTICS moved = ROW_COUNT;
            DELETE FROM tenancy.audit_log_default d WHERE d.at >= first_day AND d.at < first_day + interval '1 month';
        END IF;
        action := 'created'; partition_name := 'tenancy.' || part; entries := moved;
        RETURN NEXT;
        -- A month moved out of the default partition may itself be past
        -- retention: it is dropped below with the others.
        IF first_day + interval '1 month' <= cutoff THEN
            old_parts := old_parts || part;
        END IF;
    END LOOP;
    IF stray THEN
        ALTER TABLE tenancy.audit_log ATTACH PARTITION tenancy.audit_log_default DEFAULT;
    END IF;

    FOREACH part IN ARRAY old_parts LOOP
        EXECUTE format('SELECT count(*) FROM tenancy.%I', part) INTO moved;
        EXECUTE format('DROP TABLE tenancy.%I', part);
        action := 'dropped'; partition_name := 'tenancy.' || part; entries := moved;
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
