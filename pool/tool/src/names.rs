//! Which tools are served, and under which names MCP clients see them.
//!
//! toolplane's names may hold dots (`fs.read`, a set's members
//! `files.read_file`); many MCP clients accept only `^[a-zA-Z0-9_-]{1,64}$`
//! (function-calling APIs impose it) and refuse or drop the rest. So MCP
//! lists each tool under one documented mapping of its name: every `.`
//! becomes the [`Separator`] (`_` by default). Callers may use either name;
//! REST lists the canonical one. Two tools whose MCP names are the same
//! cannot both be listed: the second is refused, naming the first.
//!
//! [`Glob`] is the pattern of `[tools] expose`: `*` matches any run of
//! characters (dots included), `?` one character, anything else itself.

use std::borrow::Cow;

/// What replaces each `.` of a name in MCP: `_` (the default), `__`, `-`,
/// `--`, or `.` to keep the names as they are (for clients that accept
/// dots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Separator(String);

impl Default for Separator {
    fn default() -> Separator {
        Separator("_".to_owned())
    }
}

impl Separator {
    /// The separators accepted, in words.
    pub const ACCEPTED: &'static str =
        "one of \"_\", \"__\", \"-\", \"--\", or \".\" (names unchanged)";

    /// Parses a separator.
    ///
    /// # Errors
    ///
    /// Anything but the [`Separator::ACCEPTED`] strings.
    pub fn parse(s: &str) -> Result<Separator, String> {
        match s {
            "_" | "__" | "-" | "--" | "." => Ok(Separator(s.to_owned())),
            other => Err(format!("{other:?} is not {}", Separator::ACCEPTED)),
        }
    }

    /// The separator's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name MCP clients see for the tool `name`.
    pub fn mcp_name<'a>(&self, name: &'a str) -> Cow<'a, str> {
        if self.0 == "." || !name.contains('.') {
            Cow::Borrowed(name)
        } else {
            Cow::Owned(name.replace('.', &self.0))
        }
    }

    /// Whether `mcp` is a name every client accepts
    /// (`^[a-zA-Z0-9_-]{1,64}$`).
    pub fn portable(mcp: &str) -> bool {
        !mcp.is_empty()
            && mcp.len() <= 64
            && mcp
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    }
}

/// What is served and how MCP names it: the registry's naming policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// What replaces `.` in MCP names.
    pub separator: Separator,
    /// Serve only the tools matching one of these (`None`: every tool).
    pub expose: Option<Vec<Glob>>,
}

impl Names {
    /// Whether the tool `name` is served.
    pub fn serves(&self, name: &str) -> bool {
        self.expose
            .as_ref()
            .is_none_or(|globs| globs.iter().any(|g| g.matches(name)))
    }

    /// Whether the set `name` may have a member that is served
    /// (`<set>.<tool>`): only then is it loaded.
    pub fn may_serve_set(&self, name: &str) -> bool {
        let under = format!("{name}.");
        self.expose
            .as_ref()
            .is_none_or(|globs| globs.iter().any(|g| g.may_match_under(&under)))
    }

    /// The name MCP clients see for the tool `name`.
    pub fn mcp_name<'a>(&self, name: &'a str) -> Cow<'a, str> {
        self.separator.mcp_name(name)
    }
}

/// A name pattern: `*` any run of characters, `?` one, anything else
/// itself. `files.*` matches every member of the set `files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// A pattern.
    ///
    /// # Errors
    ///
    /// An empty pattern, or one with characters no tool name has.
    pub fn parse(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("an empty pattern matches no tool".into());
        }
        if let Some(c) = pattern
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*' | '?')))
        {
            return Err(format!(
                "{pattern:?}: {c:?} is in no tool name (names use A-Z a-z 0-9 _ . -; patterns add * and ?)"
            ));
        }
        Ok(Glob(pattern.to_owned()))
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        matches(self.0.as_bytes(), name.as_bytes(), false)
    }

    /// Whether some name that begins with `prefix` matches (a set is
    /// loaded when one of its members may be served).
    pub fn may_match_under(&self, prefix: &str) -> bool {
        matches(self.0.as_bytes(), prefix.as_bytes(), true)
    }
}

/// Glob matching by backtracking over the last `*` (linear in practice:
/// names are at most 64 bytes). With `prefix`, running out of text while
/// pattern remains is a match: the rest of a name may supply it.
fn matches(pattern: &[u8], text: &[u8], prefix: bool) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    prefix || pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_become_the_separator_and_the_result_is_portable() {
        let sep = Separator::default();
        assert_eq!(sep.mcp_name("fs.read"), "fs_read");
        assert_eq!(sep.mcp_name("files.read_file"), "files_read_file");
        assert_eq!(sep.mcp_name("echo"), "echo");
        assert!(Separator::portable(&sep.mcp_name("hash.sha256")));
        let double = Separator::parse("__").unwrap();
        assert_eq!(double.mcp_name("files.read_file"), "files__read_file");
        let keep = Separator::parse(".").unwrap();
        assert_eq!(keep.mcp_name("fs.read"), "fs.read");
        assert!(!Separator::portable("fs.read"));
        assert!(!Separator::portable(&"a".repeat(65)));
        assert!(Separator::parse("/").unwrap_err().contains("\"/\""));
    }

    #[test]
    fn globs_match_as_documented() {
        let g = |p: &str| Glob::parse(p).unwrap();
        assert!(g("files.*").matches("files.read_file"));
        assert!(!g("files.*").matches("files"));
        assert!(!g("files.*").matches("filesystem.read"));
        assert!(g("*").matches("fs.read"));
        assert!(g("fs.????").matches("fs.read"));
        assert!(!g("fs.????").matches("fs.write"));
        assert!(g("*.read*").matches("fs.read"));
        assert!(g("*.read*").matches("files.read_file"));
        assert!(g("echo").matches("echo"));
        assert!(!g("echo").matches("echo2"));
        assert!(g("a*b*c").matches("aXbYbZc"));
        assert!(!g("a*b*c").matches("aXbYbZ"));
        assert!(Glob::parse("").is_err());
        assert!(Glob::parse("files/*").unwrap_err().contains("'/'"));
    }

    #[test]
    fn without_expose_everything_is_served_and_with_it_only_what_matches() {
        let all = Names::default();
        assert!(all.serves("fs.read") && all.may_serve_set("files"));
        let some = Names {
            expose: Some(vec![
                Glob::parse("echo").unwrap(),
                Glob::parse("files.read_*").unwrap(),
            ]),
            ..Names::default()
        };
        assert!(some.serves("echo"));
        assert!(some.serves("files.read_file"));
        assert!(!some.serves("files.write_file"));
        assert!(!some.serves("fs.read"));
        assert!(some.may_serve_set("files"));
        assert!(!some.may_serve_set("github"));
    }

    #[test]
    fn a_set_may_be_served_when_a_pattern_can_match_one_of_its_members() {
        let g = |p: &str| Glob::parse(p).unwrap();
        assert!(g("files.*").may_match_under("files."));
        assert!(g("files.read_file").may_match_under("files."));
        assert!(g("*").may_match_under("files."));
        assert!(g("f*").may_match_under("files."));
        assert!(!g("echo").may_match_under("files."));
        assert!(!g("fs.*").may_match_under("files."));
        assert!(!g("files").may_match_under("files."));
    }
}
