-- pg_tenancy 0.6.0 -> 0.7.0
--
-- 1. Scale-out on Citus (README: Scale out on Citus).
--
-- Why: a platform that outgrows one Postgres shards its tenants with Citus.
-- tenancy.scale_out() makes the extension's shared tables reference tables
-- and distributes every tenant-scoped table by its tenant column;
-- tenancy.distribute() does it for a table enabled later. The tenant
-- context reaches the workers signed with tenancy.context_key (the shared
-- library: src/signed.rs), which needs no SQL object.
--
-- 2. Policies are written by one function, in the form the table allows.
--
-- Why: Citus refuses sub-selects in the policies of a distributed table,
-- and 13.2 re-creates a table's policies on its shards without AS
-- RESTRICTIVE, so a protected table's RBAC policies would widen, not
-- narrow, what isolation lets through. tenancy._write_policies() writes
-- the single-node policies exactly as 0.6.0 did (existing tables keep
-- theirs: nothing is rewritten here) and, on a distributed table, policies
-- that each stand alone. enable(), protect() and unprotect() call it.
--
-- 3. tenancy.check() also reports, on Citus, tenant-scoped tables that are
-- not sharded by their tenant column, not colocated, or whose restrictive
-- RBAC policies Citus made permissive (tenancy._citus_findings()).
--
-- 4. Ledger keys (sql/, not the extension): sql/15_matches.sql moves
-- existing ledgers to PRIMARY KEY (tenant_id, id), rows kept.
-- ---------------------------------------------------------------------------

-- Whether this node has tenancy.context_key (SQL cannot read the key back).
CREATE FUNCTION tenancy._context_key_set() RETURNS bool
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'context_key_set_wrapper';

-- Whether tbl is a Citus table of that kind: 'h' hash-distributed (the
-- default), 'n' a reference table; false without Citus.
-- tenancy._distributed('tenancy.tenants', 'n') tells whether
-- tenancy.scale_out() has run: from then on enable() shards a new tenant
-- table at once.
CREATE FUNCTION tenancy._distributed(tbl regclass, method "char" DEFAULT 'h')
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found boolean;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1 AND partmethod = $2)'
        INTO found USING tbl, method;
    RETURN found;
END
$$;

-- The checks of a distributed table's policies, each one call (see
-- _write_policies): Citus evaluates a statement's function calls on the
-- coordinator one by one, so the error branch of a COALESCE or an OR
-- would be raised even when not needed. PL/pgSQL, so that the planner
-- does not inline them back into those forms.
CREATE FUNCTION tenancy._scope()
RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN coalesce(tenancy.current_tenant_id(), tenancy.tenant_context_required());
END
$$;

CREATE FUNCTION tenancy._permit(resource text, action text)
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN tenancy._permitted(resource, action) OR tenancy.permission_denied(resource, action);
END
$$;

