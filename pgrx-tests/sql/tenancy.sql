-- pg_tenancy in one psql session: make a table tenant-scoped, pick a tenant,
-- see only its rows, and fail closed without one.
\set VERBOSITY terse
CREATE EXTENSION pg_tenancy CASCADE;
SELECT tenancy.version();

-- Two tenants (their system roles come with them).
SELECT tenancy.create_tenant('acme', 'Acme') IS NOT NULL AS created;
SELECT tenancy.create_tenant('globex', 'Globex') IS NOT NULL AS created;
SELECT slug, name, status FROM tenancy.tenants ORDER BY slug;
SELECT t.slug, r.name, r.is_system FROM tenancy.roles r JOIN tenancy.tenants t ON t.id = r.tenant_id
WHERE t.slug = 'acme' ORDER BY r.name;

-- A table of our own, made tenant-scoped in one call (twice: it is idempotent).
CREATE TABLE public.notes (id serial PRIMARY KEY, body text NOT NULL);
SELECT tenancy.enable('public.notes');
SELECT tenancy.enable('public.notes');
\d public.notes
SELECT * FROM tenancy.check();

-- Analysts are ordinary roles: superusers bypass row level security.
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'golden_analyst') AS new_role \gset
\if :new_role
CREATE ROLE golden_analyst NOLOGIN;
\endif
GRANT SELECT, INSERT, UPDATE, DELETE ON public.notes TO golden_analyst;
GRANT USAGE ON SEQUENCE public.notes_id_seq TO golden_analyst;
GRANT EXECUTE ON FUNCTION tenancy.set_tenant(text) TO golden_analyst;

SELECT id AS acme_id FROM tenancy.tenants WHERE slug = 'acme' \gset

-- Without a tenant: a clear error naming the fix, not an empty result.
SET ROLE golden_analyst;
SELECT * FROM public.notes;
INSERT INTO public.notes (body) VALUES ('who owns me?');

-- With a tenant, inside a transaction: rows go to that tenant only.
BEGIN;
SELECT tenancy.set_tenant('acme') IS NOT NULL AS set;
INSERT INTO public.notes (body) VALUES ('acme note 1'), ('acme note 2');
COMMIT;
BEGIN;
SELECT tenancy.set_tenant('globex') IS NOT NULL AS set;
INSERT INTO public.notes (body) VALUES ('globex note');
SELECT body FROM public.notes ORDER BY id;
COMMIT;
-- Writing another tenant's id is refused by the policy's WITH CHECK.
BEGIN;
SELECT tenancy.set_tenant('globex') IS NOT NULL AS set;
INSERT INTO public.notes (body, tenant_id) VALUES ('sneaky', :'acme_id');
ROLLBACK;
BEGIN;
SELECT tenancy.set_tenant('acme') IS NOT NULL AS set;
SELECT body FROM public.notes ORDER BY id;
WITH u AS (UPDATE public.notes SET body = 'mine now' WHERE body = 'globex note' RETURNING 1)
SELECT count(*) AS updated FROM u;
WITH d AS (DELETE FROM public.notes WHERE body = 'globex note' RETURNING 1)
SELECT count(*) AS deleted FROM d;
COMMIT;

-- The context ended with the transaction.
SELECT count(*) FROM public.notes;
RESET ROLE;

-- Unknown and suspended tenants.
SELECT tenancy.set_tenant('initech');
SELECT tenancy.suspend_tenant('globex');
BEGIN;
SELECT tenancy.set_tenant('globex');
ROLLBACK;
SELECT tenancy.resume_tenant('globex');

-- Bad input to administration functions.
SELECT tenancy.create_tenant('Acme Corp', 'x');
SELECT tenancy.create_tenant('acme', 'again');
SELECT tenancy.add_member('acme', '00000000-0000-4000-8000-000000000001', 'owner');
SELECT tenancy.enable('public.notes_id_seq');

-- check() finds what is unsafe.
CREATE TABLE public.leaky (id int, tenant_id uuid);
CREATE VIEW public.all_notes AS SELECT * FROM public.notes;
CREATE FUNCTION public.unsafe_definer() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1';
SELECT severity, object_type, object_name, problem FROM tenancy.check();
ALTER VIEW public.all_notes SET (security_invoker = true);
ALTER FUNCTION public.unsafe_definer() SET search_path = pg_catalog, pg_temp;
SELECT tenancy.enable('public.leaky');
SELECT count(*) AS problems FROM tenancy.check();
ALTER TABLE public.leaky NO FORCE ROW LEVEL SECURITY;
DROP INDEX public.leaky_tenant_id_tenant_idx;
SELECT severity, object_type, object_name, problem FROM tenancy.check();
SELECT tenancy.enable('public.leaky');
SELECT count(*) AS problems FROM tenancy.check();

-- Dropping a tenant removes its rows from every enabled table.
SELECT tenancy.drop_tenant('acme');
SELECT count(*) AS notes_left FROM public.notes;
