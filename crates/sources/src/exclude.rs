//! Excludes: which parts of a backed-up tree are left out.
//!
//! The rules are the ones restic and borg users know:
//!
//! * glob patterns (`*`, `?`, `[a-z]`, `[!a]`, `\` escapes, `**` for any
//!   number of directories). A pattern without a leading slash matches at
//!   any depth: `*.tmp` matches a name anywhere, `cache/tmp` any `tmp` inside
//!   any `cache`. A leading slash anchors it at the root of the snapshot,
//!   which mirrors absolute paths (`/srv/docs/tmp`), as in restic;
//! * a directory holding a file of a given name (`--exclude-if-present`);
//! * cache directories tagged with a `CACHEDIR.TAG` that carries the
//!   standard signature (<https://bford.info/cachedir/>);
//! * other file systems (`--one-file-system`): a mount point below a backed-up
//!   path is kept as an empty directory, so that a restore recreates it;
//! * files larger than a size.
//!
//! Paths named on the command line are always backed up; the rules apply to
//! what is found below them. The rules are recorded in the snapshot (see
//! [`ExcludeRules::META_KEY`]) so that the next backup of the same source can
//! use the same ones.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{SourceError, SourceResult};

/// The first bytes of a valid `CACHEDIR.TAG` (the Cache Directory Tagging
/// Specification); a file of that name without them does not count.
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";
const CACHEDIR_TAG: &str = "CACHEDIR.TAG";

/// The exclude rules of a backup, as given by the user and as recorded in
/// the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcludeRules {
    /// Glob patterns (from `--exclude` and the lines of `--exclude-file`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// Leave out directories that contain an entry of one of these names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub if_present: Vec<String>,
    /// Leave out directories tagged with a valid `CACHEDIR.TAG`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub caches: bool,
    /// Do not descend into other file systems than those of the backed-up paths.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_file_system: bool,
    /// Leave out files larger than this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub larger_than: Option<u64>,
}

impl ExcludeRules {
    /// Key of the rules in a snapshot's `meta`.
    pub const META_KEY: &'static str = "excludes";

    pub fn is_empty(&self) -> bool {
        *self == ExcludeRules::default()
    }

