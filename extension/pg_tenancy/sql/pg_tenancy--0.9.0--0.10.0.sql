-- pg_tenancy 0.9.0 -> 0.10.0
--
-- On Citus, tenants' shards can be moved: citus_move_shard_placement and
-- the rebalancer (citus_rebalance_start) work with their default transfer
-- mode, so a worker added later takes its share of the tenants.
--
-- Why: until 0.9.0 every move failed.
--   - Citus moves a group of colocated shards by logical replication, which
--     needs a replica identity on every table of the group. The audit log's
--     partitions have no key (entries are only appended), so the move was
--     refused ("cannot use logical replication to transfer shards of the
--     relation audit_log_p…").
--   - Citus creates the new shards' triggers and foreign keys in a
--     connection as each table's owner. The owner of the reference
--     deployment's ledger (ledger_owner) may not attach tenancy._audit() or
--     tenancy.rbac_statement_guard() (privileges.sql keeps them from
--     PUBLIC), nor reference tenancy.tenants: "permission denied for
--     function tenancy._audit", then "permission denied for table
--     tenants_…".
-- What changes:
--
-- 1. The audit log, its default partition and the months audit_maintain()
--    creates have REPLICA IDENTITY FULL. An INSERT writes nothing more for
--    it; an UPDATE or DELETE (only audit_maintain's) logs the whole old row.
--    Set here on one node; on Citus, scale_out() sets it through Citus, on
--    every shard (this script runs on each node, where Citus' tables may
--    only be altered from the coordinator).
-- 2. tenancy._prepare_shard_moves() (new, for superusers): that replica
--    identity, and, where they lack them, for the owners of sharded tenant
--    tables who are not superusers: REFERENCES on tenancy.tenants and
--    EXECUTE on the two trigger functions, on every node.
--    tenancy._shard_owners() (new) names those owners and
--    tenancy._shard_move_gaps() (new) asks each node what it lacks.
--    scale_out() calls it every time (so a call after citus_add_node
--    prepares the new node), and so does distribute() when a superuser
--    calls it. An owner could attach tenancy._audit to another table of its
--    own and write entries for any tenant; it can already do more (turn row
--    level security off on its tenant tables and change any tenant's rows).
-- 3. tenancy.check() warns, on Citus, about an audit partition without a
--    replica identity, about a node where those owners lack the grants, and
--    about a worker whose wal_level is not logical.
-- 4. tenancy.check() no longer reports a distributed function that is not
--    STRICT or returns a set when only its owner (and superusers) may call
--    it: nobody else can pass it a NULL. The reference deployment's
--    ledger_routed.reconcile_for (sql/15_matches.sql), which runs
--    POST /rpc/reconcile on the tenant's worker, is one.
--
-- A Citus deployment of 0.9.0: wal_level = logical on every node (a
-- restart), ALTER EXTENSION pg_tenancy UPDATE on every node, then
-- SELECT * FROM tenancy.scale_out(); on the coordinator.
-- Moving with shard_transfer_mode => 'block_writes' still fails: Postgres
-- validates the moved foreign keys as the table's owner, whom FORCE ROW
-- LEVEL SECURITY holds to a tenant, and there is none ("no tenant is set").
-- ---------------------------------------------------------------------------

DO $$
DECLARE
    part regclass;
BEGIN
    -- Not on Citus' tables: scale_out() changes them from the coordinator.
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')
       OR NOT tenancy._distributed('tenancy.audit_log') THEN
        EXECUTE 'ALTER TABLE tenancy.audit_log REPLICA IDENTITY FULL';
        FOR part IN SELECT i.inhrelid::regclass FROM pg_inherits i
                    WHERE i.inhparent = 'tenancy.audit_log'::regclass LOOP
            EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', part);
        END LOOP;
    END IF;
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


CREATE FUNCTION tenancy._shard_owners()
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT array_agg(DISTINCT r.rolname::text ORDER BY r.rolname::text)
            FROM pg_dist_partition d
            JOIN pg_class c ON c.oid = d.logicalrelid
            JOIN pg_roles r ON r.oid = c.relowner
            WHERE d.partmethod = 'h' AND NOT r.rolsuper
              AND EXISTS (SELECT 1 FROM pg_policy p
                          WHERE p.polrelid = d.logicalrelid AND p.polname = 'tenant_isolation'));
END
$$;


CREATE FUNCTION tenancy._shard_move_gaps()
RETURNS TABLE (node text, asked boolean, owners text, wal_level text)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ask constant text := format($q$SELECT coalesce(string_agg(o, ', ' ORDER BY o), '') || '|' || current_setting('wal_level')
        FROM unnest(%L::text[]) o
        WHERE NOT (has_function_privilege(o, 'tenancy._audit()', 'EXECUTE')
                   AND has_function_privilege(o, 'tenancy.rbac_statement_guard()', 'EXECUTE')
                   AND has_table_privilege(o, 'tenancy.tenants', 'REFERENCES'))$q$,
        coalesce(tenancy._shard_owners(), '{}'));
BEGIN
    RETURN QUERY
    SELECT CASE WHEN coalesce(n.groupid, 0) = 0 THEN 'coordinator' ELSE n.nodename || ':' || n.nodeport END,
           r.success,
           CASE WHEN r.success THEN split_part(r.result, '|', 1) ELSE r.result END,
           CASE WHEN r.success THEN split_part(r.result, '|', 2) END
    FROM run_command_on_all_nodes(ask) r LEFT JOIN pg_dist_node n ON n.nodeid = r.nodeid
    ORDER BY coalesce(n.groupid, 0), n.nodeid;
END
$$;


CREATE FUNCTION tenancy._prepare_shard_moves()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part regclass;
    owners text;
    failed text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    -- One call at a time: two grants of the same object at once fail.
    PERFORM pg_advisory_xact_lock(hashtextextended('tenancy._prepare_shard_moves', 0));
    FOR part IN SELECT c.oid::regclass FROM pg_class c
                WHERE c.relreplident <> 'f'
                  AND (c.oid = 'tenancy.audit_log'::regclass
                       OR c.oid IN (SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = 'tenancy.audit_log'::regclass)) LOOP
        EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', part);
    END LOOP;
    -- Nothing missing: no grant (each rewrites catalog rows on every node).
    IF NOT EXISTS (SELECT 1 FROM tenancy._shard_move_gaps() g WHERE NOT g.asked OR g.owners <> '') THEN
        RETURN;
    END IF;
    SELECT string_agg(quote_ident(o), ', ') INTO owners FROM unnest(tenancy._shard_owners()) o;
    -- Citus gives the grant to every copy of the reference table.
    EXECUTE format('GRANT REFERENCES ON tenancy.tenants TO %s', owners);
    -- The functions are each node's own (the extension is installed on
    -- each): granted on every node, each in a transaction of its own.
    SELECT string_agg(format('%s: %s', coalesce(n.nodename || ':' || n.nodeport, 'coordinator'), r.result), '; ') INTO failed
    FROM run_command_on_all_nodes(format('SET citus.enable_ddl_propagation TO off; GRANT EXECUTE ON FUNCTION tenancy._audit(), tenancy.rbac_statement_guard() TO %s', owners)) r
    LEFT JOIN pg_dist_node n ON n.nodeid = r.nodeid
    WHERE NOT r.success;
    IF failed IS NOT NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('a node refused a grant to the owners of the tenant tables: %s', failed),
            'Check that every worker runs the same pg_tenancy version and is reachable (SELECT * FROM citus_check_cluster_node_health()).');
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
    -- A DBA who is not a superuser leaves this to scale_out() (check() says
    -- so until then).
    IF EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = current_user AND r.rolsuper) THEN
        PERFORM tenancy._prepare_shard_moves();
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
    -- Also when nothing else changed: a call after citus_add_node prepares
    -- the new node for shard moves.
    PERFORM tenancy._prepare_shard_moves();
