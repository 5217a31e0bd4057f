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

    /// The template as CloudFormation would deploy it with these parameter values (the others at
    /// their `Default`): every condition evaluated, resources and outputs under a false condition
    /// removed, each `Fn::If` replaced by its chosen branch, properties or list items that are
    /// `Ref AWS::NoValue` dropped, and `Fn::Select` / `Fn::Split` / `Fn::Join` computed where
    /// they only use parameters and literals. Other intrinsics (`Ref` included) stay as they
    /// are. `Parameters` and `Conditions` are kept, and so is the `Condition` key of what remains.
    ///
    /// Condition functions (`Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`, `Condition`) may use
    /// `Ref` to parameters, `Fn::Select`, `Fn::Split`, `Fn::Join` and `Fn::Sub` over them; a
    /// condition that needs a parameter without a value, or a pseudo parameter, is an error.
    pub fn with_parameters(&self, values: &[(&str, &str)]) -> Result<Template> {
        let mut params: Map<String, Value> = Map::new();
        let is_list = |name: &str| {
            let ty = self.section("Parameters")[name]
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            ty.starts_with("List<") || ty == "CommaDelimitedList"
        };
        let typed = |name: &str, v: String| {
            if is_list(name) {
                Value::Array(v.split(',').map(|p| Value::String(p.to_owned())).collect())
            } else {
                Value::String(v)
            }
        };
        for (name, p) in self.section("Parameters") {
            if let Some(d) = p.get("Default") {
                params.insert(name.clone(), typed(name, scalar_text(d)));
            }
        }
        for (name, v) in values {
            if !self.section("Parameters").contains_key(*name) {
                bail!("no parameter {name}");
            }
            params.insert((*name).to_owned(), typed(name, (*v).to_owned()));
        }
        let mut eval = Conditions {
            defs: self.section("Conditions").clone(),
            params,
            done: Map::new(),
            visiting: Vec::new(),
        };
        let names: Vec<String> = eval.defs.keys().cloned().collect();
        for name in &names {
            eval.condition(name)?;
        }
        let mut root = self.root.clone();
        for section in ["Resources", "Outputs"] {
            if let Some(m) = root.get_mut(section).and_then(Value::as_object_mut) {
                let mut keep = Map::new();
                for (id, item) in std::mem::take(m) {
                    let live = match item.get("Condition").and_then(Value::as_str) {
                        Some(c) => eval.condition(c)?,
                        None => true,
                    };
                    if live {
                        keep.insert(id, item);
                    }
                }
                *m = keep;
            }
        }
        for section in ["Resources", "Outputs", "Globals"] {
            if let Some(v) = root.get_mut(section) {
                let resolved = resolve_ifs(std::mem::take(v), &mut eval)?;
                *v = resolved.unwrap_or(Value::Null);
            }
        }
        Ok(Template { root })
    }
}

/// A parameter default or value as CloudFormation passes it: always text.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

struct Conditions {
    defs: Map<String, Value>,
    params: Map<String, Value>,
    done: Map<String, Value>,
    visiting: Vec<String>,
}

impl Conditions {
    fn condition(&mut self, name: &str) -> Result<bool> {
        if let Some(v) = self.done.get(name) {
            return Ok(v.as_bool().unwrap_or(false));
        }
        if self.visiting.iter().any(|n| n == name) {
            bail!("condition {name} refers to itself");
        }
        let def = self
            .defs
            .get(name)
            .cloned()
            .with_context(|| format!("no condition {name}"))?;
        self.visiting.push(name.to_owned());
        let v = self
            .truth(&def)
            .with_context(|| format!("condition {name}"))?;
        self.visiting.pop();
        self.done.insert(name.to_owned(), Value::Bool(v));
        Ok(v)
    }

