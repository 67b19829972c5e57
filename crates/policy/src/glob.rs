//! Source-name globs: `*` matches any run of characters, `?` one
//! character; everything else is literal. Source names are free text
//! (`host:/srv/docs`), so `/` is not special.

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative wildcard matching with one backtrack point (linear-ish).
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether some name could match both patterns (conservative: says yes
/// when unsure, so that validation errs towards reporting an overlap).
pub fn may_overlap(a: &str, b: &str) -> bool {
    let wild = |s: &str| s.contains(['*', '?']);
    match (wild(a), wild(b)) {
        (false, false) => a == b,
        (true, false) => matches(a, b),
        (false, true) => matches(b, a),
        (true, true) => {
            let prefix = |s: &str| s.split(['*', '?']).next().unwrap_or("").to_string();
            let suffix = |s: &str| s.rsplit(['*', '?']).next().unwrap_or("").to_string();
            let (pa, pb) = (prefix(a), prefix(b));
            let (sa, sb) = (suffix(a), suffix(b));
            (pa.starts_with(&pb) || pb.starts_with(&pa)) && (sa.ends_with(&sb) || sb.ends_with(&sa))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("docs", "docs"));
        assert!(!matches("docs", "docs2"));
        assert!(matches("ehr-*", "ehr-main"));
        assert!(matches("*", ""));
        assert!(matches("h?st:*docs", "host:/srv/docs"));
        assert!(!matches("a*b", "acd"));
        assert!(may_overlap("*", "docs"));
        assert!(may_overlap("ehr-*", "ehr-*-db"));
        assert!(!may_overlap("ehr-*", "docs-*"));
        assert!(!may_overlap("docs", "ehr"));
    }
}
