-- pg_tenancy 0.10.0 -> 0.11.0
--
-- On Citus, a worker added later gets the privileges on distributed
-- functions that the coordinator has, and check() no longer reports
-- distributed functions that a NULL argument would crash Citus with where
-- pg_tenancy's planner hook (0.11.0's library) refuses such calls.
--
-- Why:
--   - Citus 13.2 creates every distributed function on a node it adds with
--     the default privileges (EXECUTE for PUBLIC), grants there what the
--     coordinator grants, and never revokes what the coordinator revoked.
--     On such a node any role could call what only some roles may call on
--     the coordinator. That matters for the functions Citus runs on the
--     worker that holds the tenant: the API role could call
--     ledger_routed.reconcile_for there directly, without the matches.read
--     check of POST /rpc/reconcile. Revoking on the coordinator reaches
--     every node: Citus carries a REVOKE on a distributed function.
--   - Citus 13.2 crashes the node that plans a call of a distributed
--     function whose distribution argument is NULL, and checks the
--     privilege to call it only where the call is sent, afterwards: taking
--     the privilege away, as check() advised, never prevented the crash.
--     The 0.11.0 library's planner hook refuses such calls (22004) in every
--     backend where it is loaded; check() now reports those functions only
--     where pg_tenancy is not in shared_preload_libraries, with that fix.
-- What changes:
--
-- 1. tenancy._public_function_gaps() (new; anyone may call it, as it names
--    only functions): per worker, the distributed functions PUBLIC may
--    execute there and not on the coordinator.
-- 2. tenancy._revoke_public_function_gaps() (new, for superusers): revokes
--    those on the coordinator. scale_out() calls it every time, so a call
--    after citus_add_node puts the new node right.
-- 3. tenancy.check() reports such a node as an error (a warning when the
--    node cannot be asked), and the NULL-argument finding as above.
--
-- Nothing changes on one node.

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
    -- the new node for shard moves, and takes back there what PUBLIC may
    -- execute only there.
    PERFORM tenancy._prepare_shard_moves();
    PERFORM tenancy._revoke_public_function_gaps();
END
$$;

COMMENT ON FUNCTION tenancy.scale_out() IS 'Citus: makes the extension''s shared tables reference tables and distributes every tenant-scoped table and the audit log by tenant, colocated (idempotency keys stay on the coordinator). Run on the coordinator, as a superuser, once the workers are added, and again after adding a worker (it prepares the new node for shard moves and revokes there the EXECUTE that PUBLIC has only there). Returns what changed.';


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


-- As privileges.sql: PUBLIC executes only what runs as its caller, or, as
-- _public_function_gaps, tells only which functions. Revoking is for
-- superusers.
REVOKE ALL ON FUNCTION tenancy._public_function_gaps(), tenancy._revoke_public_function_gaps() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._public_function_gaps() TO PUBLIC;
