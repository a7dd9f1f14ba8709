-- Extension state: tenants and their RBAC tables.
--
-- No API role is granted anything on these tables: they are read and written
-- only through the extension's SECURITY DEFINER functions, each with a pinned
-- search_path. All of them are registered with pg_extension_config_dump so
-- that pg_dump keeps their rows.

CREATE TABLE tenancy.tenants (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    slug       text        NOT NULL UNIQUE,
    name       text        NOT NULL,
    status     text        NOT NULL DEFAULT 'active',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_slug_format CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{1,62}$'),
    -- A tenant argument accepts a slug or an id, so a slug must never look like a uuid.
    CONSTRAINT tenants_slug_not_uuid CHECK (slug !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'),
    CONSTRAINT tenants_name_length CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    CONSTRAINT tenants_status CHECK (status IN ('active', 'suspended'))
);
COMMENT ON TABLE tenancy.tenants IS 'One row per tenant. Deleting a row removes the tenant''s rows from every table made tenant-scoped by tenancy.enable().';

CREATE TABLE tenancy.roles (
    tenant_id   uuid    NOT NULL REFERENCES tenancy.tenants (id) ON DELETE CASCADE,
    name        text    NOT NULL,
    description text    NOT NULL DEFAULT '',
    is_system   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, name),
    CONSTRAINT roles_name_format CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$')
);
COMMENT ON TABLE tenancy.roles IS 'Roles per tenant. System roles (admin, member, readonly) are created with the tenant.';

CREATE TABLE tenancy.role_permissions (
    tenant_id uuid NOT NULL,
    role      text NOT NULL,
    resource  text NOT NULL,
    action    text NOT NULL,
    PRIMARY KEY (tenant_id, role, resource, action),
    FOREIGN KEY (tenant_id, role) REFERENCES tenancy.roles (tenant_id, name) ON DELETE CASCADE
);
COMMENT ON TABLE tenancy.role_permissions IS 'What a role may do: (resource, action); ''*'' matches any resource or action.';

CREATE TABLE tenancy.user_roles (
    tenant_id uuid NOT NULL,
    user_id   uuid NOT NULL,
    role      text NOT NULL,
    PRIMARY KEY (tenant_id, user_id, role),
    FOREIGN KEY (tenant_id, role) REFERENCES tenancy.roles (tenant_id, name) ON DELETE CASCADE
);
CREATE INDEX user_roles_user ON tenancy.user_roles (user_id);
COMMENT ON TABLE tenancy.user_roles IS 'Which user (JWT sub) holds which role in which tenant. A user with no row here cannot use the tenant.';

-- What permissions can name: one row per resource with its actions.
-- tenancy.protect() registers a table's resource (read, create, update,
-- delete); 'roles' is built in. '*' matches any resource or action.
CREATE TABLE tenancy.resources (
    name    text   PRIMARY KEY,
    actions text[] NOT NULL,
    CONSTRAINT resources_name_format CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    CONSTRAINT resources_actions_format CHECK (array_to_string(actions, ',') ~ '^[a-z][a-z0-9_]{0,62}(,[a-z][a-z0-9_]{0,62})*$')
);
COMMENT ON TABLE tenancy.resources IS 'Resources that permissions may name, with their actions. Registered by tenancy.protect().';
INSERT INTO tenancy.resources (name, actions) VALUES ('roles', ARRAY['manage', 'read']);

SELECT pg_catalog.pg_extension_config_dump('tenancy.tenants', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.resources', 'WHERE name <> ''roles''');
SELECT pg_catalog.pg_extension_config_dump('tenancy.roles', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.role_permissions', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.user_roles', '');