    /// The rules recorded in a snapshot's `meta`, if any.
    pub fn from_meta(
        meta: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Option<ExcludeRules> {
        let v = meta.get(Self::META_KEY)?;
        serde_json::from_value(v.clone()).ok()
    }

    /// The rules as command-line flags, for messages ("using the excludes of
    /// the parent snapshot: --exclude '*.tmp' --one-file-system").
    pub fn as_flags(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        for p in &self.patterns {
            out.push(format!("--exclude '{p}'"));
        }
        for n in &self.if_present {
            out.push(format!("--exclude-if-present '{n}'"));
        }
        if self.caches {
            out.push("--exclude-caches".into());
        }
        if self.one_file_system {
            out.push("--one-file-system".into());
        }
        if let Some(n) = self.larger_than {
            out.push(format!("--exclude-larger-than {n}"));
        }
        out.join(" ")
    }
}

/// Read an exclude file: one pattern per line; blank lines and lines whose
/// first non-blank character is `#` are skipped; leading and trailing blanks
/// are removed. Every pattern is checked, and a bad one is reported with its
/// file and line.
pub fn patterns_from_file(path: &Path) -> SourceResult<Vec<String>> {
    let text = fs::read(path).map_err(|e| SourceError::Read {
        path: path.to_path_buf(),
        cause: e,
    })?;
    let text = String::from_utf8(text).map_err(|_| SourceError::BadExclude {
        what: path.display().to_string(),
        reason: "the file is not UTF-8 text".into(),
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        Pattern::parse(line).map_err(|reason| SourceError::BadExclude {
            what: format!("{} line {}: {line}", path.display(), n + 1),
            reason,
        })?;
        out.push(line.to_string());
    }
    Ok(out)
}

/// Parse a size such as `500`, `64K`, `10M`, `2G`, `1T` (powers of 1024;
/// case-insensitive; an optional trailing `B` or `iB` is accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(digits_end);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size: give a number with an optional K, M, G or T"))?;
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit: use K, M, G or T (powers of 1024)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Why an entry is left out (counted in the summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Exclude,
    /// A mount point of another file system: kept as an empty directory.
    MountPoint,
}

/// Compiled rules, shared by the walker and the progress scanner.
#[derive(Debug, Default)]
pub struct Excluder {
    patterns: Vec<Pattern>,
    if_present: Vec<String>,
    caches: bool,
    one_file_system: bool,
    larger_than: Option<u64>,
    devices: HashSet<u64>,
}

impl Excluder {
    /// Check and compile `rules`; a malformed pattern is an error naming it.
    pub fn new(rules: &ExcludeRules) -> SourceResult<Excluder> {
        let patterns = rules
            .patterns
            .iter()
            .map(|p| {
                Pattern::parse(p).map_err(|reason| SourceError::BadExclude {
                    what: format!("pattern {p:?}"),
                    reason,
                })
            })
            .collect::<SourceResult<Vec<_>>>()?;
        for n in &rules.if_present {
            if n.is_empty() || n.contains('/') {
                return Err(SourceError::BadExclude {
                    what: format!("--exclude-if-present {n:?}"),
                    reason: "give a file name, without a slash".into(),
                });
            }
        }
        Ok(Excluder {
            patterns,
            if_present: rules.if_present.clone(),
            caches: rules.caches,
            one_file_system: rules.one_file_system,
            larger_than: rules.larger_than,
            devices: HashSet::new(),
        })
    }

    /// Allow the file system of a backed-up path (for `--one-file-system`).
    pub fn allow_device(&mut self, dev: u64) {
        self.devices.insert(dev);
    }

    /// What to do with the entry at absolute path `path` whose `lstat` is `m`.
    pub fn check(&self, path: &Path, m: &fs::Metadata) -> Verdict {
        if !self.patterns.is_empty() {
            let parts = components(path);
            if self.patterns.iter().any(|p| p.matches(&parts)) {
                return Verdict::Exclude;
            }
        }
        if let Some(max) = self.larger_than {
            if m.is_file() && m.len() > max {
                return Verdict::Exclude;
            }
        }
        if !m.is_dir() {
            if self.one_file_system && !self.devices.contains(&m.dev()) {
                return Verdict::Exclude;
            }
            return Verdict::Keep;
        }
        if self
            .if_present
            .iter()
            .any(|n| fs::symlink_metadata(path.join(n)).is_ok())
        {
            return Verdict::Exclude;
        }
        if self.caches && is_tagged_cache(&path.join(CACHEDIR_TAG)) {
            return Verdict::Exclude;
        }
        if self.one_file_system && !self.devices.contains(&m.dev()) {
            return Verdict::MountPoint;
        }
        Verdict::Keep
    }
}

fn is_tagged_cache(tag: &Path) -> bool {
    let Ok(mut f) = File::open(tag) else {
        return false;
    };
    let mut head = [0u8; CACHEDIR_SIGNATURE.len()];
    f.read_exact(&mut head).is_ok() && head == CACHEDIR_SIGNATURE
}

fn components(path: &Path) -> Vec<&[u8]> {
    path.as_os_str()
        .as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect()
}

/// A path glob with the exclude rules' syntax (see the module docs), for
/// other users of source paths: the erasure register matches the paths of
/// restored files with it.
#[derive(Debug, Clone)]
pub struct PathGlob(Pattern);

impl PathGlob {
    /// Compile `p`; an error says what is wrong with it (an unclosed `[`,
    /// a lone trailing `\`, an empty pattern).
    pub fn parse(p: &str) -> Result<PathGlob, String> {
        Pattern::parse(p).map(PathGlob)
    }

    /// Whether the absolute source path `path` matches.
    pub fn matches(&self, path: &[u8]) -> bool {
        let parts: Vec<&[u8]> = path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        self.0.matches(&parts)
    }
}

/// One compiled glob pattern: a list of per-component globs.
#[derive(Debug, Clone)]
struct Pattern {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    /// `**`: any number of path components, including none.
    AnyDirs,
    Glob(Vec<u8>),
}

impl Pattern {
    fn parse(p: &str) -> Result<Pattern, String> {
        let trimmed = p.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err("an empty pattern would match nothing (or, anchored, everything)".into());
        }
        let anchored = trimmed.starts_with('/');
        let mut parts = Vec::new();
        if !anchored {
            parts.push(Part::AnyDirs);
        }
        for c in trimmed.split('/').filter(|c| !c.is_empty()) {
            if c == "**" {
                parts.push(Part::AnyDirs);
            } else {
                check_glob(c.as_bytes())?;
                parts.push(Part::Glob(c.as_bytes().to_vec()));
            }
        }
        Ok(Pattern { parts })
    }

    fn matches(&self, path: &[&[u8]]) -> bool {
        match_parts(&self.parts, path)
    }
}

fn match_parts(parts: &[Part], path: &[&[u8]]) -> bool {
    match parts.split_first() {
        None => path.is_empty(),
        Some((Part::AnyDirs, rest)) => {
            (0..=path.len()).any(|skip| match_parts(rest, &path[skip..]))
        }
        Some((Part::Glob(g), rest)) => match path.split_first() {
            Some((name, tail)) => glob_match(g, name) && match_parts(rest, tail),
            None => false,
        },
    }
}

/// Reject what `glob_match` cannot interpret: an unclosed `[` or a
/// trailing `\`.
fn check_glob(g: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while i < g.len() {
        match g[i] {
            b'\\' => {
                if i + 1 >= g.len() {
                    return Err("it ends with a lone backslash".into());
                }
                i += 2;
            }
            b'[' => match class_end(g, i) {
                Some(end) => i = end + 1,
                None => return Err("a '[' is never closed by ']'".into()),
            },
            _ => i += 1,
        }
    }
    Ok(())
}

/// Index of the `]` closing the class that opens at `open`.
fn class_end(g: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if matches!(g.get(i), Some(b'!' | b'^')) {
        i += 1;
    }
    // A `]` right after the opening (or its negation) is a literal.
    if g.get(i) == Some(&b']') {
        i += 1;
    }
    while i < g.len() {
        match g[i] {
            b']' => return Some(i),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

fn class_matches(class: &[u8], c: u8) -> bool {
    let (negate, body) = match class.first() {
        Some(b'!' | b'^') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut i = 0;
    let mut hit = false;
    while i < body.len() {
        let mut lo = body[i];
        if lo == b'\\' && i + 1 < body.len() {
            i += 1;
            lo = body[i];
        }
        if i + 2 < body.len() && body[i + 1] == b'-' {
            let hi = body[i + 2];
            hit |= lo <= c && c <= hi;
            i += 3;
        } else {
            hit |= lo == c;
            i += 1;
        }
    }
    hit != negate
}

/// Shell-style match of one name (`*`, `?`, `[...]`, `\`), on bytes since
/// names need not be UTF-8. Iterative with one backtrack point per `*`,
/// so it is linear-ish and never recurses.
fn glob_match(g: &[u8], name: &[u8]) -> bool {
    let (mut gi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < name.len() {
        let step = match g.get(gi) {
            Some(b'*') => {
                star = Some((gi, ni));
                gi += 1;
                continue;
            }
            Some(b'?') => Some(gi + 1),
            Some(b'[') => class_end(g, gi)
                .filter(|&end| class_matches(&g[gi + 1..end], name[ni]))
                .map(|end| end + 1),
            Some(b'\\') if gi + 1 < g.len() => (g[gi + 1] == name[ni]).then_some(gi + 2),
            Some(&c) => (c == name[ni]).then_some(gi + 1),
            None => None,
        };
        match step {
            Some(next) => {
                gi = next;
                ni += 1;
            }
            None => match star {
                // Let the last `*` swallow one more byte and retry.
                Some((sg, sn)) => {
                    star = Some((sg, sn + 1));
                    gi = sg + 1;
                    ni = sn + 1;
                }
                None => return false,
            },
        }
    }
    g[gi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        Pattern::parse(p)
            .expect("valid pattern")
            .matches(&components(Path::new(path)))
    }

    #[test]
    fn path_globs_match_absolute_paths() {
        let g = PathGlob::parse("/srv/p/123/**").expect("valid");
        assert!(g.matches(b"/srv/p/123"));
        assert!(g.matches(b"/srv/p/123/a/b.pdf"));
        assert!(!g.matches(b"/srv/p/1234"));
        assert!(!g.matches(b"/other/srv/p/123"));
        assert!(PathGlob::parse("/srv/[ab").is_err());
    }

    #[test]
    fn globs_on_one_name() {
        assert!(glob_match(b"*.tmp", b"a.tmp"));
        assert!(glob_match(b"*.tmp", b".tmp"));
        assert!(!glob_match(b"*.tmp", b"a.tmpx"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
        assert!(glob_match(b"[a-c]x", b"bx"));
        assert!(!glob_match(b"[!a-c]x", b"bx"));
        assert!(glob_match(b"[]]", b"]"));
        assert!(glob_match(b"\\*", b"*"));
        assert!(!glob_match(b"\\*", b"a"));
        assert!(glob_match(b"*a*b*c", b"xxaxxbxxc"));
        assert!(!glob_match(b"*a*b*c", b"xxaxxbxx"));
        assert!(glob_match(b"**", b"anything"));
        assert!(glob_match(b"n\xffme", b"n\xffme"));
    }

    #[test]
    fn restic_path_semantics() {
        // No slash: any component's name, at any depth.
        assert!(m("*.tmp", "/srv/docs/a.tmp"));
        assert!(m("cache", "/srv/cache"));
        assert!(m("cache", "/cache"));
        assert!(!m("cache", "/srv/cachex"));
        // A relative pattern with a slash matches at any depth too.
        assert!(m("docs/tmp", "/srv/docs/tmp"));
        assert!(!m("docs/tmp", "/srv/docs/x/tmp"));
        // A leading slash anchors at the root (absolute paths).
        assert!(m("/srv/docs/tmp", "/srv/docs/tmp"));
        assert!(!m("/docs/tmp", "/srv/docs/tmp"));
        // `**` spans any number of directories, including none.
        assert!(m("/srv/**/tmp", "/srv/tmp"));
        assert!(m("/srv/**/tmp", "/srv/a/b/c/tmp"));
        assert!(!m("/srv/**/tmp", "/other/a/tmp"));
        assert!(m("docs/**/*.log", "/x/docs/a/b.log"));
        // A trailing slash is ignored.
        assert!(m("cache/", "/srv/cache"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        assert!(Pattern::parse("[abc").is_err());
        assert!(Pattern::parse("abc\\").is_err());
        assert!(Pattern::parse("/").is_err());
        assert!(Pattern::parse("a[]]b").is_ok());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500"), Ok(500));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("10m"), Ok(10 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("3MB"), Ok(3 << 20));
        assert!(parse_size("x").is_err());
        assert!(parse_size("5Q").is_err());
        assert!(parse_size("").is_err());
    }
}
