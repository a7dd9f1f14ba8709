-- pg_tenancy 0.8.0 -> 0.9.0
--
-- On Citus, the audit log is sharded by tenant like the tables it records,
-- and an entry written on a worker says what it says on one node.
--
-- Why: until 0.8.0 a row trigger on a shard wrote its entries into the
-- audit log of the worker that holds the shard. The coordinator's log (so
-- GET /audit_log, and an analyst's SELECT through the coordinator) never
-- showed them. They named the shard (ledger.invoices_102041) instead of the
-- table, the worker connection's role instead of the login (db_user), and
-- no request path or id. Every node recorded its own copy of each change to
-- a reference table, and scale_out() recorded an INSERT for every row it
-- copied into shards. What changes:
--
-- 1. tenancy._audit
--    - names the Citus table a shard belongs to (tenancy._citus_table_of);
--    - on a worker, takes the login, request path and request id from the
--      signed context line (tenancy._request_source; the line's format is
--      now v3, so every node must run 0.9.0 before the cluster is used);
--    - when the log is sharded, gathers the entries first and inserts them
--      in one statement (Citus cannot read a trigger's transition tables in
--      a distributed INSERT ... SELECT);
--    - on a node's copy of a reference table, records only the tenants whose
--      log shard is on that node (tenancy._audit_shard_here): one entry per
--      change; before the log is sharded, only the coordinator records such
--      a change;
--    - writes a big statement's entries 10,000 at a time (a jsonb value
--      holds at most 256 MB);
--    - refuses to write on a worker whose entries are set aside for the
--      sharded log that is not there yet (scale_out() running or failed):
--      an entry written then would be left behind.
--    Without Citus it writes as before and calls none of the above.
-- 2. tenancy.scale_out() also shards tenancy.audit_log by tenant_id,
--    colocated with the tenant tables, and moves what 0.8.0 left behind
--    into it (tenancy._distribute_audit_log; its comment says how). A Citus
--    deployment of 0.8.0 runs SELECT * FROM tenancy.scale_out(); again after
--    ALTER EXTENSION pg_tenancy UPDATE on every node; tenancy.check() warns
--    until then.
-- 3. scale_out() and tenancy.distribute() switch a table's audit trigger off
--    while Citus copies its rows into new shards (tenancy._audit_copying).
-- 4. scale_out() called a second time no longer hangs: once every shared
--    table is a reference table it leaves their foreign keys alone (a
--    dropped key reached the workers twice, and the second waited for the
--    first, which could only commit after it).
-- 5. The log's append-only trigger lets tenancy.audit_maintenance update an
--    entry (it returned the old row, which left the entry unchanged); the
--    move in 2 renames entries so.
-- 6. tenancy.audit_maintain() moves entries waiting in the default partition
--    while it is detached, instead of deleting them under a setting that
--    does not reach Citus' shards (whose trigger refused the move); a new
--    month's partition is attached before entries go into it. On Citus it
--    takes the log's lock with NOWAIT and tries again a second later: its
--    lock_timeout does not reach the workers, where it would wait for as
--    long as a writer stayed open.
-- 7. tenancy.check() reports a function distributed by an argument that is
--    not STRICT or returns a set: a call with NULL for that argument crashes
--    the Citus 13.2 node that plans it.
-- ---------------------------------------------------------------------------

CREATE FUNCTION tenancy."_request_source"() RETURNS TEXT[]
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'request_source_wrapper';

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

CREATE OR REPLACE FUNCTION tenancy._audit_append_only()
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

CREATE OR REPLACE FUNCTION tenancy._audit()
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

CREATE OR REPLACE FUNCTION tenancy.enable_audit(tbl regclass, tenant_column name DEFAULT 'tenant_id')
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

CREATE OR REPLACE FUNCTION tenancy.audit_maintain()
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

