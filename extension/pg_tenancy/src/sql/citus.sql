-- Scale-out on Citus: the deployment distributed by tenant.
--
-- tenancy.scale_out() turns a database where Citus is installed (with its
-- workers added) into the distributed deployment in one call: the
-- extension's shared state becomes reference tables (a copy on every node,
-- so a worker can check a foreign key locally), the idempotency keys stay
-- on the coordinator, and every tenant-scoped
-- table becomes a distributed table sharded by its tenant column, all of
-- them colocated, so that one tenant's rows of every table sit on the same
-- node. tenancy.distribute() does the same for one table
-- enabled later. The tenant context reaches the workers signed (signed.rs),
-- which needs tenancy.context_key on every node.

CREATE FUNCTION tenancy._require_citus()
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'Citus is not installed in this database',
            'Add citus first in shared_preload_libraries on every node, CREATE EXTENSION citus, and add the workers with citus_add_node (README: Scale out on Citus).');
    END IF;
    IF NOT tenancy._context_key_set() THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'tenancy.context_key is not set on this node',
            'Set the same secret (32 characters or more) as tenancy.context_key in postgresql.conf on every node and reload: workers trust only a context signed with it.');
    END IF;
END
$$;

-- Citus copies a table's rows into its new shards (or a reference table's
-- copies) with INSERTs that fire the audit trigger: none of them is a
-- change, so the trigger is off meanwhile (Citus gives the shards its
-- state).
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

-- The owners of sharded tenant tables who are not superusers: Citus moves
-- those tables' shards in connections as them. (PL/pgSQL: its query names
-- a Citus catalog, which only exists where Citus is installed.)
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

-- Moving shards (citus_move_shard_placement, the rebalancer) builds a
-- tenant's group of colocated shards anew on another node. Citus copies the
-- rows by logical replication, which needs wal_level = logical and a
-- replica identity on every table of the group (the audit log's partitions
-- have FULL: audit.sql), and it creates each new shard's triggers and
-- foreign keys in a connection as the table's owner. So the owners of
-- sharded tenant tables may attach the extension's two trigger functions
-- and reference tenancy.tenants, on every node. An owner could attach
-- tenancy._audit to another table of its own and write entries for any
-- tenant; it can do more already: it may turn row level security off on
-- its tenant tables and change any tenant's rows. A node added later has
-- none of it until scale_out() runs again; check() says so.

-- Per node (the coordinator, then each worker): the owners of sharded
-- tenant tables who lack those grants there, and its wal_level. Runs as
-- the extension's owner: asking the nodes takes connections that a DBA
-- running check() may not have. It tells nothing but whose grants are
-- missing.
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

-- Gives what moving shards needs (above), where it is missing. For
-- superusers (scale_out, and distribute when one calls it): granting on the
-- extension's objects takes one.
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

-- Citus 13.2 creates a distributed function on a node it adds with the
-- default privileges (EXECUTE for PUBLIC), then grants what the coordinator
-- grants, but does not revoke what the coordinator revoked. Per worker, the
-- distributed functions that PUBLIC may execute there and not on the
-- coordinator; error when the node could not be asked. For check(): it
-- says only which functions, so anyone may call it.
CREATE FUNCTION tenancy._public_function_gaps()
RETURNS TABLE (node text, error text, functions text[])
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ask constant text := $q$SELECT coalesce(string_agg(p.oid::pg_catalog.regprocedure::text, E'\n' ORDER BY 1), '')
        FROM pg_catalog.pg_dist_object o JOIN pg_catalog.pg_proc p ON p.oid = o.objid
        WHERE o.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
          AND EXISTS (SELECT 1 FROM pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
                      WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')$q$;
    here text;
BEGIN
    EXECUTE ask INTO here;
    RETURN QUERY
    SELECT w.nodename || ':' || w.nodeport,
           CASE WHEN NOT w.success THEN w.result END,
           CASE WHEN w.success
                THEN ARRAY(SELECT f FROM unnest(string_to_array(w.result, E'\n')) f
                           WHERE f <> ALL (string_to_array(here, E'\n')) ORDER BY f)
                ELSE '{}' END
    FROM run_command_on_workers(ask) w
    ORDER BY w.nodename, w.nodeport;
END
$$;

-- Revokes PUBLIC's EXECUTE where a worker has it and the coordinator not
-- (above), on the coordinator: Citus carries a REVOKE on a distributed
-- function to every node. For superusers (scale_out).
CREATE FUNCTION tenancy._revoke_public_function_gaps()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    FOR f IN SELECT DISTINCT x FROM tenancy._public_function_gaps() g, unnest(g.functions) x ORDER BY 1 LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f::regprocedure);
    END LOOP;
