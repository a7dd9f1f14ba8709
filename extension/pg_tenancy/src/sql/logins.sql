-- Database logins bound to their tenants (src/logins.rs): a customer's
-- analyst, or a BI tool pointed at a customer's data, gets a login that may
-- enter only its tenants, as an RBAC role of each. Entering every tenant is a
-- privilege a DBA grants to a role on purpose (grant_all_tenants), and
-- tenancy.check() lists every login that has it.

-- One row per (login, tenant): the login may enter the tenant, acting as
-- `role` (an RBAC role of that tenant). Logins are kept by name, so a dump
-- restored into another cluster keeps them.
CREATE TABLE tenancy.sql_logins (
    login      name        NOT NULL,
    tenant_id  uuid        NOT NULL REFERENCES tenancy.tenants (id) ON DELETE CASCADE,
    role       text        NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    granted_by name        NOT NULL DEFAULT session_user,
    PRIMARY KEY (login, tenant_id),
    FOREIGN KEY (tenant_id, role) REFERENCES tenancy.roles (tenant_id, name) ON DELETE CASCADE
);
COMMENT ON TABLE tenancy.sql_logins IS 'Database logins bound to tenants, each acting as an RBAC role of its tenant. Set with tenancy.grant_sql_access() and tenancy.revoke_sql_access().';
SELECT pg_catalog.pg_extension_config_dump('tenancy.sql_logins', '');

-- Roles whose members (logins included) may enter every tenant from SQL:
-- the platform's own analysts, the scheduled jobs.
CREATE TABLE tenancy.all_tenants (
    role       name        PRIMARY KEY,
    granted_at timestamptz NOT NULL DEFAULT now(),
    granted_by name        NOT NULL DEFAULT session_user
);
COMMENT ON TABLE tenancy.all_tenants IS 'Roles whose members may enter every tenant with tenancy.set_tenant(). Set with tenancy.grant_all_tenants() and tenancy.revoke_all_tenants().';
SELECT pg_catalog.pg_extension_config_dump('tenancy.all_tenants', '');

-- What backends keep of both tables is dropped when a change commits.
CREATE TRIGGER login_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.sql_logins
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._changed();
CREATE TRIGGER login_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.all_tenants
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._changed();
-- Binding and unbinding are audited in the tenant's own log.
SELECT tenancy.enable_audit('tenancy.sql_logins');

-- The session's login (session_user, whatever role it has switched to):
-- whether it is a superuser, whether it may enter every tenant, and one row
-- per tenant it is bound to (a suspended one still binds it: it enters
-- nothing else). A login learns only its own bindings.
CREATE FUNCTION tenancy._login_bindings()
RETURNS TABLE (login text, superuser boolean, all_tenants boolean, tenant_id uuid, slug text, role text, active boolean)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.rolname::text, r.rolsuper,
           EXISTS (SELECT 1 FROM tenancy.all_tenants a JOIN pg_roles g ON g.rolname = a.role
                   WHERE pg_has_role(r.oid, g.oid, 'MEMBER')),
           b.tenant_id, b.slug, b.role, b.status = 'active'
    FROM pg_roles r
    LEFT JOIN (SELECT s.login, s.tenant_id, t.slug, s.role, t.status
               FROM tenancy.sql_logins s JOIN tenancy.tenants t ON t.id = s.tenant_id) b
           ON b.login = r.rolname
    WHERE r.rolname = session_user
    ORDER BY b.slug
$$;

-- The (resource, action) grants of the RBAC role the session's login acts
-- as in `tenant`; none if it is not bound to it.
CREATE FUNCTION tenancy._login_grants(tenant uuid)
RETURNS TABLE (resource text, action text)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT rp.resource, rp.action
    FROM tenancy.sql_logins s
    JOIN tenancy.role_permissions rp ON rp.tenant_id = s.tenant_id AND rp.role = s.role
    WHERE s.login = session_user AND s.tenant_id = tenant
