//! The AWS CLI `--filters` shorthand (`Name=tag:mirror,Values=true Name=subnet-id,Values=a,b`)
//! and its JSON form, parsed into [`Filter`]s and rendered back.
//!
//! Quoting: a value (or name) may be written in double quotes (`\"` and `\\` escape inside) or
//! single quotes (literal), e.g. `Name=tag:Name,Values="web server",'a,b'`. The JSON form the CLI
//! also accepts (`[{"Name":"subnet-id","Values":["subnet-a"]}]`) is accepted too.

use super::{Filter, FilterError};

/// Parses the CLI shorthand (or the JSON form). An empty or blank string is an empty list.
pub fn parse_filters(input: &str) -> Result<Vec<Filter>, FilterError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    if trimmed.starts_with('[') {
        return parse_json(trimmed);
    }
    let mut filters = Vec::new();
    for token in split_unquoted(trimmed, char::is_whitespace)? {
        if token.is_empty() {
            continue;
        }
        filters.push(parse_token(token)?);
    }
    Ok(filters)
}

fn parse_json(input: &str) -> Result<Vec<Filter>, FilterError> {
    let filters: Vec<Filter> = serde_json::from_str(input).map_err(|e| FilterError::Json {
        message: e.to_string(),
    })?;
    for f in &filters {
        let token = format_filter(f);
        if f.name.is_empty() {
            return Err(FilterError::EmptyName { token });
        }
        if f.values.is_empty() {
            return Err(FilterError::MissingValues { token });
        }
        if f.values.iter().any(String::is_empty) {
            return Err(FilterError::EmptyValue { token });
        }
    }
    Ok(filters)
}

fn parse_token(token: &str) -> Result<Filter, FilterError> {
    let mut name: Option<String> = None;
    let mut values: Option<Vec<String>> = None;
    let mut current: Option<&'static str> = None;
    for item in split_unquoted(token, |c| c == ',')? {
        let (key, raw_value) = match key_prefix(item) {
            Some((key, rest)) => {
                let key: &'static str = match key {
                    "Name" => "Name",
                    "Values" => "Values",
                    other => {
                        return Err(FilterError::UnknownKey {
                            key: other.to_owned(),
                            token: token.to_owned(),
                        });
                    }
                };
                let seen = match key {
                    "Name" => name.is_some(),
                    _ => values.is_some(),
                };
                if seen {
                    return Err(FilterError::DuplicateKey {
                        key: key.to_owned(),
                        token: token.to_owned(),
                    });
                }
                current = Some(key);
                (key, rest)
            }
            None => match current {
                // Further comma-separated items continue the Values list.
                Some("Values") => ("Values", item),
                _ => {
                    return Err(FilterError::ExpectedKey {
                        token: token.to_owned(),
                    });
                }
            },
        };
        let value = unquote(raw_value);
        match key {
            "Name" => {
                if value.is_empty() {
                    return Err(FilterError::EmptyName {
                        token: token.to_owned(),
                    });
                }
                name = Some(value);
            }
            _ => {
                if value.is_empty() {
                    return Err(FilterError::EmptyValue {
                        token: token.to_owned(),
                    });
                }
                values.get_or_insert_with(Vec::new).push(value);
            }
        }
    }
    let name = name.ok_or_else(|| FilterError::MissingName {
        token: token.to_owned(),
    })?;
    let values = values.ok_or_else(|| FilterError::MissingValues {
        token: token.to_owned(),
    })?;
    Ok(Filter { name, values })
}

/// `Key=rest` when the item starts with an unquoted identifier followed by `=`.
fn key_prefix(item: &str) -> Option<(&str, &str)> {
    let eq = item.find('=')?;
    let key = &item[..eq];
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()) {
        Some((key, &item[eq + 1..]))
    } else {
        None
    }
}

/// Splits on unquoted separator characters, keeping quotes in the pieces.
fn split_unquoted(input: &str, is_sep: impl Fn(char) -> bool) -> Result<Vec<&str>, FilterError> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut chars = input.char_indices();
    let mut quote: Option<char> = None;
    while let Some((i, c)) = chars.next() {
        match quote {
            Some('"') => match c {
                '\\' => {
                    chars.next();
                }
                '"' => quote = None,
                _ => {}
            },
            Some(q) => {
                if c == q {
                    quote = None;
                }
            }
            None => {
                if c == '"' || c == '\'' {
                    quote = Some(c);
                } else if is_sep(c) {
                    pieces.push(&input[start..i]);
                    start = i + c.len_utf8();
                }
            }
        }
    }
    if quote.is_some() {
        let token_start = input[..start]
            .rfind(char::is_whitespace)
            .map_or(0, |i| i + 1);
        return Err(FilterError::UnterminatedQuote {
            token: input[token_start..].to_owned(),
        });
    }
    pieces.push(&input[start..]);
    Ok(pieces)
}

/// Removes quotes (already known to be balanced) and resolves `\` escapes inside `"…"`.
fn unquote(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut quote: Option<char> = None;
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some('"') => match c {
                '\\' => {
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                }
                '"' => quote = None,
                _ => out.push(c),
            },
            Some(q) => {
                if c == q {
                    quote = None;
                } else {
                    out.push(c);
                }
            }
            None => {
                if c == '"' || c == '\'' {
                    quote = Some(c);
                } else {
                    out.push(c);
                }
            }
        }
    }
    out
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || matches!(c, ',' | '"' | '\'' | '\\' | '='))
}

fn quote_if_needed(s: &str, out: &mut String) {
    if needs_quotes(s) {
        out.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// Renders one filter in the shorthand (`Name=…,Values=…,…`), quoting where needed.
pub fn format_filter(filter: &Filter) -> String {
    let mut out = String::from("Name=");
    quote_if_needed(&filter.name, &mut out);
    out.push_str(",Values=");
    for (i, v) in filter.values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        quote_if_needed(v, &mut out);
    }
    out
}

/// Renders a filter list in the shorthand; `parse_filters(&format_filters(f)) == Ok(f)` for
/// any list with non-empty names and values.
pub fn format_filters(filters: &[Filter]) -> String {
    filters
        .iter()
        .map(format_filter)
        .collect::<Vec<_>>()
        .join(" ")
}
