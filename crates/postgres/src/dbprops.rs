//! The database's own properties in a logical restore: owner, comment,
//! security labels, grants, `ALTER DATABASE ... SET` and `ALTER ROLE ... IN
//! DATABASE ... SET`.
//!
//! `pg_dump -Fc` stores them as TOC entries about the database, which
//! `pg_restore` prints only with `--create`, and then only for the
//! original name. We create the database ourselves (under the requested
//! name), so we replay those entries with the name replaced, after the
//! data: a setting such as `default_transaction_read_only` must not apply
//! to the restore itself.

use tokio_postgres::Client;

use crate::dumpscan::TocEntry;
use crate::error::{PgError, Result};
use crate::logical::LogicalRestoreOptions;
use crate::sqltext;

/// The SQL that gives database `new` the properties the dump recorded for
/// database `old`, honouring `no_owner` and `no_acl`.
pub(crate) fn statements_for(
    entries: &[TocEntry],
    old: &str,
    new: &str,
    opts: &LogicalRestoreOptions,
) -> Vec<String> {
    let mut out = Vec::new();
    for e in entries {
        match e.desc.as_str() {
            // The entry's own SQL is the CREATE DATABASE; its owner field
            // is what `pg_restore --create` turns into ALTER ... OWNER.
            "DATABASE" => {
                if !opts.no_owner && !e.owner.is_empty() {
                    out.push(format!(
                        "ALTER DATABASE {} OWNER TO {}",
                        sqltext::quote_ident(new),
                        sqltext::quote_ident(&e.owner)
                    ));
                }
            }
            "ACL" if opts.no_acl => {}
            _ => out.extend(
                sqltext::statements(&e.defn)
                    .iter()
                    .map(|s| sqltext::rename_database(s, old, new)),
            ),
        }
    }
    out
}

/// Run the statements on `admin` (a connection to another database).
pub(crate) fn apply(
    rt: &tokio::runtime::Handle,
    admin: &Client,
    database: &str,
    statements: &[String],
) -> Result<()> {
    for sql in statements {
        rt.block_on(admin.batch_execute(sql)).map_err(|e| {
            PgError::query(
                format!("restoring a property of database {database:?}: {sql}"),
                e,
            )
        })?;
    }
    Ok(())
}