CREATE FUNCTION tenancy._audit_copying(tbl regclass, copying boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = tbl AND t.tgname = 'tenancy_audit_insert') THEN
        EXECUTE format('ALTER TABLE %s %s TRIGGER tenancy_audit_insert', tbl, CASE WHEN copying THEN 'DISABLE' ELSE 'ENABLE' END);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION tenancy.distribute(tbl regclass, col name DEFAULT 'tenant_id')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad text;
BEGIN
    PERFORM tenancy._require_citus();
    IF tbl IS NULL OR col IS NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'tenancy.distribute needs a table and a column name');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = tbl AND p.polname = 'tenant_isolation') THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('%s is not tenant-scoped', tbl),
            format('Run SELECT tenancy.enable(%L); first.', tbl::text));
    END IF;
    IF tenancy._distributed(tbl) THEN
        RETURN;
    END IF;
    IF NOT tenancy._distributed('tenancy.tenants', 'n') THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'the extension''s own tables are not distributed yet',
            'Run SELECT * FROM tenancy.scale_out(); once: it distributes every tenant-scoped table.');
    END IF;
    -- Citus' rule, said up front: every key must contain the tenant column.
    SELECT k.conname INTO bad
    FROM pg_constraint k
    WHERE k.conrelid = tbl AND k.contype IN ('p', 'u', 'x')
      AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                      WHERE a.attrelid = tbl AND a.attname = col AND a.attnum = ANY (k.conkey))
    LIMIT 1;
    IF bad IS NOT NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT',
            format('key %I of %s does not contain the tenant column %I', bad, tbl, col),
            format('Make every primary key and unique constraint lead with %I, e.g. PRIMARY KEY (%I, id).', col, col));
    END IF;

    -- The policies in the form Citus accepts, before Citus sees them.
    PERFORM tenancy._write_policies(tbl, col, tenancy._rbac_resource(tbl), true);

    -- Row triggers (derived columns, audit) run on the shards.
    SET LOCAL citus.enable_unsafe_triggers = on;
    -- Tenant tables share Citus' default colocation group: one tenant's
    -- rows of every such table sit on the same node.
    PERFORM tenancy._audit_copying(tbl, true);
    PERFORM create_distributed_table(tbl, col::text, colocate_with => 'default');
    PERFORM tenancy._audit_copying(tbl, false);
END
$$;

CREATE FUNCTION tenancy._distribute_audit_log()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET tenancy.audit_maintenance = on
AS $$
DECLARE
    failed text;
    cols constant text := 'id, at, tenant_id, actor, db_user, request_id, request_path, action, table_name, row_key, old_values, new_values, acting_as';
    w record;
    after bigint;
    got record;
