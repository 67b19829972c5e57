//! Just enough SQL lexing for the statements `pg_dump` and `pg_dumpall`
//! write about databases, roles and tablespaces: split a script into
//! statements, and rename a database where a statement names it.
//!
//! Why a lexer and not text replacement: a comment or a setting value may
//! contain the database's name, or even `DATABASE name`; only an identifier
//! that follows the keyword `DATABASE` outside string literals, quoted
//! identifiers and comments is the database. The statements we handle use
//! standard (`'...'`, `''` for a quote) and escape (`E'...'`) string
//! literals, quoted identifiers and `--` comments; `pg_dumpall` scripts may
//! also hold psql meta-commands (`\restrict KEY`), one per line.

/// One lexical unit, with its byte span in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// An unquoted word (keyword or identifier), as written.
    Word(String),
    /// A double-quoted identifier, unescaped.
    Quoted(String),
    /// A string literal (content not needed).
    Literal,
    /// Any other single character that is not white space.
    Punct(char),
    /// A psql meta-command line (starts with a backslash).
    Meta,
}

/// Tokens of `sql` with their byte ranges; white space and comments are
/// dropped.
pub(crate) fn tokens(sql: &str) -> Vec<(Token, std::ops::Range<usize>)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line_start = true;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c == b'\n' {
            line_start = true;
            i += 1;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'\\' && line_start {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            out.push((Token::Meta, start..i));
            continue;
        }
        line_start = false;
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'\'' {
            i = skip_literal(b, i + 1, false);
            out.push((Token::Literal, start..i));
            continue;
        }
        if (c == b'E' || c == b'e') && b.get(i + 1) == Some(&b'\'') {
            i = skip_literal(b, i + 2, true);
            out.push((Token::Literal, start..i));
            continue;
        }
        if c == b'"' {
            let mut v = Vec::new();
            i += 1;
            while i < b.len() {
                if b[i] == b'"' {
                    if b.get(i + 1) == Some(&b'"') {
                        v.push(b'"');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                v.push(b[i]);
                i += 1;
            }
            out.push((
                Token::Quoted(String::from_utf8_lossy(&v).into_owned()),
                start..i,
            ));
            continue;
        }
        if is_word_byte(c) {
            while i < b.len() && is_word_byte(b[i]) {
                i += 1;
            }
            out.push((Token::Word(sql[start..i].to_string()), start..i));
            continue;
        }
        // A multi-byte character outside a literal: keep it whole.
        let ch = sql[i..].chars().next().unwrap_or('?');
        i += ch.len_utf8();
        out.push((Token::Punct(ch), start..i));
    }
    out
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// Index just past the literal whose body starts at `i`.
fn skip_literal(b: &[u8], mut i: usize, backslash_escapes: bool) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' if backslash_escapes => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// The identifier a token stands for (unquoted words fold to lower case).
pub(crate) fn ident(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) => Some(w.to_lowercase()),
        Token::Quoted(q) => Some(q.clone()),
        _ => None,
    }
}

pub(crate) fn is_keyword(t: &Token, kw: &str) -> bool {
    matches!(t, Token::Word(w) if w.eq_ignore_ascii_case(kw))
}

/// Quote an identifier as PostgreSQL's `quote_ident` would for safety:
/// always, doubling embedded quotes.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The statements of a script, without their terminating `;`; psql
/// meta-command lines are dropped (they are not SQL).
pub(crate) fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (t, r) in tokens(sql) {
        match t {
            Token::Meta => {}
            Token::Punct(';') => {
                if let Some(s) = start.take() {
                    out.push(sql[s..r.start].trim().to_string());
                }
            }
            _ => {
                start.get_or_insert(r.start);
            }
        }
    }
    if let Some(s) = start {
        let rest = sql[s..].trim();
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
    }
    out
}

/// `stmt` with every reference `DATABASE old` replaced by `DATABASE new`
/// (quoted), leaving literals, comments and other identifiers alone.
pub(crate) fn rename_database(stmt: &str, old: &str, new: &str) -> String {
    let toks = tokens(stmt);
    let mut out = String::with_capacity(stmt.len() + new.len());
    let mut copied = 0;
    for w in toks.windows(2) {
        let (prev, _) = &w[0];
        let (cur, range) = &w[1];
        if is_keyword(prev, "DATABASE") && ident(cur).as_deref() == Some(old) {
            out.push_str(&stmt[copied..range.start]);
            out.push_str(&quote_ident(new));
            copied = range.end;
        }
    }
    out.push_str(&stmt[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_only_the_database_identifier() {
        assert_eq!(
            rename_database("ALTER DATABASE app SET work_mem TO '8MB'", "app", "new db"),
            "ALTER DATABASE \"new db\" SET work_mem TO '8MB'"
        );
        assert_eq!(
            rename_database(
                "COMMENT ON DATABASE app IS 'the DATABASE app; it''s ours'",
                "app",
                "b"
            ),
            "COMMENT ON DATABASE \"b\" IS 'the DATABASE app; it''s ours'"
        );
        assert_eq!(
            rename_database(
                "ALTER ROLE \"x IN DATABASE app\" IN DATABASE \"App\" SET a = 'b'",
                "App",
                "c"
            ),
            "ALTER ROLE \"x IN DATABASE app\" IN DATABASE \"c\" SET a = 'b'"
        );
        assert_eq!(
            rename_database("GRANT CONNECT ON DATABASE app TO database", "app", "z"),
            "GRANT CONNECT ON DATABASE \"z\" TO database"
        );
        assert_eq!(
            rename_database("COMMENT ON DATABASE app IS E'x\\'DATABASE app'", "app", "q"),
            "COMMENT ON DATABASE \"q\" IS E'x\\'DATABASE app'"
        );
    }

    #[test]
    fn splits_statements_outside_literals_and_skips_meta_commands() {
        let sql = "\\restrict abc\nSET x = on;\n-- a; comment\nCREATE ROLE \"a;b\";\n\
                   COMMENT ON ROLE r IS 'x;\ny';\n\\unrestrict abc\n";
        assert_eq!(
            statements(sql),
            vec![
                "SET x = on".to_string(),
                "CREATE ROLE \"a;b\"".to_string(),
                "COMMENT ON ROLE r IS 'x;\ny'".to_string(),
            ]
        );
    }
}
