//! CloudFormation / SAM templates as plain JSON values, for wiring tests.
//!
//! YAML short forms (`!Ref X`, `!GetAtt A.B`, `!Sub '...'`, `!If [...]`, `!Condition C`) are
//! rewritten to their long forms (`{"Ref": "X"}`, `{"Fn::GetAtt": ["A", "B"]}`, ...) so a check
//! sees one shape whichever form the template uses. Aliases are resolved by the YAML parser.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

/// A parsed template; `root` is public so tests can mutate a copy.
#[derive(Debug, Clone)]
pub struct Template {
    pub root: Value,
}

impl Template {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn parse(yaml: &str) -> Result<Self> {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml)?;
        let root = to_json(value)?;
        if !root.is_object() {
            bail!("a template is a mapping at the top level");
        }
        Ok(Self { root })
    }

    /// Top-level section (`Resources`, `Parameters`, `Outputs`, ...) or an empty map.
    pub fn section(&self, name: &str) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        self.root
            .get(name)
            .and_then(Value::as_object)
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
    }

    pub fn resources(&self) -> &Map<String, Value> {
        self.section("Resources")
    }

    pub fn resource(&self, logical_id: &str) -> Option<&Value> {
        self.resources().get(logical_id)
    }

    pub fn resource_type(&self, logical_id: &str) -> Option<&str> {
        self.resource(logical_id)?.get("Type")?.as_str()
    }

    /// `(logical id, resource)` of every resource of type `ty`, in template order.
    pub fn of_type<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.resources()
            .iter()
            .filter(move |(_, r)| r.get("Type").and_then(Value::as_str) == Some(ty))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// A resource property, if present.
    pub fn prop<'a>(&'a self, logical_id: &str, path: &str) -> Option<&'a Value> {
        self.resource(logical_id)?
            .get("Properties")?
            .pointer(&pointer(path))
    }

    /// `Globals.Function.<path>`, if present.
    pub fn function_global(&self, path: &str) -> Option<&Value> {
        self.root
            .get("Globals")?
            .get("Function")?
            .pointer(&pointer(path))
    }

    /// A serverless function property, falling back to `Globals.Function`.
    pub fn function_prop<'a>(&'a self, logical_id: &str, path: &str) -> Option<&'a Value> {
        self.prop(logical_id, path)
            .or_else(|| self.function_global(path))
    }

    /// The environment of a serverless function: `Globals` merged with its own variables.
    pub fn function_environment(&self, logical_id: &str) -> Map<String, Value> {
        let mut env = self
            .function_global("Environment/Variables")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(own) = self
            .prop(logical_id, "Environment/Variables")
            .and_then(Value::as_object)
        {
            env.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        env
    }

    /// Every IAM policy statement in the template, with the logical id it belongs to: inline
    /// role policies, managed policies, `AWS::IAM::Policy` / `RolePolicy`, and inline
    /// statements in serverless functions' `Policies`.
    pub fn iam_statements(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (id, r) in self.resources() {
            let ty = r.get("Type").and_then(Value::as_str).unwrap_or_default();
            let props = r.get("Properties");
            let mut docs: Vec<&Value> = Vec::new();
            match ty {
                "AWS::IAM::Role" | "AWS::IAM::User" | "AWS::IAM::Group" => {
                    for p in props
                        .and_then(|p| p.get("Policies"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        docs.extend(p.get("PolicyDocument"));
                    }
                }
                "AWS::IAM::ManagedPolicy" | "AWS::IAM::Policy" | "AWS::IAM::RolePolicy" => {
                    docs.extend(props.and_then(|p| p.get("PolicyDocument")));
                }
                "AWS::Serverless::Function" => {
                    for p in props
                        .and_then(|p| p.get("Policies"))
                        .map(one_or_many)
                        .into_iter()
                        .flatten()
                    {
                        if p.get("Statement").is_some() {
                            docs.push(p);
                        }
                    }
                }
                _ => {}
            }
            for doc in docs {
                for s in doc.get("Statement").map(one_or_many).into_iter().flatten() {
                    out.push((id.clone(), s.clone()));
                }
            }
        }
        out
    }

    /// The logical id a `{"Ref": id}` points at.
    pub fn ref_target(value: &Value) -> Option<&str> {
        value.as_object()?.get("Ref")?.as_str()
    }
}

/// A value that may be a single item or a list, as a list.
pub fn one_or_many(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// Strings of a value that may be one string or a list of strings (other items skipped).
pub fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .map(one_or_many)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Text of a value built with intrinsics, as CloudFormation would render it with
/// placeholders: `Ref X` -> `${X}`, `GetAtt A.B` -> `${A.B}`, `Sub` templates verbatim (its
/// variable map substituted), `Base64` and `Join` see-through. `None` for other shapes.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(m) if m.len() == 1 => {
            let (k, v) = m.iter().next()?;
            match k.as_str() {
                "Ref" => Some(format!("${{{}}}", v.as_str()?)),
                "Fn::GetAtt" => {
                    let parts: Vec<&str> = v.as_array()?.iter().filter_map(Value::as_str).collect();
                    Some(format!("${{{}}}", parts.join(".")))
                }
                "Fn::Base64" => text(v),
                "Fn::Sub" => match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Array(a) if a.len() == 2 => {
                        let mut s = a[0].as_str()?.to_owned();
                        for (name, val) in a[1].as_object()? {
                            let rendered = text(val).unwrap_or_else(|| format!("<{name}>"));
                            s = s.replace(&format!("${{{name}}}"), &rendered);
                        }
                        Some(s)
                    }
                    _ => None,
                },
                "Fn::Join" => {
                    let a = v.as_array()?;
                    let sep = a.first()?.as_str()?;
                    let parts: Option<Vec<String>> =
                        a.get(1)?.as_array()?.iter().map(text).collect();
                    Some(parts?.join(sep))
                }
                "Fn::If" => {
                    // Both branches, so a check sees whatever either could render.
                    let a = v.as_array()?;
                    let branches: Vec<String> = a.iter().skip(1).filter_map(text).collect();
                    Some(branches.join(" | "))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn pointer(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("/{path}")
    }
}

fn to_json(value: serde_yaml::Value) -> Result<Value> {
    use serde_yaml::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().context("a number that is not finite")?;
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .context("a number that is not finite")?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect::<Result<_>>()?),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => bail!("unsupported mapping key {other:?}"),
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!').to_owned();
            let inner = to_json(tagged.value)?;
            let (key, inner) = match name.as_str() {
                "Ref" | "Condition" => (name, inner),
                "GetAtt" => {
                    let inner = match inner {
                        Value::String(s) => match s.split_once('.') {
                            Some((res, attr)) => Value::Array(vec![res.into(), attr.into()]),
                            None => bail!("!GetAtt {s}: expected Resource.Attribute"),
                        },
                        other => other,
                    };
                    ("Fn::GetAtt".to_owned(), inner)
                }
                _ => (format!("Fn::{name}"), inner),
            };
            let mut m = Map::new();
            m.insert(key, inner);
            Value::Object(m)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_form_tags_become_long_form() {
        let t = Template::parse(
            "Resources:\n  A:\n    Type: X\n    Properties:\n      R: !Ref B\n      G: !GetAtt B.Arn.Part\n      S: !Sub '${B}'\n      I: !If [C, !Ref B, !Ref AWS::NoValue]\n",
        )
        .unwrap();
        assert_eq!(t.prop("A", "R").unwrap(), &serde_json::json!({"Ref": "B"}));
        assert_eq!(
            t.prop("A", "G").unwrap(),
            &serde_json::json!({"Fn::GetAtt": ["B", "Arn.Part"]})
        );
        assert_eq!(
            t.prop("A", "S").unwrap(),
            &serde_json::json!({"Fn::Sub": "${B}"})
        );
        assert_eq!(
            t.prop("A", "I").unwrap(),
            &serde_json::json!({"Fn::If": ["C", {"Ref": "B"}, {"Ref": "AWS::NoValue"}]})
        );
    }

    #[test]
    fn text_renders_sub_with_its_variable_map() {
        let v = serde_json::json!({"Fn::Sub": ["a ${X} b ${Y}", {"X": {"Ref": "P"}, "Y": "lit"}]});
        assert_eq!(text(&v).unwrap(), "a ${P} b lit");
    }

    #[test]
    fn aliases_are_resolved() {
        let t = Template::parse("Resources:\n  A:\n    Type: X\n    Properties: &p\n      K: 1\n  B:\n    Type: X\n    Properties: *p\n").unwrap();
        assert_eq!(t.prop("B", "K").unwrap(), &serde_json::json!(1));
    }
}
