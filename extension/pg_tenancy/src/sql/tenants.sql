-- Tenant administration: for DBAs and the platform role only (EXECUTE is
-- revoked from PUBLIC in privileges.sql). Every function that takes a
-- `tenant` argument accepts the slug or the id.

-- Resolves a slug or an id to the tenant row, or raises TENANT_NOT_FOUND.
CREATE FUNCTION tenancy.find_tenant(tenant text)
RETURNS tenancy.tenants
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found tenancy.tenants;
BEGIN
    IF tenant IS NULL OR btrim(tenant) = '' THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'tenant must be a slug or a uuid, not empty');
    END IF;
    IF tenant ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        SELECT * INTO found FROM tenancy.tenants t WHERE t.id = tenant::uuid;
    ELSE
        SELECT * INTO found FROM tenancy.tenants t WHERE t.slug = tenant;
    END IF;
    IF found.id IS NULL THEN
        PERFORM tenancy.raise_error('TENANT_NOT_FOUND',
            format('tenant "%s" does not exist', left(tenant, 100)),
            'List tenants with: SELECT slug, id, status FROM tenancy.tenants;');
    END IF;
    RETURN found;
END
$$;
COMMENT ON FUNCTION tenancy.find_tenant(text) IS 'The tenant with this slug or id; raises TENANT_NOT_FOUND otherwise.';

CREATE FUNCTION tenancy.create_tenant(slug text, name text)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id uuid;
BEGIN
    IF slug IS NULL OR slug !~ '^[a-z0-9][a-z0-9_-]{1,62}$' THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT',
            format('invalid tenant slug %s', coalesce(quote_literal(left(slug, 100)), 'NULL')),
            'A slug is 2 to 63 characters: lowercase letters, digits, "-" or "_", starting with a letter or digit.');
    END IF;
    IF slug ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'a tenant slug must not look like a uuid',
            'Tenant arguments accept a slug or an id; a uuid-shaped slug would be ambiguous.');
    END IF;
    IF name IS NULL OR length(btrim(name)) NOT BETWEEN 1 AND 200 THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'tenant name must be 1 to 200 characters');
    END IF;
    IF EXISTS (SELECT 1 FROM tenancy.tenants t WHERE t.slug = create_tenant.slug) THEN
        PERFORM tenancy.raise_error('ALREADY_EXISTS', format('tenant slug "%s" is already taken', slug));
    END IF;

    INSERT INTO tenancy.tenants (slug, name) VALUES (slug, btrim(name)) RETURNING id INTO new_id;

    INSERT INTO tenancy.roles (tenant_id, name, description, is_system) VALUES
        (new_id, 'admin',    'Everything, including role management', true),
        (new_id, 'member',   'Read, create and update', true),
        (new_id, 'readonly', 'Read only', true);
    INSERT INTO tenancy.role_permissions (tenant_id, role, resource, action) VALUES
        (new_id, 'admin',    '*', '*'),
        (new_id, 'member',   '*', 'read'),
        (new_id, 'member',   '*', 'create'),
        (new_id, 'member',   '*', 'update'),
        (new_id, 'readonly', '*', 'read');
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION tenancy.create_tenant(text, text) IS 'Creates a tenant with its system roles admin, member and readonly; returns its id.';

CREATE FUNCTION tenancy.set_tenant_status(tenant text, status text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF status IS NULL OR status NOT IN ('active', 'suspended') THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'status must be ''active'' or ''suspended''');
    END IF;
    UPDATE tenancy.tenants t SET status = set_tenant_status.status
    WHERE t.id = (tenancy.find_tenant(tenant)).id;
END
$$;
COMMENT ON FUNCTION tenancy.set_tenant_status(text, text) IS 'Sets a tenant active or suspended.';

CREATE FUNCTION tenancy.suspend_tenant(tenant text)
RETURNS void
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenancy.set_tenant_status(tenant, 'suspended') $$;
COMMENT ON FUNCTION tenancy.suspend_tenant(text) IS 'Suspends a tenant: its tokens are refused (403 TENANT_SUSPENDED) until tenancy.resume_tenant.';

CREATE FUNCTION tenancy.resume_tenant(tenant text)
RETURNS void
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenancy.set_tenant_status(tenant, 'active') $$;
COMMENT ON FUNCTION tenancy.resume_tenant(text) IS 'Makes a suspended tenant active again.';

CREATE FUNCTION tenancy.drop_tenant(tenant text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- ON DELETE CASCADE removes the tenant's rows from every enabled table.
    DELETE FROM tenancy.tenants t WHERE t.id = (tenancy.find_tenant(tenant)).id;
END
$$;
COMMENT ON FUNCTION tenancy.drop_tenant(text) IS 'Deletes a tenant and, by cascade, all of its rows in every table made tenant-scoped by tenancy.enable().';

CREATE FUNCTION tenancy.add_member(tenant text, user_id uuid, role text DEFAULT 'member')
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t tenancy.tenants := tenancy.find_tenant(tenant);
BEGIN
    IF user_id IS NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', 'user_id must not be NULL');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tenancy.roles r WHERE r.tenant_id = t.id AND r.name = add_member.role) THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT',
            format('role %s does not exist in tenant "%s"', coalesce(quote_literal(left(role, 100)), 'NULL'), t.slug),
            format('Roles of this tenant: SELECT name FROM tenancy.roles WHERE tenant_id = %L;', t.id));
    END IF;
    INSERT INTO tenancy.user_roles (tenant_id, user_id, role)
    VALUES (t.id, add_member.user_id, add_member.role)
    ON CONFLICT DO NOTHING;
    PERFORM tenancy._rbac_changed();
END
$$;
COMMENT ON FUNCTION tenancy.add_member(text, uuid, text) IS 'Gives a user (JWT sub) a role in a tenant. Idempotent.';
