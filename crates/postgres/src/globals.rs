//! `--with-globals`: the snapshot's roles and tablespaces (its
//! `pg_dumpall --globals-only` script) applied to a restore target first.
//!
//! Roles and tablespaces that exist on the target are left exactly as they
//! are: their `CREATE` and every later `ALTER`, `COMMENT` or `SECURITY
//! LABEL` about them is skipped, so a restore never changes an existing
//! role's password or attributes. Per-database role settings (`ALTER ROLE
//! ... IN DATABASE`) belong to the database restore, not here.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use crate::error::{PgError, Result};
use crate::sqltext::{self, Token};

/// What a globals statement is about.
#[derive(Debug, PartialEq, Eq)]
enum Subject {
    CreateRole(String),
    Role(String),
    CreateTablespace(String),
    Tablespace(String),
    RoleInDatabase,
    Other,
}

fn subject(stmt: &str) -> Subject {
    let toks: Vec<Token> = sqltext::tokens(stmt).into_iter().map(|(t, _)| t).collect();
    let kw = |i: usize, k: &str| toks.get(i).is_some_and(|t| sqltext::is_keyword(t, k));
    let id = |i: usize| toks.get(i).and_then(sqltext::ident);
    if kw(0, "CREATE") && kw(1, "ROLE") {
        if let Some(n) = id(2) {
            return Subject::CreateRole(n);
        }
    }
    if kw(0, "CREATE") && kw(1, "TABLESPACE") {
        if let Some(n) = id(2) {
            return Subject::CreateTablespace(n);
        }
    }
    if kw(0, "ALTER") && (kw(1, "ROLE") || kw(1, "USER")) {
        if kw(3, "IN") && kw(4, "DATABASE") {
            return Subject::RoleInDatabase;
        }
        if let Some(n) = id(2) {
            return Subject::Role(n);
        }
    }
    if kw(0, "ALTER") && kw(1, "TABLESPACE") {
        if let Some(n) = id(2) {
            return Subject::Tablespace(n);
        }
    }
    // COMMENT ON ROLE x / SECURITY LABEL [FOR p] ON ROLE x
    if let Some(on) = toks.iter().position(|t| sqltext::is_keyword(t, "ON")) {
        if kw(0, "COMMENT") || kw(0, "SECURITY") {
            if kw(on + 1, "ROLE") {
                if let Some(n) = id(on + 2) {
                    return Subject::Role(n);
                }
            }
            if kw(on + 1, "TABLESPACE") {
                if let Some(n) = id(on + 2) {
                    return Subject::Tablespace(n);
                }
            }
        }
    }
    Subject::Other
}

fn names(
    rt: &tokio::runtime::Handle,
    c: &Client,
    sql: &str,
    what: &str,
) -> Result<BTreeSet<String>> {
    Ok(rt
        .block_on(c.query(sql, &[]))
        .map_err(|e| PgError::query(what, e))?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect())
}

/// Apply the globals script `sql` on `c`, skipping what exists.
pub(crate) fn apply(rt: &tokio::runtime::Handle, c: &Client, sql: &str) -> Result<()> {
    let roles = names(rt, c, "SELECT rolname::text FROM pg_roles", "listing roles")?;
    let spaces = names(
        rt,
        c,
        "SELECT spcname::text FROM pg_tablespace",
        "listing tablespaces",
    )?;
    for stmt in sqltext::statements(sql) {
        let run = match subject(&stmt) {
            Subject::CreateRole(n) | Subject::Role(n) => !roles.contains(&n),
            Subject::CreateTablespace(n) | Subject::Tablespace(n) => !spaces.contains(&n),
            Subject::RoleInDatabase => false,
            Subject::Other => true,
        };
        if !run {
            continue;
        }
        rt.block_on(c.batch_execute(&stmt)).map_err(|e| {
            let first_line = stmt.lines().next().unwrap_or_default();
            PgError::query(
                format!(
                    "applying the snapshot's globals ({first_line}); create that role or \
                     tablespace by hand, or restore without --with-globals"
                ),
                e,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_what_each_statement_is_about() {
        assert_eq!(
            subject("CREATE ROLE alice"),
            Subject::CreateRole("alice".into())
        );
        assert_eq!(
            subject("ALTER ROLE \"Bob\" WITH NOSUPERUSER LOGIN PASSWORD 'x'"),
            Subject::Role("Bob".into())
        );
        assert_eq!(
            subject("ALTER ROLE alice IN DATABASE app SET work_mem TO '1MB'"),
            Subject::RoleInDatabase
        );
        assert_eq!(
            subject("COMMENT ON ROLE alice IS 'ON ROLE bob'"),
            Subject::Role("alice".into())
        );
        assert_eq!(
            subject("CREATE TABLESPACE ts OWNER postgres LOCATION '/x'"),
            Subject::CreateTablespace("ts".into())
        );
        assert_eq!(
            subject("GRANT alice TO bob GRANTED BY postgres"),
            Subject::Other
        );
        assert_eq!(
            subject("SET standard_conforming_strings = on"),
            Subject::Other
        );
    }
}