    fn truth(&mut self, v: &Value) -> Result<bool> {
        let (k, arg) = single(v).with_context(|| format!("not a condition function: {v}"))?;
        let args = || arg.as_array().cloned().unwrap_or_default();
        Ok(match k {
            "Fn::Equals" => {
                let a = args();
                if a.len() != 2 {
                    bail!("Fn::Equals takes two values: {v}");
                }
                self.value(&a[0])? == self.value(&a[1])?
            }
            "Fn::Not" => !self.truth(args().first().context("Fn::Not")?)?,
            "Fn::And" => {
                let mut all = true;
                for c in args() {
                    all &= self.truth(&c)?;
                }
                all
            }
            "Fn::Or" => {
                let mut any = false;
                for c in args() {
                    any |= self.truth(&c)?;
                }
                any
            }
            "Condition" => self.condition(arg.as_str().context("Condition name")?)?,
            other => bail!("{other} is not a condition function"),
        })
    }

    /// A value a condition compares: text, or a list of texts.
    fn value(&mut self, v: &Value) -> Result<Value> {
        Ok(match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Value::String(scalar_text(v)),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.value(i))
                    .collect::<Result<Vec<_>>>()?,
            ),
            _ => {
                let (k, arg) = single(v).with_context(|| format!("unsupported value {v}"))?;
                match k {
                    "Ref" => {
                        let name = arg.as_str().context("Ref name")?;
                        self.params
                            .get(name)
                            .cloned()
                            .with_context(|| format!("parameter {name} has no value"))?
                    }
                    "Fn::Select" => {
                        let a = arg.as_array().context("Fn::Select arguments")?;
                        let i: usize = scalar_text(&self.value(&a[0])?).parse()?;
                        let list = self.value(&a[1])?;
                        list.as_array()
                            .and_then(|l| l.get(i).cloned())
                            .with_context(|| format!("Fn::Select {i} out of range in {list}"))?
                    }
                    "Fn::Split" => {
                        let a = arg.as_array().context("Fn::Split arguments")?;
                        let sep = a[0].as_str().context("Fn::Split delimiter")?;
                        let s = scalar_text(&self.value(&a[1])?);
                        Value::Array(s.split(sep).map(|p| Value::String(p.to_owned())).collect())
                    }
                    "Fn::Join" => {
                        let a = arg.as_array().context("Fn::Join arguments")?;
                        let sep = a[0].as_str().context("Fn::Join delimiter")?;
                        let list = self.value(&a[1])?;
                        let parts: Vec<String> = list
                            .as_array()
                            .context("Fn::Join list")?
                            .iter()
                            .map(scalar_text)
                            .collect();
                        Value::String(parts.join(sep))
                    }
                    "Fn::Sub" => {
                        let (tpl, vars) = match arg {
                            Value::String(s) => (s.clone(), Map::new()),
                            Value::Array(a) if a.len() == 2 => (
                                a[0].as_str().context("Fn::Sub template")?.to_owned(),
                                a[1].as_object().cloned().unwrap_or_default(),
                            ),
                            _ => bail!("Fn::Sub: {arg}"),
                        };
                        let mut out = String::new();
                        let mut rest = tpl.as_str();
                        while let Some(start) = rest.find("${") {
                            out.push_str(&rest[..start]);
                            let end = rest[start..].find('}').context("unclosed ${ in Fn::Sub")?;
                            let name = &rest[start + 2..start + end];
                            if let Some(lit) = name.strip_prefix('!') {
                                out.push_str("${");
                                out.push_str(lit);
                                out.push('}');
                            } else if let Some(v) = vars.get(name) {
                                let v = self.value(&v.clone())?;
                                out.push_str(&scalar_text(&v));
                            } else {
                                let v = self.value(&serde_json::json!({ "Ref": name }))?;
                                out.push_str(&scalar_text(&v));
                            }
                            rest = &rest[start + end + 1..];
                        }
                        out.push_str(rest);
                        Value::String(out)
                    }
                    other => bail!("{other} cannot be evaluated in a condition"),
                }
            }
        })
    }
}