BEGIN
    SELECT string_agg(format('%s:%s: %s', r.nodename, r.nodeport, r.result), '; ') INTO failed
    FROM run_command_on_workers(format($cmd$
        SET citus.enable_ddl_propagation TO off;
        SET lock_timeout = '10s';
        CREATE TABLE IF NOT EXISTS tenancy._audit_log_stash AS SELECT %1$s FROM tenancy.audit_log WITH NO DATA;
        INSERT INTO tenancy._audit_log_stash (%1$s)
            SELECT %1$s FROM tenancy.audit_log e
            WHERE (tenancy._citus_table_of(e.table_name)).method IS DISTINCT FROM 'r';
        TRUNCATE tenancy.audit_log;
        DO $do$
        DECLARE p regclass;
        BEGIN
            FOR p IN SELECT i.inhrelid::regclass FROM pg_catalog.pg_inherits i
                     WHERE i.inhparent = 'tenancy.audit_log'::regclass
                       AND i.inhrelid <> 'tenancy.audit_log_default'::regclass LOOP
                EXECUTE format('DROP TABLE %%s', p);
            END LOOP;
        END
        $do$;
        $cmd$, cols)) r
    WHERE NOT r.success;
    IF failed IS NOT NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('a worker could not set its audit entries aside: %s', failed),
            'Nothing was distributed. Check that every worker runs the same pg_tenancy version, then run tenancy.scale_out() again.');
    END IF;

    FOR w IN SELECT n.nodename, n.nodeport FROM pg_dist_node n
             WHERE n.groupid <> 0 AND n.noderole = 'primary' AND n.isactive ORDER BY n.nodeid LOOP
        after := NULL;
        LOOP
            SELECT r.success, r.result INTO got
            FROM master_run_on_worker(ARRAY[w.nodename], ARRAY[w.nodeport], ARRAY[format(
                'SELECT json_agg(s ORDER BY s.id) FROM (SELECT * FROM tenancy._audit_log_stash
                 WHERE id > %s ORDER BY id LIMIT 10000) s', coalesce(after, -9223372036854775808))], false) r;
            IF NOT got.success THEN
                PERFORM tenancy.raise_error('INVALID_ARGUMENT',
                    format('reading the audit entries of %s:%s failed: %s', w.nodename, w.nodeport, got.result),
                    'Nothing was distributed; the worker''s entries wait in tenancy._audit_log_stash. Run tenancy.scale_out() again once it is reachable.');
            END IF;
            EXIT WHEN coalesce(got.result, '') = '';
            EXECUTE format('INSERT INTO tenancy.audit_log (%1$s) SELECT %1$s FROM json_populate_recordset(NULL::tenancy.audit_log, $1::json)', cols)
            USING got.result;
            SELECT max((x->>'id')::bigint) INTO after FROM json_array_elements(got.result::json) x;
        END LOOP;
    END LOOP;

    -- A copy is a shard-named INSERT right after an entry for the same row
    -- written before the table was sharded (named by the table) that left
    -- the row in place (INSERT or UPDATE).
    DELETE FROM tenancy.audit_log d
    USING (SELECT y.t, y.c FROM (
               SELECT e.tableoid AS t, e.ctid AS c, e.action, s.logical IS NOT NULL AS on_shard,
                      lag(e.action) OVER w AS before, lag(s.logical IS NOT NULL) OVER w AS before_on_shard
               FROM tenancy.audit_log e CROSS JOIN LATERAL tenancy._citus_table_of(e.table_name) s
               WINDOW w AS (PARTITION BY e.tenant_id, coalesce(s.logical, e.table_name), e.row_key ORDER BY e.at, e.id)) y
           WHERE y.action = 'INSERT' AND y.on_shard AND y.before IN ('INSERT', 'UPDATE') AND NOT y.before_on_shard) x
    WHERE d.tableoid = x.t AND d.ctid = x.c;
    UPDATE tenancy.audit_log e
    SET table_name = (tenancy._citus_table_of(e.table_name)).logical
    WHERE (tenancy._citus_table_of(e.table_name)).logical IS NOT NULL;

    -- The read policy in the form Citus accepts: no sub-select.
    DROP POLICY audit_read ON tenancy.audit_log;
    CREATE POLICY audit_read ON tenancy.audit_log FOR SELECT
        USING (tenant_id = tenancy.tenant_scope()
               AND (tenancy._permitted('audit', 'read') OR tenancy.permission_denied('audit', 'read')));
    PERFORM create_distributed_table('tenancy.audit_log', 'tenant_id', colocate_with => 'default');
    -- The coordinator's entries were copied into the shards.
    PERFORM truncate_local_data_after_distributing_table('tenancy.audit_log');

    -- Ids keep growing per tenant: a node numbers its new entries from its
    -- group id times 2^48 (Citus' own rule for sequences of sharded tables),
    -- above every id written before.
    SELECT string_agg(format('%s:%s: %s', r.nodename, r.nodeport, r.result), '; ') INTO failed
    FROM run_command_on_workers($cmd$
        SELECT pg_catalog.setval('tenancy.audit_log_id_seq', greatest(s.last_value, g.groupid::bigint << 48))
        FROM tenancy.audit_log_id_seq s, pg_catalog.pg_dist_local_group g
        $cmd$) r
    WHERE NOT r.success;
    IF failed IS NOT NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('a worker could not number its audit entries: %s', failed),
            'Nothing was distributed. Check that every worker is reachable, then run tenancy.scale_out() again.');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION tenancy.scale_out()
RETURNS TABLE (relation regclass, became text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shared constant regclass[] := ARRAY['tenancy.tenants', 'tenancy.resources', 'tenancy.roles',
        'tenancy.role_permissions', 'tenancy.user_roles', 'tenancy.rate_limits', 'tenancy.reconcile_rules',
        'tenancy.sql_logins', 'tenancy.all_tenants']::regclass[];
    t regclass;
    fk record;
    fks jsonb := '[]';
    scoped record;
    failed text;
    converted boolean;
BEGIN
    PERFORM tenancy._require_citus();
    IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = current_user AND r.rolsuper) THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'tenancy.scale_out() must be run by a superuser',
            'It turns the extension''s own tables into Citus tables on every node.');
    END IF;
    -- Several tables' shards are written in one transaction.
    SET LOCAL citus.multi_shard_modify_mode = 'sequential';
    SET LOCAL citus.enable_unsafe_triggers = on;

    -- Foreign keys among the shared tables (and from tenant tables to them)
    -- would make Citus convert their neighbours one by one, which clashes
    -- with the copies the extension already has on every worker; they are
    -- taken off while the tables change and put back as they were. Once
    -- every shared table is a reference table (scale_out() run before),
    -- they stay: dropping one would then reach the workers both through
    -- Citus and through run_command_on_workers, and the second waits
    -- forever for the first, which only commits with this call.
    SELECT bool_and(tenancy._distributed(x, 'n')) INTO converted FROM unnest(shared) x;
    FOR fk IN SELECT k.conrelid::regclass AS rel, k.conname, pg_get_constraintdef(k.oid) AS def
              FROM pg_constraint k
              WHERE k.contype = 'f' AND (k.confrelid = ANY (shared) OR k.conrelid = ANY (shared)
                                         OR k.conrelid = 'tenancy.idempotency_keys'::regclass) LOOP
        fks := fks || jsonb_build_object('rel', fk.rel::text, 'name', fk.conname, 'def', fk.def);
        CONTINUE WHEN converted;
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.rel, fk.conname);
        -- The workers' copies of the extension's tables have them too.
        SELECT string_agg(format('%s:%s: %s', w.nodename, w.nodeport, w.result), '; ') INTO failed
        FROM run_command_on_workers(format('SET citus.enable_ddl_propagation TO off; ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I',
                                           fk.rel, fk.conname)) w
        WHERE NOT w.success;
        IF failed IS NOT NULL THEN
            PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('a worker refused to change %s: %s', fk.rel, failed),
                'Check that every worker runs the same pg_tenancy version and is reachable (SELECT * FROM citus_check_cluster_node_health()).');
        END IF;
    END LOOP;

    FOREACH t IN ARRAY shared LOOP
        IF NOT tenancy._distributed(t, 'n') THEN
            PERFORM tenancy._audit_copying(t, true);
            PERFORM create_reference_table(t);
            PERFORM tenancy._audit_copying(t, false);
            relation := t; became := 'reference table';
            RETURN NEXT;
        END IF;
    END LOOP;
    -- Every tenant-scoped table, by the column of its foreign key to
    -- tenancy.tenants (enable() adds one).
    FOR scoped IN SELECT (f->>'rel')::regclass AS tbl,
                         (regexp_match(f->>'def', '^FOREIGN KEY \(([^,)]+)\) REFERENCES tenancy\.tenants\(id\)'))[1]::name AS col
                  FROM jsonb_array_elements(fks) f
                  WHERE f->>'def' ~ '^FOREIGN KEY \([^,)]+\) REFERENCES tenancy\.tenants\(id\)'
                    AND EXISTS (SELECT 1 FROM pg_policy p
                                WHERE p.polrelid = (f->>'rel')::regclass AND p.polname = 'tenant_isolation')
                  ORDER BY 1 LOOP
        IF NOT tenancy._distributed(scoped.tbl) THEN
            PERFORM tenancy.distribute(scoped.tbl, scoped.col);
            relation := scoped.tbl; became := format('distributed by %I', scoped.col);
            RETURN NEXT;
        END IF;
    END LOOP;

    IF NOT tenancy._distributed('tenancy.audit_log') THEN
        PERFORM tenancy._distribute_audit_log();
        relation := 'tenancy.audit_log'; became := 'distributed by tenant_id';
        RETURN NEXT;
    ELSE
        -- The safety copies of an earlier call that committed.
        PERFORM run_command_on_workers('DROP TABLE IF EXISTS tenancy._audit_log_stash');
    END IF;

    -- tenancy.idempotency_keys stays an ordinary table of the coordinator,
    -- where requests claim and complete keys as the extension's owner (on
    -- shards, Citus refuses a transaction in which two users write the same
    -- tenant's placements). Without its foreign key: a key of a dropped
    -- tenant goes with its TTL (tenancy.purge_idempotency_keys) instead.
    FOR fk IN SELECT value AS f FROM jsonb_array_elements(fks)
              WHERE value->>'rel' <> 'tenancy.idempotency_keys' AND NOT converted LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', fk.f->>'rel', fk.f->>'name', fk.f->>'def');
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenancy.scale_out() IS 'Citus: makes the extension''s shared tables reference tables and distributes every tenant-scoped table and the audit log by tenant, colocated (idempotency keys stay on the coordinator). Run once on the coordinator, as a superuser, with the workers added. Returns what changed.';