-- The protect()ed resource of tbl (its RBAC trigger's argument), or NULL.
CREATE FUNCTION tenancy._rbac_resource(tbl regclass)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT split_part(encode(t.tgargs, 'escape'), '\000', 1)
    FROM pg_trigger t WHERE t.tgrelid = tbl AND t.tgname = 'tenancy_rbac'
$$;

-- The tenant column of an enabled table: the one its foreign key to
-- tenancy.tenants holds (enable() adds it).
CREATE FUNCTION tenancy._tenant_column(tbl regclass)
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.attname FROM pg_constraint k
    JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
    WHERE k.conrelid = tbl AND k.contype = 'f' AND k.confrelid = 'tenancy.tenants'::regclass
      AND array_length(k.conkey, 1) = 1
    ORDER BY k.conname LIMIT 1
$$;

-- Writes tbl's policies: tenant_isolation, and with a resource the RBAC
-- policies rbac_read, rbac_create, rbac_update and rbac_delete.
--
-- One node: tenant_isolation is permissive, the RBAC policies restrictive,
-- and each check a sub-select, which the planner runs once per statement.
--
-- Distributed (Citus): sub-selects are refused there, so each check is one
-- call of _scope() or _permit(). And Citus 13.2 re-creates a table's
-- policies on its shards without AS RESTRICTIVE: every policy becomes
-- permissive, and rows would pass isolation OR a permission. So on a
-- protected distributed table each command's policy stands alone —
-- rbac_<action> checks the tenant AND the permission — and
-- tenant_isolation grants nothing by itself.
CREATE FUNCTION tenancy._write_policies(tbl regclass, col name, resource text, distributed boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- tenant_scope()'s body, written out (see context.sql).
    scope constant text := format(CASE WHEN distributed THEN '%I = tenancy._scope()'
        ELSE '%I = (SELECT coalesce(tenancy.current_tenant_id(), tenancy.tenant_context_required()))' END,
        coalesce(col, '?'));
    alone constant boolean := distributed AND resource IS NOT NULL;
    cmd record;
    check_expr text;
BEGIN
    IF col IS NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('%s has no foreign key to tenancy.tenants', tbl),
            format('Run SELECT tenancy.enable(%L); again: it adds the key, and protect() finds the tenant column by it.', tbl::text));
    END IF;
    IF EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = tbl AND p.polname = 'tenant_isolation') THEN
        EXECUTE format('DROP POLICY tenant_isolation ON %s', tbl);
    END IF;
    EXECUTE format('CREATE POLICY tenant_isolation ON %s AS PERMISSIVE FOR ALL TO PUBLIC USING (%s) WITH CHECK (%s)',
                   tbl, CASE WHEN alone THEN 'false' ELSE scope END, CASE WHEN alone THEN 'false' ELSE scope END);
    EXECUTE format('COMMENT ON POLICY tenant_isolation ON %s IS %L', tbl,
                   CASE WHEN alone
                        THEN 'pg_tenancy: grants nothing by itself; on this distributed table each rbac_ policy checks the tenant too (tenancy.protect)'
                        ELSE 'pg_tenancy: rows of the current tenant only (tenancy.enable)' END);

    FOR cmd IN SELECT * FROM (VALUES ('SELECT', 'read'), ('INSERT', 'create'), ('UPDATE', 'update'), ('DELETE', 'delete'))
               AS v(command, action) LOOP
        IF EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = tbl AND p.polname = 'rbac_' || cmd.action) THEN
            EXECUTE format('DROP POLICY %I ON %s', 'rbac_' || cmd.action, tbl);
        END IF;
        CONTINUE WHEN resource IS NULL;
        -- permits()'s body, written out, as tenant_scope()'s is.
        check_expr := format(CASE WHEN distributed THEN 'tenancy._permit(%1$L, %2$L)'
            ELSE '(SELECT tenancy._permitted(%1$L, %2$L) OR tenancy.permission_denied(%1$L, %2$L))' END,
            resource, cmd.action);
        IF alone THEN
            check_expr := format('(%s AND %s)', scope, check_expr);
        END IF;
        EXECUTE format('CREATE POLICY %I ON %s AS %s FOR %s TO PUBLIC %s', 'rbac_' || cmd.action, tbl,
            CASE WHEN alone THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END, cmd.command,
            CASE cmd.command
                WHEN 'INSERT' THEN format('WITH CHECK (%s)', check_expr)
                WHEN 'UPDATE' THEN format('USING (%s) WITH CHECK (%s)', check_expr, check_expr)
                ELSE format('USING (%s)', check_expr)
            END);
    END LOOP;
END
$$;

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
    PERFORM create_distributed_table(tbl, col::text, colocate_with => 'default');