/// The one key and value of a single-key object.
fn single(v: &Value) -> Option<(&str, &Value)> {
    let m = v.as_object()?;
    if m.len() != 1 {
        return None;
    }
    m.iter().next().map(|(k, v)| (k.as_str(), v))
}

fn is_no_value(v: &Value) -> bool {
    Template::ref_target(v) == Some("AWS::NoValue")
}

/// `Fn::If` resolved everywhere in `v`; `None` when `v` is (or resolves to) `AWS::NoValue`.
fn resolve_ifs(v: Value, eval: &mut Conditions) -> Result<Option<Value>> {
    if is_no_value(&v) {
        return Ok(None);
    }
    match single(&v) {
        Some(("Fn::If", arg)) => {
            let a = arg.as_array().context("Fn::If arguments")?;
            if a.len() != 3 {
                bail!("Fn::If takes a condition and two values: {v}");
            }
            let cond = a[0].as_str().context("Fn::If condition name")?;
            let chosen = if eval.condition(cond)? { &a[1] } else { &a[2] };
            return resolve_ifs(chosen.clone(), eval);
        }
        Some(("Fn::Select" | "Fn::Split" | "Fn::Join", _)) => {
            // Computed when it only needs parameters and literals; kept otherwise.
            if let Ok(value) = eval.value(&v) {
                return Ok(Some(value));
            }
        }
        _ => {}
    }
    Ok(Some(match v {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                if let Some(i) = resolve_ifs(i, eval)? {
                    out.push(i);
                }
            }
            Value::Array(out)
        }
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, i) in m {
                if let Some(i) = resolve_ifs(i, eval)? {
                    out.insert(k, i);
                }
            }
            Value::Object(out)
        }
        other => other,
    }))
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
    fn with_parameters_evaluates_conditions_and_drops_what_they_exclude() {
        let yaml = [
            "Parameters:",
            "  Mode: {Type: String, Default: a}",
            "  Cidrs: {Type: String}",
            "Conditions:",
            "  IsA: !Equals [!Ref Mode, a]",
            "  IsB: !Not [!Condition IsA]",
            "  Two: !Not [!Equals [!Select [1, !Split [',', !Sub '${Cidrs},,']], '']]",
            "Resources:",
            "  OnlyB:",
            "    Type: X",
            "    Condition: IsB",
            "  Both:",
            "    Type: X",
            "    Properties:",
            "      P: !If [IsA, one, !Ref AWS::NoValue]",
            "      L: [x, !If [Two, y, !Ref AWS::NoValue]]",
            "Outputs:",
            "  O: {Condition: IsB, Value: v}",
        ]
        .join("\n");
        let t = Template::parse(&yaml).unwrap();
        let a = t.with_parameters(&[("Cidrs", "10.0.0.0/8")]).unwrap();
        assert!(a.resource("OnlyB").is_none());
        assert_eq!(a.prop("Both", "P").unwrap(), "one");
        assert_eq!(a.prop("Both", "L").unwrap(), &serde_json::json!(["x"]));
        assert!(a.section("Outputs").is_empty());
        let b = t
            .with_parameters(&[("Mode", "b"), ("Cidrs", "10.0.0.0/8,10.1.0.0/16")])
            .unwrap();
        assert!(b.resource("OnlyB").is_some());
        assert!(b.prop("Both", "P").is_none());
        assert_eq!(b.prop("Both", "L").unwrap(), &serde_json::json!(["x", "y"]));
        assert!(t.with_parameters(&[]).is_err(), "Cidrs has no value");
        assert!(t.with_parameters(&[("Nope", "1")]).is_err());
    }

    #[test]
    fn aliases_are_resolved() {
        let t = Template::parse("Resources:\n  A:\n    Type: X\n    Properties: &p\n      K: 1\n  B:\n    Type: X\n    Properties: *p\n").unwrap();
        assert_eq!(t.prop("B", "K").unwrap(), &serde_json::json!(1));
    }
}
