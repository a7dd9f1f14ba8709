-- RBAC: permissions checked inside the database, read from the tables on
-- every transaction (never from a token), and per-command policies.
--
-- A permission is (resource, action); '*' in a grant matches any resource or
-- action. A user holds the union of the permissions of their roles in the
-- current tenant. Sessions that pick a tenant with set_tenant() and have no
-- user (analysts, jobs) are limited by their database role's grants, not RBAC.

-- The current user's grants in the current tenant. It takes no arguments: the
-- context can only be set by the extension, so nobody can ask about others.
CREATE FUNCTION tenancy.current_grants()
RETURNS TABLE (resource text, action text)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT rp.resource, rp.action
    FROM tenancy.user_roles ur
    JOIN tenancy.role_permissions rp ON rp.tenant_id = ur.tenant_id AND rp.role = ur.role
    WHERE ur.tenant_id = tenancy.current_tenant_id() AND ur.user_id = tenancy.current_user_id()
    ORDER BY 1, 2
$$;
COMMENT ON FUNCTION tenancy.current_grants() IS 'The (resource, action) grants of the current user in the current tenant, as stored (with wildcards).';

-- True, or error PERMISSION_DENIED naming the missing permission. Returns a
-- boolean so that policies can use it: (SELECT tenancy.require_permission(...)).
CREATE FUNCTION tenancy.require_permission(resource text, action text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN tenancy.has_permission(resource, action) OR tenancy.permission_denied(resource, action);
END
$$;
COMMENT ON FUNCTION tenancy.require_permission(text, text) IS 'Returns true if the current user holds resource.action, else raises PERMISSION_DENIED (SQLSTATE 42501, HTTP 403) naming it.';

-- What protect()'s policies and trigger call: true, or PERMISSION_DENIED.
-- A plain SQL function, so the planner inlines it into the policy's
-- initPlan: one call into Rust, and the error path only when it is false.
CREATE FUNCTION tenancy.permission_denied(resource text, action text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Without a tenant the problem is the missing tenant, whichever policy
    -- the planner happens to check first.
    PERFORM tenancy.tenant_scope();
    PERFORM tenancy.raise_error('PERMISSION_DENIED',
        format('permission %s.%s is required', resource, action),
        'Ask an admin of your tenant for a role that grants it; GET /rpc/my_permissions lists yours.');
    RETURN false;
END
$$;

CREATE FUNCTION tenancy.permits(resource text, action text)
RETURNS boolean
LANGUAGE sql STABLE
AS $$ SELECT tenancy._permitted(resource, action) OR tenancy.permission_denied(resource, action) $$;
COMMENT ON FUNCTION tenancy.permits(text, text) IS 'True if the current user holds resource.action, else PERMISSION_DENIED; protect()''s policies check the same, written out. Names are not re-validated.';

-- Statement-level guard installed by protect(): a clear 403 even when the
-- statement touches no row.
CREATE FUNCTION tenancy.rbac_statement_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- No tenant: row level security fails closed for ordinary roles; roles
    -- that bypass it (a DBA's bulk load) are not RBAC users.
    IF tenancy.current_tenant_id() IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM tenancy.permits(TG_ARGV[0],
        CASE TG_OP WHEN 'INSERT' THEN 'create' WHEN 'UPDATE' THEN 'update' ELSE 'delete' END);
    RETURN NULL;
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

CREATE FUNCTION tenancy.protect(tbl regclass, resource text)
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

CREATE FUNCTION tenancy.unprotect(tbl regclass)
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

-- Splits 'resource.action' and checks that both parts exist.
CREATE FUNCTION tenancy.parse_permission(permission text, OUT resource text, OUT action text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF permission IS NULL OR permission !~ '^([a-z][a-z0-9_]{0,62}|\*)\.([a-z][a-z0-9_]{0,62}|\*)$' THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT',
            format('invalid permission %s', coalesce(quote_literal(left(permission, 100)), 'NULL')),
            'A permission is "resource.action", e.g. "invoices.read"; "*" stands for any resource or action.');
    END IF;
    resource := split_part(permission, '.', 1);
    action := split_part(permission, '.', 2);
    IF resource <> '*' AND NOT EXISTS (SELECT 1 FROM tenancy.resources r WHERE r.name = resource) THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('unknown resource "%s"', resource),
            (SELECT 'Known resources: ' || string_agg(r.name, ', ' ORDER BY r.name) FROM tenancy.resources r));
    END IF;
    IF action <> '*' AND NOT EXISTS (SELECT 1 FROM tenancy.resources r
                                     WHERE (r.name = resource OR resource = '*') AND action = ANY (r.actions)) THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('unknown action "%s" for resource "%s"', action, resource),
            (SELECT 'Actions: ' || string_agg(DISTINCT a, ', ') FROM tenancy.resources r, unnest(r.actions) a
             WHERE r.name = resource OR resource = '*'));
    END IF;
END
$$;

-- The tenant whose roles the caller may manage: requires roles.manage.
CREATE FUNCTION tenancy.managed_tenant()
RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenancy.require_permission('roles', 'manage');
    RETURN tenancy.tenant_scope();
END
$$;

-- The name itself, or INVALID_ARGUMENT.
CREATE FUNCTION tenancy.valid_role_name(name text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT',
            format('invalid role name %s', coalesce(quote_literal(left(name, 100)), 'NULL')),
            'A role name is 1 to 63 characters: lowercase letters, digits and "_", starting with a letter.');
    END IF;
    RETURN name;
END
$$;

-- A role of the current tenant, or NOT_FOUND.
CREATE FUNCTION tenancy.tenant_role(tenant uuid, role text)
RETURNS tenancy.roles
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found tenancy.roles;
BEGIN
    PERFORM tenancy.valid_role_name(role);
    SELECT * INTO found FROM tenancy.roles r WHERE r.tenant_id = tenant AND r.name = role;
    IF found.name IS NULL THEN
        PERFORM tenancy.raise_error('NOT_FOUND', format('role "%s" does not exist in this tenant', role));
    END IF;
    RETURN found;
END
$$;

-- Nobody hands out more than they hold: the caller must hold every
-- permission of a role to assign, unassign or delete it.
CREATE FUNCTION tenancy.require_covering(tenant uuid, role text, doing text)
RETURNS void
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT rp.resource, rp.action FROM tenancy.role_permissions rp
             WHERE rp.tenant_id = tenant AND rp.role = require_covering.role ORDER BY 1, 2 LOOP
        IF NOT tenancy.has_permission(p.resource, p.action) THEN
            PERFORM tenancy.raise_error('PERMISSION_DENIED',
                format('you cannot %s role "%s": it grants %s.%s, which you do not hold', doing, role, p.resource, p.action));
        END IF;
    END LOOP;
END
$$;

CREATE FUNCTION tenancy.role_json(tenant uuid, role text)
RETURNS jsonb
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'name', r.name, 'description', r.description, 'is_system', r.is_system,
        'permissions', coalesce((SELECT jsonb_agg(rp.resource || '.' || rp.action ORDER BY rp.resource, rp.action)
                                 FROM tenancy.role_permissions rp WHERE rp.tenant_id = r.tenant_id AND rp.role = r.name), '[]'),
        'members', (SELECT count(*) FROM tenancy.user_roles ur WHERE ur.tenant_id = r.tenant_id AND ur.role = r.name))
    FROM tenancy.roles r WHERE r.tenant_id = tenant AND r.name = role