END
$$;
COMMENT ON FUNCTION tenancy.distribute(regclass, name) IS 'Citus: shards a tenant-scoped table by its tenant column, colocated with the other tenant-scoped tables, after turning its policies into the form Citus accepts. Run tenancy.scale_out() once first. Idempotent.';

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
    -- taken off while the tables change and put back as they were.
    FOR fk IN SELECT k.conrelid::regclass AS rel, k.conname, pg_get_constraintdef(k.oid) AS def
              FROM pg_constraint k
              WHERE k.contype = 'f' AND (k.confrelid = ANY (shared) OR k.conrelid = ANY (shared)
                                         OR k.conrelid = 'tenancy.idempotency_keys'::regclass) LOOP
        fks := fks || jsonb_build_object('rel', fk.rel::text, 'name', fk.conname, 'def', fk.def);
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
            PERFORM create_reference_table(t);
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

    -- tenancy.idempotency_keys stays an ordinary table of the coordinator,
    -- where requests claim and complete keys as the extension's owner (on
    -- shards, Citus refuses a transaction in which two users write the same
    -- tenant's placements). Without its foreign key: a key of a dropped
    -- tenant goes with its TTL (tenancy.purge_idempotency_keys) instead.
    FOR fk IN SELECT value AS f FROM jsonb_array_elements(fks)
              WHERE value->>'rel' <> 'tenancy.idempotency_keys' LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', fk.f->>'rel', fk.f->>'name', fk.f->>'def');
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenancy.scale_out() IS 'Citus: makes the extension''s shared tables reference tables and distributes every tenant-scoped table by tenant, colocated (idempotency keys stay on the coordinator). Run once on the coordinator, as a superuser, with the workers added. Returns what changed.';

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
      AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = x.tbl AND p.polname LIKE 'rbac\_%' AND NOT p.polpermissive);
END
$$;

-- A resource's actions and more, sorted, once each. PL/pgSQL, not a
-- sub-select in protect()'s INSERT: Citus refuses those in a write to a
-- reference table.
CREATE FUNCTION tenancy._merge_actions(have text[], more text[])
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT array_agg(DISTINCT a ORDER BY a) FROM unnest(have || more) a);
END
$$;

CREATE OR REPLACE FUNCTION tenancy.enable(tbl regclass, col name DEFAULT 'tenant_id')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel record;
    att record;
    fk_name name := tenancy.scoped_object_name(tbl, col, 'tenant_fk');
    idx_name name := tenancy.scoped_object_name(tbl, col, 'tenant_idx');
    -- On Citus, after scale_out(): sharded by tenant at the end of this call.
    citus_pending constant boolean := tenancy._distributed('tenancy.tenants', 'n') AND NOT tenancy._distributed(tbl);