CREATE OR REPLACE FUNCTION tenancy._citus_findings()
RETURNS TABLE (severity text, object_type text, object_name text, problem text, fix text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_node n WHERE n.groupid <> 0 AND n.noderole = 'primary') THEN
        RETURN;
    END IF;
    IF NOT tenancy._context_key_set() THEN
        RETURN QUERY SELECT 'error', 'setting', 'tenancy.context_key',
            'is not set: workers believe no tenant context, so every query on a distributed tenant table fails',
            'Set the same secret (32 characters or more) as tenancy.context_key in postgresql.conf on every node and reload.';
    END IF;
    IF NOT tenancy._distributed('tenancy.tenants', 'n') THEN
        RETURN QUERY SELECT 'error', 'table', 'tenancy.tenants',
            'Citus has workers, but the extension''s shared tables are not reference tables yet',
            'SELECT * FROM tenancy.scale_out();';
        RETURN;
    END IF;
    IF NOT tenancy._distributed('tenancy.audit_log') THEN
        RETURN QUERY SELECT 'warning', 'table', 'tenancy.audit_log',
            'is not sharded by tenant: entries of sharded tables stay on the worker that wrote them, and the coordinator does not show them',
            'SELECT * FROM tenancy.scale_out();';
    END IF;
    RETURN QUERY
    WITH scoped AS (
        SELECT p.polrelid AS tbl, tenancy._tenant_column(p.polrelid) AS col
        FROM pg_policy p
        WHERE p.polname = 'tenant_isolation' AND p.polrelid <> 'tenancy.audit_log'::regclass
    ),
    placed AS (
        SELECT s.tbl, s.col, d.partmethod, d.colocationid,
               CASE WHEN d.partmethod = 'h' THEN column_to_column_name(d.logicalrelid, d.partkey) END AS shard_col
        FROM scoped s LEFT JOIN pg_dist_partition d ON d.logicalrelid = s.tbl
    ),
    usual AS (
        SELECT mode() WITHIN GROUP (ORDER BY colocationid) AS colocationid FROM placed WHERE partmethod = 'h'
    )
    SELECT 'error', 'table', x.tbl::regclass::text,
           'is tenant-scoped but not distributed: its rows stay on the coordinator and workers cannot check its policies',
           format('SELECT tenancy.distribute(%L, %L);', x.tbl::regclass::text, x.col)
    FROM placed x WHERE x.partmethod IS NULL
    UNION ALL
    SELECT 'error', 'table', x.tbl::regclass::text,
           format('is sharded by %I, not by its tenant column %I: a tenant''s rows spread over every node', x.shard_col, x.col),
           format('SELECT undistribute_table(%L); SELECT tenancy.distribute(%L, %L);', x.tbl::regclass::text, x.tbl::regclass::text, x.col)
    FROM placed x WHERE x.partmethod = 'h' AND x.shard_col IS DISTINCT FROM x.col::text
    UNION ALL
    SELECT 'error', 'table', x.tbl::regclass::text,
           'is not sharded by tenant (a reference or local Citus table): every tenant''s rows sit on every node or on one',
           format('SELECT undistribute_table(%L); SELECT tenancy.distribute(%L, %L);', x.tbl::regclass::text, x.tbl::regclass::text, x.col)
    FROM placed x WHERE x.partmethod IS NOT NULL AND x.partmethod <> 'h'
    UNION ALL
    SELECT 'warning', 'table', x.tbl::regclass::text,
           'is not colocated with the other tenant-scoped tables: a tenant''s rows of it sit on other nodes, and joins with them cross the network',
           format('SELECT update_distributed_table_colocation(%L, colocate_with => %L);', x.tbl::regclass::text,
                  (SELECT y.tbl::regclass::text FROM placed y, usual u WHERE y.colocationid = u.colocationid LIMIT 1))
    FROM placed x, usual u WHERE x.partmethod = 'h' AND x.colocationid <> u.colocationid
    UNION ALL
    -- Citus 13.2 re-creates policies on the shards without AS RESTRICTIVE.
    SELECT 'error', 'table', x.tbl::regclass::text,
           'has restrictive RBAC policies, which Citus makes permissive on its shards: a permission alone lets rows through, across tenants',
           format('SELECT tenancy.protect(%L, %L);', x.tbl::regclass::text, tenancy._rbac_resource(x.tbl))
    FROM placed x WHERE x.partmethod = 'h'
      AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = x.tbl AND p.polname LIKE 'rbac\_%' AND NOT p.polpermissive)
    UNION ALL
    -- Citus 13.2 crashes the node that plans a call of a distributed
    -- function whose distribution argument is a NULL constant; Postgres
    -- takes such a call away first only for a STRICT function that returns
    -- one value (README: Scale out on Citus, Limits).
    SELECT 'error', 'function', f.oid::regprocedure::text,
           'is distributed by an argument but is not STRICT or returns a set: a call with NULL for that argument crashes the Citus node that plans it (every backend restarts)',
           CASE WHEN f.proretset
                THEN 'Make it return one value and STRICT, or drop it and create it again without create_distributed_function (it then runs on the coordinator).'
                ELSE format('ALTER FUNCTION %s STRICT;', f.oid::regprocedure::text) END
    FROM pg_dist_object o JOIN pg_proc f ON f.oid = o.objid
    WHERE o.classid = 'pg_proc'::regclass AND o.distribution_argument_index IS NOT NULL
      AND f.prokind = 'f' AND (NOT f.proisstrict OR f.proretset);
END
$$;

-- As privileges.sql: PUBLIC executes only what runs as its caller.
REVOKE ALL ON FUNCTION tenancy._request_source(), tenancy._citus_table_of(text),
    tenancy._audit_shard_here(uuid), tenancy._distribute_audit_log(),
    tenancy._audit_copying(regclass, boolean) FROM PUBLIC;
-- distribute() calls it as its caller, who must own the table anyway.
GRANT EXECUTE ON FUNCTION tenancy._audit_copying(regclass, boolean) TO PUBLIC;