END
$$;

CREATE FUNCTION tenancy.distribute(tbl regclass, col name DEFAULT 'tenant_id')
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
COMMENT ON FUNCTION tenancy.distribute(regclass, name) IS 'Citus: shards a tenant-scoped table by its tenant column, colocated with the other tenant-scoped tables, after turning its policies into the form Citus accepts. Run tenancy.scale_out() once first. Idempotent.';

-- The audit log, sharded by tenant like the tables it records, colocated
-- with them: a trigger on a shard writes its entries to the log's shard on
-- the same node (tenancy._audit), and the coordinator reads every tenant's
-- entries.
--
-- Before 0.9.0 a worker kept the entries of its shards in a log of its own,
-- invisible through the coordinator, and entries written on shards and on
-- reference tables' copies named the shard, not the table. All of it is
-- put right here, in the coordinator's transaction, before the log is
-- sharded:
--   1. each worker sets its entries aside in tenancy._audit_log_stash and
--      empties its own log (committed there at once: a worker's log must be
--      empty to become part of the sharded one). Entries it wrote for its
--      copy of a reference table are left out: the coordinator recorded
--      each of them too;
--   2. the coordinator reads the stashes, a batch at a time, into its log;
--   3. INSERT entries that Citus' copying of existing rows into new shards
--      or copies wrote (a shard-named INSERT of a row whose previous entry
--      is an INSERT or UPDATE) are removed: they were no change;
--   4. shard names become table names.
-- The stash stays on each worker as a safety copy until the next
-- scale_out() call, which drops it.
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

CREATE FUNCTION tenancy.scale_out()
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
    -- the new node for shard moves, and takes back there what PUBLIC may
    -- execute only there.
    PERFORM tenancy._prepare_shard_moves();
    PERFORM tenancy._revoke_public_function_gaps();
END
$$;
COMMENT ON FUNCTION tenancy.scale_out() IS 'Citus: makes the extension''s shared tables reference tables and distributes every tenant-scoped table and the audit log by tenant, colocated (idempotency keys stay on the coordinator). Run on the coordinator, as a superuser, once the workers are added, and again after adding a worker (it prepares the new node for shard moves and revokes there the EXECUTE that PUBLIC has only there). Returns what changed.';

-- What tenancy.check() reports on Citus: nothing without Citus or before
-- a worker is added; after that, whatever would let tenants' rows stray
-- from their node or their policies.
CREATE FUNCTION tenancy._citus_findings()
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
    -- function whose distribution argument is NULL, and checks the
    -- privilege to call it only on the node the call is sent to. Postgres
    -- takes such a call away first only for a STRICT function that returns
    -- one value; pg_tenancy's planner hook refuses the others (22004) in
    -- every backend where it is loaded, which is every backend once it is
    -- in shared_preload_libraries (README: Scale out on Citus, Limits).
    SELECT 'error', 'function', f.oid::regprocedure::text,
           'is distributed by an argument and is not STRICT or returns a set, and pg_tenancy is not in shared_preload_libraries: a call with NULL for that argument, by anyone who may run SQL, crashes the Citus node that plans it (every backend restarts) unless pg_tenancy''s planner hook is loaded in that backend',
           'Add pg_tenancy to shared_preload_libraries on every node (sql/citus/postgresql.conf has it) and restart them.'
    FROM pg_dist_object o JOIN pg_proc f ON f.oid = o.objid
    WHERE o.classid = 'pg_proc'::regclass AND o.distribution_argument_index IS NOT NULL
      AND f.prokind = 'f' AND (NOT f.proisstrict OR f.proretset)
      AND current_setting('shared_preload_libraries') !~ '(^|,)\s*"?pg_tenancy"?\s*(,|$)';

    -- A distributed function that PUBLIC may execute on a worker and not on
    -- the coordinator (tenancy._public_function_gaps).
    RETURN QUERY
    SELECT CASE WHEN g.error IS NULL THEN 'error' ELSE 'warning' END, 'node', g.node,
           CASE WHEN g.error IS NULL
                THEN format('lets every role execute distributed functions that the coordinator lets only some roles execute: %s (Citus 13.2 does not carry revoked default privileges to a node it adds)',
                            array_to_string(g.functions, ', '))
                ELSE format('could not be asked which distributed functions every role may execute there: %s', g.error) END,
           'SELECT * FROM tenancy.scale_out();'
    FROM tenancy._public_function_gaps() g
    WHERE g.error IS NOT NULL OR cardinality(g.functions) > 0;
END
$$;