BEGIN
    IF tbl IS NULL OR col IS NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'tenancy.enable needs a table and a column name');
    END IF;
    SELECT c.relkind, n.nspname INTO rel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    IF rel.relkind NOT IN ('r', 'p') THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('%s is not a table', tbl),
            'Enable the underlying table; give views security_invoker = true so its policies apply.');
    END IF;
    IF rel.nspname = 'tenancy' THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('%s belongs to the extension itself', tbl));
    END IF;

    SELECT a.attnum, a.atttypid INTO att
    FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = col AND NOT a.attisdropped;
    IF att.attnum IS NULL THEN
        -- Adopting an existing table: its rows go to the tenant set with set_tenant.
        BEGIN
            EXECUTE format('ALTER TABLE %s ADD COLUMN %I uuid NOT NULL DEFAULT tenancy.current_tenant_id()', tbl, col);
        EXCEPTION WHEN not_null_violation THEN
            PERFORM tenancy.raise_error('INVALID_ARGUMENT',
                format('%s has rows but no tenant is set to own them', tbl),
                format('Adopt them into one tenant: BEGIN; SELECT tenancy.set_tenant(''<slug>''); SELECT tenancy.enable(%L); COMMIT;', tbl::text));
        END;
    ELSIF att.atttypid <> 'uuid'::regtype THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT',
            format('column %I of %s is %s, but a tenant column must be uuid', col, tbl, format_type(att.atttypid, NULL)));
    ELSE
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT tenancy.current_tenant_id()', tbl, col);
        BEGIN
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL', tbl, col);
        EXCEPTION WHEN not_null_violation THEN
            PERFORM tenancy.raise_error('INVALID_ARGUMENT',
                format('column %I of %s has NULLs; every row needs a tenant', col, tbl));
        END;
    END IF;

    -- Deleting a tenant cascades into this table. (On Citus the key to the
    -- reference table tenancy.tenants is added once the table is sharded,
    -- below: before, Citus would turn the table into a local one of its own.)
    IF NOT citus_pending AND NOT EXISTS (
        SELECT 1 FROM pg_constraint k
        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
        WHERE k.conrelid = tbl AND k.contype = 'f' AND k.confrelid = 'tenancy.tenants'::regclass
          AND array_length(k.conkey, 1) = 1 AND a.attname = col AND k.confdeltype = 'c'
    ) THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES tenancy.tenants (id) ON DELETE CASCADE',
                       tbl, fk_name, col);
    END IF;

    -- Every tenant's query filters on the tenant column: an index must lead with it.
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = tbl AND a.attname = col
    ) THEN
        EXECUTE format('CREATE INDEX %I ON %s (%I)', idx_name, tbl, col);
    END IF;

    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    -- The policies are rewritten, not skipped, so a changed tenant column is
    -- picked up (and a protect()ed table keeps its RBAC policies).
    PERFORM tenancy._write_policies(tbl, col, tenancy._rbac_resource(tbl), tenancy._distributed(tbl));

    IF citus_pending THEN
        -- Citus adds a key to a reference table only if nothing in the
        -- transaction ran in parallel over the shards.
        SET LOCAL citus.multi_shard_modify_mode = 'sequential';
        PERFORM tenancy.distribute(tbl, col);
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES tenancy.tenants (id) ON DELETE CASCADE',
                       tbl, fk_name, col);
    END IF;
END
$$;
COMMENT ON FUNCTION tenancy.enable(regclass, name) IS 'Makes a table tenant-scoped: NOT NULL tenant column defaulting to the current tenant, FK to tenancy.tenants ON DELETE CASCADE, an index leading with it, ENABLE + FORCE row level security and the tenant_isolation policy; on Citus after tenancy.scale_out(), also sharded by the tenant column. Idempotent.';

CREATE OR REPLACE FUNCTION tenancy.protect(tbl regclass, resource text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tbl IS NULL OR resource IS NULL OR resource !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT',
            format('invalid resource name %s', coalesce(quote_literal(left(resource, 100)), 'NULL')),
            'A resource name is 1 to 63 characters: lowercase letters, digits and "_", starting with a letter.');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = tbl AND p.polname = 'tenant_isolation') THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('%s is not tenant-scoped', tbl),
            format('Run SELECT tenancy.enable(%L); first: RBAC policies narrow tenant isolation, they do not replace it.', tbl::text));
    END IF;

    INSERT INTO tenancy.resources (name, actions) VALUES (resource, ARRAY['create', 'delete', 'read', 'update'])
    ON CONFLICT (name) DO UPDATE SET actions = tenancy._merge_actions(tenancy.resources.actions, EXCLUDED.actions);
    PERFORM tenancy._rbac_changed();

    PERFORM tenancy._write_policies(tbl, tenancy._tenant_column(tbl), resource, tenancy._distributed(tbl));

    IF tenancy._distributed(tbl) THEN
        -- Citus runs the trigger on each shard, where the signed context
        -- answers it. (The setting stays on until the transaction ends.)
        SET LOCAL citus.enable_unsafe_triggers = on;
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS tenancy_rbac ON %s', tbl);
    EXECUTE format('CREATE TRIGGER tenancy_rbac BEFORE INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.rbac_statement_guard(%L)', tbl, resource);
END
$$;
COMMENT ON FUNCTION tenancy.protect(regclass, text) IS 'Adds RBAC to a tenant-scoped table: restrictive policies SELECT->read, INSERT->create, UPDATE->update, DELETE->delete on the resource (on a Citus distributed table, permissive ones that check the tenant too), and a statement trigger that answers 403 naming the permission. Idempotent.';

