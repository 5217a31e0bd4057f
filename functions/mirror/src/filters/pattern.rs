//! Filter values compiled once: exact strings, or AWS wildcards (`*` any run of characters,
//! `?` one character, `\*`, `\?`, `\\` themselves), compared case-sensitively.

/// A compiled value pattern (AWS wildcard semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pattern {
    Exact(String),
    Glob(Vec<GlobTok>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GlobTok {
    Lit(char),
    One,
    Many,
}

impl Pattern {
    pub(super) fn compile(value: &str) -> Pattern {
        if !value.contains(['*', '?', '\\']) {
            return Pattern::Exact(value.to_owned());
        }
        let mut toks = Vec::new();
        let mut chars = value.chars();
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    if toks.last() != Some(&GlobTok::Many) {
                        toks.push(GlobTok::Many);
                    }
                }
                '?' => toks.push(GlobTok::One),
                '\\' => match chars.next() {
                    Some(n) => toks.push(GlobTok::Lit(n)),
                    None => toks.push(GlobTok::Lit('\\')),
                },
                c => toks.push(GlobTok::Lit(c)),
            }
        }
        Pattern::Glob(toks)
    }

    pub(super) fn matches(&self, text: &str) -> bool {
        match self {
            Pattern::Exact(s) => s == text,
            Pattern::Glob(toks) => glob_match(toks, text),
        }
    }
}

/// Iterative wildcard match with single backtrack point: O(len(p) * len(t)) worst case.
fn glob_match(pattern: &[GlobTok], text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(GlobTok::Many) => {
                star = Some((p, t));
                p += 1;
            }
            Some(GlobTok::One) => {
                p += 1;
                t += 1;
            }
            Some(GlobTok::Lit(c)) if *c == text[t] => {
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
    pattern[p..].iter().all(|t| *t == GlobTok::Many)
}
