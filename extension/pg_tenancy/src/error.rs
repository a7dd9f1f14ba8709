//! The one way the Rust side raises an error: a standard SQLSTATE, a message
//! naming what is wrong and a hint naming the fix. (Custom SQLSTATEs such as
//! TN001, and the HTTP statuses of the error catalog, are raised from SQL by
//! `tenancy.raise_error`; SQL wrappers turn these errors into catalog codes
//! where the API promises one.)

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{function_name, PgLogLevel, PgSqlErrorCode};

pub fn raise(code: PgSqlErrorCode, message: impl Into<String>, hint: &str) -> ! {
    ErrorReport::new(code, message.into(), function_name!())
        .set_hint(hint)
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// An error no user input can cause (SPI refusing the extension's own
/// query): a bug to report, with what was being done.
pub fn internal(doing: impl std::fmt::Display, e: impl std::fmt::Display) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("{doing} failed: {e}"),
        "This is a bug in pg_tenancy: please report it with the statement that hit it.",
    )
}