CREATE OR REPLACE FUNCTION tenancy.unprotect(tbl regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pol name;
BEGIN
    IF tenancy._distributed(tbl) AND tenancy._tenant_column(tbl) IS NOT NULL THEN
        -- There tenant_isolation stood aside for the RBAC policies: it takes over again.
        PERFORM tenancy._write_policies(tbl, tenancy._tenant_column(tbl), NULL, true);
    END IF;
    FOR pol IN SELECT p.polname FROM pg_policy p
               WHERE p.polrelid = tbl AND p.polname IN ('rbac_read', 'rbac_create', 'rbac_update', 'rbac_delete') LOOP
        EXECUTE format('DROP POLICY %I ON %s', pol, tbl);
    END LOOP;
    EXECUTE format('DROP TRIGGER IF EXISTS tenancy_rbac ON %s', tbl);
END
$$;
COMMENT ON FUNCTION tenancy.unprotect(regclass) IS 'Undoes tenancy.protect: drops the RBAC policies and trigger (tenant isolation stays).';

CREATE OR REPLACE FUNCTION tenancy.check()
RETURNS TABLE (severity text, object_type text, object_name text, problem text, fix text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
WITH ext_objects AS (
    SELECT d.classid, d.objid FROM pg_depend d
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
),
user_tables AS (
    SELECT c.oid, c.relname, c.relrowsecurity, c.relforcerowsecurity
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenancy')
      AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
      AND NOT EXISTS (SELECT 1 FROM ext_objects e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid)
),
-- A table is tenant-scoped when a column references tenancy.tenants, or
-- when it has a column named tenant_id (then it is a table someone forgot).
scoped AS (
    SELECT t.*, a.attname AS col, true AS has_fk
    FROM user_tables t
    JOIN pg_constraint k ON k.conrelid = t.oid AND k.contype = 'f'
                        AND k.confrelid = 'tenancy.tenants'::regclass AND array_length(k.conkey, 1) = 1
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.conkey[1]
    UNION
    SELECT t.*, a.attname, false
    FROM user_tables t
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
    WHERE NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = t.oid AND k.contype = 'f'
                      AND k.confrelid = 'tenancy.tenants'::regclass)
),
-- Views that read a tenant-scoped table, directly or through other views.
dependent_views AS (
    WITH RECURSIVE v(oid) AS (
        SELECT DISTINCT r.ev_class
        FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
        WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid IN (SELECT oid FROM scoped)
          AND r.ev_class NOT IN (SELECT oid FROM scoped)
        UNION
        SELECT r.ev_class
        FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
        JOIN v ON d.refclassid = 'pg_class'::regclass AND d.refobjid = v.oid
        WHERE r.ev_class <> v.oid
    )
    SELECT c.oid FROM v JOIN pg_class c ON c.oid = v.oid
    WHERE c.relkind IN ('v', 'm')
      AND NOT EXISTS (SELECT 1 FROM ext_objects e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid)
)
SELECT 'error', 'table', s.oid::regclass::text,
       format('has a %I column but is not tenant-scoped (no foreign key to tenancy.tenants)', s.col),
       format('SELECT tenancy.enable(%L);', s.oid::regclass::text)
FROM scoped s WHERE NOT s.has_fk
UNION ALL
SELECT 'error', 'table', s.oid::regclass::text,
       'row level security is not enabled: every tenant sees every row',
       format('SELECT tenancy.enable(%L);', s.oid::regclass::text)
FROM scoped s WHERE s.has_fk AND NOT s.relrowsecurity
UNION ALL
SELECT 'error', 'table', s.oid::regclass::text,
       'row level security is not forced: the table owner bypasses tenant isolation',
       format('ALTER TABLE %s FORCE ROW LEVEL SECURITY;', s.oid::regclass::text)
FROM scoped s WHERE s.has_fk AND NOT s.relforcerowsecurity
UNION ALL
SELECT 'error', 'table', s.oid::regclass::text,
       'has no tenant_isolation policy',
       format('SELECT tenancy.enable(%L, %L);', s.oid::regclass::text, s.col)
FROM scoped s
WHERE s.has_fk AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = s.oid AND p.polname = 'tenant_isolation')
UNION ALL
SELECT 'warning', 'table', s.oid::regclass::text,
       format('no index leads with %I: every tenant''s query scans the whole table', s.col),
       format('CREATE INDEX ON %s (%I);', s.oid::regclass::text, s.col)
