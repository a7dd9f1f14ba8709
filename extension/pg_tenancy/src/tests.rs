//! In-database tests of the glue (run by `cargo pgrx test`). Behaviour over
//! SQL sessions and HTTP is tested in `pgrx-tests/` and `tests/`.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn uuid_of(query: &str) -> Option<pgrx::Uuid> {
        Spi::get_one::<pgrx::Uuid>(query).expect("query runs")
    }

    #[pg_test]
    fn context_is_unset_by_default() {
        assert_eq!(uuid_of("SELECT tenancy.current_tenant_id()"), None);
        assert_eq!(uuid_of("SELECT tenancy.current_user_id()"), None);
    }

    #[pg_test]
    fn empty_setting_means_unset() {
        Spi::run("SELECT set_config('tenancy.tenant_id', '', true)").unwrap();
        assert_eq!(uuid_of("SELECT tenancy.current_tenant_id()"), None);
    }

    #[pg_test]
    fn set_tenant_sets_context_for_the_transaction() {
        let id = uuid_of("SELECT tenancy.create_tenant('ctx-acme', 'Acme')").unwrap();
        let set = uuid_of("SELECT tenancy.set_tenant('ctx-acme')").unwrap();
        assert_eq!(set, id);
        assert_eq!(uuid_of("SELECT tenancy.current_tenant_id()"), Some(id));
        assert_eq!(uuid_of("SELECT tenancy.tenant_scope()"), Some(id));
        // by id as well as by slug
        let by_id = uuid_of(&format!("SELECT tenancy.set_tenant('{id}')")).unwrap();
        assert_eq!(by_id, id);
        assert_eq!(uuid_of("SELECT tenancy.current_user_id()"), None);
    }

    #[pg_test(
        error = "no tenant is set for this transaction, so tenant-scoped tables cannot be read or written"
    )]
    fn tenant_scope_fails_closed() {
        Spi::run("SELECT tenancy.tenant_scope()").unwrap();
    }

    #[pg_test(error = "tenant \"nope\" does not exist")]
    fn set_tenant_rejects_unknown_tenant() {
        Spi::run("SELECT tenancy.set_tenant('nope')").unwrap();
    }

    #[pg_test(error = "tenant \"ctx-susp\" is suspended")]
    fn set_tenant_rejects_suspended_tenant() {
        Spi::run("SELECT tenancy.create_tenant('ctx-susp', 'Suspended')").unwrap();
        Spi::run("SELECT tenancy.suspend_tenant('ctx-susp')").unwrap();
        Spi::run("SELECT tenancy.set_tenant('ctx-susp')").unwrap();
    }

    #[pg_test(error = "permission denied to set parameter \"tenancy.tenant_id\"")]
    fn non_superusers_cannot_set_the_context_directly() {
        Spi::run("CREATE ROLE ctx_plain_user NOLOGIN").unwrap();
        Spi::run("SET LOCAL ROLE ctx_plain_user").unwrap();
        Spi::run("SELECT set_config('tenancy.tenant_id', gen_random_uuid()::text, true)").unwrap();
    }

    #[pg_test(error = "invalid configuration parameter name \"tenancy.tenantid\"")]
    fn the_prefix_is_reserved() {
        Spi::run("SELECT set_config('tenancy.tenantid', 'x', true)").unwrap();
    }

    #[pg_test(error = "tenancy.tenant_id holds \"not-a-uuid\", which is not a uuid")]
    fn a_hand_made_context_that_is_not_a_uuid_is_an_error() {
        Spi::run("SELECT set_config('tenancy.tenant_id', 'not-a-uuid', true)").unwrap();
        Spi::run("SELECT tenancy.current_tenant_id()").unwrap();
    }

    #[pg_test]
    fn enable_is_idempotent_and_complete() {
        Spi::run("CREATE TABLE public.notes (id serial PRIMARY KEY, tenant_id uuid, body text)")
            .unwrap();
        Spi::run("SELECT tenancy.enable('public.notes')").unwrap();
        Spi::run("SELECT tenancy.enable('public.notes')").unwrap();
        let count = |q: &str| Spi::get_one::<i64>(q).unwrap().unwrap();
        assert_eq!(
            count("SELECT count(*) FROM pg_policy WHERE polrelid = 'public.notes'::regclass"),
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.notes'::regclass AND contype = 'f'"),
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM pg_index WHERE indrelid = 'public.notes'::regclass AND NOT indisprimary"),
            1
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM pg_class WHERE oid = 'public.notes'::regclass \
                 AND relrowsecurity AND relforcerowsecurity"
            ),
            1
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.notes'::regclass \
                 AND attname = 'tenant_id' AND attnotnull"
            ),
            1
        );
        assert_eq!(count("SELECT count(*) FROM tenancy.check()"), 0);

        Spi::run("SELECT tenancy.disable('public.notes')").unwrap();
        assert_eq!(
            count("SELECT count(*) FROM pg_policy WHERE polrelid = 'public.notes'::regclass"),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.notes'::regclass AND contype = 'f'"),
            0
        );
        // The column stays, so check() reports a table that forgot to be scoped.
        assert_eq!(
            count("SELECT count(*) FROM tenancy.check() WHERE object_name = 'public.notes'"),
            1
        );
    }

    #[pg_test(
        error = "column tenant_id of public.bad_col is text, but a tenant column must be uuid"
    )]
    fn enable_rejects_a_non_uuid_tenant_column() {
        Spi::run("CREATE TABLE public.bad_col (tenant_id text)").unwrap();
        Spi::run("SELECT tenancy.enable('public.bad_col')").unwrap();
    }

    #[pg_test]
    fn version_matches_the_crate() {
        assert_eq!(
            Spi::get_one::<String>("SELECT tenancy.version()")
                .unwrap()
                .as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }

    #[pg_test]
    fn protect_is_idempotent_and_unprotect_undoes_it() {
        Spi::run("CREATE TABLE public.docs (id serial PRIMARY KEY, tenant_id uuid)").unwrap();
        Spi::run("SELECT tenancy.enable('public.docs')").unwrap();
        Spi::run("SELECT tenancy.protect('public.docs', 'docs')").unwrap();
        Spi::run("SELECT tenancy.protect('public.docs', 'docs')").unwrap();
        let count = |q: &str| Spi::get_one::<i64>(q).unwrap().unwrap();
        assert_eq!(
            count("SELECT count(*) FROM pg_policy WHERE polrelid = 'public.docs'::regclass AND polpermissive = false"),
            4
        );
        assert_eq!(
            count("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.docs'::regclass AND tgname = 'tenancy_rbac'"),
            1
        );
        assert_eq!(
            Spi::get_one::<Vec<String>>(
                "SELECT actions FROM tenancy.resources WHERE name = 'docs'"
            )
            .unwrap(),
            Some(vec![
                "create".into(),
                "delete".into(),
                "read".into(),
                "update".into()
            ])
        );
        Spi::run("SELECT tenancy.unprotect('public.docs')").unwrap();
        assert_eq!(
            count("SELECT count(*) FROM pg_policy WHERE polrelid = 'public.docs'::regclass"),
            1
        );
        assert_eq!(count("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.docs'::regclass AND NOT tgisinternal"), 0);
    }

    #[pg_test(error = "public.loose is not tenant-scoped")]
    fn protect_needs_tenant_isolation_first() {
        Spi::run("CREATE TABLE public.loose (id int, tenant_id uuid)").unwrap();
        Spi::run("SELECT tenancy.protect('public.loose', 'loose')").unwrap();
    }

    #[pg_test]
    fn has_permission_follows_the_context() {
        Spi::run("SELECT tenancy.create_tenant('perm-t', 'Perm')").unwrap();
        let has = |q: &str| Spi::get_one::<bool>(q).unwrap().unwrap();
        // No tenant: never true.
        assert!(!has("SELECT tenancy.has_permission('roles', 'read')"));
        // A tenant without a user (analyst, job): bounded by database grants.
        Spi::run("SELECT tenancy.set_tenant('perm-t')").unwrap();
        assert!(has("SELECT tenancy.has_permission('roles', 'manage')"));
        // A user: exactly their roles' grants, wildcards included.
        let user = "0000000f-0000-4000-8000-00000000000f";
        Spi::run(&format!(
            "SELECT tenancy.add_member('perm-t', '{user}', 'readonly')"
        ))
        .unwrap();
        Spi::run(&format!(
            "SELECT tenancy._set_context((SELECT id FROM tenancy.tenants WHERE slug = 'perm-t'), '{user}')"
        ))
        .unwrap();
        assert!(has("SELECT tenancy.has_permission('roles', 'read')"));
        assert!(!has("SELECT tenancy.has_permission('roles', 'manage')"));
        assert!(has("SELECT tenancy.has_permission('*', 'read')"));
        assert!(!has("SELECT tenancy.has_permission('*', '*')"));
        // A change in this transaction is seen at once.
        Spi::run(&format!(
            "SELECT tenancy.add_member('perm-t', '{user}', 'admin')"
        ))
        .unwrap();
        assert!(has("SELECT tenancy.has_permission('roles', 'manage')"));
    }

    #[pg_test]
    fn a_full_rate_limit_table_still_serves_and_still_limits() {
        // The test server holds 1,024 keys; 3,000 users of a tenant are
        // counted within the hour.
        let others = "SELECT count(*) FROM generate_series(1, 3000) g,
            tenancy._rate_limit_take('00000000-0000-4000-8000-0000000000aa',
                                     ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 100, 3600) r
            WHERE r.allowed";
        assert_eq!(
            Spi::get_one::<i64>(others).unwrap(),
            Some(3000),
            "every one of them served"
        );
        let stats = "SELECT live_keys || '/' || capacity FROM tenancy.rate_limit_stats()";
        assert_eq!(
            Spi::get_one::<String>(stats).unwrap().as_deref(),
            Some("1024/1024")
        );
        // One more user: served within the budget, then limited, as ever.
        let take =
            "SELECT allowed FROM tenancy._rate_limit_take('00000000-0000-4000-8000-0000000000aa',
                        '0000000b-0000-4000-8000-00000000000b', 3, 3600)";
        for _ in 0..3 {
            assert_eq!(Spi::get_one::<bool>(take).unwrap(), Some(true));
        }
        assert_eq!(Spi::get_one::<bool>(take).unwrap(), Some(false));
    }
}
