-- Fail closed: nothing in the tenancy schema is executable by PUBLIC except
-- what row level security policies and API code must call.
REVOKE ALL ON ALL ROUTINES IN SCHEMA tenancy FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA tenancy FROM PUBLIC;
GRANT USAGE ON SCHEMA tenancy TO PUBLIC;

-- Called from policies and from API functions, running as the caller.
GRANT EXECUTE ON FUNCTION
    tenancy.current_tenant_id(),
    tenancy.current_user_id(),
    tenancy.tenant_scope(),
    tenancy.tenant_context_required(),
    tenancy.raise_error(text, text, text, integer, jsonb),
    tenancy._raise_refusal(text),
    tenancy.error_catalog(text),
    tenancy.version(),
    tenancy.has_permission(text, text),
    tenancy.require_permission(text, text),
    tenancy.permits(text, text),
    tenancy._permitted(text, text),
    tenancy.permission_denied(text, text),
    tenancy.current_grants(),
    tenancy.reconcile(regclass, regclass, jsonb),
    tenancy._reconcile(regclass, regclass, text),
    tenancy._reconcile_rules(text),
    tenancy._login_bindings(),
    tenancy._login_grants(uuid),
    tenancy._acting_as(),
    tenancy._call_rules(jsonb),
    tenancy.effective_reconcile_rules(jsonb),
    tenancy.explain_reasons(jsonb),
    tenancy._distributed(regclass, "char"),
    tenancy._scope(),
    tenancy._permit(text, text),
    tenancy._rbac_resource(regclass),
    tenancy._tenant_column(regclass),
    tenancy._write_policies(regclass, name, text, boolean),
    tenancy._audit_copying(regclass, boolean),
    tenancy._shard_move_gaps(),
    tenancy._public_function_gaps(),
    tenancy._merge_actions(text[], text[]),
    tenancy._require_citus(),
    tenancy._citus_findings(),
    tenancy._context_key_set()
TO PUBLIC;
GRANT SELECT ON tenancy.resources TO PUBLIC;

-- Deliberately NOT granted to PUBLIC (grant them to your own roles):
--   tenancy.pre_request() and tenancy._pre_request()
--                                  to the PostgREST API roles (anon, authenticated):
--                                  both, as pre_request runs as its caller
--   tenancy.set_tenant(text)       to analyst and job roles, which also need
--                                  tenancy.grant_all_tenants(role); never to
--                                  API roles
--   create_tenant, suspend_tenant, resume_tenant, drop_tenant, add_member,
--   enable, disable, protect, unprotect, check
--                                  to the DBA / platform role
--   idempotency_claim, idempotency_complete
--                                  to the API role (RPCs call them)
--   purge_idempotency_keys, idempotency_stats
--                                  to the DBA / the pg_cron job's owner
--   set_reconcile_rules            to the API and analyst roles (it checks
--                                  reconciliation.manage itself)
--   for_each_tenant                to the DBA / the pg_cron job's role, with
--                                  _job_context, SELECT on tenancy.tenants and
--                                  tenancy.grant_all_tenants(role)
--   grant_sql_access, revoke_sql_access, grant_all_tenants,
--   revoke_all_tenants, SELECT on sql_access
--                                  to the DBA / platform role
--   enable_audit, disable_audit, set_rate_limit, rate_limit_stats
--                                  to the DBA / platform role
--   scale_out, distribute          to the DBA (Citus; scale_out needs a
--                                  superuser)
--   audit_maintain                 to the audit maintenance role only (the
--                                  pg_cron job's); SELECT on tenancy.audit_log
--                                  to the API and analyst roles (row level
--                                  security shows a tenant's own entries to
--                                  holders of audit.read)
--   create_role, delete_role, grant_permission, revoke_permission,
--   assign_role, unassign_role, list_roles
--                                  to the API role (they check roles.manage
--                                  / roles.read themselves)