$$;

CREATE FUNCTION tenancy.create_role(name text, description text DEFAULT '', permissions text[] DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenant uuid := tenancy.managed_tenant();
    perm text;
    parsed record;
BEGIN
    PERFORM tenancy.valid_role_name(name);
    IF length(coalesce(description, '')) > 500 THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'a role description is at most 500 characters');
    END IF;
    IF EXISTS (SELECT 1 FROM tenancy.roles r WHERE r.tenant_id = tenant AND r.name = create_role.name) THEN
        PERFORM tenancy.raise_error('ALREADY_EXISTS', format('role "%s" already exists in this tenant', name));
    END IF;
    INSERT INTO tenancy.roles (tenant_id, name, description) VALUES (tenant, name, coalesce(description, ''));
    FOREACH perm IN ARRAY coalesce(permissions, '{}') LOOP
        parsed := tenancy.parse_permission(perm);
        IF NOT tenancy.has_permission(parsed.resource, parsed.action) THEN
            PERFORM tenancy.raise_error('PERMISSION_DENIED',
                format('you cannot grant %s, which you do not hold', perm));
        END IF;
        INSERT INTO tenancy.role_permissions (tenant_id, role, resource, action)
        VALUES (tenant, name, parsed.resource, parsed.action) ON CONFLICT DO NOTHING;
    END LOOP;
    PERFORM tenancy._rbac_changed();
    RETURN tenancy.role_json(tenant, name);
END
$$;
COMMENT ON FUNCTION tenancy.create_role(text, text, text[]) IS 'Creates a custom role in the current tenant with permissions like ''invoices.read''. Needs roles.manage and every permission granted.';