FROM scoped s
WHERE s.has_fk AND NOT EXISTS (
    SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = s.oid AND a.attname = s.col)
UNION ALL
SELECT 'error', 'view', c.oid::regclass::text,
       'reads a tenant-scoped table with its owner''s rights (no security_invoker), so isolation does not apply to callers',
       format('ALTER VIEW %s SET (security_invoker = true);', c.oid::regclass::text)
FROM dependent_views dv JOIN pg_class c ON c.oid = dv.oid
WHERE c.relkind = 'v'
  AND NOT coalesce((SELECT o.option_value::boolean FROM pg_options_to_table(c.reloptions) o
                    WHERE o.option_name = 'security_invoker'), false)
UNION ALL
SELECT 'error', 'materialized view', c.oid::regclass::text,
       'stores rows of a tenant-scoped table without row level security',
       format('DROP MATERIALIZED VIEW %s; -- or keep it out of reach of API roles', c.oid::regclass::text)
FROM dependent_views dv JOIN pg_class c ON c.oid = dv.oid
WHERE c.relkind = 'm'
UNION ALL
SELECT 'error', 'function', p.oid::regprocedure::text,
       'SECURITY DEFINER without a pinned search_path: a caller can hijack the objects it resolves',
       format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp;', p.oid::regprocedure::text)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prosecdef
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) cfg WHERE cfg LIKE 'search\_path=%')
UNION ALL
SELECT 'error', 'role', r.rolname::text,
       'login role with BYPASSRLS: anything connecting as it ignores tenant isolation',
       format('ALTER ROLE %I NOBYPASSRLS;', r.rolname)
FROM pg_roles r WHERE r.rolcanlogin AND r.rolbypassrls AND NOT r.rolsuper
UNION ALL
SELECT 'error', 'role', l.rolname::text,
       format('login role can switch to role %I, which bypasses row level security (PostgREST could use it)', b.rolname),
       format('REVOKE %I FROM %I;', b.rolname, l.rolname)
FROM pg_roles l JOIN pg_roles b ON b.oid <> l.oid AND (b.rolbypassrls OR b.rolsuper)
WHERE l.rolcanlogin AND NOT l.rolsuper AND NOT l.rolbypassrls
  AND pg_has_role(l.oid, b.oid, 'MEMBER')
UNION ALL
-- tenancy.pre_request() runs as its caller and calls tenancy._pre_request():
-- a role needs EXECUTE on both, or on neither.
SELECT CASE WHEN x.hook THEN 'error' ELSE 'warning' END, 'role', x.rolname::text,
       CASE WHEN x.hook
            THEN 'may run tenancy.pre_request() but not tenancy._pre_request(): every request it makes is refused (permission denied)'
            ELSE 'may run tenancy._pre_request() but not tenancy.pre_request(): it can set a tenant and user from claims it writes itself' END,
       CASE WHEN x.hook
            THEN format('GRANT EXECUTE ON FUNCTION tenancy._pre_request() TO %I;', x.rolname)
            ELSE format('REVOKE EXECUTE ON FUNCTION tenancy._pre_request() FROM %I;', x.rolname) END
FROM (SELECT r.rolname,
             has_function_privilege(r.oid, 'tenancy.pre_request()', 'EXECUTE') AS hook,
             has_function_privilege(r.oid, 'tenancy._pre_request()', 'EXECUTE') AS inner_hook
      FROM pg_roles r WHERE NOT r.rolsuper) x
