-- tenancy.enable / tenancy.disable: make a table tenant-scoped in one call.
-- Both run as the caller (the table's owner or a superuser) and are
-- idempotent: calling enable twice leaves the same state as calling it once.

-- Names of the objects enable() creates, so disable() can find them again.
CREATE FUNCTION tenancy.scoped_object_name(tbl regclass, col name, suffix text)
RETURNS name
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('%s_%s_%s', left(c.relname, 30), left(col, 20), suffix)::name
    FROM pg_class c WHERE c.oid = tbl
$$;

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

CREATE FUNCTION tenancy.enable(tbl regclass, col name DEFAULT 'tenant_id')
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

CREATE FUNCTION tenancy.disable(tbl regclass, col name DEFAULT 'tenant_id')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tbl IS NULL OR col IS NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'tenancy.disable needs a table and a column name');
    END IF;
    IF EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = tbl AND p.polname = 'tenant_isolation') THEN
        EXECUTE format('DROP POLICY tenant_isolation ON %s', tbl);
    END IF;
    EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', tbl);
    IF NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = tbl) THEN
        EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', tbl);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = col AND NOT a.attisdropped) THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', tbl, col);
    END IF;
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', tbl, tenancy.scoped_object_name(tbl, col, 'tenant_fk'));
    EXECUTE format('DROP INDEX IF EXISTS %I.%I',
                   (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl),
                   tenancy.scoped_object_name(tbl, col, 'tenant_idx'));
END
$$;
COMMENT ON FUNCTION tenancy.disable(regclass, name) IS 'Undoes tenancy.enable: drops the isolation policy, row level security, the default, and the FK and index enable created. The column and its data stay.';