CREATE FUNCTION tenancy.delete_role(name text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenant uuid := tenancy.managed_tenant();
    r tenancy.roles := tenancy.tenant_role(tenant, name);
BEGIN
    IF r.is_system THEN
        PERFORM tenancy.raise_error('PERMISSION_DENIED', format('"%s" is a system role: it cannot be deleted', name));
    END IF;
    PERFORM tenancy.require_covering(tenant, name, 'delete');
    DELETE FROM tenancy.roles x WHERE x.tenant_id = tenant AND x.name = delete_role.name;
    PERFORM tenancy._rbac_changed();
END
$$;
COMMENT ON FUNCTION tenancy.delete_role(text) IS 'Deletes a custom role of the current tenant (and its assignments). System roles cannot be deleted.';

CREATE FUNCTION tenancy.set_role_permission(role text, permission text, granted boolean)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenant uuid := tenancy.managed_tenant();
    r tenancy.roles := tenancy.tenant_role(tenant, role);
    parsed record := tenancy.parse_permission(permission);
BEGIN
    IF r.is_system THEN
        PERFORM tenancy.raise_error('PERMISSION_DENIED',
            format('"%s" is a system role: its permissions cannot be changed', role));
    END IF;
    IF NOT tenancy.has_permission(parsed.resource, parsed.action) THEN
        PERFORM tenancy.raise_error('PERMISSION_DENIED',
            format('you cannot %s %s, which you do not hold', CASE WHEN granted THEN 'grant' ELSE 'revoke' END, permission));
    END IF;
    IF granted THEN
        INSERT INTO tenancy.role_permissions (tenant_id, role, resource, action)
        VALUES (tenant, role, parsed.resource, parsed.action) ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM tenancy.role_permissions rp
        WHERE rp.tenant_id = tenant AND rp.role = set_role_permission.role
          AND rp.resource = parsed.resource AND rp.action = parsed.action;
    END IF;
    PERFORM tenancy._rbac_changed();
    RETURN tenancy.role_json(tenant, role);
END
$$;

CREATE FUNCTION tenancy.grant_permission(role text, permission text)
RETURNS jsonb
LANGUAGE sql VOLATILE
AS $$ SELECT tenancy.set_role_permission(role, permission, true) $$;
COMMENT ON FUNCTION tenancy.grant_permission(text, text) IS 'Adds a permission (''resource.action'') to a custom role of the current tenant. Needs roles.manage and the permission itself.';

CREATE FUNCTION tenancy.revoke_permission(role text, permission text)
RETURNS jsonb
LANGUAGE sql VOLATILE
AS $$ SELECT tenancy.set_role_permission(role, permission, false) $$;
COMMENT ON FUNCTION tenancy.revoke_permission(text, text) IS 'Removes a permission from a custom role of the current tenant.';

CREATE FUNCTION tenancy.set_user_role(user_id uuid, role text, assigned boolean)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenant uuid := tenancy.managed_tenant();
    r tenancy.roles := tenancy.tenant_role(tenant, role);
    changed integer;
BEGIN
    IF user_id IS NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'user_id must not be NULL');
    END IF;
    PERFORM tenancy.require_covering(tenant, r.name, CASE WHEN assigned THEN 'assign' ELSE 'unassign' END);
    IF assigned THEN
        INSERT INTO tenancy.user_roles (tenant_id, user_id, role) VALUES (tenant, set_user_role.user_id, r.name)
        ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM tenancy.user_roles ur
        WHERE ur.tenant_id = tenant AND ur.user_id = set_user_role.user_id AND ur.role = r.name;
    END IF;
    GET DIAGNOSTICS changed = ROW_COUNT;
    PERFORM tenancy._rbac_changed();
    RETURN changed > 0;
END
$$;

CREATE FUNCTION tenancy.assign_role(user_id uuid, role text)
RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT tenancy.set_user_role(user_id, role, true) $$;
COMMENT ON FUNCTION tenancy.assign_role(uuid, text) IS 'Gives a user (JWT sub) a role in the current tenant; true if it was new. Needs roles.manage and every permission of the role.';

CREATE FUNCTION tenancy.unassign_role(user_id uuid, role text)
RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT tenancy.set_user_role(user_id, role, false) $$;
COMMENT ON FUNCTION tenancy.unassign_role(uuid, text) IS 'Takes a role from a user in the current tenant; true if they had it. Takes effect on their next request.';

CREATE FUNCTION tenancy.list_roles()
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenant uuid := tenancy.tenant_scope();
BEGIN
    PERFORM tenancy.require_permission('roles', 'read');
    RETURN QUERY SELECT tenancy.role_json(tenant, r.name) FROM tenancy.roles r WHERE r.tenant_id = tenant ORDER BY r.name;
END
$$;
COMMENT ON FUNCTION tenancy.list_roles() IS 'The roles of the current tenant with their permissions and member counts. Needs roles.read.';