$$;

-- Binds a login to a tenant, acting as an RBAC role of it (readonly unless
-- said otherwise). Binding it again changes the role.
CREATE FUNCTION tenancy.grant_sql_access(login name, tenant text, role text DEFAULT 'readonly')
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pg_roles;
    t tenancy.tenants := tenancy.find_tenant(tenant);
BEGIN
    SELECT * INTO r FROM pg_roles x WHERE x.rolname = grant_sql_access.login;
    IF r.oid IS NULL THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('role "%s" does not exist', left(login, 100)),
            'Create the login first: CREATE ROLE ... LOGIN PASSWORD ...;');
    END IF;
    IF r.rolsuper OR r.rolbypassrls THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT',
            format('role "%s" bypasses row level security: binding it to a tenant would protect nothing', login),
            'Bind an ordinary login (NOSUPERUSER NOBYPASSRLS).');
    END IF;
    PERFORM tenancy.tenant_role(t.id, grant_sql_access.role);  -- NOT_FOUND unless it exists
    INSERT INTO tenancy.sql_logins AS s (login, tenant_id, role)
    VALUES (grant_sql_access.login, t.id, grant_sql_access.role)
    ON CONFLICT ON CONSTRAINT sql_logins_pkey DO UPDATE
    SET role = EXCLUDED.role, granted_at = now(), granted_by = session_user
    WHERE s.role IS DISTINCT FROM EXCLUDED.role;
END
$$;
COMMENT ON FUNCTION tenancy.grant_sql_access(name, text, text) IS 'Binds a database login to a tenant, acting as one of its RBAC roles (default readonly): it may then enter that tenant only (and only its bound tenants), and one bound to a single tenant is in it without set_tenant. Audited.';

-- Unbinds a login from a tenant; true if it was bound.
CREATE FUNCTION tenancy.revoke_sql_access(login name, tenant text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t tenancy.tenants := tenancy.find_tenant(tenant);
BEGIN
    DELETE FROM tenancy.sql_logins s WHERE s.login = revoke_sql_access.login AND s.tenant_id = t.id;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION tenancy.revoke_sql_access(name, text) IS 'Unbinds a database login from a tenant; it applies from the login''s next transaction. Audited.';

-- Lets the members of a role enter every tenant from SQL (set_tenant, and
-- the scheduled jobs' for_each_tenant). tenancy.check() lists every login
-- that may.
CREATE FUNCTION tenancy.grant_all_tenants(role name)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles x WHERE x.rolname = grant_all_tenants.role) THEN
        PERFORM tenancy.raise_error('INVALID_ARGUMENT', format('role "%s" does not exist', left(role, 100)));
    END IF;
    INSERT INTO tenancy.all_tenants (role) VALUES (grant_all_tenants.role) ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION tenancy.grant_all_tenants(name) IS 'Lets the members of a role enter every tenant from SQL (tenancy.set_tenant, for_each_tenant). Logins bound to tenants stay bound to them.';

CREATE FUNCTION tenancy.revoke_all_tenants(role name)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM tenancy.all_tenants a WHERE a.role = revoke_all_tenants.role;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION tenancy.revoke_all_tenants(name) IS 'Takes back tenancy.grant_all_tenants(); true if the role had it.';

-- Every binding and every all-tenants role, for DBAs.
CREATE VIEW tenancy.sql_access AS
SELECT s.login, t.slug AS tenant, s.tenant_id, s.role, s.granted_at, s.granted_by
FROM tenancy.sql_logins s JOIN tenancy.tenants t ON t.id = s.tenant_id
UNION ALL
SELECT a.role, '*', NULL, NULL, a.granted_at, a.granted_by
FROM tenancy.all_tenants a;
COMMENT ON VIEW tenancy.sql_access IS 'Which database login may enter which tenant, as which RBAC role; tenant * for the roles whose members may enter every tenant.';