END
$$;

COMMENT ON FUNCTION tenancy.scale_out() IS 'Citus: makes the extension''s shared tables reference tables and distributes every tenant-scoped table and the audit log by tenant, colocated (idempotency keys stay on the coordinator). Run on the coordinator, as a superuser, once the workers are added, and again after adding a worker (it prepares the new node for shard moves). Returns what changed.';


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

    -- What moving a tenant's shards needs (tenancy._prepare_shard_moves).
    RETURN QUERY
    SELECT 'warning', 'table', c.oid::regclass::text,
           'has no replica identity: Citus cannot move tenants'' shards (citus_move_shard_placement, the rebalancer), which it does by logical replication',
           'SELECT * FROM tenancy.scale_out();'
    FROM pg_class c
    WHERE c.relreplident <> 'f'
      AND (c.oid = 'tenancy.audit_log'::regclass
           OR c.oid IN (SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = 'tenancy.audit_log'::regclass));
    RETURN QUERY
    WITH gaps AS (SELECT * FROM tenancy._shard_move_gaps())
    SELECT 'warning', 'node', g.node,
           CASE WHEN g.asked
                THEN format('%s, owning sharded tenant tables, may not create their shards'' triggers and foreign keys on this node: moving shards here fails', g.owners)
                ELSE format('could not be asked whether tenants'' shards can move here: %s', g.owners) END,
           'SELECT * FROM tenancy.scale_out();'
    FROM gaps g WHERE NOT g.asked OR g.owners <> ''
    UNION ALL
    SELECT 'warning', 'node', g.node,
           format('has wal_level = %s: Citus moves shards (citus_move_shard_placement, the rebalancer) by logical replication, which needs wal_level = logical', g.wal_level),
           'Set wal_level = logical in its postgresql.conf (as sql/citus/postgresql.conf does) and restart it.'
    FROM gaps g WHERE g.asked AND g.node <> 'coordinator' AND g.wal_level <> 'logical';

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
    -- one value (README: Scale out on Citus, Limits). Other such functions
    -- are safe only while nobody but their owner (and superusers) may call
    -- them.
    SELECT 'error', 'function', f.oid::regprocedure::text,
           'is distributed by an argument, is not STRICT or returns a set, and roles other than its owner may call it: a call with NULL for that argument crashes the Citus node that plans it (every backend restarts)',
           CASE WHEN f.proretset
                THEN format('Let only its owner call it: REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC; (and from any role granted it), then call it from a SECURITY DEFINER function of its owner that never passes NULL. Or make it return one value and STRICT.', f.oid::regprocedure::text)
                ELSE format('ALTER FUNCTION %s STRICT;', f.oid::regprocedure::text) END
    FROM pg_dist_object o JOIN pg_proc f ON f.oid = o.objid
    WHERE o.classid = 'pg_proc'::regclass AND o.distribution_argument_index IS NOT NULL
      AND f.prokind = 'f' AND (NOT f.proisstrict OR f.proretset)
      AND EXISTS (SELECT 1 FROM aclexplode(coalesce(f.proacl, acldefault('f', f.proowner))) a
                  LEFT JOIN pg_roles r ON r.oid = a.grantee
                  WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> f.proowner
                    AND NOT coalesce(r.rolsuper, false));
END
$$;


-- As privileges.sql: PUBLIC executes only what runs as its caller, or, as
-- _shard_move_gaps, tells only whose grants are missing. Granting is for
-- superusers.
REVOKE ALL ON FUNCTION tenancy._shard_owners(), tenancy._shard_move_gaps(), tenancy._prepare_shard_moves() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._shard_move_gaps() TO PUBLIC;