WHERE x.hook <> x.inner_hook
UNION ALL
-- Not unsafe in itself, but never to be had by accident: every login (but
-- superusers) that may enter every tenant from SQL.
SELECT 'notice', 'role', l.rolname::text,
       format('login may enter every tenant (a member of %s, granted with tenancy.grant_all_tenants)', string_agg(quote_ident(a.role), ', ' ORDER BY a.role)),
       format('SELECT tenancy.revoke_all_tenants(%L); -- if that is not meant; or bind the login to its tenants with tenancy.grant_sql_access()', min(a.role))
FROM pg_roles l
JOIN tenancy.all_tenants a ON true
JOIN pg_roles g ON g.rolname = a.role
WHERE l.rolcanlogin AND NOT l.rolsuper AND pg_has_role(l.oid, g.oid, 'MEMBER')
  AND NOT EXISTS (SELECT 1 FROM tenancy.sql_logins s WHERE s.login = l.rolname)
GROUP BY l.rolname
UNION ALL
-- Bindings are kept by role name (so that a dump keeps them), and DROP ROLE
-- leaves them behind: a new role of the same name would have them.
SELECT 'error', 'role', s.login::text,
       format('bound to tenant "%s", but no role of that name exists: a role created with it would enter the tenant', t.slug),
       format('SELECT tenancy.revoke_sql_access(%L, %L);', s.login, t.slug)
FROM tenancy.sql_logins s JOIN tenancy.tenants t ON t.id = s.tenant_id
WHERE NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = s.login)
UNION ALL
SELECT 'error', 'role', a.role::text,
       'may enter every tenant, but no role of that name exists: a role created with it would',
       format('SELECT tenancy.revoke_all_tenants(%L);', a.role)
FROM tenancy.all_tenants a
WHERE NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = a.role)
UNION ALL
-- On Citus (nothing without it): see citus.sql.
SELECT * FROM tenancy._citus_findings()
ORDER BY 1, 2, 3, 4
$$;
COMMENT ON FUNCTION tenancy.check() IS 'Lists what is unsafe (errors, warnings): tenant-scoped tables missing RLS, FORCE, policy or index; views without security_invoker over them; SECURITY DEFINER functions without a pinned search_path; login roles that can bypass RLS; roles that may run pre_request but not _pre_request (or the reverse); bindings of roles that no longer exist; on Citus, tenant-scoped tables not sharded by their tenant column, not colocated, or with policies Citus widened. And, as notices, every login that may enter every tenant.';

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
        -- Citus runs the triggers on the shards: their entries go to the
        -- audit log of the node that holds the shard (README: Scale out on
        -- Citus). The setting stays on until the transaction ends.
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

CREATE OR REPLACE FUNCTION tenancy.disable_audit(tbl regclass)
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

-- Fail closed, as privileges.sql does for a fresh install: the new functions
-- are not PUBLIC, except the checks that policies call and the helpers that
-- enable(), protect(), distribute(), scale_out() and check() call as their
-- caller (they read catalogs anyone may read, or write what the caller owns).
REVOKE ALL ON FUNCTION
    tenancy._distributed(regclass, "char"),
    tenancy._scope(),
    tenancy._permit(text, text),
    tenancy._rbac_resource(regclass),
    tenancy._tenant_column(regclass),
    tenancy._write_policies(regclass, name, text, boolean),
    tenancy._require_citus(),
    tenancy.distribute(regclass, name),
    tenancy.scale_out(),
    tenancy._citus_findings(),
    tenancy._merge_actions(text[], text[]),
    tenancy._context_key_set()
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    tenancy._distributed(regclass, "char"),
    tenancy._scope(),
    tenancy._permit(text, text),
    tenancy._rbac_resource(regclass),
    tenancy._tenant_column(regclass),
    tenancy._write_policies(regclass, name, text, boolean),
    tenancy._merge_actions(text[], text[]),
    tenancy._require_citus(),
    tenancy._citus_findings(),
    tenancy._context_key_set()
TO PUBLIC;
